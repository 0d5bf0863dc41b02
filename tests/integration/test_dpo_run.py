"""End-to-end DPO, KTO and online DPO through ``prefopt run`` on a tiny llama.

The learnable pattern: every chosen completion contains "good", every rejected one "bad";
held-out pairs use other prompts and other surrounding words.
"""

import json
import math

import pytest
import torch
import yaml

from prefopt.algorithms.dpo import DPO, DPOConfig
from prefopt.cli import main
from prefopt.data.records import PreferencePair, user
from prefopt.feedback.preference_sources import register_preference_source
from prefopt.policy import ModelConfig, load_policy

TRAIN_PROMPTS = ["what is two plus three?", "what colour is the sky?", "reverse cat dog",
                 "hello", "sort these words", "tip for sleep", "photo of a cat", "python"]
EVAL_PROMPTS = ["what is the answer?", "help with water", "kill process", "the dog"]
TRAIN_BODIES = ["five", "blue", "dog cat", "hello world", "sure here is how", "sleep well"]
EVAL_BODIES = ["water", "i can help", "yes", "the answer is five"]


def _pairs(prompts, bodies):
    return [{"prompt": p, "chosen": f"{b} good", "rejected": f"{b} bad"}
            for i, p in enumerate(prompts) for b in bodies[i % 2::2]]


def _write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp_path, model_dir, algorithm, section, train, eval_=None, **train_cfg):
    recipe = {
        "algorithm": algorithm,
        "world": None,
        "model": {"path": str(model_dir), "mode": "full"},
        "data": {"train": str(train), "eval": str(eval_) if eval_ else None, "max_length": 64},
        "train": {"lr": 2e-3, "epochs": 3, "batch_size": 8, "micro_batch_size": 4,
                  "progress": False, "lr_scheduler": "constant", **train_cfg},
        algorithm: section,
    }
    path = tmp_path / f"{algorithm}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("reference", ["live", "precomputed"])
def test_dpo_run_learns_good_over_bad(tmp_path, tiny_llama, reference):
    train = _write(tmp_path, "train.jsonl", _pairs(TRAIN_PROMPTS, TRAIN_BODIES))
    held = _write(tmp_path, "eval.jsonl", _pairs(EVAL_PROMPTS, EVAL_BODIES))
    # Before training π = π_ref: every implicit reward is 0, a tie, worth ½.
    start = DPO(load_policy(ModelConfig(path=str(tiny_llama))),
                [PreferencePair(user(r["prompt"]), r["chosen"], r["rejected"])
                 for r in map(json.loads, held.read_text().splitlines())],
                DPOConfig(eval_kl_prompts=0), 64, 8,
                eval_data=[PreferencePair(user("hello"), "good", "bad")]).evaluate()
    assert start["eval/preference_accuracy"] == 0.5
    recipe = _recipe(tmp_path, tiny_llama, "dpo", {"loss": "dpo", "beta": 0.1,
                     "reference": reference, "eval_kl_prompts": 4,
                     "eval_max_new_tokens": 8}, train, held)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(1, 10))  # 24 pairs / 8 × 3 epochs
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # π = π_ref at step 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/preference_accuracy"] >= 0.9
    assert summary["eval/rewards/margins"] > 0.1 and summary["eval/loss"] < 0.6
    if reference == "live":
        assert summary["eval/kl"] > 0  # the policy moved away from its reference
    else:  # full mode keeps no reference in memory, so no KL estimate
        assert "eval/kl" not in summary
        assert len(list((out / "reference_cache").glob("*.safetensors"))) == 2  # train, eval
    assert summary["data"]["train/encode"]["kept"] == 24


def test_kto_run_first_step_and_learning(tmp_path, tiny_llama):
    rows = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
            for r in _pairs(TRAIN_PROMPTS, TRAIN_BODIES) for k in ("chosen", "rejected")]
    held = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
            for r in _pairs(EVAL_PROMPTS, EVAL_BODIES) for k in ("chosen", "rejected")]
    train, held = _write(tmp_path, "kto.jsonl", rows), _write(tmp_path, "kto_eval.jsonl", held)
    recipe = _recipe(tmp_path, tiny_llama, "kto", {"beta": 0.1}, train, held, epochs=2)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    logged = _rows(out)
    assert len(logged) == 12  # 48 rows / 8 × 2 epochs
    assert logged[0]["loss"] == pytest.approx(0.5, abs=1e-4)  # 1 − σ(0) while π = π_ref
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/rewards/desirable"] > summary["eval/rewards/undesirable"]
    assert summary["eval/accuracy"] > 0.8


class GoodCounter:
    """Prefers the response with more "good" than "bad" words: P(a ≻ b) = σ(s_a − s_b)."""

    def prefer(self, records, a, b):
        score = [t.split().count("good") - t.split().count("bad") for t in a + b]
        s = torch.tensor(score, dtype=torch.float32)
        return torch.sigmoid(s[:len(a)] - s[len(a):])


def test_online_dpo_run_with_a_registered_labeler(tmp_path, tiny_llama):
    register_preference_source("good_counter", lambda ctx, arg: GoodCounter())
    prompts = _write(tmp_path, "prompts.jsonl", [{"prompt": p} for p in TRAIN_PROMPTS])
    recipe = _recipe(tmp_path, tiny_llama, "online_dpo", {
        "labeler": "good_counter", "max_new_tokens": 6, "temperature": 1.0,
        "update_epochs": 2, "minibatches": 2, "eval_kl_prompts": 4, "eval_max_new_tokens": 6},
        prompts, prompts, epochs=1, batch_size=4, micro_batch_size=2)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    logged = _rows(out)
    # 2 rounds of 4 prompts, each 2 update epochs × 2 minibatches: 8 optimizer steps; the
    # metrics row of a round is logged at its last step.
    assert [r["step"] for r in logged] == [4, 8]
    assert all(r["online/pairs"] == 4.0 for r in logged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train/steps"] == 8 and math.isfinite(summary["eval/kl"])
