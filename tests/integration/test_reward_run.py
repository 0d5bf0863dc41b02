"""End-to-end reward-model training and best-of-n through ``prefopt run`` on tiny llama."""

import json
import math
import random

import pytest
import torch
import yaml

from prefopt.cli import main
from prefopt.data.records import PromptRecord, user
from prefopt.feedback.reward_sources import load_reward_source
from prefopt.policy.heads import load_scalar_model

FILLER = ("hello world what is two plus three five the answer sky blue colour of a cat dog "
          "yes no sure here how python photo tip sleep well water").split()
PROMPTS = ["what is two plus three?", "what colour is the sky?", "hello", "reverse cat dog",
           "sort these words: dog cat", "tip for sleep"]


def _pairs(n, seed):
    """Chosen says 'good' where rejected says 'bad', inside the same random filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.sample(FILLER, rng.randint(1, 4))
        at = rng.randint(0, len(words))
        chosen = " ".join(words[:at] + ["good"] + words[at:])
        rejected = " ".join(words[:at] + ["bad"] + words[at:])
        rows.append({"prompt": rng.choice(PROMPTS), "chosen": chosen, "rejected": rejected,
                     "id": f"{seed}-{i}"})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _reward_recipe(tmp_path, model_dir, mode):
    recipe = {
        "algorithm": "reward",
        "world": None,
        "model": {"path": str(model_dir), "mode": mode, "lora_r": 8, "lora_alpha": 16},
        "data": {"train": _write(tmp_path / "train.jsonl", _pairs(64, 0)),
                 "eval": _write(tmp_path / "eval.jsonl", _pairs(32, 1)), "max_length": 64},
        "train": {"lr": 3e-3 if mode == "full" else 1e-2, "epochs": 1, "batch_size": 16,
                  "micro_batch_size": 16, "progress": False, "lr_scheduler": "constant"},
        "reward": {"n_normalize": 8, "normalize_sampling": {"max_new_tokens": 6}},
    }
    path = tmp_path / "reward.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("mode", ["full", "qlora"])
def test_reward_run_learns_and_reloads(tmp_path, tiny_llama, mode):
    out = tmp_path / "rm"
    assert main(["run", str(_reward_recipe(tmp_path, tiny_llama, mode)), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/accuracy"] >= 0.9
    assert 0.0 <= summary["eval/ece"] <= 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 5))  # 1 epoch of 64 pairs / 16
    assert summary["eval/loss"] < rows[0]["loss"]
    cfg = json.loads((out / "final" / "scalar_config.json").read_text())
    assert cfg["std"] != 1.0 or cfg["mean"] != 0.0  # normalisation was measured and saved

    # The saved artifact, reloaded (head included), orders the held-out pairs as well.
    eval_rows = _pairs(32, 1)
    src = load_reward_source(str(out / "final"))
    records = [PromptRecord(user(r["prompt"])) for r in eval_rows]
    r_w = src.score(records, [r["chosen"] for r in eval_rows])
    r_l = src.score(records, [r["rejected"] for r in eval_rows])
    assert (r_w > r_l).float().mean().item() >= 0.9
    raw = load_scalar_model(out / "final")
    assert raw.cfg.mean == cfg["mean"] and raw.cfg.std == cfg["std"]


def test_best_of_n_run_writes_policy_description(tmp_path, tiny_llama):
    rm = tmp_path / "rm"  # an untrained reward model is enough to describe the policy
    from prefopt.policy import ModelConfig
    from prefopt.policy.heads import new_scalar_model

    torch.manual_seed(0)
    new_scalar_model(ModelConfig(path=str(tiny_llama))).save(rm)
    recipe = {"algorithm": "best_of_n", "world": None, "model": {"path": str(tiny_llama)},
              "best_of_n": {"n": 8, "reward": str(rm), "temperature": 1.0}}
    path = tmp_path / "bon.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "bon"
    assert main(["run", str(path), "--out", str(out)]) == 0
    desc = json.loads((out / "final" / "prefopt_policy.json").read_text())
    assert desc["type"] == "best_of_n" and desc["n"] == 8 and desc["temperature"] == 1.0
    assert desc["policy"] == str(tiny_llama) and desc["reward"] == str(rm)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_of_n/kl_analytic"] == pytest.approx(math.log(8) - 7 / 8)
    assert not (out / "checkpoints").exists()


def test_best_of_n_run_rejects_missing_reward_dir(tmp_path, tiny_llama, capsys):
    recipe = {"algorithm": "best_of_n", "world": None, "model": {"path": str(tiny_llama)},
              "best_of_n": {"reward": str(tmp_path / "nope")}}
    path = tmp_path / "bon.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "scalar_config.json" in capsys.readouterr().err
