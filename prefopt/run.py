"""``prefopt run``: validate a recipe, build the algorithm module, train, save, summarise."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed

from prefopt.algorithms.registry import algorithm_spec
from prefopt.engine.distributed import local_only
from prefopt.engine.metrics import peak_memory_mb
from prefopt.engine.sharding import gathered
from prefopt.engine.trainer import Trainer, make_accelerator, write_summary
from prefopt.errors import TrainingError
from prefopt.eval.probe import attach_probe
from prefopt.policy.generate import GENERATED
from prefopt.recipe import RunConfig, dump_recipe

log = logging.getLogger(__name__)
MIN_FREE_MB = 200


@dataclass
class RunContext:
    """What an algorithm's ``build`` gets: the config, the run directory, the world."""

    cfg: RunConfig
    out: Path
    accelerator: object = None
    reports: dict = field(default_factory=dict)
    _world: object = None

    @property
    def world(self):
        if self._world is None and self.cfg.world is not None:
            from prefopt.worlds import get_world

            w = self.cfg.world
            self._world = get_world(w.name, preset=w.preset, seed=w.seed)
        return self._world

    @property
    def shard(self) -> tuple[int, int]:
        acc = self.accelerator
        return (acc.process_index, acc.num_processes) if acc is not None else (0, 1)


def check_output_dir(out: Path) -> None:
    """Fail before training if the run directory is not writable or the disk is full."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks run it at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"output directory {out} is not writable: {e}") from e
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise TrainingError(f"only {free_mb:.0f} MiB free under {out}; need at least "
                            f"{MIN_FREE_MB} MiB for checkpoints and the final model")


def run_recipe(cfg: RunConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train per ``cfg`` into ``out_dir``; returns the summary (also in summary.json).

    With ``resume=True`` a finished run is returned as is, and an interrupted one continues
    from its latest checkpoint.
    """
    out = Path(out_dir)
    if resume and (out / "summary.json").is_file() and (out / "final").is_dir():
        return json.loads((out / "summary.json").read_text())
    check_output_dir(out)
    accelerator = make_accelerator(cfg.train, out)
    if accelerator.is_main_process:  # only the main process writes into the run directory
        dump_recipe(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    generated = dict(GENERATED)
    ctx = RunContext(cfg, out, accelerator)
    if cfg.model.path.startswith("world:") and ctx.world is not None:
        # Built once by the main process (alone: no collectives), then read from the cache.
        with accelerator.main_process_first(), local_only():
            cfg.model.path = str(ctx.world.base_model_dir())  # the recipe's preset and seed
    if accelerator.num_processes > 1:  # an adapter start is merged once (cached) by rank 0
        from prefopt.policy.load import resolve_model_path

        with accelerator.main_process_first():
            resolve_model_path(cfg.model.path)
    set_seed(cfg.train.seed)  # before building: same adapter and head init on every process
    spec = algorithm_spec(cfg.algorithm)
    module = spec.build(ctx)
    attach_probe(ctx, module)
    if hasattr(module, "train_batches"):
        metrics = Trainer(module, cfg.train, out, ctx.accelerator).fit(resume=resume)
    else:  # nothing to train (best-of-n): ``save`` writes final/, ``summary`` the metrics
        metrics = module.summary()
    with gathered(*_models(module)):  # FSDP: every process gathers, the main one saves
        if ctx.accelerator.is_main_process:
            save_final(module, out)
    if ctx.accelerator.is_main_process:
        summary = {"algorithm": cfg.algorithm, **metrics, **peak_memory_mb(),
                   "time/total_s": time.perf_counter() - t0,
                   **{f"gen/{k}": v - generated[k] for k, v in GENERATED.items()},
                   "data": ctx.reports}
        write_summary(out, summary)
        return summary
    return metrics


def _models(module) -> list:
    models = getattr(module, "models", None)
    return list(models()) if models is not None else []


def save_final(module, out: Path) -> Path:
    """Write ``final/`` atomically: a temporary directory renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
    module.save(tmp)
    final = out / "final"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final
