"""The one training loop every algorithm runs on (accelerate underneath)."""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from prefopt.engine import distributed as dist
from prefopt.engine import sharding, zero
from prefopt.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)
from prefopt.engine.config import TrainConfig
from prefopt.engine.metrics import MetricsLog, mean_metrics, peak_memory_mb
from prefopt.engine.module import Module
from prefopt.engine.optim import make_optimizer, make_scheduler
from prefopt.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)


class Trainer:
    """Runs a ``Module``: rollout → updates (micro-batches, clip, step) → log → checkpoint."""

    def __init__(self, module: Module, cfg: TrainConfig, out_dir: str | Path,
                 accelerator: Accelerator | None = None):
        self.module, self.cfg, self.out = module, cfg, Path(out_dir)
        self.accelerator = accelerator or make_accelerator(cfg, self.out)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self._stop_signal: int | None = None
        self.engine = None  # DeepSpeed's, under ZeRO

    # ---- setup -------------------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        """FSDP: parameters sharded over the processes (one process shards nothing)."""
        return self.cfg.sharding == "fsdp" and dist.world_size() > 1

    @property
    def zero(self) -> bool:
        """DeepSpeed ZeRO over the processes (one process runs without it)."""
        return zero.is_zero(self.cfg.sharding) and dist.world_size() > 1

    @property
    def collective(self) -> bool:
        """Every forward and backward is a collective: processes run them in lockstep."""
        return self.sharded or self.zero

    def _setup(self, resume: bool):
        set_seed(self.cfg.seed)
        if self.collective:
            self._check_shardable()
        if self.sharded:
            self._shard()
        self.named = {n: p for m in self.module.models() for n, p in _named_trainable(m)}
        params = self.module.trainable_parameters()
        if not params:
            raise TrainingError("the module has no trainable parameters")
        self.optimizer = make_optimizer(params, self.cfg)
        if self.zero:
            self._start_deepspeed(params)
        self.total_steps = self._count_steps()
        self.scheduler = make_scheduler(self.optimizer, self.cfg.lr_scheduler,
                                        self.cfg.warmup_steps, max(self.total_steps, 1))
        self.metrics = MetricsLog(self.out / "metrics.jsonl", self.accelerator, resume=resume,
                                  enabled=self.accelerator.is_main_process)
        if resume:
            self._resume()
        if not self.zero:  # identical replicas, whatever the init did (FSDP shards and
            # DeepSpeed partitions were cut from rank 0's values)
            dist.broadcast_parameters([p for p in params if not sharding.is_dtensor(p)])

    def _check_shardable(self) -> None:
        if not getattr(self.module, "shardable", True):
            raise ConfigError(f"train.sharding={self.cfg.sharding} is not supported by "
                              f"{self.module.name}: {self.module.shardable_reason}")

    def _shard(self) -> None:
        """Shard the trainable models and the frozen ones that run every step (a full-mode
        reference copy) before the optimizer sees any parameter (prefopt.engine.sharding)."""
        models = [*self.module.models(), *self.module.frozen_models()]
        units = sharding.shard_models(models, self.accelerator.device,
                                      dist.fsdp_reshard_after_forward())
        log.info("FSDP over %d processes: %s", dist.world_size(),
                 {type(models[i]).__name__: len(names) for i, names in units.items()})

    def _start_deepspeed(self, params) -> None:
        """Hand the models that run every step and the AdamW to DeepSpeed
        (prefopt.engine.zero). Rank 0's trainable values first: ZeRO-3 partitions each
        process's own copy."""
        stage = zero.STAGES[self.cfg.sharding]
        models = [*self.module.models(), *self.module.frozen_models()]
        zero.check_models(stage, models)
        dist.broadcast_parameters(params)
        config = zero.ds_config(stage, self.cfg.grad_clip, self.cfg.mixed_precision,
                                zero.extra_config(self.cfg.deepspeed))
        self.engine = zero.initialize(models, self.optimizer, config)
        log.info("DeepSpeed ZeRO-%d over %d processes", stage, dist.world_size())

    def _count_steps(self) -> int:
        per_epoch = sum(1 for _ in self.module.train_batches(0)) * self._updates_per_batch()
        total = per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _updates_per_batch(self) -> int:
        return getattr(self.module, "updates_per_batch", 1)

    def _resume(self) -> None:
        ckpt = latest_checkpoint(self.out / "checkpoints")
        if ckpt is None:
            log.info("no checkpoint in %s; starting from scratch", self.out / "checkpoints")
            return
        position, state = load_checkpoint(ckpt, self.named, self.optimizer, self.scheduler,
                                          self.engine)
        self.module.load_state_dict(state)
        self.step, self.epoch = position["step"], position["epoch"]
        self.batch_in_epoch = position["batch_in_epoch"]
        self.metrics.truncate_after(self.step)
        log.info("resumed from %s at step %d", ckpt, self.step)

    # ---- loop --------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, float]:
        self._setup(resume)
        last: dict[str, float] = {}
        with _graceful_stop(self):
            for m in self.module.models():
                m.train()
            progress = _progress(self)
            if self.step == 0 and self.cfg.eval_every:
                self.metrics.log(0, self._evaluate())  # the starting point of every curve
            while self.epoch < self.cfg.epochs and not self._done():
                for i, batch in enumerate(self.module.train_batches(self.epoch)):
                    if i < self.batch_in_epoch:
                        continue  # resumed: skip batches already trained on
                    last = self._train_batch(batch, i) or last
                    progress.update(self.step - progress.n)
                    if self._done() or self._stopping():
                        break
                if self._stop_signal is not None:
                    self.checkpoint()
                    raise SystemExit(128 + self._stop_signal)
                if not self._done():
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            progress.close()
        final = {**last, **self._evaluate(), **peak_memory_mb(), "train/steps": self.step}
        self.checkpoint()
        return final

    def _done(self) -> bool:
        return self.total_steps > 0 and self.step >= self.total_steps

    def _stopping(self) -> bool:
        """A signal reached this process or another one: every process stops together."""
        if dist.any_process(self._stop_signal is not None, self.accelerator.device):
            self._stop_signal = self._stop_signal or signal.SIGTERM
        return self._stop_signal is not None

    def _train_batch(self, batch, index: int) -> dict[str, float] | None:
        t0 = time.perf_counter()
        experience = self.module.rollout(batch)
        t_rollout = time.perf_counter() - t0
        rows = []
        t1 = time.perf_counter()
        for micro_batches in self.module.updates(experience, self.cfg.micro_batch_size):
            rows.append(self._optimizer_step(micro_batches, index))
            if self._done():
                break
        t_train = time.perf_counter() - t1
        self.batch_in_epoch = index + 1
        tokens = sum(r.pop("train/tokens") for r in rows)
        weight = sum(r.pop("train/weight") for r in rows)
        metrics = {**mean_metrics(rows), **self.module.rollout_metrics(),
                   "time/rollout": t_rollout, "time/train": t_train,
                   "time/step": time.perf_counter() - t0, "train/tokens": tokens,
                   "train/tokens_per_s": tokens / max(t_train, 1e-9),
                   "lr": self.scheduler.get_last_lr()[0], "epoch": self.epoch}
        self.module.after_step(self.step)
        if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
            metrics.update(self._evaluate())
        metrics = dist.reduce_metrics(metrics, weight)
        if self.step % max(self.cfg.log_every, 1) == 0:
            self.metrics.log(self.step, metrics)
        if self.cfg.save_every and self.step % self.cfg.save_every == 0:
            self.checkpoint()
        return metrics

    def _optimizer_step(self, micro_batches: list, index: int) -> dict[str, float]:
        """Σ_mb (w_mb / W)·∇loss_mb, W = Σ w over every micro-batch of every process, then
        gradients summed across processes: the gradient of the global batch's mean loss."""
        weights = [self.module.loss_weight(mb) for mb in micro_batches]
        total = dist.all_reduce_sum([sum(weights)], self.accelerator.device)[0]
        if self.collective:
            self._same_micro_batch_count(len(micro_batches))
        rows, tokens, bad = [], 0.0, None
        for i, (mb, w) in enumerate(zip(micro_batches, weights)):
            if self.zero:
                zero.micro_step(self.engine, last=i == len(micro_batches) - 1)
            with self.accelerator.autocast():
                loss, metrics = self.module.loss(mb)
            if not torch.isfinite(loss):
                bad = bad or _non_finite("loss", self.step + 1, index, mb, loss)
                if not self.collective:  # else the others wait for this process's passes
                    break
            if self.zero:
                zero.backward(self.engine, loss * (w / total), dist.world_size())
            elif w > 0 or self.sharded:  # FSDP: every process runs every backward
                self.accelerator.backward(loss * (w / total))
            tokens += metrics.pop("tokens", 0.0)
            rows.append(({"loss": loss.item(), **metrics}, w))
        if dist.any_process(bad is not None, self.accelerator.device):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(bad or f"non-finite loss on another process at step "
                                f"{self.step + 1}; stopping. The last good checkpoint is kept.")
        norm = self._zero_step() if self.zero else self._local_step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {**weighted_mean(rows), "grad_norm": norm, "train/tokens": tokens,
                "train/weight": sum(weights)}

    def _local_step(self) -> float:
        """Sum the replicas' gradients (FSDP summed the shards already), clip, update."""
        dist.sum_gradients([p for g in self.optimizer.param_groups for p in g["params"]
                            if not sharding.is_dtensor(p)])
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = sharding.total_norm_float(self.accelerator.clip_grad_norm_(params, max_norm))
        self._check_norm(norm)
        self.optimizer.step()
        return norm

    def _zero_step(self) -> float:
        """DeepSpeed reduces, clips and updates in one call; its norm is known only after
        it (a non-finite one stops the run before any checkpoint is written)."""
        norm = zero.step(self.engine)
        self._check_norm(norm)
        return norm

    def _check_norm(self, norm: float) -> None:
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(f"non-finite gradient norm ({norm}) at step {self.step + 1}; "
                                "the last good checkpoint is kept")

    def _evaluate(self) -> dict[str, float]:
        for m in self.module.models():
            m.eval()
        out = self.module.evaluate()
        probe = getattr(self.module, "probe", None)
        if probe is not None:
            out.update(probe())
        for m in self.module.models():
            m.train()
        return out

    def _same_micro_batch_count(self, n: int) -> None:
        """Under FSDP every forward and backward is a collective: a process with fewer
        micro-batches than another would leave it waiting forever. Fail instead."""
        minus_low, high = dist.all_reduce_max([-n, n], self.accelerator.device)
        low = -minus_low
        if low != high:
            raise TrainingError(f"train.sharding={self.cfg.sharding}: processes have {int(low)} to "
                                f"{int(high)} micro-batches at step {self.step + 1}; every "
                                "process must run the same number of forwards and backwards")

    def checkpoint(self) -> Path | None:
        """Every process calls it (gathering shards is collective); the main one writes
        full tensors, the format of an unsharded run."""
        if not (self.collective or self.accelerator.is_main_process):
            return None
        root = self.out / "checkpoints"
        tmp = dist.main_tmpdir(root, f".step-{self.step}-") if self.zero else None
        if tmp is not None:  # DeepSpeed's partitioned optimizer: every process writes
            zero.save(self.engine, tmp)
        with zero.gathered(*self.module.models()):
            params = trainable_state(self.named.items())
        optimizer = None if self.zero else sharding.full_optimizer_state(self.optimizer)
        if self.zero:
            dist.barrier()  # every partition written before the main process renames
        if not self.accelerator.is_main_process:
            return None
        position = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        return save_checkpoint(root, self.step, params, optimizer, self.scheduler, position,
                               self.module.state_dict(), keep=self.cfg.keep_checkpoints,
                               tmp=tmp)


def weighted_mean(rows: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Each key's mean over the micro-batches that report it, weighted by their loss weight
    (equal weights when they are all 0)."""
    if all(w == 0 for _, w in rows):
        return mean_metrics([m for m, _ in rows])
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for m, _ in rows for k in m):  # first-seen order
        have = [(w, float(m[key])) for m, w in rows if key in m]
        total = sum(w for w, _ in have)
        out[key] = sum(w * v for w, v in have) / total if total > 0 else have[0][1]
    return out


def _named_trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _non_finite(what, step, index, mb, value) -> str:
    ids = mb.get("ids") if isinstance(mb, dict) else None
    return (f"non-finite {what} ({value.item()}) at step {step}, batch {index}"
            + (f", examples {list(ids)[:8]}" if ids is not None else "")
            + "; stopping. The last good checkpoint is kept.")


def make_accelerator(cfg: TrainConfig, out: Path) -> Accelerator:
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                      log_with=cfg.report_to or None, project_dir=str(out))
    cfg.sharding = dist.check_supported(acc, cfg.sharding)
    return acc


def _progress(trainer: Trainer):
    from tqdm.auto import tqdm

    return tqdm(total=trainer.total_steps, initial=trainer.step, desc=trainer.module.name,
                disable=not trainer.cfg.progress or not trainer.accelerator.is_main_process,
                leave=False)


class _graceful_stop:
    """SIGTERM/SIGINT: finish the current step, write a checkpoint, exit."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.saved = trainer, {}

    def __enter__(self):
        def handler(signum, frame):
            self.trainer._stop_signal = signum

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.saved[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, h in self.saved.items():
            signal.signal(sig, h)
        return False


def write_summary(out: Path, summary: dict) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    tmp.rename(out / "summary.json")
