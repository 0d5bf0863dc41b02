"""Faults: a run killed with SIGKILL and resumed reaches the same losses; SIGTERM saves."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

WAIT_S = 900  # a guard against hangs only: a starved machine can take minutes to get there

DEMOS = [{"prompt": f"what is {a} plus {b}?", "completion": f"the answer is {a}"}
         for a in ("two", "three", "five") for b in ("two", "three", "five")] * 2


def _recipe(tmp_path: Path, model_dir: Path) -> Path:
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DEMOS))
    recipe = {"algorithm": "sft", "world": None,
              "model": {"path": str(model_dir), "mode": "lora", "lora_r": 4},
              "data": {"train": str(data), "max_length": 64},
              "train": {"lr": 3e-3, "epochs": 4, "batch_size": 6, "micro_batch_size": 3,
                        "save_every": 1, "progress": False, "seed": 3}}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cmd(recipe, out, *extra):
    return [sys.executable, "-m", "prefopt", "run", str(recipe), "--out", str(out), *extra]


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _latest_step(out: Path) -> int:
    try:
        return int((out / "checkpoints" / "latest").read_text().split("-")[1])
    except (OSError, ValueError, IndexError):
        return 0


def _start_and_wait(recipe, out, step):
    """Start a run and wait until its latest checkpoint is at ``step`` or later (polling for
    step-{step} itself can miss it on a busy machine: it is pruned two steps later)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cmd(recipe, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + WAIT_S
    while _latest_step(out) < step:
        assert proc.poll() is None, "run ended before the kill"
        assert time.time() < deadline, f"no checkpoint after {WAIT_S} s"
        time.sleep(0.05)
    return proc


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_llama):
    recipe = _recipe(tmp_path, tiny_llama)
    full = tmp_path / "full"
    subprocess.run(_cmd(recipe, full), check=True, capture_output=True)
    expected = _losses(full)
    assert len(expected) == 12

    killed = tmp_path / "killed"
    proc = _start_and_wait(recipe, killed, step=4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()
    subprocess.run(_cmd(recipe, killed, "--resume"), check=True, capture_output=True)
    resumed = _losses(killed)
    assert sorted(resumed) == sorted(expected)
    for step, loss in expected.items():
        assert abs(resumed[step] - loss) < 1e-5, (step, resumed[step], loss)


def test_sigterm_writes_a_checkpoint_and_exits(tmp_path, tiny_llama):
    recipe = _recipe(tmp_path, tiny_llama)
    recipe.write_text(recipe.read_text().replace("save_every: 1", "save_every: 100"))
    out = tmp_path / "term"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cmd(recipe, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + WAIT_S
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
        assert proc.poll() is None, "run ended before SIGTERM"
        assert time.time() < deadline, f"no metrics after {WAIT_S} s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    latest = (out / "checkpoints" / "latest").read_text()
    step = json.loads((out / "checkpoints" / latest / "trainer.json").read_text())["step"]
    assert 1 <= step < 12
