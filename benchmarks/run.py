"""prefopt against the reference library (TRL), side by side, on CPU.

  python benchmarks/run.py [--quick] [--reps N] [--tasks sft,reward,dpo,ppo,rloo,grpo] --out DIR

Needs two TRL virtual environments next to the main one (never TRL in the main one); see
benchmarks/README.md. Paths: TRL116_PYTHON (default /tmp/trl116-venv/bin/python) and
TRL024_PYTHON (default /tmp/trl024-venv/bin/python).

What it does (every number is measured in this run, on this machine):

1. builds the assets once (``benchmarks/assets.py``): a random tiny Llama, one tokenizer,
   generated SFT / preference / prompt data, a reward model in both formats;
2. for each task, runs the prefopt side (``prefopt run RECIPE`` through
   ``benchmarks/prefopt_side.py``, which adds CPU time per step) and the TRL side
   (``benchmarks/trl_side.py`` with the TRL venv's python) ALTERNATELY, ``--reps`` times,
   each in its own process, with OMP_NUM_THREADS=1 / MKL_NUM_THREADS=1 and
   torch.set_num_threads(1) on both sides (PREFOPT_NUM_THREADS=1 for prefopt);
3. times a large fp32 matmul (the peak dense FLOP/s of one thread) for the MFU figure;
4. runs the rollout-generation benchmark (``benchmarks/generation.py``);
5. writes ``OUT/results.json`` (every raw number) and ``OUT/results.md`` (the tables).

Per run it records:
  wall_s       whole-process wall time (spawn to exit: imports, loading, data prep, training,
               saving), measured by this parent process
  peak_rss_mb  ru_maxrss of that child process (os.wait4), MiB
  cpu_s        user + system CPU seconds of that child (less sensitive to other load than
               wall time on a shared machine)
  tokens_per_s training tokens per second: Σ tokens / Σ train time over all the optimizer
               steps (the same examples on both sides, whatever the order). tokens = non-
               padding tokens (attention_mask.sum()) of the rows that went through forward +
               backward, counted once per row per step (PPO: the policy's rows; the critic's
               forward of the same rows is not counted again). prefopt: the engine's
               ``train/tokens`` and ``time/train``; TRL: see ``trl_side.py``.
  padding_efficiency  tokens / padded positions (rows x padded width) of those steps: the
               two sides shuffle differently, so their batches carry different padding
  positions_per_s  padded positions per second of training time: the compute rate with the
               batch-composition difference taken out
  tokens_per_cpu_s  the same tokens over the CPU seconds (process_time) of the same steps:
               the implementations' cost with other processes' load mostly factored out
  PPO, RLOO, GRPO also  iter_s (one rollout + its ppo_epochs x n_minibatches updates),
               rollout_s, train_s, iter_cpu_s (CPU seconds of an iteration): medians over the
               iterations. RLOO and GRPO also gen_tokens: tokens generated per rollout (up to
               and including EOS), to check (or normalise by) the generation work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import assets as assets_mod  # noqa: E402
import report  # noqa: E402

TRL116 = Path(os.environ.get("TRL116_PYTHON", "/tmp/trl116-venv/bin/python"))
TRL024 = Path(os.environ.get("TRL024_PYTHON", "/tmp/trl024-venv/bin/python"))
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PREFOPT_NUM_THREADS": "1",
              "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
              "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
              "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}

# Matched settings. Full: steps x batch = the data set, one epoch, so both sides see the same
# examples and the same token total. LR values do not change the work done.
FULL = {
    "sft": {"steps": 20, "batch_size": 8, "lr": 1e-5, "max_length": 160},
    "reward": {"steps": 12, "batch_size": 8, "lr": 1e-5, "max_length": 160},
    "dpo": {"steps": 12, "batch_size": 8, "lr": 1e-6, "max_length": 160, "beta": 0.1},
    "ppo": {"iterations": 6, "batch_size": 8, "lr": 1e-6, "max_new_tokens": 48,
            "temperature": 0.7, "kl_coef": 0.05, "ppo_epochs": 4, "n_minibatches": 1},
    # 8 prompts x k = 4 samples = 32 rows per rollout; 2 epochs x 2 minibatches of 16 rows = 4
    # optimizer updates per rollout (TRL: num_iterations = 2, steps_per_generation = 2,
    # per_device_train_batch_size = 16). 6 rollouts = the 48 prompts once. With more than one
    # update per rollout TRL GRPO computes log pi_old in the rollout, as prefopt always does.
    "rloo": {"iterations": 6, "batch_size": 8, "k": 4, "lr": 1e-6, "max_new_tokens": 48,
             "temperature": 0.7, "beta": 0.05, "ppo_epochs": 2, "n_minibatches": 2},
    "grpo": {"iterations": 6, "batch_size": 8, "k": 4, "lr": 1e-6, "max_new_tokens": 48,
             "temperature": 0.7, "beta": 0.04, "ppo_epochs": 2, "n_minibatches": 2},
}
RL_TASKS = ("ppo", "rloo", "grpo")  # one logged row per rollout (an iteration of updates)
QUICK = {
    "sft": {**FULL["sft"], "steps": 6},
    "reward": {**FULL["reward"], "steps": 5},
    "dpo": {**FULL["dpo"], "steps": 5},
    "ppo": {**FULL["ppo"], "iterations": 3},
    "rloo": {**FULL["rloo"], "iterations": 3},
    "grpo": {**FULL["grpo"], "iterations": 3},
}
TRL_PYTHON = {"sft": TRL116, "reward": TRL116, "dpo": TRL116, "ppo": TRL024,
              "rloo": TRL116, "grpo": TRL116}


# ---- the prefopt side ----------------------------------------------------------------
def prefopt_recipe(task: str, assets: Path, s: dict) -> dict:
    """The recipe that matches the TRL side's settings field by field."""
    data_dir = assets / "data"
    train = {"lr": s["lr"], "epochs": 1, "batch_size": s["batch_size"],
             "micro_batch_size": s["batch_size"], "lr_scheduler": "linear", "grad_clip": 1.0,
             "seed": 0, "log_every": 1, "progress": False}
    if s.get("bf16"):
        train["mixed_precision"] = "bf16"  # autocast around the loss (weights stay fp32)
    model = {"path": str(assets / "policy"), "mode": "full", "dtype": "float32"}
    r: dict = {"algorithm": task, "world": None, "model": model, "train": train}
    if task == "sft":
        r["data"] = {"train": str(data_dir / "sft.prefopt.jsonl"), "max_length": s["max_length"]}
        r["train"]["max_steps"] = s["steps"]
        r["sft"] = {"completion_only": True,
                    "group_by_length": bool(s.get("group_by_length", False))}
    elif task == "reward":
        r["data"] = {"train": str(data_dir / "pairs.prefopt.jsonl"),
                     "max_length": s["max_length"]}
        r["train"]["max_steps"] = s["steps"]
        r["reward"] = {"normalize": False,  # TRL has no post-training normalisation pass
                       "group_by_length": bool(s.get("group_by_length", False))}
    elif task == "dpo":
        r["data"] = {"train": str(data_dir / "pairs.prefopt.jsonl"),
                     "max_length": s["max_length"]}
        r["train"]["max_steps"] = s["steps"]
        r["dpo"] = {"loss": "dpo", "beta": s["beta"], "reference": "live",
                    "eval_kl_prompts": 0, "group_by_length": bool(s.get("group_by_length", False))}
    elif task == "ppo":
        r["data"] = {"train": str(data_dir / "prompts.prefopt.jsonl")}
        steps_per_iter = s["ppo_epochs"] * s["n_minibatches"]
        r["train"]["max_steps"] = s["iterations"] * steps_per_iter
        r["ppo"] = {"reward": str(assets / "reward_prefopt"), "value_init": "reward",
                    "sampling": {"max_new_tokens": s["max_new_tokens"],
                                 "temperature": s["temperature"]},
                    "kl_coef": s["kl_coef"], "ppo_epochs": s["ppo_epochs"],
                    "n_minibatches": s["n_minibatches"], "missing_eos_penalty": -1.0,
                    "forward_batch_size": s["batch_size"],
                    "generation_batch_size": s["batch_size"]}
    elif task in ("rloo", "grpo"):
        r["data"] = {"train": str(data_dir / "prompts.prefopt.jsonl")}
        r[task] = pg_params(task, assets, s)
        r["train"]["max_steps"] = s["iterations"] * s["ppo_epochs"] * s["n_minibatches"]
        r["train"]["micro_batch_size"] = pg_minibatch_rows(s)  # one micro-batch per update
    return r


def pg_minibatch_rows(s: dict) -> int:
    """RLOO/GRPO: rows per optimizer update (= TRL's per_device_train_batch_size)."""
    return s["batch_size"] * s["k"] // s["n_minibatches"]


def pg_params(task: str, assets: Path, s: dict) -> dict:
    """The rloo: / grpo: section. Matched to TRL 1.16: no EOS penalty (TRL has none), the
    reference and KL coefficient equal, rollout forwards in chunks of one update's rows (TRL
    chunks them by per_device_train_batch_size), all rows in one generate call (as TRL)."""
    p = {"reward": str(assets / "reward_prefopt"),
         "sampling": {"max_new_tokens": s["max_new_tokens"], "temperature": s["temperature"]},
         "cliprange": 0.2, "missing_eos_penalty": None, "ppo_epochs": s["ppo_epochs"],
         "n_minibatches": s["n_minibatches"], "forward_batch_size": pg_minibatch_rows(s),
         "generation_batch_size": s["batch_size"] * s["k"]}
    if task == "rloo":  # KL (k1, summed over the sequence) folded into the reward, as in TRL
        p.update(rloo_k=s["k"], kl_coef=s["beta"], kl_estimator="k1",
                 normalize_advantages=False)
    else:  # k3 KL term in the loss, group-std scaling, as in TRL
        p.update(group_size=s["k"], beta=s["beta"], scale_rewards=True)
    return p


def read_prefopt(out: Path, task: str, s: dict) -> dict:
    """Per logged row (one batch: one optimizer step, or one PPO iteration of several):
    tokens and time/train from metrics.jsonl, CPU seconds from cpu_steps.json."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if "train/tokens" in r]
    cpu_log = json.loads((out / "cpu_steps.json").read_text())
    if not Path(cpu_log["prefopt"]).resolve().is_relative_to(ROOT):
        raise RuntimeError(f"measured {cpu_log['prefopt']}, not this checkout's prefopt")
    cpu = {int(k): v for k, v in cpu_log["step"].items()}
    batch_cpu = {int(k): v for k, v in cpu_log["batch"].items()}
    positions = {int(k): v for k, v in cpu_log["positions"].items()}
    steps, prev = [], 0
    for r in rows:  # row "step" = the last optimizer step of its batch
        mine = [k for k in cpu if prev < k <= r["step"]]
        steps.append({"tokens": r["train/tokens"], "time": r["time/train"],
                      "cpu": sum(cpu[k] for k in mine),
                      "positions": sum(positions[k] for k in mine)})
        prev = r["step"]
    if task in RL_TASKS:
        for st, r in zip(steps, rows):
            st.update(iter_s=r["time/step"], rollout_s=r["time/rollout"],
                      iter_cpu_s=batch_cpu[r["step"]])
            if "k" in s:  # response/length: mean response tokens (EOS included) per row
                st["gen_tokens"] = r["response/length"] * s["batch_size"] * s["k"]
    return {"steps": steps}


# ---- running one side ----------------------------------------------------------------
def spawn(cmd: list[str], log: Path, env: dict) -> dict:
    """Run ``cmd``; its wall time and its own ru_maxrss (not its parent's, not siblings')."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    with log.open("w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                             env={**os.environ, **env})
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {p.returncode}; log {log}:\n{tail}")
    return {"wall_s": wall, "peak_rss_mb": ru.ru_maxrss / 1024, "loadavg_1m": load[0],
            "user_s": ru.ru_utime, "sys_s": ru.ru_stime}


def run_prefopt(task: str, assets: Path, s: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(prefopt_recipe(task, assets, s), sort_keys=False))
    run_dir = out / "run"
    m = spawn([sys.executable, str(HERE / "prefopt_side.py"), str(recipe), str(run_dir)],
              out / "log.txt", THREAD_ENV)
    return {**m, **read_prefopt(run_dir, task, s)}


def run_trl(task: str, assets: Path, s: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    m = spawn([str(TRL_PYTHON[task]), str(HERE / "trl_side.py"), task, str(assets), str(out),
               json.dumps(s)], out / "log.txt", THREAD_ENV)
    res = json.loads((out / "trl_result.json").read_text())
    return {**m, "steps": res["steps"], "versions": res["versions"],
            "gradient_checkpointing": res.get("gradient_checkpointing")}


def summarize_run(r: dict, task: str) -> dict:
    """One run's numbers. Throughput over all optimizer steps: with steps x batch = the data
    set, both sides then do exactly the same work (same examples, same token total)."""
    steps = r["steps"]
    steady = steps
    out = {"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
           "cpu_s": r["user_s"] + r["sys_s"], "loadavg_1m": r["loadavg_1m"],
           "tokens_total": sum(st["tokens"] for st in steps),
           "train_s_total": sum(st["time"] for st in steps),
           "tokens_per_s": sum(st["tokens"] for st in steady) / sum(st["time"] for st in steady),
           "tokens_per_cpu_s": (sum(st["tokens"] for st in steady)
                                / sum(st["cpu"] for st in steady)),
           "padding_efficiency": (sum(st["tokens"] for st in steps)
                                  / sum(st["positions"] for st in steps)),
           "positions_per_s": (sum(st["positions"] for st in steady)
                               / sum(st["time"] for st in steady))}
    if task in RL_TASKS:
        out.update(iter_s=statistics.median(st["iter_s"] for st in steady),
                   rollout_s=statistics.median(st["rollout_s"] for st in steady),
                   train_s=statistics.median(st["time"] for st in steady),
                   iter_cpu_s=statistics.median(st["iter_cpu_s"] for st in steady))
        if all("gen_tokens" in st for st in steady):
            out["gen_tokens"] = statistics.median(st["gen_tokens"] for st in steady)
    return out


# ---- peak FLOP/s ----------------------------------------------------------------------
PEAK_CODE = r"""
import json, sys, time, torch
torch.set_num_threads(1)
n, dtype = int(sys.argv[1]), getattr(torch, sys.argv[3])
a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
for _ in range(2): a @ b
ts = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
print(json.dumps({"n": n, "times_s": ts, "flops": 2 * n ** 3}))
"""


def peak_flops(n: int = 2048, reps: int = 8, dtype: str = "float32") -> dict:
    """Dense matmul FLOP/s on one thread: best and median of ``reps`` (n x n) @ (n x n)."""
    out = subprocess.run([sys.executable, "-c", PEAK_CODE, str(n), str(reps), dtype],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, **THREAD_ENV})
    d = json.loads(out.stdout)
    rates = [d["flops"] / t for t in d["times_s"]]
    return {"n": n, "dtype": dtype, "threads": 1, "best_flops": max(rates),
            "median_flops": statistics.median(rates), "loadavg_1m": os.getloadavg()[0]}


# ---- machine --------------------------------------------------------------------------
def machine() -> dict:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()

    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "torch": torch.__version__,
            "loadavg_start": os.getloadavg(), "prefopt_root": str(ROOT),
            "git_head": git("rev-parse", "--short", "HEAD"),
            "git_modified_files": len(git("status", "--porcelain").splitlines()),
            "prefopt_uncommitted": git("status", "--porcelain", "--", "prefopt").splitlines()}


# ---- main -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "results"),
                    help="results.json, results.md and generation.json go here")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "prefopt-bench"),
                    help="assets and run directories (models, checkpoints: kept out of --out)")
    ap.add_argument("--quick", action="store_true", help="fewer steps, one repetition")
    ap.add_argument("--reps", type=int, default=None, help="alternating repetitions (3)")
    ap.add_argument("--tasks", default="sft,reward,dpo,ppo,rloo,grpo")
    ap.add_argument("--no-generation", action="store_true")
    ap.add_argument("--group-by-length", action="store_true",
                    help="SFT, reward and DPO: length-grouped batches on both sides (prefopt "
                         "sft/reward/dpo.group_by_length, TRL "
                         "train_sampling_strategy='group_by_length')")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast on both sides (prefopt train.mixed_precision=bf16, TRL "
                         "bf16=True); SFT, reward and DPO only")
    return ap.parse_args(argv)


def task_settings(args: argparse.Namespace) -> dict[str, dict]:
    settings = QUICK if args.quick else FULL
    if args.bf16:
        settings = {t: {**v, "bf16": True} for t, v in settings.items() if t not in RL_TASKS}
    if args.group_by_length:
        settings = {t: {**settings[t], "group_by_length": True}
                    for t in ("sft", "reward", "dpo")}
    return settings


def run_task(task: str, settings: dict, reps: int, assets: Path, work: Path,
             results: dict) -> None:
    """``reps`` runs per side, alternating which side goes first, so drifting load hits both
    alike; appends each run's summary to results["runs"][task]."""
    if not TRL_PYTHON[task].exists():
        print(f"{task}: {TRL_PYTHON[task]} missing; TRL side skipped", flush=True)
    results["runs"][task] = {"prefopt": [], "trl": []}
    for rep in range(reps):
        order = ("prefopt", "trl") if rep % 2 == 0 else ("trl", "prefopt")
        for side in order:
            if side == "trl" and not TRL_PYTHON[task].exists():
                continue
            run_dir = work / "runs" / task / f"{side}-{rep}"
            shutil.rmtree(run_dir, ignore_errors=True)
            fn = run_prefopt if side == "prefopt" else run_trl
            r = fn(task, assets, settings, run_dir)
            s = summarize_run(r, task)
            if side == "trl":
                results["trl_versions"] = {**results.get("trl_versions", {}),
                                           task: r["versions"]}
            extra = ({"gradient_checkpointing": r["gradient_checkpointing"]}
                     if side == "trl" else {})
            results["runs"][task][side].append({**s, "steps": r["steps"], **extra})
            print(f"{task:7s} {side:7s} rep {rep}: wall {s['wall_s']:.1f}s  "
                  f"{s['tokens_per_s']:.0f} tok/s  rss {s['peak_rss_mb']:.0f} MiB  "
                  f"load {s['loadavg_1m']:.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = task_settings(args)
    reps = args.reps or (1 if args.quick else 3)
    tasks = [t for t in args.tasks.split(",") if t and t in settings]

    t_start = time.perf_counter()
    results: dict = {"machine": machine(), "settings": {t: settings[t] for t in tasks},
                     "reps": reps, "quick": args.quick, "bf16": args.bf16,
                     "group_by_length": args.group_by_length, "runs": {},
                     "thread_env": THREAD_ENV}
    work = Path(args.work).resolve()
    assets = work / "assets"
    print(f"building assets in {assets}", flush=True)
    results["assets"] = assets_mod.build_all(assets)
    results["peak"] = [peak_flops()]
    for task in tasks:
        run_task(task, settings[task], reps, assets, work, results)
    results["peak"].append(peak_flops())
    # context only (every run here is fp32): what bf16 matmuls reach on this CPU
    results["peak_bf16"] = peak_flops(dtype="bfloat16")

    if not args.no_generation:
        gen_out = out / "generation.json"
        subprocess.run([sys.executable, str(HERE / "generation.py"), str(assets),
                        str(gen_out), "--reps", str(2 if args.quick else 5)],
                       check=True, cwd=ROOT, env={**os.environ, **THREAD_ENV})
        results["generation"] = json.loads(gen_out.read_text())

    results["machine"]["loadavg_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - t_start
    results["summary"] = report.summarize(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(report.markdown(results))
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
