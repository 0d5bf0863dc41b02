"""The contract between an algorithm and the engine.

An algorithm is a ``Module``: it owns its models and data and says how to turn a batch into
losses. The engine owns the loop (accumulation, clipping, scheduling, logging, checkpoints,
distribution). Offline methods only define ``loss``; RL methods also define ``rollout``
(generate and score) and ``updates`` (epochs × minibatches over the rollout).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


class Module:
    name: str = "module"
    shardable: bool = True
    """Whether the module trains under ``train.sharding: fsdp``: every process must then
    run the same forwards and backwards, in the same order (prefopt.engine.sharding)."""
    shardable_reason: str = ""
    """Why not, for the error message."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimizer updates: by default those of ``self.policy``."""
        policy = getattr(self, "policy", None)
        if policy is None:
            raise NotImplementedError(f"{type(self).__name__} has no policy: override "
                                      "trainable_parameters")
        return policy.trainable_parameters()

    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of one pass over the data, deterministic per epoch."""
        raise NotImplementedError

    def rollout(self, batch: Any) -> Any:
        """Turn a batch into experience; offline methods return the batch unchanged."""
        return batch

    def updates(self, experience: Any, micro_batch_size: int) -> Iterator[list[Any]]:
        """Yield one list of micro-batches per optimizer step. Default: one step."""
        yield list(split_batch(experience, micro_batch_size))

    def loss(self, micro_batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, detached metrics) for one micro-batch."""
        raise NotImplementedError

    def loss_weight(self, micro_batch: Any) -> float:
        """How many units ``loss(micro_batch)`` is a mean over: rows by default (pairs in a
        pair batch); a token-mean loss returns its token count. The engine weights each
        micro-batch by it, so a step's loss is the mean over the whole global batch for any
        micro-batch size and any number of processes (prefopt.engine.distributed)."""
        return float(batch_rows(micro_batch))

    def rollout_metrics(self) -> dict[str, float]:
        """Metrics gathered during ``rollout`` (scores, KL, lengths, timings)."""
        return {}

    def after_step(self, step: int) -> None:
        """Hook after each optimizer step (e.g. KL controller, reference sync)."""

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics, run every ``eval_every`` steps and at the end."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Algorithm state to checkpoint (e.g. the adaptive KL coefficient)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, out_dir) -> None:
        """Write the trained model to ``out_dir`` in standard formats."""
        raise NotImplementedError

    def models(self) -> list[torch.nn.Module]:
        """The modules the engine puts in train mode (and shards under FSDP): by default
        ``self.policy``'s model."""
        policy = getattr(self, "policy", None)
        return [policy.model] if policy is not None else []

    def frozen_models(self) -> list[torch.nn.Module]:
        """Frozen modules that run during training and are sharded with ``models()`` under
        FSDP: by default the full-mode reference copy of ``self.policy``, if any (LoRA's
        reference is the policy itself, adapters off)."""
        policy = getattr(self, "policy", None)
        return policy.frozen_models() if policy is not None else []


def split_batch(batch: dict, size: int) -> Iterator[dict]:
    """Split a dict batch along dim 0 into chunks of ``size`` rows.

    Pair batches (``label`` present, chosen rows then rejected rows) are split so each chunk
    keeps its chosen and rejected halves together.
    """
    n = _batch_rows(batch)
    if size <= 0 or size >= n:
        yield batch
        return
    paired = "label" in batch and batch["input_ids"].shape[0] == 2 * n
    for i in range(0, n, size):
        yield {k: _slice(v, i, size, n, paired and len(v) == 2 * n) for k, v in batch.items()}


def batch_rows(batch) -> int:
    """Rows of a dict batch (pairs when ``label`` is present), an object with ``rows`` (an
    RL experience) or a list."""
    if isinstance(batch, dict):
        return _batch_rows(batch)
    rows = getattr(batch, "rows", None)
    return int(rows) if rows is not None else len(batch)


def _batch_rows(batch: dict) -> int:
    if "label" in batch:
        return batch["label"].shape[0]
    return next(iter(batch.values())).shape[0]


def _slice(v, i, size, n, paired):
    end = min(i + size, n)
    if paired:  # rows i..end of the chosen half and of the rejected half
        if isinstance(v, torch.Tensor):
            return torch.cat([v[i:end], v[n + i:n + end]])
        return [*v[i:end], *v[n + i:n + end]]
    return v[i:i + size]
