"""Masked statistics over token tensors (response tokens only) and logit entropy.

``mask`` is 1 on response tokens and 0 on padding (bool or float), same shape as ``x``.
Statistics are over all masked entries of the batch unless ``dim`` is given.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ x·m / Σ m over ``dim`` (all entries if None). An empty mask gives 0, not NaN.

    Shapes: x, mask (B, T) → () or x reduced over ``dim``.
    """
    m = mask.to(x.dtype)
    tiny = torch.finfo(x.dtype).tiny
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=tiny)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=tiny)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Biased variance over the masked entries: mean_m((x − mean_m(x))²). (B, T) → ()."""
    mu = masked_mean(x, mask)
    return masked_mean((x - mu) ** 2, mask)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − μ)/sqrt(σ² + eps) with μ, σ² the masked mean and biased variance of the batch;
    with ``shift_mean=False`` the mean is added back (scale to unit variance, keep the mean,
    as for rewards in Huang et al. 2023). Entries outside the mask are set to 0.
    (B, T) → (B, T).
    """
    mu, var = masked_mean(x, mask), masked_var(x, mask)
    y = (x - mu) * torch.rsqrt(var + eps)
    if not shift_mean:
        y = y + mu
    return y * mask.to(x.dtype)


def explained_variance(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """1 − Var_m(target − pred)/Var_m(target) (biased, masked); 1 is perfect, ≤ 0 is no
    better than predicting the mean. NaN if the target is constant. (B, T) → float.
    """
    pred, target = pred.detach().double(), target.detach().double()
    var_target = masked_var(target, mask)
    return (1 - masked_var(target - pred, mask) / var_target).item()


def entropy_from_logits(logits: Tensor, chunk_size: int = 1024) -> Tensor:
    """Entropy of softmax(logits) over the last dim: H = logsumexp(z) − Σ_v softmax(z)_v·z_v.

    Equivalent to −Σ p·log p, without materialising log p for the whole batch: rows are
    processed ``chunk_size`` at a time, so the temporaries are (chunk_size, V).
    Shapes: (…, V) → (…).
    """
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    out = [flat.new_zeros(0)]
    for z in flat.split(chunk_size):  # (n, V)
        prob = torch.softmax(z, dim=-1)
        z_finite = z.masked_fill(torch.isneginf(z), 0)  # −inf logits have p = 0: 0·z := 0
        out.append(torch.logsumexp(z, dim=-1) - (prob * z_finite).sum(-1))  # (n,)
    return torch.cat(out).reshape(logits.shape[:-1])
