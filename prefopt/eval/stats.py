"""Statistics of the evaluation harness: bootstrap intervals, win rates, the
length-controlled win rate and the over-optimisation curves of Gao et al. 2022.

Every function is pure and works on numpy arrays (anything `np.asarray` accepts).
Notation: n prompts, S seeds, p_i = P(policy ≻ reference) on prompt i, d = sqrt(KL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistic = Callable[[np.ndarray], float]


def _as_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    return arr


def _interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(values, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 statistic: Statistic = np.mean) -> tuple[float, float, float]:
    """Percentile bootstrap over prompts (Efron & Tibshirani 1993, ch. 13).

    point = statistic(values); replicate b = statistic(values[I_b]) with I_b drawn
    uniformly with replacement (n of n rows); (lo, hi) = the alpha/2 and 1 − alpha/2
    quantiles of the replicates. Rows (first axis) are resampled, so `values` may be
    (n,) or (n, k) when the statistic needs several aligned columns per prompt.
    Deterministic for a given seed; a constant array gives (c, c, c).
    """
    arr = _as_array(values, "values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.shape[0], size=(n_boot, arr.shape[0]))  # (n_boot, n)
    replicates = np.array([statistic(arr[i]) for i in idx], dtype=float)
    return (float(statistic(arr)), *_interval(replicates, alpha))


def bootstrap_ci_grouped(values_by_seed: Sequence, n_boot: int = 1000, alpha: float = 0.05,
                         seed: int = 0, statistic: Statistic = np.mean
                         ) -> tuple[float, float, float]:
    """Hierarchical (two-level) percentile bootstrap for S training seeds.

    point = (1/S) Σ_s statistic(v_s). Replicate b: draw S seeds with replacement, then
    within each drawn seed s draw n_s prompts with replacement, and average the
    per-seed statistics. The interval thus covers seed-to-seed variation as well as
    prompt sampling (Davison & Hinkley 1997, §3.8, "two-stage" resampling).
    """
    groups = [_as_array(v, f"values_by_seed[{s}]") for s, v in enumerate(values_by_seed)]
    if not groups:
        raise ValueError("values_by_seed is empty: need at least one seed")
    rng = np.random.default_rng(seed)
    n_seeds = len(groups)
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, n_seeds, size=n_seeds)
        stats = [statistic(groups[s][rng.integers(0, len(groups[s]), size=len(groups[s]))])
                 for s in picked]
        replicates[b] = np.mean(stats)
    point = float(np.mean([statistic(g) for g in groups]))
    return (point, *_interval(replicates, alpha))


def win_rate(pref) -> float:
    """Win rate = (1/n) Σ_i p_i, with p_i = P(policy ≻ reference) in [0, 1].

    Hard outcomes are 1 (win), 0 (loss), 0.5 (tie), so a tie counts as half a win
    (AlpacaEval convention, Dubois et al. 2023). Example: [1, 0, 0.5, 1] → 2.5/4 = 0.625.
    """
    p = _as_array(pref, "pref")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("preferences must lie in [0, 1]")
    return float(p.mean())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # σ(z), overflow-free


def fit_logistic(x, p, ridge: float = 1e-4, max_iter: int = 100,
                 tol: float = 1e-12) -> tuple[float, float]:
    """One-feature logistic regression with soft targets, by Newton's method (IRLS).

    Model: P(win) = σ(a + b·x). Minimises the cross-entropy with soft targets p in [0, 1]
      L(a, b) = −Σ_i [p_i log σ(η_i) + (1 − p_i) log σ(−η_i)] + (ridge/2)·b²,  η = a + b x
    gradient g = Xᵀ(σ(η) − p) + ridge·[0, b], Hessian H = Xᵀ diag(σ(1 − σ)) X + ridge·e₂e₂ᵀ,
    step θ ← θ − H⁻¹g. Only the slope is penalised, so with x ≡ 0 the fit gives σ(a) =
    mean(p) exactly; the ridge keeps b finite when the length feature separates the data.
    Returns (a, b). All-0 or all-1 targets have no finite intercept: a = ∓inf.
    """
    x, p = _as_array(x, "x"), _as_array(p, "p")
    if p.min() == p.max() and p[0] in (0.0, 1.0):
        return (np.inf if p[0] == 1.0 else -np.inf), 0.0
    X = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    penalty = np.diag([0.0, ridge])
    theta = np.zeros(2)
    for _ in range(max_iter):
        q = _sigmoid(X @ theta)  # (n,)
        grad = X.T @ (q - p) + penalty @ theta
        hess = (X * (q * (1 - q))[:, None]).T @ X + penalty + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    return float(theta[0]), float(theta[1])


def length_feature(len_policy, len_reference) -> np.ndarray:
    """LC-AlpacaEval's length feature: tanh(Δ / sd(Δ)), Δ_i = len_policy_i − len_reference_i.

    sd is the sample standard deviation of Δ (ddof = 1, pandas' default, as in
    alpaca_eval's `_get_featurized_data`; it divides Δ itself, not Δ − mean). When
    sd(Δ) = 0 (all differences equal, or one prompt) length cannot be separated from
    quality, so the feature is 0 and the LC win rate falls back to the raw win rate.
    """
    delta = _as_array(len_policy, "len_policy") - _as_array(len_reference, "len_reference")
    sd = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
    if sd == 0.0:
        return np.zeros_like(delta)
    return np.tanh(delta / sd)


def length_controlled_win_rate(outcomes, len_policy, len_reference,
                               ridge: float = 1e-4) -> float:
    """Length-controlled win rate (Dubois et al. 2024, "Length-Controlled AlpacaEval").

    Fit P(policy ≻ reference) = σ(a + b·z), z = `length_feature(...)`, to the (soft)
    outcomes by `fit_logistic`, then predict at zero length difference (z = 0):
    LC = σ(a), a rate in [0, 1]. The LC-AlpacaEval GLM also has an instruction-
    difficulty term and regularises towards length-gamed baselines; this keeps only
    the intercept and length terms (their "minimal" variant, with no gamed data).
    """
    p = _as_array(outcomes, "outcomes")
    z = length_feature(len_policy, len_reference)
    if z.shape != p.shape:
        raise ValueError(f"outcomes {p.shape} and lengths {z.shape} differ in shape")
    win_rate(p)  # validates the range
    a, _ = fit_logistic(z, p, ridge=ridge)
    return float(_sigmoid(np.asarray(a)))


def rates_by_group(groups: Sequence[str], outcomes, missing: int = -1, n_boot: int = 1000,
                   alpha: float = 0.05, seed: int = 0) -> dict[str, dict]:
    """Per-group rate of a 0/1 outcome with a percentile bootstrap CI.

    rate_g = (1/n_g) Σ_{i in g, o_i ≠ missing} o_i; rows equal to `missing` (not
    applicable, e.g. over-refusal on a harmful prompt) are dropped. A group with no
    applicable rows gets rate None. Returns {group: {rate, ci_low, ci_high, n}}.
    """
    o = np.asarray(outcomes, dtype=float)
    g = np.asarray(groups, dtype=object)
    if o.shape != g.shape:
        raise ValueError(f"groups {g.shape} and outcomes {o.shape} differ in shape")
    out = {}
    for name in sorted(set(g.tolist())):
        vals = o[(g == name) & (o != missing)]
        if vals.size == 0:
            out[name] = {"rate": None, "ci_low": None, "ci_high": None, "n": 0}
            continue
        rate, lo, hi = bootstrap_ci(vals, n_boot=n_boot, alpha=alpha, seed=seed)
        out[name] = {"rate": rate, "ci_low": lo, "ci_high": hi, "n": int(vals.size)}
    return out


def _xlogx(d: np.ndarray) -> np.ndarray:
    """d·log d with the limit 0 at d = 0."""
    return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)


def _check_d(d) -> np.ndarray:
    d = _as_array(d, "d")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) must be non-negative")
    return d


def gao_bon(d, alpha: float, beta: float) -> np.ndarray:
    """Gold reward of best-of-n vs d = sqrt(KL): R(d) = d(α − β d) (Gao et al. 2022)."""
    d = np.asarray(d, dtype=float)
    return d * (alpha - beta * d)


def gao_rl(d, alpha: float, beta: float) -> np.ndarray:
    """Gold reward of RL vs d = sqrt(KL): R(d) = d(α − β log d), with R(0) = 0 since
    d log d → 0 (Gao et al. 2022)."""
    d = np.asarray(d, dtype=float)
    return alpha * d - beta * _xlogx(d)


def _lstsq2(columns: np.ndarray, r) -> tuple[float, float]:
    coef, *_ = np.linalg.lstsq(columns, _as_array(r, "r"), rcond=None)
    return float(coef[0]), float(coef[1])


def fit_gao_bon(d, r) -> tuple[float, float]:
    """Least squares for R = α·d − β·d², linear in (α, β): columns [d, −d²].
    Returns (α, β). Needs at least two distinct d > 0."""
    d = _check_d(d)
    return _lstsq2(np.stack([d, -d * d], axis=1), r)


def fit_gao_rl(d, r) -> tuple[float, float]:
    """Least squares for R = α·d − β·d log d, linear in (α, β): columns [d, −d log d]
    (d log d := 0 at d = 0). Returns (α, β)."""
    d = _check_d(d)
    return _lstsq2(np.stack([d, -_xlogx(d)], axis=1), r)


def bon_peak(alpha: float, beta: float) -> float:
    """argmax_d d(α − β d) = α / (2β); inf when β ≤ 0 (no over-optimisation peak)."""
    return alpha / (2 * beta) if beta > 0 else float("inf")


def rl_peak(alpha: float, beta: float) -> float:
    """argmax_d d(α − β log d): dR/dd = α − β(log d + 1) = 0 → d* = exp(α/β − 1);
    inf when β ≤ 0."""
    return float(np.exp(alpha / beta - 1)) if beta > 0 else float("inf")


def kl_best_of_n(n: int) -> float:
    """Analytic KL(best-of-n ‖ base) = log n − (n − 1)/n nats (Stiennon et al. 2020;
    Gao et al. 2022); an upper bound on the true KL (Beirami et al. 2024).
    n = 4: 0.636, n = 16: 1.835, n = 64: 3.175."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return float(np.log(n) - (n - 1) / n)
