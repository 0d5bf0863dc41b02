"""Medians, spreads, ratios and MFU from ``run.py``'s raw results; the markdown tables.

MFU (model FLOPs utilisation) = achieved training FLOP/s / peak dense FLOP/s, where the
peak is the best fp32 (2048 x 2048) @ (2048 x 2048) matmul rate on one thread measured in the
same run (before and after the training runs), and the achieved rate is tokens/s x FLOPs
per training token. "MFU (wall)" uses tokens per second of training wall time; "MFU (CPU)"
tokens per CPU second of the same steps (what the process got of its core on a shared
machine; the best-of-N peak is close to a full core):

  N      = parameters that take part in matmuls: all but the input-embedding table (a
           lookup); N_bb = N without the LM head (what a scalar head model uses)
  sft    6·N          forward 2N + backward 4N (full fine-tuning)
  reward 6·N_bb       the LM head is not used; the (H -> 1) head is negligible
  dpo    6·N + 2·N    the policy's forward+backward and the frozen reference's forward
  ppo    6·N + 6·N_bb the policy and the critic, both trained, over the same rows
           (train phase only; the rollout's generation and no-grad forwards are not in it)
  rloo, grpo  6·N    the policy only (no critic); train phase only, as for PPO

Attention-score FLOPs (≈ 4·layers·T·hidden per token forward, ~5% here) are left out, as in
the 6N rule. Under LoRA the count would be forward 2·N_total + backward 2·N_total
(activation gradients through the frozen weights) + 2·N_lora (weight gradients); every run
here is full fine-tuning.
"""

from __future__ import annotations

import json
import statistics

TARGETS = {"sft": 1.5, "reward": 1.5, "dpo": 1.5, "ppo": 2.0,
           "rloo": 1.5, "grpo": 1.5}  # RLOO/GRPO: no target was set; 1.5x is a yardstick
RL_TASKS = ("ppo", "rloo", "grpo")  # compared per iteration (one rollout + its updates)
METRICS = ("wall_s", "cpu_s", "tokens_per_s", "tokens_per_cpu_s", "padding_efficiency",
           "positions_per_s", "peak_rss_mb", "iter_s",
           "iter_cpu_s", "rollout_s", "train_s", "gen_tokens",
           "loadavg_1m")


def flops_per_token(task: str, a: dict) -> float:
    n, n_bb = a["params_matmul"], a["params_backbone_matmul"]
    return {"sft": 6 * n, "reward": 6 * n_bb, "dpo": 8 * n, "ppo": 6 * n + 6 * n_bb,
            "rloo": 6 * n, "grpo": 6 * n}[task]


def _cpu_split(runs: list[dict]) -> dict:
    """RL tasks: CPU seconds per iteration in the updates (the steps' ``cpu``) and outside
    them (iteration CPU minus that: the rollout and the loop's own work); per run the median
    over its iterations, then the spread over runs."""
    def med(r, f):
        return statistics.median(f(st) for st in r["steps"])

    return {"train_cpu_s": spread([med(r, lambda st: st["cpu"]) for r in runs]),
            "rollout_cpu_s": spread([med(r, lambda st: st["iter_cpu_s"] - st["cpu"])
                                     for r in runs])}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(results: dict) -> dict:
    peak = max(p["best_flops"] for p in results["peak"])
    out = {"peak_flops": peak}
    if results.get("bf16") and "peak_bf16" in results:  # MFU against the dtype's own peak
        peak = out["peak_flops_mfu"] = results["peak_bf16"]["best_flops"]
    for task, sides in results["runs"].items():
        t = {}
        for side, runs in sides.items():
            if runs:
                t[side] = {m: spread([r[m] for r in runs]) for m in METRICS
                           if all(m in r for r in runs)}
                t[side]["tokens_total"] = [r["tokens_total"] for r in runs]
                if task in RL_TASKS and all("iter_cpu_s" in st for r in runs
                                            for st in r["steps"]):
                    t[side].update(_cpu_split(runs))
                fpt = flops_per_token(task, results["assets"])
                t[side]["mfu"] = spread([r["tokens_per_s"] * fpt / peak for r in runs])
                t[side]["mfu_cpu"] = spread([r["tokens_per_cpu_s"] * fpt / peak for r in runs])
        if "prefopt" in t and "trl" in t:
            p, q = t["prefopt"], t["trl"]
            t["ratio"] = {
                "throughput": p["tokens_per_s"]["median"] / q["tokens_per_s"]["median"],
                "throughput_cpu": (p["tokens_per_cpu_s"]["median"]
                                   / q["tokens_per_cpu_s"]["median"]),
                **({"positions": p["positions_per_s"]["median"] / q["positions_per_s"]["median"]}
                   if "positions_per_s" in p and "positions_per_s" in q else {}),
                "memory": p["peak_rss_mb"]["median"] / q["peak_rss_mb"]["median"],
                "wall": p["wall_s"]["median"] / q["wall_s"]["median"],
                "cpu": p["cpu_s"]["median"] / q["cpu_s"]["median"],
            }
            if task in RL_TASKS:
                t["ratio"]["iteration_speedup"] = q["iter_s"]["median"] / p["iter_s"]["median"]
                t["ratio"]["iteration_speedup_cpu"] = (q["iter_cpu_s"]["median"]
                                                       / p["iter_cpu_s"]["median"])
            t["target"] = TARGETS[task]
            key = "iteration_speedup" if task in RL_TASKS else "throughput"
            mem_ok = task in RL_TASKS or t["ratio"]["memory"] <= 1.0
            t["target_met"] = {"wall": bool(t["ratio"][key] >= TARGETS[task] and mem_ok),
                               "cpu": bool(t["ratio"][key + "_cpu"] >= TARGETS[task]
                                           and mem_ok)}
        out[task] = t
    gen = results.get("generation")
    if gen:
        out["generation"] = {side: spread(v) for side, v in gen["tokens_per_s"].items()}
        out["generation"]["ratio"] = (out["generation"]["prefopt"]["median"]
                                      / out["generation"]["transformers"]["median"])
    return out


def _fmt(s: dict, digits: int = 0, scale: float = 1.0) -> str:
    f = f"{{:.{digits}f}}"
    return (f"{f.format(s['median'] * scale)} ({f.format(s['min'] * scale)}–"
            f"{f.format(s['max'] * scale)})")


def markdown(results: dict) -> str:
    """The whole results.md: header, per-run table, ratios, RL iteration split,
    generation, batch composition, total time."""
    lines = (_header(results) + _runs_table(results) + _ratio_table(results)
             + _iteration_split(results) + _generation_table(results)
             + _padding_table(results))
    total = "Total benchmark time" + (" (all invocations)" if len(
        results.get("pooled_from", [])) > 1 else "")
    lines += ["", f"{total}: {results['total_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _header(results: dict) -> list[str]:
    s, m, a = results["summary"], results["machine"], results["assets"]
    loads = [r["loadavg_1m"] for sides in results["runs"].values() for runs in sides.values()
             for r in runs]
    return [
        "# prefopt vs TRL: measured results",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, shared; 1-minute load average "
        f"{min(loads):.1f}–{max(loads):.1f} at the starts of the runs. torch {m['torch']}; "
        "one thread per side (OMP_NUM_THREADS=1, torch.set_num_threads(1)).",
        f"prefopt: {m.get('prefopt_root', '?')} at {m.get('git_head', '?')} "
        f"(+{m.get('git_modified_files', '?')} uncommitted files)"
        + (f"; started {m['started_utc']}" if "started_utc" in m else "") + ".",
        "TRL: " + "; ".join(f"{t}: trl {v['trl']}, transformers {v['transformers']}"
                            for t, v in results.get("trl_versions", {}).items()) + ".",
        f"Model: Llama, hidden {a['model_shape']['hidden_size']}, "
        f"{a['model_shape']['num_hidden_layers']} layers, vocab {a['vocab_size']}, "
        f"{a['params_total'] / 1e6:.2f} M parameters (N = {a['params_matmul'] / 1e6:.2f} M "
        "in matmuls). "
        + ("bf16 autocast (fp32 weights) on both sides" if results.get("bf16") else "fp32")
        + ", full fine-tuning"
        + ("; length-grouped batches on both sides" if results.get("group_by_length") else "")
        + ".",
        f"Repetitions: {results['reps']} per side, alternating"
        + (f" (pooled from {len(results['pooled_from'])} invocations of run.py)"
           if len(results.get("pooled_from", [])) > 1 else "")
        + "; median (min–max) over runs.",
        f"Peak dense matmul, one thread (best of 8 timings of a 2048² matmul): fp32 "
        f"{s['peak_flops'] / 1e9:.1f} GFLOP/s, bf16 "
        f"{results.get('peak_bf16', {}).get('best_flops', float('nan')) / 1e9:.1f} GFLOP/s; "
        f"MFU below is against the {'bf16' if results.get('bf16') else 'fp32'} peak.",
    ]


def _runs_table(results: dict) -> list[str]:
    s = results["summary"]
    lines = ["", "| task | side | wall s | CPU s | train tokens/s | train tokens/CPU-s "
             "| peak RSS MiB | MFU % (wall) | MFU % (CPU) | tokens per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in results["runs"]:
        for side in ("prefopt", "trl"):
            t = s[task].get(side)
            if not t:
                continue
            lines.append(f"| {task} | {side} | {_fmt(t['wall_s'], 1)} | {_fmt(t['cpu_s'], 1)} | "
                         f"{_fmt(t['tokens_per_s'])} | {_fmt(t['tokens_per_cpu_s'])} | "
                         f"{_fmt(t['peak_rss_mb'])} | {_fmt(t['mfu'], 1, 100)} | "
                         f"{_fmt(t['mfu_cpu'], 1, 100)} | "
                         f"{', '.join(str(int(x)) for x in sorted(set(t['tokens_total'])))} |")
    return lines


def _ratio_table(results: dict) -> list[str]:
    s = results["summary"]
    lines = ["", "Ratios prefopt/TRL of the medians (throughput: higher is better for prefopt; "
             "memory, wall, CPU: lower is better):", "",
             "| task | throughput (wall) | throughput (CPU) | iteration speedup "
             "| peak RSS | wall | CPU s | target | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in results["runs"]:
        r = s[task].get("ratio")
        if not r:
            continue
        it = (f"{r['iteration_speedup']:.2f}× (CPU: {r['iteration_speedup_cpu']:.2f}×)"
              if task in RL_TASKS else "–")
        tgt = (f"≥ {s[task]['target']:g}× per iteration" if task == "ppo"
               else f"≥ {s[task]['target']:g}× per iteration (yardstick)" if task in RL_TASKS
               else f"≥ {s[task]['target']:g}× throughput at ≤ 1× memory")
        lines.append(f"| {task} | {r['throughput']:.2f}× | {r['throughput_cpu']:.2f}× | {it} | "
                     f"{r['memory']:.2f}× | {r['wall']:.2f}× | {r['cpu']:.2f}× | {tgt} | "
                     f"wall: {'yes' if s[task]['target_met']['wall'] else 'no'}, "
                     f"CPU: {'yes' if s[task]['target_met']['cpu'] else 'no'} |")
    return lines


def _generation_table(results: dict) -> list[str]:
    g = results["summary"].get("generation")
    if not g:
        return []
    gen = results["generation"]
    return ["", f"Rollout generation ({gen['n_prompts']} prompts in one batch, "
            f"{gen['max_new_tokens']} new tokens, T = {gen['temperature']}), generated "
            f"tokens/s over {len(gen['tokens_per_s']['prefopt'])} alternating calls:", "",
            "| prefopt Policy.generate | transformers model.generate | ratio |",
            "|---|---|---|",
            f"| {_fmt(g['prefopt'])} | {_fmt(g['transformers'])} | {g['ratio']:.2f}× |"]


def _padding_table(results: dict) -> list[str]:
    s = results["summary"]
    pad = [(task, s[task]) for task in results["runs"]
           if "padding_efficiency" in s[task].get("prefopt", {})
           and "padding_efficiency" in s[task].get("trl", {})]
    if not pad:
        return []
    lines = ["", "Batch composition (the sides shuffle differently): padding efficiency = "
             "tokens / padded positions; padded positions per second of training time "
             "(the compute rate, padding included):", "",
             "| task | padding eff. prefopt | padding eff. TRL | positions/s prefopt "
             "| positions/s TRL | ratio |", "|---|---|---|---|---|---|"]
    for task, t in pad:
        p, q = t["prefopt"], t["trl"]
        lines.append(f"| {task} | {_fmt(p['padding_efficiency'], 3)} | "
                     f"{_fmt(q['padding_efficiency'], 3)} | {_fmt(p['positions_per_s'])} | "
                     f"{_fmt(q['positions_per_s'])} | {t['ratio']['positions']:.2f}× |")
    return lines


def _iteration_split(results: dict) -> list[str]:
    """PPO / RLOO / GRPO: iteration, rollout and train seconds per side."""
    s = results["summary"]
    tasks = [t for t in results["runs"] if t in RL_TASKS and "iter_s" in s[t].get("prefopt", {})]
    if not tasks:
        return []
    lines = ["", "Iteration split, seconds (one rollout + its optimizer updates; per run the "
             "median over its iterations, then median (min–max) over runs). Wall: rollout + "
             "train ≈ iteration. CPU: rollout CPU s = iteration CPU − the updates' CPU (so it "
             "includes the loop's own per-iteration work). Generated tokens per rollout where "
             "recorded:", "",
             "| task | side | iteration | rollout | train (updates) | iteration CPU s "
             "| rollout CPU s | train CPU s | generated tokens |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for side in ("prefopt", "trl"):
            t = s[task].get(side)
            if t:
                gen = _fmt(t["gen_tokens"]) if "gen_tokens" in t else "–"
                cpu = (f"{_fmt(t['rollout_cpu_s'], 2)} | {_fmt(t['train_cpu_s'], 2)}"
                       if "train_cpu_s" in t else "– | –")
                lines.append(f"| {task} | {side} | {_fmt(t['iter_s'], 2)} | "
                             f"{_fmt(t['rollout_s'], 2)} | {_fmt(t['train_s'], 2)} | "
                             f"{_fmt(t['iter_cpu_s'], 2)} | {cpu} | {gen} |")
    return lines


def pool(results: list[dict]) -> dict:
    """Several invocations of run.py (same settings) as one: runs, peaks and generation
    calls concatenated; each invocation kept its own alternation."""
    out = json.loads(json.dumps(results[0]))
    for r in results[1:]:
        for task, sides in r["runs"].items():
            for side, runs in sides.items():
                out["runs"].setdefault(task, {}).setdefault(side, []).extend(runs)
        out["peak"] += r["peak"]
        out["reps"] += r["reps"]
        out["total_s"] += r["total_s"]
        if "generation" in r and "generation" in out:
            for side, v in r["generation"]["tokens_per_s"].items():
                out["generation"]["tokens_per_s"][side] += v
    out["pooled_from"] = [r["machine"].get("git_head", "?") for r in results]
    return out


if __name__ == "__main__":
    # re-render: python benchmarks/report.py OUT/results.json
    # pool:      python benchmarks/report.py A/results.json B/results.json --out DIR
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", default=None, help="directory for the pooled results")
    args = ap.parse_args()
    res = pool([json.loads(Path(p).read_text()) for p in args.results])
    res["summary"] = summarize(res)
    out = Path(args.out) if args.out else Path(args.results[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))
