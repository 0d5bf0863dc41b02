"""Runs prefopt recipes in one process or under torchrun, for test_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_driver.py \
        [--resume] RECIPE OUT [RECIPE OUT ...]

After each run every rank writes its trainable weights to OUT/weights-rank{R}.safetensors
(so the test can check that the replicas are identical; under FSDP and ZeRO-3 the gathered
shards) and, per model, its FSDP units and how many elements it holds to
OUT/sharding-rank{R}.json. PPO's reward source is replaced by
``YesSource`` (share of "yes" tokens), which needs no trained reward model.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from prefopt.algorithms import ppo
from prefopt.cli import close_process_group
from prefopt.engine.trainer import Trainer
from prefopt.recipe import load_recipe
from prefopt.run import run_recipe

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, when run as a script
from tiny import CONSTITUTION  # noqa: E402

_fit = Trainer.fit
WORDS = "hello world cat dog sky blue yes no good bad".split()
PROMPTS = ["what is two plus three?", "hello", "sort these words", "what colour is the sky?",
           "reverse cat dog", "tip", "good dog", "bad cat"]
TRAIN = {"lr": 1e-2, "max_steps": 4, "epochs": 10, "batch_size": 8, "micro_batch_size": 4,
         "progress": False, "lr_scheduler": "constant", "seed": 1}

def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def recipe_bodies(root: Path, model: Path) -> dict[str, dict]:
    """The recipes both multi-process tests run: {name: recipe dict}. The data files are
    written under ``root``. Every run takes 4 optimizer steps on global batches of 8."""
    # Completions of different lengths: a token-mean loss must be weighted by tokens.
    demos = _jsonl(root / "demos.jsonl", [
        {"prompt": f"what is {a} plus {b}?", "completion": f"the answer is {a} {b}" * (1 + i % 3)}
        for i, (a, b) in enumerate((a, b) for a in ("two", "three", "five")
                                   for b in ("two", "three", "five", "cat"))])
    pairs = _jsonl(root / "pairs.jsonl", [
        {"prompt": f"say {w}", "chosen": f"{w} yes", "rejected": f"no {w} {w} no"}
        for w in WORDS] + [{"prompt": "tip", "chosen": "sleep well", "rejected": "bad"}] * 2)
    prompts = _jsonl(root / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    signals = _jsonl(root / "kto.jsonl", [
        {"prompt": f"say {w}", "completion": f"{w} yes" if i % 2 else f"no {w} {w}",
         "label": bool(i % 2)} for i, w in enumerate(WORDS)])
    constitution = root / "constitution.yaml"
    constitution.write_text(CONSTITUTION)
    full, lora = {"path": str(model), "mode": "full"}, {"path": str(model), "mode": "lora",
                                                        "lora_r": 4}
    return {
        "sft": {"algorithm": "sft", "model": full,
                "data": {"train": demos, "max_length": 64}, "train": TRAIN},
        "dpo": {"algorithm": "dpo", "model": lora,
                "data": {"train": pairs, "max_length": 64}, "train": TRAIN},
        "reward": {"algorithm": "reward", "model": full,
                   "data": {"train": pairs, "max_length": 64}, "train": TRAIN,
                   "reward": {"normalize": False}},
        "kto": {"algorithm": "kto", "model": full,
                "data": {"train": signals, "max_length": 64}, "train": TRAIN},
        # every rank answers, critiques and revises all 8 prompts with the same seeds (the
        # policy as its own critic), then trains on its share of the 8 revisions
        "sl_cai": {"algorithm": "sl_cai", "model": full,
                   "data": {"train": prompts, "max_length": 256}, "train": TRAIN,
                   "sl_cai": {"constitution": str(constitution), "n_red_team": 8,
                              "critic": {"backend": "policy"}, "helpful_mix": 0.0,
                              "sampling": {"max_new_tokens": 4, "do_sample": False},
                              "critique_max_new_tokens": 4, "revision_max_new_tokens": 4}},
        # 2 rollouts of 4 prompts x 2 PPO epochs; greedy, so both runs sample the same text
        "ppo": {"algorithm": "ppo", "model": lora, "data": {"train": prompts},
                "train": {**TRAIN, "lr": 1e-3, "batch_size": 4, "micro_batch_size": 2},
                "ppo": {"reward": str(model), "value_init": "policy", "ppo_epochs": 2,
                        "sampling": {"max_new_tokens": 6, "do_sample": False,
                                     "temperature": 1.0}}},
    }


def run_both(root: Path, recipes: dict[str, Path], label: str, timeout: int) -> dict:
    """Every recipe twice: under torchrun with 2 processes into root/LABEL/NAME, then in this
    process (the reference, PPO's reward replaced by ``YesSource`` on both sides) into
    root/one/NAME. Returns {name: {"one": dir, LABEL: dir}}."""
    import pytest

    args = [str(x) for name, path in recipes.items() for x in (path, root / label / name)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "fit", fit_and_dump)
        mp.setattr(ppo, "load_reward_source", YesSource)
        for name, path in recipes.items():
            run_recipe(load_recipe(path), root / "one" / name)
    return {name: {"one": root / "one" / name, label: root / label / name}
            for name in recipes}


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_trajectory(one_dir: Path, other_dir: Path, name: str, rtol: float) -> None:
    """The logged steps match, and at each the loss (``rtol``) and gradient norm (1e-3) of
    the multi-process run equal the single-process ones; the loss moved (it did train)."""
    import pytest

    one, other = metrics_rows(one_dir), metrics_rows(other_dir)
    steps = [2, 4] if name == "ppo" else [1, 2, 3, 4]  # PPO logs once per rollout
    assert [r["step"] for r in one] == [r["step"] for r in other] == steps  # rank 0 logs
    for a, b in zip(one, other):
        assert b["loss"] == pytest.approx(a["loss"], rel=rtol), (a["step"], a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    assert one[0]["loss"] != pytest.approx(one[-1]["loss"], rel=1e-3)


def resume_under_accelerate(config: Path, source: Path, body: dict, tmp: Path) -> Path:
    """Copy ``source``'s step-2 checkpoint and metrics into tmp/resumed, then resume ``body``
    (with train.sharding none: the accelerate config decides) on 2 processes under
    ``accelerate launch --config_file config``; returns the run directory."""
    out = tmp / "resumed"
    shutil.copytree(source / "checkpoints" / "step-2", out / "checkpoints" / "step-2")
    (out / "checkpoints" / "latest").write_text("step-2")
    shutil.copy(source / "metrics.jsonl", out / "metrics.jsonl")
    recipe = write_recipe(tmp / "resume.yaml",
                          {**body, "train": {**body["train"], "sharding": "none"}})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(config), __file__, "--resume", str(recipe), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def write_recipe(path: Path, body: dict) -> Path:
    path.write_text(yaml.safe_dump({"world": None, **body}))
    return path


def fit_and_dump(self, resume=False):
    from safetensors.torch import save_file

    from prefopt.engine.sharding import full_tensor, gathered  # every rank calls: collective

    out = _fit(self, resume)
    with gathered(*self.module.models()):  # DeepSpeed ZeRO-3 partitions
        weights = {n: full_tensor(p.detach()).clone().contiguous()
                   for n, p in self.named.items()}
    rank = self.accelerator.process_index
    save_file(weights, str(self.out / f"weights-rank{rank}.safetensors"))
    models = [*self.module.models(), *self.module.frozen_models()]
    (self.out / f"sharding-rank{rank}.json").write_text(json.dumps([sharding_report(m)
                                                                    for m in models]))
    return out


def sharding_report(model) -> dict:
    """The FSDP units of a model and the share of its elements this process holds (its
    FSDP shards or DeepSpeed ZeRO-3 partitions)."""
    from prefopt.engine import zero
    from prefopt.engine.sharding import is_dtensor, is_unit

    params = list(model.parameters())
    return {"model": type(model).__name__,
            "units": [n for n, m in model.named_modules() if is_unit(m)],
            "local": sum(p.to_local().numel() if is_dtensor(p) else zero.local_numel(p)
                         for p in params),
            "total": sum(p.ds_numel if zero.is_partitioned(p) else p.numel()
                         for p in params),
            "persistent": sum(p.ds_numel for p in params  # ZeRO-3 tensors kept whole
                              if zero.is_partitioned(p) and p.ds_persist)}


class YesSource:
    """reward = (number of "yes" tokens) / (number of response tokens)."""

    def __init__(self, spec, world, **kw):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(spec)
        self.yes = self.tok.convert_tokens_to_ids("yes")

    def score(self, records, responses):
        ids = [self.tok(r, add_special_tokens=False)["input_ids"] for r in responses]
        return torch.tensor([i.count(self.yes) / max(len(i), 1) for i in ids])


def main(argv: list[str]) -> None:
    """RECIPE OUT pairs; a leading --resume resumes each run from OUT/checkpoints."""
    torch.set_num_threads(1)
    Trainer.fit = fit_and_dump
    ppo.load_reward_source = YesSource
    resume = argv[:1] == ["--resume"]
    argv = argv[1:] if resume else argv
    for recipe, out in zip(argv[0::2], argv[1::2]):
        run_recipe(load_recipe(recipe), out, resume=resume)
    close_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
