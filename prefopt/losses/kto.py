"""KTO (Ethayarajh et al. 2024, "KTO: model alignment as prospect theoretic optimization")."""

from __future__ import annotations

import torch
from torch import Tensor


def kto_reference_point(kl_logps: Tensor | None, kl_ref_logps: Tensor | None) -> Tensor:
    """z0 = max(0, mean_j(log π_θ(y'_j|x_j) − log π_ref(y'_j|x_j))), detached, 0-dim.

    (y'_j, x_j) are mismatched pairs (a completion under another example's prompt), so the
    mean estimates KL(π_θ ‖ π_ref) (Ethayarajh et al. 2024, eq. 8). None gives z0 = 0.
    Shapes: (M,), (M,) → ().
    """
    if kl_logps is None or kl_ref_logps is None:
        return torch.zeros(())
    if kl_logps.numel() == 0:
        raise ValueError("KTO needs at least one mismatched pair for the KL estimate")
    return torch.clamp((kl_logps - kl_ref_logps).mean(), min=0).detach()


def kto_loss(logps: Tensor, ref_logps: Tensor, desirable: Tensor, kl_logps: Tensor | None,
             kl_ref_logps: Tensor | None, beta: float = 0.1, w_desirable: float = 1.0,
             w_undesirable: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-example KTO losses (Ethayarajh et al. 2024, eq. 8) and the reference point z0.

    ρ = log π_θ(y|x) − log π_ref(y|x);
    desirable y:   w_D·(1 − σ(β(ρ − z0)));
    undesirable y: w_U·(1 − σ(β(z0 − ρ)));
    z0 from ``kto_reference_point`` (detached: no gradient flows through the KL estimate).
    Shapes: logps, ref_logps, desirable (bool) (B,); kl_* (M,) → losses (B,), z0 ().
    """
    z0 = kto_reference_point(kl_logps, kl_ref_logps).to(logps)
    rho = logps - ref_logps  # (B,)
    loss_d = w_desirable * (1 - torch.sigmoid(beta * (rho - z0)))
    loss_u = w_undesirable * (1 - torch.sigmoid(beta * (z0 - rho)))
    return torch.where(desirable.bool(), loss_d, loss_u), z0


def kto_weights_ok(n_d: int, n_u: int, w_d: float, w_u: float) -> bool:
    """Whether w_D·n_D / (w_U·n_U) ∈ [1, 4/3], the range Ethayarajh et al. (2024, §4.2)
    recommend for the desirable/undesirable weights given n_D and n_U examples.
    False when w_U·n_U = 0 (the ratio is undefined)."""
    denominator = w_u * n_u
    if denominator <= 0:
        return False
    return 1.0 <= (w_d * n_d) / denominator <= 4.0 / 3.0
