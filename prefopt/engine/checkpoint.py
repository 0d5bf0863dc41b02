"""Atomic, resumable checkpoints.

A checkpoint directory holds the trainable weights (safetensors), the optimizer and
scheduler states, the RNG states, the data position and the algorithm's state. It is
written to a temporary directory and renamed into place, so a crash never leaves a
half-written checkpoint; ``latest`` names the newest complete one.

Tensors are always whole: under FSDP the shards are gathered before writing and cut again
on loading (prefopt.engine.sharding), so a checkpoint resumes with or without sharding and
on any number of processes. DeepSpeed ZeRO is the exception: its partitioned optimizer
state is written in DeepSpeed's own format (``zero/``, prefopt.engine.zero) beside the
whole weights, and resumes under the same ZeRO stage and number of processes.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from prefopt.engine import zero
from prefopt.engine.sharding import full_tensor, load_full, shard_optimizer_state
from prefopt.errors import TrainingError


def _rng_state() -> dict:
    """RNG states as tensors and plain lists, so ``torch.load(weights_only=True)`` reads them."""
    version, keys, pos = random.getstate()
    name, np_keys, np_pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(keys), pos],
            "numpy": [name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, has_gauss,
                      cached],
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    version, keys, gauss_next = state["python"]
    random.setstate((version, tuple(keys), gauss_next))
    name, np_keys, np_pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np_keys.numpy().astype(np.uint32), np_pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def trainable_state(named_params) -> dict[str, torch.Tensor]:
    """Whole CPU copies of the parameters (gathered from every process when sharded: then
    every process must call it)."""
    return {n: full_tensor(p.detach()).cpu().contiguous() for n, p in named_params}


def save_checkpoint(root: Path, step: int, params: dict[str, torch.Tensor],
                    optimizer_state: dict | None, scheduler, position: dict,
                    module_state: dict, keep: int = 2, tmp: Path | None = None) -> Path:
    """Write ``root/step-{step}`` atomically and point ``root/latest`` at it.
    ``optimizer_state``: ``optimizer.state_dict()`` with whole tensors
    (``sharding.full_optimizer_state``), or None under DeepSpeed ZeRO, whose partitioned
    state the processes have already written into ``tmp`` (``zero.save``)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = tmp or Path(tempfile.mkdtemp(prefix=f".step-{step}-", dir=root))
    try:
        save_file(params, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                    "rng": _rng_state()}, tmp / "state.pt")
        (tmp / "trainer.json").write_text(json.dumps({"step": step, **position}))
        (tmp / "module.json").write_text(json.dumps(module_state))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"could not write checkpoint in {root}: {e}") from e
    final = root / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / "latest.tmp").write_text(final.name)
    (root / "latest.tmp").rename(root / "latest")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted((p for p in root.glob("step-*") if p.is_dir()),
                  key=lambda p: int(p.name.split("-")[1]))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    marker = root / "latest"
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    return path if (path / "trainer.json").is_file() else None


def load_checkpoint(path: Path, named_params: dict[str, torch.nn.Parameter], optimizer,
                    scheduler, engine=None) -> tuple[dict, dict]:
    """Restore weights, optimizer, scheduler and RNG; return (position, module_state).
    Sharded parameters and their AdamW moments get this process's slice of each tensor;
    under DeepSpeed ZeRO (``engine``) DeepSpeed restores weights and optimizer itself."""
    state = torch.load(path / "state.pt", weights_only=True)
    if engine is not None:
        zero.load(engine, path)
    elif state["optimizer"] is None:
        raise TrainingError(f"{path}: written under DeepSpeed ZeRO, whose optimizer state is "
                            "partitioned; resume it with the same train.sharding and number "
                            "of processes")
    else:
        _load_weights(path, named_params)
        optimizer.load_state_dict(shard_optimizer_state(state["optimizer"], optimizer))
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    position = json.loads((path / "trainer.json").read_text())
    return position, json.loads((path / "module.json").read_text())


def _load_weights(path: Path, named_params: dict[str, torch.nn.Parameter]) -> None:
    weights = load_file(str(path / "trainable.safetensors"))
    missing = set(named_params) - set(weights)
    if missing:
        raise TrainingError(f"{path}: checkpoint lacks parameters {sorted(missing)[:3]}...")
    for name, p in named_params.items():
        load_full(p, weights[name])
