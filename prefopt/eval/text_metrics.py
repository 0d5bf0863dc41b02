"""Text and log-probability metrics of the evaluation harness: diversity, length,
Monte Carlo KL and entropy of sampled responses.

Log-prob inputs are sequence sums over completion tokens (prompt masked), as in
docs: log π(y|x) = Σ_t log π(y_t | x, y_<t). Tensors are accepted and detached.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n = |unique n-grams| / |n-grams|, pooled over all texts (Li et al. 2016).

    Tokens are whitespace-separated words; n-grams do not cross text boundaries.
    Returns 0.0 when the texts hold no n-gram. Example (n = 1): ["a b a", "b c"] has
    5 unigrams, 3 unique → 0.6.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [g for text in texts for g in _ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_length(texts: Sequence[str], tokenizer=None) -> float:
    """Mean response length: (1/N) Σ_i |y_i|, in whitespace words, or in tokens when a
    tokenizer is given (`tokenizer.encode(y, add_special_tokens=False)`, no EOS)."""
    if len(texts) == 0:
        raise ValueError("texts is empty: need at least one text")
    if tokenizer is None:
        lengths = [len(t.split()) for t in texts]
    else:
        lengths = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    return float(np.mean(lengths))


def sequence_kl_estimate(logp_policy_seq, logp_ref_seq) -> tuple[float, np.ndarray]:
    """Monte Carlo KL(π ‖ π_ref) from N samples y_i ~ π(·|x_i) (the k1 estimator).

    k1_i = log π(y_i|x_i) − log π_ref(y_i|x_i);  KL ≈ (1/N) Σ_i k1_i.
    Unbiased, because E_{y~π}[log π/π_ref] = KL, but a single k1_i (and the mean of
    few samples) can be negative; only the expectation is ≥ 0 (Schulman 2020,
    "Approximating KL divergence"). Samples must come from π at the temperature used
    for log π. Returns (mean, per-sample k1) with per-sample shape (N,).
    """
    lp, lr = _to_numpy(logp_policy_seq), _to_numpy(logp_ref_seq)
    if lp.shape != lr.shape or lp.ndim != 1 or lp.size == 0:
        raise ValueError(f"need two equal, non-empty (N,) arrays; got {lp.shape} and {lr.shape}")
    k1 = lp - lr  # (N,)
    return float(k1.mean()), k1


def entropy_estimate(token_logps, mask) -> tuple[float, float]:
    """Monte Carlo entropy of π from sampled responses y_i ~ π, token log-probs (N, T).

    h_i = −Σ_t m_it log π(y_it | x_i, y_i,<t)   (−log π(y_i|x_i), an unbiased sample of
    the sequence entropy H(π(·|x_i)) = E_y[−log π(y|x)]).
    Returns (sequence = (1/N) Σ_i h_i,  per-token = Σ_i h_i / Σ_it m_it). Zero when the
    mask is empty.
    """
    lp, m = _to_numpy(token_logps), _to_numpy(mask)
    if lp.shape != m.shape or lp.ndim != 2:
        raise ValueError(f"token_logps {lp.shape} and mask {m.shape} must both be (N, T)")
    h = -(np.where(m > 0, lp, 0.0) * m).sum(axis=1)  # (N,); padding may hold -inf
    n_tokens = m.sum()
    per_token = float(h.sum() / n_tokens) if n_tokens > 0 else 0.0
    return float(h.mean()) if h.size else 0.0, per_token
