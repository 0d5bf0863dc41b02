"""Compare plots: the gold-vs-√KL frontier, over-optimisation, training curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from prefopt.eval.stats import fit_gao_rl, gao_rl


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _track_points(runs: list[list[dict]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(√KL, gold, proxy) of every logged evaluation of every seed of one stage."""
    d, g, p = [], [], []
    for rows in runs:
        for r in rows:
            if "eval/kl" in r and "eval/gold" in r:
                d.append(math.sqrt(max(float(r["eval/kl"]), 0.0)))
                g.append(float(r["eval/gold"]))
                p.append(float(r.get("eval/proxy", np.nan)))
    return np.array(d), np.array(g), np.array(p)


def plot_frontier(results: dict, path: Path) -> Path:
    """Gold reward against √KL(π‖π_ref): one point per method, a line per tracked run,
    with Gao et al.'s RL form R(d) = R0 + d(α − β log d) fitted to each tracked run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, runs in results["curves"].items():
        d, g, _ = _track_points(runs)
        if len(d) < 3:
            continue
        ax.plot(d, g, "o", alpha=0.5, ms=3, label=f"{name} probe along training")
        g0 = g[np.argmin(d)]
        alpha, beta = fit_gao_rl(d, g - g0)
        xs = np.linspace(0, d.max(), 50)
        ax.plot(xs, g0 + gao_rl(xs, alpha, beta), "-", lw=1,
                label=f"{name} fit α={alpha:.2f} β={beta:.2f}")
    for name, m in results["methods"].items():
        kl, gold = m["aggregate"].get("kl"), m["aggregate"].get("gold")
        if kl and gold and kl.get("value") is not None:
            ax.plot(math.sqrt(max(kl["value"], 0.0)), gold["value"], "s", ms=7)
            ax.annotate(name, (math.sqrt(max(kl["value"], 0.0)), gold["value"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("√KL(π ‖ π_ref)  (√nats)")
    ax.set_ylabel("gold reward")
    ax.set_title("Gold reward vs √KL: squares = final models on the test suite,\n"
                 "dots = training-time probe on held-out validation prompts", fontsize=9)
    return _save(plt, fig, ax, path)


def plot_overoptimisation(results: dict, path: Path) -> Path:
    """Proxy (reward-model) score and gold reward along each tracked run, against √KL."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, runs in results["curves"].items():
        d, g, p = _track_points(runs)
        if len(d) < 2 or np.isnan(p).all():
            continue
        order = np.argsort(d)
        ax.plot(d[order], p[order], "-o", ms=3, label=f"{name} proxy (RM)")
        ax.plot(d[order], g[order], "--o", ms=3, label=f"{name} gold")
    ax.set_xlabel("√KL(π ‖ π_ref)  (√nats)")
    ax.set_ylabel("score")
    ax.set_title("Over-optimisation: proxy vs gold")
    return _save(plt, fig, ax, path)


def plot_training(results: dict, path: Path) -> Path:
    """Training loss of every stage (seed 0) against its step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, runs in results["curves"].items():
        rows = runs[0] if runs else []
        steps = [r["step"] for r in rows if "loss" in r]
        losses = [r["loss"] for r in rows if "loss" in r]
        if steps:
            ax.plot(steps, losses, label=name, lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_yscale("symlog")
    ax.set_title("Training curves (seed 0)")
    return _save(plt, fig, ax, path)


def _save(plt, fig, ax, path: Path) -> Path:
    """Legend, layout, write ``path`` (120 dpi), close the figure."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
