"""Per-step split (ms) of profile_step.py outputs: DIR/TASK-prefopt-cprofile.txt and -ops.txt.

  python split.py DIR [DIR ...]

The figures in docs/performance.md, "Where the time goes". 4 profiled steps (PPO: iterations).
Times are cProfile's cumulative (wall) seconds; AdamW is torch.profiler's
``Optimizer.step#AdamW.step`` CPU total; clip is ``_clip`` (before cca81aa) or ``_local_step``
minus AdamW (after). A figure that fell off the printed tables is None.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROW = re.compile(r"\s*([\d/]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(.*)$")


def cprofile_rows(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        m = ROW.match(line)
        if m:
            out.setdefault(m.group(6), float(m.group(4)))
    return out


def get(rows: dict[str, float], pattern: str) -> float | None:
    hits = [v for k, v in rows.items() if re.search(pattern, k)]
    return max(hits) if hits else None


def seconds(text: str) -> float:
    v = float(re.match(r"[\d.]+", text).group())
    if text.endswith("ms"):
        return v / 1e3
    if text.endswith("us"):
        return v / 1e6
    return v


def ops(path: Path) -> dict:
    t = path.read_text()
    m = re.search(r"Optimizer.step#AdamW.step\s+\S+\s+\S+\s+\S+\s+(\S+)", t)
    mm = re.search(r"aten::mm\s+([\d.]+)%", t)
    return {"adamw": seconds(m.group(1)) if m else None,
            "mm_pct": float(mm.group(1)) if mm else None}


def split(d: Path, task: str, n: int = 4) -> dict:
    r = cprofile_rows(d / f"{task}-prefopt-cprofile.txt")
    o = ops(d / f"{task}-prefopt-ops.txt")
    x = {"total": get(r, r"trainer.py:\d+\(_train_batch\)"), "backward": get(r, r"run_backward"),
         "adamw": o["adamw"]}
    local, clip = get(r, r"trainer.py:\d+\(_local_step\)"), get(r, r"trainer.py:\d+\(_clip\)")
    if clip is None and local is not None and x["adamw"] is not None:
        clip = local - x["adamw"]
    x["clip"] = clip
    if task == "sft":
        x["fwd"] = get(r, r"sft.py:\d+\(loss\)")
    if task == "dpo":
        x["ref"] = get(r, r"reference_token_logprobs")
        x["fwd"] = get(r, r"dpo.py:\d+\(loss\)") - x["ref"]
    if task == "ppo":
        x["rollout"] = get(r, r"ppo.py:\d+\(rollout\)")
        x["generate"] = get(r, r"policy.py:\d+\(generate\)")
        x["nograd_fwd"] = get(r, r"rollout.py:\d+\(make_experience\)") - x["generate"]
        x["updates"] = get(r, r"trainer.py:\d+\(_optimizer_step\)")
        x["loss"] = get(r, r"ppo.py:\d+\(loss\)")
        x["opt_rest"] = x["updates"] - x["loss"] - x["backward"]
    out = {k: (round(v / n * 1000, 1) if v is not None else None) for k, v in x.items()}
    out["mm_pct"] = o["mm_pct"]
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        for task in ("sft", "dpo", "ppo"):
            if (Path(arg) / f"{task}-prefopt-cprofile.txt").exists():
                print(arg, task, json.dumps(split(Path(arg), task)))
