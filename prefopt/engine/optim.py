"""AdamW and the learning-rate schedules, built on torch alone.

The schedules are plain ``LambdaLR`` multipliers with the same values as transformers'
``get_linear_schedule_with_warmup`` and ``get_cosine_schedule_with_warmup`` (one half
cosine period), so recipes behave as they did; building them here avoids importing
``transformers.trainer_utils``, which pulls in peft, bitsandbytes and torch._dynamo (about
4 s of start-up on our CPU machines, docs/performance.md).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(kind: str, step: int, warmup: int, total: int) -> float:
    """η_step / η_peak. Warm-up: step / warmup for step < warmup (every kind). After it,
    with progress p = (step − warmup) / (total − warmup):
    constant 1; linear max(0, 1 − p); cosine max(0, ½(1 + cos(π p)))."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown lr_scheduler {kind!r}; expected constant, linear or cosine")


def make_scheduler(optimizer, kind: str, warmup: int, total: int) -> LambdaLR:
    lr_multiplier(kind, 0, warmup, total)  # fail on an unknown kind before training
    return LambdaLR(optimizer, lambda step: lr_multiplier(kind, step, warmup, total))


def make_optimizer(params: list[torch.nn.Parameter], cfg) -> torch.optim.AdamW:
    """AdamW with the fused kernel when every parameter allows it (same device type, a
    floating dtype; torch ≥ 2.4 has it on CPU and CUDA). On our CPU machine fused AdamW
    took 7.2 ms a step for a 4.2 M-parameter model, against 21.3 ms for the default
    for-loop (benchmarks/levers.py, docs/performance.md); the update is the same to float
    rounding."""
    return torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, fused=_fusable(params) or None)


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    """FSDP shards (DTensors) qualify too: torch 2.13 runs the fused kernel on each shard
    (checked against a single process in tests/integration/test_fsdp.py)."""
    devices = {p.device.type for p in params}
    return (len(devices) == 1 and devices <= {"cpu", "cuda"}
            and all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                    for p in params))
