"""Metrics sinks: ``metrics.jsonl`` (one JSON object per logged step), console, trackers."""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path

import torch


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA allocation when on a GPU)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"mem/peak_rss_mb": rss / 1024 if sys.platform != "darwin" else rss / 2**20}
    if torch.cuda.is_available():
        out["mem/peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class MetricsLog:
    """``enabled=False`` (every process but the main one) writes nothing."""

    def __init__(self, path: Path, accelerator=None, resume: bool = False,
                 enabled: bool = True):
        self.path, self.accelerator, self.enabled = path, accelerator, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            path.write_text("")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log(metrics, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint we resume from."""
        if not self.enabled:
            return
        rows = read_metrics(self.path)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))


def _clean(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average each key over the micro-batches that reported it."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            sums.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in sums.items()}
