"""Two processes with FSDP2 parameter sharding (``train.sharding: fsdp``, torchrun, gloo on
CPU) train like one process on the same global batch: SFT (full, QLoRA), DPO (LoRA; full with a
precomputed reference; full with a live reference copy, sharded too), the reward model
(full, with its post-training normalisation) and PPO (LoRA, greedy rollouts: each rank
generates for its own prompts inside ``sharding.gathered``). Checkpoints move between the
modes: an FSDP checkpoint resumes in one process, a single-process one under FSDP launched
by ``accelerate launch`` with recipes/accelerate/cpu_fsdp_2proc.yaml.

Why equal: as without sharding (test_distributed.py), each rank back-propagates loss·w/W on
its half of every global batch; FSDP reduce-scatters the gradients with a plain sum
(``set_gradient_divide_factor(1.0)``), so every shard holds its slice of the global batch's
gradient, AdamW updates the shards, and the gathered weights are the single-process ones up
to the order of floating-point sums. The single-process reference ignores
``train.sharding`` (one process shards nothing) and splits the batch of 8 into two
micro-batches of 4. Observed: losses agree to ~1e-7 relative; we allow 1e-4 over 4 steps.
"""

import json
import shutil
from pathlib import Path

import distributed_driver as driver
import pytest
import torch
from safetensors.torch import load_file

from prefopt.recipe import load_recipe
from prefopt.run import run_recipe

RTOL = 1e-4
WEIGHT_ATOL = 1e-4
"""Trained weights, FSDP vs one process, after 4 AdamW steps at lr 1e-2 (observed ≤ 1e-5)."""
NOISE = {"reward": {"head.bias"}}
"""Parameters whose gradient is rounding noise: the Bradley–Terry loss depends on r_w − r_l
only, so the reward head's bias has a zero gradient up to summation order, which AdamW
scales up to steps of ±lr (1.2e-3 apart after 4 steps, without sharding as well)."""
RUNS = ("sft", "sft_qlora", "dpo", "dpo_full", "dpo_full_live", "reward", "ppo")
ACCELERATE_FSDP = Path(__file__).parents[2] / "recipes" / "accelerate" / "cpu_fsdp_2proc.yaml"


def _bodies(root: Path, model: Path) -> dict[str, dict]:
    base = driver.recipe_bodies(root, model)
    full = {"path": str(model), "mode": "full"}
    bodies = {
        # a checkpoint every step, all kept: step 2 is resumed in one process below
        "sft": {**base["sft"], "train": {**base["sft"]["train"], "save_every": 1,
                                         "keep_checkpoints": 4}},
        # the 4-bit codes are sharded as uint8; bitsandbytes keeps the quantisation state
        # on the module, whole on every rank
        "sft_qlora": {**base["sft"], "model": {**base["dpo"]["model"], "mode": "qlora"}},
        "dpo": base["dpo"],
        "dpo_full": {**base["dpo"], "model": full, "dpo": {"reference": "precomputed"}},
        "dpo_full_live": {**base["dpo"], "model": full},
        # normalisation runs after training, on rank 0 alone, inside sharding.gathered
        "reward": {**base["reward"], "reward": {
            "normalize": True, "n_normalize": 4, "eval_batch_size": 4,
            "normalize_sampling": {"max_new_tokens": 4, "do_sample": False}}},
        "ppo": base["ppo"],
    }
    return {name: {**b, "train": {**b["train"], "sharding": "fsdp"}} for name, b in
            bodies.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("fsdp")
    recipes = {name: driver.write_recipe(root / f"{name}.yaml", body)
               for name, body in _bodies(root, tiny_llama).items()}
    dirs = driver.run_both(root, {name: recipes[name] for name in RUNS}, "fsdp", 600)
    return {name: {**dirs[name], "recipe": recipes[name]} for name in RUNS}


_rows = driver.metrics_rows


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "weights-rank0.safetensors"))


LLAMA_UNITS = ["model", "model.layers.0", "model.layers.1", "lm_head"]
UNITS = {  # per run: the units of each sharded model (the root "" first), as prefixed
    "sft": [("", "")],
    "sft_qlora": [("", "base_model.model.")],
    "dpo": [("", "base_model.model.")],
    "dpo_full": [("", "")],
    "dpo_full_live": [("", ""), ("", "")],  # the policy and its frozen reference copy
    "reward": [("", "backbone.", ["head"])],
    "ppo": [("", "base_model.model."), ("", "backbone.base_model.model.", ["head"])],
}


@pytest.mark.parametrize("name", RUNS)
def test_models_are_sharded(runs, name):
    """Each rank holds about half of every sharded model's elements (dim-0 shards), in
    the units sharding.shard_model makes: blocks, body, LM head, a scalar head, the root."""
    reports = [json.loads((runs[name]["fsdp"] / f"sharding-rank{r}.json").read_text())
               for r in (0, 1)]
    expected = []
    for root, prefix, *extra in UNITS[name]:
        units = [root] + [prefix + u for u in LLAMA_UNITS] + (extra[0] if extra else [])
        expected.append(sorted(units))
    assert [sorted(m["units"]) for m in reports[0]] == expected
    for m0, m1 in zip(*reports):
        assert m0["total"] == m1["total"] == m0["local"] + m1["local"]
        assert abs(m0["local"] - m1["local"]) <= 0.01 * m0["total"]


@pytest.mark.parametrize("name", RUNS)
def test_fsdp_matches_one_process(runs, name):
    driver.assert_same_trajectory(runs[name]["one"], runs[name]["fsdp"], name, RTOL)


@pytest.mark.parametrize("name", RUNS)
def test_fsdp_trains_the_same_weights(runs, name):
    """The shards, gathered (both ranks dump them), equal the single-process weights."""
    one, w0, w1 = (_weights(runs[name]["one"]), _weights(runs[name]["fsdp"]),
                   load_file(str(runs[name]["fsdp"] / "weights-rank1.safetensors")))
    assert one.keys() == w0.keys() == w1.keys() and len(one) > 0
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    worst = max((w0[k] - one[k]).abs().max().item() for k in one
                if k not in NOISE.get(name, ()))
    assert worst < WEIGHT_ATOL, worst


def test_final_reloads_with_plain_transformers(runs):
    """final/ is an ordinary transformers directory (full), PEFT adapter (LoRA) or scalar
    model, holding the gathered weights."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from prefopt.policy.heads import load_scalar_model

    sft = AutoModelForCausalLM.from_pretrained(runs["sft"]["fsdp"] / "final")
    trained = _weights(runs["sft"]["fsdp"])
    assert all(torch.equal(p, trained[n]) for n, p in sft.named_parameters())

    dpo = AutoPeftModelForCausalLM.from_pretrained(runs["dpo"]["fsdp"] / "final")
    trained = _weights(runs["dpo"]["fsdp"])
    lora = {n: p for n, p in dpo.named_parameters() if "lora_" in n}
    assert lora.keys() == trained.keys()
    assert all(torch.equal(p, trained[n]) for n, p in lora.items())

    rm = load_scalar_model(runs["reward"]["fsdp"] / "final")
    trained = _weights(runs["reward"]["fsdp"])
    assert torch.equal(rm.head.weight, trained["head.weight"])
    assert torch.equal(rm.head.bias, trained["head.bias"])
    body = dict(rm.backbone.named_parameters())
    assert all(torch.equal(body[n[len("backbone."):]], w) for n, w in trained.items()
               if n.startswith("backbone."))
    # The normalisation (greedy SFT responses scored on rank 0 alone) matches one process;
    # the mean up to the head's bias, whose difference is noise (NOISE above).
    one, fsdp = (load_scalar_model(runs["reward"][k] / "final") for k in ("one", "fsdp"))
    assert fsdp.cfg.std != 1.0  # normalised
    assert fsdp.cfg.std == pytest.approx(one.cfg.std, rel=1e-4)
    assert (fsdp.cfg.mean - fsdp.head.bias.item()) == pytest.approx(
        one.cfg.mean - one.head.bias.item(), rel=1e-4)


def test_fsdp_checkpoint_resumes_in_one_process(runs, tmp_path):
    """The step-2 checkpoint of the FSDP run (full tensors, written by rank 0) resumes in
    one process and reaches the uninterrupted run's losses at steps 3 and 4."""
    fsdp, out = runs["sft"]["fsdp"], tmp_path / "resumed"
    shutil.copytree(fsdp / "checkpoints" / "step-2", out / "checkpoints" / "step-2")
    (out / "checkpoints" / "latest").write_text("step-2")
    shutil.copy(fsdp / "metrics.jsonl", out / "metrics.jsonl")
    run_recipe(load_recipe(runs["sft"]["recipe"]), out, resume=True)
    resumed = {r["step"]: r["loss"] for r in _rows(out)}
    one = {r["step"]: r["loss"] for r in _rows(runs["sft"]["one"])}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(one[step], rel=RTOL), step


def test_accelerate_fsdp_resumes_a_single_process_checkpoint(runs, tmp_path):
    """accelerate's distributed_type FSDP turns sharding on (the recipe says none), and the
    single-process step-2 checkpoint loads into the shards (weights and AdamW moments):
    steps 3 and 4 give the uninterrupted single-process losses."""
    one = runs["sft"]["one"]
    body = _bodies(tmp_path, Path(load_recipe(runs["sft"]["recipe"]).model.path))["sft"]
    out = driver.resume_under_accelerate(ACCELERATE_FSDP, one, body, tmp_path)
    report = json.loads((out / "sharding-rank0.json").read_text())
    assert report[0]["units"] and report[0]["local"] < 0.51 * report[0]["total"]
    resumed = {r["step"]: r["loss"] for r in _rows(out)}
    expected = {r["step"]: r["loss"] for r in _rows(one)}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], rel=RTOL), step
