"""What changed between two sets of benchmark invocations (e.g. before and after a commit).

  python benchmarks/changes.py --before A/results.json [B/results.json ...] \
      --after X/results.json [Y/results.json ...] --out DIR

Pools the runs of each set (as ``report.py`` does) and writes ``DIR/changes.md`` and
``DIR/changes.json``: per task and side, median (min–max) before and after, the ratio of the
medians (after / before) and whether the two ranges separate. TRL's code is the same in both
sets, so its rows show how much the machine alone moved the numbers; prefopt's rows carry
that noise plus prefopt's own change. Metrics:

  tokens_per_s      training tokens per second of training wall time
  tokens_per_cpu_s  the same per CPU second (less disturbed by other processes)
  other_cpu_s       CPU seconds of the process outside the optimizer steps (imports, loading,
                    data preparation, saving; RL tasks: also the rollouts)
  iter_cpu_s        RL tasks: CPU seconds per iteration (rollout + updates)
  peak_rss_mb       peak resident memory
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("tokens_per_s", "tokens_per_cpu_s", "other_cpu_s", "iter_cpu_s", "peak_rss_mb")
HIGHER_IS_BETTER = {"tokens_per_s", "tokens_per_cpu_s"}


def runs_of(paths: list[str]) -> dict:
    """{task: {side: [run, ...]}} over every invocation in ``paths``."""
    out: dict = {}
    for p in paths:
        res = json.loads(Path(p).read_text())
        for task, sides in res["runs"].items():
            for side, runs in sides.items():
                out.setdefault(task, {}).setdefault(side, []).extend(runs)
    return out


def metric(run: dict, name: str) -> float | None:
    if name == "other_cpu_s":
        return run["cpu_s"] - sum(st["cpu"] for st in run["steps"])
    return run.get(name)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def compare(before: dict, after: dict) -> dict:
    out: dict = {}
    for task in after:
        for side in ("prefopt", "trl"):
            b, a = before.get(task, {}).get(side, []), after[task].get(side, [])
            for m in METRICS:
                vb = [v for v in (metric(r, m) for r in b) if v is not None]
                va = [v for v in (metric(r, m) for r in a) if v is not None]
                if not vb or not va:
                    continue
                sb, sa = spread(vb), spread(va)
                out.setdefault(task, {}).setdefault(side, {})[m] = {
                    "before": sb, "after": sa, "ratio": sa["median"] / sb["median"],
                    "separate": sa["min"] > sb["max"] or sa["max"] < sb["min"]}
    return out


def _fmt(s: dict, digits: int) -> str:
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"


def markdown(ch: dict, before: list[str], after: list[str]) -> str:
    lines = ["# Changes between benchmark invocations", "",
             "before: " + ", ".join(before), "", "after: " + ", ".join(after), "",
             "Median (min–max) over the pooled runs; ratio = after / before of the medians; "
             "'yes' where the ranges do not overlap.", "",
             "| task | side | metric | before | after | ratio | ranges separate |",
             "|---|---|---|---|---|---|---|"]
    for task, sides in ch.items():
        for side, ms in sides.items():
            for m, c in ms.items():
                d = 0 if m in ("tokens_per_s", "tokens_per_cpu_s", "peak_rss_mb") else 2
                lines.append(f"| {task} | {side} | {m} | {_fmt(c['before'], d)} "
                             f"(n={c['before']['n']}) | {_fmt(c['after'], d)} "
                             f"(n={c['after']['n']}) | {c['ratio']:.2f}× | "
                             f"{'yes' if c['separate'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", nargs="+", required=True)
    ap.add_argument("--after", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ch = compare(runs_of(args.before), runs_of(args.after))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "changes.json").write_text(json.dumps(
        {"before": args.before, "after": args.after, "changes": ch}, indent=2))
    (out / "changes.md").write_text(markdown(ch, args.before, args.after))
    print((out / "changes.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
