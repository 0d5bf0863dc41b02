"""prefopt.engine.sharding on two gloo processes (forked here): which modules become FSDP
units, that direct calls to them give the unsharded numbers, that generation of different
lengths per rank runs inside ``gathered``, and that checkpoint tensors round-trip."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prefopt.engine import sharding
from prefopt.errors import TrainingError

IDS = torch.tensor([[2, 8, 9, 10, 11, 12, 13, 3], [0, 0, 2, 14, 15, 16, 17, 3]])
MASK = (IDS != 0).long()
WHERE = torch.zeros(2, 7, dtype=torch.bool)
WHERE[:, 4:] = True


def _models(paths: dict[str, str]) -> dict[str, torch.nn.Module]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from prefopt.policy.heads import ScalarConfig, ScalarModel

    def lm(arch):
        return AutoModelForCausalLM.from_pretrained(paths[arch])

    torch.manual_seed(0)
    lora = get_peft_model(lm("llama"), LoraConfig(r=2, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    return {"llama": lm("llama"), "gpt2": lm("gpt2"), "lora": lora,
            "scalar": ScalarModel(lm("llama"), 64, ScalarConfig())}


def _outputs(name: str, model) -> torch.Tensor:
    """What prefopt computes with each model: chunked (or, tied, plain) token log-probs;
    per-token values for the scalar model."""
    from prefopt.policy.logprobs import token_logprobs

    with torch.no_grad():
        if name == "scalar":
            return model.values(IDS, MASK)
        return token_logprobs(model, IDS, MASK, where=WHERE)


def _worker(rank: int, tmp: str, paths: dict[str, str]) -> None:
    from prefopt.engine.trainer import Trainer
    from prefopt.policy.generate import SamplingConfig, sample
    from prefopt.policy.load import ModelConfig, load_tokenizer
    from prefopt.policy.policy import Policy

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=2)
    try:
        mesh = sharding.make_mesh(torch.device("cpu"))
        plain, models = _models(paths), _models(paths)
        out: dict = {"units": {}, "diff": {}, "direct": {}}
        for name, model in models.items():
            out["units"][name] = sharding.shard_model(model, mesh)
            out["diff"][name] = (_outputs(name, model)
                                 - _outputs(name, plain[name])).abs().max().item()
        for name in ("llama", "gpt2"):
            out["direct"][name] = sharding.direct_calls_ok(models[name])
        # Greedy generation: rank 1 decodes 3x as many steps as rank 0, no collective inside.
        tok = load_tokenizer(paths["llama"])
        cfg = SamplingConfig(max_new_tokens=4 if rank == 0 else 12, do_sample=False)
        prompts = [[8, 9, 10]] if rank == 0 else [[11, 12], [13]]
        want, ref = sample(plain["llama"], tok, prompts, cfg).response_ids, plain["llama"]
        with sharding.gathered(models["llama"]):
            got = sample(models["llama"], tok, prompts, cfg).response_ids
            state = sharding.gathered_state_dict(models["llama"])  # freed on exit
            out["state_equal"] = (state.keys() == ref.state_dict().keys() and all(
                torch.equal(v, ref.state_dict()[k]) for k, v in state.items()))
        out["generation_equal"] = torch.equal(got, want)
        out["resharded"] = sharding.is_dtensor(next(models["llama"].parameters()))
        # Checkpoint tensors: gather whole, load back into shards.
        w = models["llama"].model.embed_tokens.weight
        full = sharding.full_tensor(w)
        sharding.load_full(w, full * 2)
        out["roundtrip"] = torch.equal(sharding.full_tensor(w), full * 2)
        # A full-mode reference copy cannot be made after sharding; unequal micro-batch
        # counts fail instead of waiting forever.
        policy = Policy(models["llama"], tok, ModelConfig(path=paths["llama"]))
        with pytest.raises(TrainingError, match="reference copy must be made before"):
            with policy.reference():
                pass
        trainer = SimpleNamespace(accelerator=SimpleNamespace(device="cpu"), step=0,
                                  cfg=SimpleNamespace(sharding="fsdp"))
        with pytest.raises(TrainingError, match="processes have 1 to 2 micro-batches"):
            Trainer._same_micro_batch_count(trainer, rank + 1)
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_units_outputs_generation_and_checkpoint_tensors(tmp_path, tiny_models):
    """Llama (untied): every decoder block, the body and the LM head are units (prefopt
    calls the last two directly), plus the root; GPT-2 (tied input/output embeddings):
    blocks and the root only, and prefopt takes the plain forward; LoRA: the same units
    inside the PEFT wrapper; a scalar model adds its head. Outputs equal the unsharded
    model's to float rounding."""
    paths = {a: str(tiny_models[a]) for a in ("llama", "gpt2")}
    mp.start_processes(_worker, args=(str(tmp_path), paths), nprocs=2, start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    layers = ["layers.0", "layers.1"]
    assert results[0]["units"] == {
        "llama": ["", "model", *(f"model.{x}" for x in layers), "lm_head"],
        "gpt2": ["", "transformer.h.0", "transformer.h.1"],
        "lora": ["", "base_model.model.model",
                 *(f"base_model.model.model.{x}" for x in layers), "base_model.model.lm_head"],
        "scalar": ["", "backbone.model", *(f"backbone.model.{x}" for x in layers),
                   "backbone.lm_head", "head"],
    }
    for r in results:
        assert r["direct"] == {"llama": True, "gpt2": False}
        assert all(d < 1e-5 for d in r["diff"].values()), r["diff"]
        assert r["generation_equal"] and r["state_equal"] and r["resharded"]
        assert r["roundtrip"]
