"""Two processes (torchrun, gloo on CPU) train exactly like one process on the same global
batch: SFT, DPO (LoRA), SL-CAI (generation, critique and revision on every rank, then SFT
on the revisions), the reward model and PPO (LoRA, greedy rollouts). Not KTO: its z0 is
estimated on each micro-batch, and the ranks' micro-batches hold other rows than one
process's (docs/dpo.md); by hand it matches the unsharded two-process run under ZeRO/FSDP.

Why equal: each rank collates its half of every global batch (epoch_batches shard), the
engine back-propagates loss·w/W (w: the micro-batch's rows or tokens, W: their sum over all
micro-batches of all ranks) and sums the gradients across ranks, so the step's gradient is
the gradient of the global batch's mean loss; PPO whitens its advantages over the rows of
both ranks. The single-process reference splits the same batch of 8 into two micro-batches
of 4, the two-process run gives each rank 4 rows (one micro-batch): only the summation
order differs, so the losses agree to ~1e-7 relative; we allow 1e-4 over 4 steps.
"""

from pathlib import Path

import distributed_driver as driver
import pytest
import torch
from safetensors.torch import load_file

ALGORITHMS = ("sft", "dpo", "sl_cai", "reward", "ppo")
RTOL = 1e-4


def _recipes(root: Path, model: Path) -> dict[str, Path]:
    return {name: driver.write_recipe(root / f"{name}.yaml", body)
            for name, body in driver.recipe_bodies(root, model).items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("distributed")
    recipes = _recipes(root, tiny_llama)
    return driver.run_both(root, {name: recipes[name] for name in ALGORITHMS}, "two", 300)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_two_processes_match_one(runs, name):
    driver.assert_same_trajectory(runs[name]["one"], runs[name]["two"], name, RTOL)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_replicas_stay_identical_and_rank0_writes(runs, name):
    two = runs[name]["two"]
    w0 = load_file(str(two / "weights-rank0.safetensors"))
    w1 = load_file(str(two / "weights-rank1.safetensors"))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert (two / "final").is_dir() and (two / "summary.json").is_file()
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".")) == []
