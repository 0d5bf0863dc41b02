"""The speed levers of commit cca81aa, each timed on its own, before against after.

  python benchmarks/levers.py ASSETS OUT.json [--old e9f8487] [--reps 15]

One thread, the benchmark's tiny Llama (``benchmarks/assets.py``), alternating A and B:

  adamw    one optimizer step over the policy's parameters (random gradients):
           torch.optim.AdamW for-loop (``foreach=False``, what prefopt built before) against
           ``fused=True`` (prefopt.engine.optim.make_optimizer now)
  lm_head  prefopt.policy.logprobs.token_logprobs forward + backward on one SFT batch (the
           first 8 examples of the SFT data, right-padded): every position against
           ``where=`` the completion positions (what SFT, DPO and the RL losses pass now)
  startup  wall time of a fresh ``python -c "import prefopt.run, prefopt.cli"``: the ``--old``
           commit's prefopt (extracted with ``git archive``) against this checkout's

Writes every timing (wall and CPU seconds) and the medians to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's prefopt
torch.set_num_threads(1)


def cpu_now() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def alternate(a, b, reps: int) -> dict:
    """Time ``a()`` and ``b()`` alternately after one warm-up each: wall and CPU seconds per
    call (CPU time is less disturbed by other processes on a shared machine)."""
    a(), b()
    res = {k: [] for k in ("before", "after", "before_cpu", "after_cpu")}
    for _ in range(reps):
        for fn, key in ((a, "before"), (b, "after")):
            t0, c0 = time.perf_counter(), cpu_now()
            fn()
            res[key].append(time.perf_counter() - t0)
            res[key + "_cpu"].append(cpu_now() - c0)
    med = {f"{k}_median": statistics.median(v) for k, v in res.items()}
    return {**res, **med, "speedup": med["before_median"] / med["after_median"],
            "speedup_cpu": med["before_cpu_median"] / med["after_cpu_median"]}


def load_policy(assets: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)


def adamw(assets: Path, reps: int) -> dict:
    params = [p for p in load_policy(assets).parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    loop = torch.optim.AdamW(params, lr=1e-6, foreach=False)
    fused = torch.optim.AdamW(params, lr=1e-6, fused=True)
    return {"params": sum(p.numel() for p in params), "tensors": len(params),
            **alternate(loop.step, fused.step, reps)}


def sft_batch(assets: Path, rows: int = 8):
    """(ids, mask, where): prompt rendered + completion + EOS, right-padded; where marks the
    log-prob positions that score a completion token."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(assets / "policy")
    data = [json.loads(line) for line in
            (assets / "data" / "sft.trl.jsonl").read_text().splitlines()[:rows]]
    seqs = [(tok(r["prompt"])["input_ids"], tok(r["completion"])["input_ids"] + [3])
            for r in data]
    width = max(len(p) + len(c) for p, c in seqs)
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    comp = torch.zeros(rows, width, dtype=torch.bool)
    for i, (p, c) in enumerate(seqs):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, :len(p) + len(c)] = 1
        comp[i, len(p):len(p) + len(c)] = True
    return ids, mask, comp[:, 1:]


def lm_head(assets: Path, reps: int) -> dict:
    from prefopt.policy.logprobs import token_logprobs

    model = load_policy(assets)
    ids, mask, where = sft_batch(assets)

    def step(w):
        def run():
            logp = token_logprobs(model, ids, mask, where=w)
            (logp * where).sum().backward()
            model.zero_grad(set_to_none=True)
        return run

    return {"rows": ids.shape[0], "width": ids.shape[1], "positions": where.numel(),
            "completion_positions": int(where.sum()),
            **alternate(step(None), step(where), reps)}


def startup(old_rev: str, reps: int) -> dict:
    tar = subprocess.run(["git", "archive", old_rev, "prefopt"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    with tempfile.TemporaryDirectory() as old_root:
        with tarfile.open(fileobj=BytesIO(tar)) as t:
            t.extractall(old_root, filter="data")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        code = "import prefopt.run, prefopt.cli"

        def importer(root):
            return lambda: subprocess.run([sys.executable, "-c", code], check=True,
                                          env={**env, "PYTHONPATH": str(root)}, cwd=root)

        out = alternate(importer(old_root), importer(ROOT), reps)
    return {"old_rev": old_rev, "command": f'python -c "{code}"', **out}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("assets")
    ap.add_argument("out")
    ap.add_argument("--old", default="e9f8487", help="the commit before the levers")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    assets = Path(args.assets)
    res = {"loadavg_start": os.getloadavg(), "threads": torch.get_num_threads(),
           "adamw": adamw(assets, args.reps), "lm_head": lm_head(assets, args.reps),
           "startup": startup(args.old, max(3, args.reps // 3))}
    res["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    for k in ("adamw", "lm_head", "startup"):
        r = res[k]
        print(f"{k:8s} before {r['before_median'] * 1e3:8.1f} ms  after "
              f"{r['after_median'] * 1e3:8.1f} ms  speedup {r['speedup']:.2f}x  (CPU: "
              f"{r['before_cpu_median'] * 1e3:.1f} -> {r['after_cpu_median'] * 1e3:.1f} ms, "
              f"{r['speedup_cpu']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
