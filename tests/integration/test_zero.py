"""Two processes under DeepSpeed ZeRO (``train.sharding: zero1|zero2|zero3``, torchrun, gloo
on CPU) train like one process on the same global batch: under ZeRO-3 SFT (full), DPO (LoRA;
full with a live reference copy, partitioned too; TR-DPO, whose reference follows the
policy), SL-CAI, the reward model and PPO (LoRA, greedy rollouts: each rank generates for its
own prompts inside ``zero.gathered``); under ZeRO-2 SFT, DPO and PPO; under ZeRO-1 SFT. A
ZeRO-3 checkpoint resumes under ``accelerate launch`` with recipes/accelerate/cpu_zero3_2proc.yaml.

Why equal: each rank back-propagates loss·w/W·N on its half of every global batch
(prefopt.engine.zero.backward), DeepSpeed averages over the N processes, so its partitions
hold the global batch's gradient; its clipping and prefopt's AdamW then do what one process
does, up to the order of floating-point sums. The reference run ignores ``train.sharding``
(one process shards nothing). ``stage3_param_persistence_threshold: 0`` makes ZeRO-3
partition even these tiny weights (by default tensors under 1e5 elements stay whole).
Observed: losses agree to ~3e-7 relative; we allow 1e-4 over 4 steps.
"""

import json
import shutil
from pathlib import Path

import distributed_driver as driver
import pytest
import torch
from safetensors.torch import load_file

from prefopt.errors import TrainingError
from prefopt.recipe import load_recipe
from prefopt.run import run_recipe

pytest.importorskip("deepspeed")

RTOL = 1e-4
WEIGHT_ATOL = {"sl_cai": 5e-4}
"""Trained weights vs one process after 4 AdamW steps at lr 1e-2 (observed ≤ 1e-5), but
SL-CAI: its SFT on 8 four-token revisions leaves many MLP gradients near 0, where AdamW's
m/√v turns summation-order noise into weight differences up to 1.4e-4 (observed; the
losses agree to 7e-8)."""
NOISE = {"reward": {"head.bias"}}
"""The reward head's bias has a zero gradient up to rounding (test_fsdp.py's NOISE)."""
RUNS = {"zero3": ("sft", "dpo", "dpo_full_live", "trdpo", "sl_cai", "reward", "ppo"),
        "zero2": ("sft", "dpo", "ppo"), "zero1": ("sft",)}
CASES = [(stage, name) for stage, names in RUNS.items() for name in names]
ACCELERATE_ZERO3 = Path(__file__).parents[2] / "recipes" / "accelerate" / "cpu_zero3_2proc.yaml"
DEEPSPEED = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
MIXED = {"zero_optimization": {"stage3_param_persistence_threshold": 100}}
"""TR-DPO: the 64-element norm weights stay whole on every process (DeepSpeed's persistent
tensors, as a real model's norms are by default), the matrices are partitioned: the
reference sync must update both kinds (a whole tensor's resident copy is what forwards read)."""


def _bodies(root: Path, model: Path, stage: str) -> dict[str, dict]:
    base = driver.recipe_bodies(root, model)
    bodies = {
        # a checkpoint every step, all kept: step 2 is resumed below
        "sft": {**base["sft"], "train": {**base["sft"]["train"], "save_every": 1,
                                         "keep_checkpoints": 4}},
        "dpo": base["dpo"],
        "dpo_full_live": {**base["dpo"], "model": {"path": str(model), "mode": "full"}},
        # TR-DPO: the reference copy is synced with the policy partition by partition
        "trdpo": {**base["dpo"], "model": {"path": str(model), "mode": "full"},
                  "dpo": {"ref_sync_every": 2, "ref_sync_alpha": 0.5}},
        "sl_cai": base["sl_cai"],
        "reward": base["reward"],
        "ppo": base["ppo"],
    }
    return {name: {**b, "train": {**b["train"], "sharding": stage,
                                  "deepspeed": MIXED if name == "trdpo" else DEEPSPEED}}
            for name, b in bodies.items() if name in RUNS[stage]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama) -> dict[str, dict[str, dict[str, Path]]]:
    out = {}
    for stage in RUNS:
        root = tmp_path_factory.mktemp(stage)
        recipes = {name: driver.write_recipe(root / f"{name}.yaml", body)
                   for name, body in _bodies(root, tiny_llama, stage).items()}
        dirs = driver.run_both(root, recipes, stage, 900)
        out[stage] = {name: {"one": dirs[name]["one"], "multi": dirs[name][stage],
                             "recipe": recipes[name]} for name in recipes}
    return out


def _weights(run: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"weights-rank{rank}.safetensors"))


@pytest.mark.parametrize("stage,name", CASES)
def test_zero_matches_one_process(runs, stage, name):
    driver.assert_same_trajectory(runs[stage][name]["one"], runs[stage][name]["multi"], name,
                                  RTOL)


@pytest.mark.parametrize("stage,name", CASES)
def test_zero_trains_the_same_weights(runs, stage, name):
    """Both ranks hold (ZeRO-3: gather) the same trained weights, equal to one process's."""
    run = runs[stage][name]
    one, w0, w1 = _weights(run["one"]), _weights(run["multi"]), _weights(run["multi"], 1)
    assert one.keys() == w0.keys() == w1.keys() and len(one) > 0
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    worst = max((w0[k] - one[k]).abs().max().item() for k in one
                if k not in NOISE.get(name, ()))
    assert worst < WEIGHT_ATOL.get(name, 1e-4), worst


@pytest.mark.parametrize("name", [n for n in RUNS["zero3"] if n != "trdpo"])
def test_zero3_partitions_every_model(runs, name):
    """Under ZeRO-3 each rank holds half of every model DeepSpeed manages (the policy, a
    value model, a full-mode reference copy): frozen weights included."""
    reports = [json.loads((runs["zero3"][name]["multi"] / f"sharding-rank{r}.json").read_text())
               for r in (0, 1)]
    expected = {"dpo_full_live": 2, "ppo": 2}.get(name, 1)
    assert len(reports[0]) == expected
    for m0, m1 in zip(*reports):
        assert m0["total"] == m1["total"] > 0
        # DeepSpeed pads each tensor to a multiple of the world size: a few elements more
        assert m0["total"] <= m0["local"] + m1["local"] <= m0["total"] + 2 * 64
        assert m0["local"] == m1["local"]


def test_zero3_keeps_small_tensors_whole_and_partitions_the_rest(runs):
    """In the TR-DPO run (threshold 100) the policy and its reference copy keep their five
    64-element norm weights whole between forwards (DeepSpeed's persistent tensors) besides
    their partitions; the other runs (threshold 0) keep nothing whole."""
    reports = [json.loads((runs["zero3"]["trdpo"]["multi"] / f"sharding-rank{r}.json")
                          .read_text()) for r in (0, 1)]
    assert len(reports[0]) == 2
    for m in reports[0] + reports[1]:
        assert m["persistent"] == 5 * 64  # 2 layers x 2 norms + the final norm
        assert m["local"] == m["total"] / 2
    other = json.loads((runs["zero3"]["sft"]["multi"] / "sharding-rank0.json").read_text())
    assert other[0]["persistent"] == 0


def test_zero3_final_is_the_gathered_model(runs):
    """final/ holds the whole trained weights (a plain transformers directory for SFT)."""
    from transformers import AutoModelForCausalLM

    run = runs["zero3"]["sft"]["multi"]
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    trained = _weights(run)
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())


def test_zero_checkpoint_layout_and_refusal(runs, tmp_path):
    """A ZeRO checkpoint holds the whole weights beside DeepSpeed's per-rank optimizer
    partitions; resuming it in one process (no partitioned optimizer to load into) stops
    with a clear error instead of training on with fresh AdamW moments."""
    run = runs["zero3"]["sft"]
    step2 = run["multi"] / "checkpoints" / "step-2"
    files = {p.name for p in (step2 / "zero").iterdir()}
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= files
    weights = load_file(str(step2 / "trainable.safetensors"))
    assert weights.keys() == _weights(run["one"]).keys()
    out = tmp_path / "resumed"
    shutil.copytree(step2, out / "checkpoints" / "step-2")
    (out / "checkpoints" / "latest").write_text("step-2")
    recipe = load_recipe(run["recipe"])
    with pytest.raises(TrainingError, match="written under DeepSpeed ZeRO"):
        run_recipe(recipe, out, resume=True)


def test_accelerate_zero3_resumes_its_checkpoint(runs, tmp_path):
    """accelerate's distributed_type DEEPSPEED turns ZeRO-3 on (the recipe says none); the
    step-2 checkpoint of the torchrun ZeRO-3 run resumes (DeepSpeed's partitions, the
    schedule, the data position) and steps 3 and 4 give the uninterrupted run's losses."""
    run = runs["zero3"]["sft"]
    body = _bodies(tmp_path, Path(load_recipe(run["recipe"]).model.path), "zero3")["sft"]
    out = driver.resume_under_accelerate(ACCELERATE_ZERO3, run["multi"], body, tmp_path)
    report = json.loads((out / "sharding-rank0.json").read_text())
    assert report[0]["local"] < 0.51 * report[0]["total"]  # partitioned: ZeRO-3 was on
    resumed = {r["step"]: r["loss"] for r in driver.metrics_rows(out)}
    expected = {r["step"]: r["loss"] for r in driver.metrics_rows(run["one"])}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], rel=RTOL), step
