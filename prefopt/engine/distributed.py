"""Data parallelism without wrapping: every process holds a full replica, trains on its
share of each global batch, and the engine sums the gradients across processes.

Why not ``accelerator.prepare(model)`` (DDP)? The algorithm modules call sub-modules
directly (the backbone and the LM head apart, a scalar head, adapters switched off for the
reference), which DDP's hooks do not see. An explicit all-reduce after the backward pass is
exact and keeps those calls. The scaling convention that makes it exact: each micro-batch's
loss is a mean over ``Module.loss_weight(mb)`` units (rows, pairs or tokens), the engine
back-propagates ``loss · w / W`` with W the sum of the weights over every micro-batch of
every process, and the gradients are summed across processes. The result is the gradient of
the mean over the global batch, for any micro-batch size and number of processes.

Every helper is the identity (and issues no collective) in a single process.
``train.sharding: fsdp`` shards the parameters instead of replicating them
(prefopt.engine.sharding), ``zero1``-``zero3`` hand the reduction and the step to DeepSpeed
(prefopt.engine.zero); the loss scaling and the summed gradients stay the same.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from prefopt.errors import ConfigError

BUCKET_ELEMENTS = 25_000_000
"""Gradients are all-reduced in flat buckets of at most this many elements (100 MB fp32)."""
SUMMED_METRICS = ("train/tokens", "train/tokens_per_s")
"""Metrics summed over processes; every other metric is a weighted mean."""


_local = False


def world_size() -> int:
    if _local or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


@contextmanager
def local_only():
    """Inside, this process trains on its own (no collectives): rank 0 building a cached
    world base model while the other processes wait at a barrier."""
    global _local
    saved, _local = _local, True
    try:
        yield
    finally:
        _local = saved


def check_supported(accelerator, sharding: str = "none") -> str:
    """The sharding mode of the run: ``sharding`` (``train.sharding``), ``fsdp`` when
    accelerate was launched with ``distributed_type: FSDP``, ``zero<stage>`` with
    ``DEEPSPEED``. Refuses what prefopt cannot honour: Megatron-LM and XLA, FSDP version 1,
    and the FSDP and DeepSpeed options prefopt does not implement (parameter or optimizer
    offload, FSDP's own activation checkpointing, ZeRO-3 init at load time)."""
    from prefopt.engine import zero

    kind = str(getattr(accelerator, "distributed_type", "NO")).split(".")[-1]
    if kind in ("MEGATRON_LM", "XLA"):
        raise ConfigError(
            f"accelerate distributed_type {kind} is not supported: prefopt's engine runs "
            "data parallelism itself, with full replicas, FSDP2 shards or DeepSpeed ZeRO. "
            "Use recipes/accelerate/ddp.yaml, fsdp.yaml or deepspeed_zero*.yaml; see "
            "docs/scaling.md")
    stage = zero.stage_from_env()
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if stage is None and plugin is not None:
        stage = int(plugin.zero_stage)
    if kind == "DEEPSPEED" or stage is not None:
        zero.check_env()
        if stage not in (1, 2, 3):
            raise ConfigError(f"accelerate deepspeed zero_stage {stage}: prefopt runs ZeRO "
                              "stages 1, 2 and 3 (0 is plain data parallelism: use ddp.yaml)")
        return f"zero{stage}"
    if kind == "FSDP" or _env_flag("ACCELERATE_USE_FSDP"):
        _check_fsdp_options(accelerator)
        return "fsdp"
    if sharding not in ("none", "fsdp", *zero.STAGES):
        raise ConfigError(f"train.sharding: expected none, fsdp, zero1, zero2 or zero3, "
                          f"got {sharding!r}")
    return sharding


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


def _check_fsdp_options(accelerator) -> None:
    """accelerate's FSDP settings (its plugin on GPUs; the FSDP_* variables ``accelerate
    launch`` exports, which is all there is on a CPU) that prefopt would silently ignore."""
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    version = getattr(plugin, "fsdp_version", None) or int(os.environ.get("FSDP_VERSION", "1"))
    if int(version) != 2:
        raise ConfigError(f"accelerate fsdp_version {version}: prefopt shards with FSDP2 "
                          "(torch fully_shard); set fsdp_version: 2 (recipes/accelerate/"
                          "fsdp.yaml)")
    if _env_flag("FSDP_OFFLOAD_PARAMS"):
        raise ConfigError("accelerate fsdp_offload_params: true is not supported by prefopt's "
                          "FSDP (parameters stay on the accelerator); set it to false")
    if _env_flag("FSDP_ACTIVATION_CHECKPOINTING"):
        raise ConfigError("accelerate fsdp_activation_checkpointing is not read by prefopt; "
                          "set it to false and use model.gradient_checkpointing: true")


def fsdp_reshard_after_forward() -> bool:
    """accelerate's ``fsdp_reshard_after_forward`` (default true): free each block's
    gathered weights after its forward (and gather them again for the backward)."""
    value = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().lower()
    return value not in ("false", "0", "no", "shard_grad_op", "2")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def main_tmpdir(root, prefix: str):
    """A fresh directory under ``root`` made by the main process, its path on every process
    (one collective)."""
    import tempfile
    from pathlib import Path

    path = None
    if world_size() == 1 or dist.get_rank() == 0:
        Path(root).mkdir(parents=True, exist_ok=True)
        path = tempfile.mkdtemp(prefix=prefix, dir=root)
    if world_size() > 1:
        box = [path]
        dist.broadcast_object_list(box, src=0)
        path = box[0]
    return Path(path)


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Σ over processes of each value (float64). One collective."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(values: list[float], device) -> list[float]:
    """max over processes of each value (float64). One collective."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def any_process(flag: bool, device) -> bool:
    """True on every process when ``flag`` is true on at least one."""
    return all_reduce_sum([float(flag)], device)[0] > 0


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Copy rank 0's values into every process (as DDP does at wrap time)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Σ_processes p.grad for every parameter that has a gradient on some process.

    A parameter without a gradient here but with one elsewhere gets zeros first; one
    without a gradient anywhere keeps ``grad = None`` (AdamW then skips it, as in a single
    process). Gradients travel in flat buckets, one dtype at a time.
    """
    if world_size() == 1 or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                       device=device)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in live]):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _buckets(grads: list[torch.Tensor]):
    bucket, size = [], 0
    for g in grads:
        if bucket and (size + g.numel() > BUCKET_ELEMENTS or g.dtype != bucket[0].dtype
                       or g.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel()
    if bucket:
        yield bucket


def reduce_metrics(metrics: dict[str, float], weight: float) -> dict[str, float]:
    """Metrics over processes: ``SUMMED_METRICS`` summed, every other key the mean weighted
    by each process's ``weight`` (its share of the step's loss weight), over the processes
    that report the key. The weighted mean of ``loss`` is the global batch's loss."""
    if world_size() == 1:
        return dict(metrics)
    rows: list = [None] * world_size()
    dist.all_gather_object(rows, (float(weight), {k: float(v) for k, v in metrics.items()}))
    out: dict[str, float] = {}
    for key in sorted({k for _, m in rows for k in m}):
        have = [(w, m[key]) for w, m in rows if key in m]
        if key in SUMMED_METRICS:
            out[key] = sum(v for _, v in have)
            continue
        total = sum(w for w, _ in have)
        out[key] = (sum(w * v for w, v in have) / total if total > 0
                    else sum(v for _, v in have) / len(have))
    return out


def gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """Concatenate a (B, …) tensor of every process along dim 0, padding dim 1 with zeros to
    the longest; returns (the global tensor, this process's rows in it). B may differ."""
    if world_size() == 1:
        return t, slice(0, t.shape[0])
    shapes: list = [None] * world_size()
    dist.all_gather_object(shapes, tuple(t.shape))
    rows_max = max(s[0] for s in shapes)
    width = tuple(max(s[i] for s in shapes) for i in range(1, t.dim()))
    padded = t.new_zeros((rows_max, *width))
    padded[tuple(slice(0, n) for n in t.shape)] = t
    parts = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(parts, padded.contiguous())
    rank = dist.get_rank()
    start = sum(s[0] for s in shapes[:rank])
    full = torch.cat([p[:s[0]] for p, s in zip(parts, shapes)])
    return full, slice(start, start + t.shape[0])


def global_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``prefopt.losses.whiten`` with the mean and variance of the global batch: the rows of
    every process are gathered (padding outside the mask) and whitened together, so the
    result equals the single-process one. (B, T) -> (B, T)."""
    from prefopt.losses import whiten

    if world_size() == 1:
        return whiten(x, mask, shift_mean)
    xs, mine = gather_rows(x)
    ms, _ = gather_rows(mask.to(x.dtype))
    y = whiten(xs, ms, shift_mean)[mine]
    return y[:, :x.shape[1]] if x.dim() > 1 else y
