"""The prefopt side of the benchmark: ``prefopt run RECIPE --out DIR``, plus CPU time per step.

  python benchmarks/prefopt_side.py RECIPE.yaml RUN_DIR

Runs the real CLI entry point (``prefopt.cli.main(["run", ...])``) in this process. The only
addition is a measurement wrapper around the engine's optimizer step and batch step that
records the process CPU time (``time.process_time``) each takes, written to
RUN_DIR/cpu_steps.json as {"step": {optimizer step: CPU s}, "batch": {last step: CPU s},
"positions": {optimizer step: padded positions (rows x width) of its micro-batches}}. Throughput in wall time comes from the engine's own
metrics.jsonl (``train/tokens``, ``time/train``); the CPU-time figure is the same count over
CPU seconds, which other processes on a shared machine disturb far less than wall time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's prefopt, whatever an editable install points at


def main(argv: list[str]) -> int:
    recipe, run_dir = argv[0], Path(argv[1])
    import prefopt
    from prefopt.cli import main as prefopt_main
    from prefopt.engine.trainer import Trainer

    cpu: dict[int, float] = {}
    positions: dict[int, int] = {}
    batch_cpu: dict[int, float] = {}
    step, train_batch = Trainer._optimizer_step, Trainer._train_batch

    def timed_step(self, micro_batches, index):
        c0 = time.process_time()
        out = step(self, micro_batches, index)
        cpu[self.step] = time.process_time() - c0  # self.step: this step's number (1-based)
        positions[self.step] = sum(  # padded positions (rows x width) through forward+backward
            (mb["input_ids"] if isinstance(mb, dict) else mb.input_ids).numel()
            for mb in micro_batches)
        return out

    def timed_batch(self, batch, index):
        c0 = time.process_time()
        out = train_batch(self, batch, index)
        batch_cpu[self.step] = time.process_time() - c0  # rollout + updates + logging
        return out

    Trainer._optimizer_step = timed_step
    Trainer._train_batch = timed_batch
    rc = prefopt_main(["run", recipe, "--out", str(run_dir)])
    (run_dir / "cpu_steps.json").write_text(json.dumps({
        "step": cpu, "batch": batch_cpu, "positions": positions, "prefopt": prefopt.__file__}))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
