"""The engine's AdamW and learning-rate schedules against hand-worked values and references."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import get_scheduler

from prefopt.engine.optim import lr_multiplier, make_optimizer, make_scheduler


@pytest.mark.parametrize("kind, warmup, total, expected", [
    # warm-up step / 2, then 1 - (step - 2) / 8
    ("linear", 2, 10, [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]),
    # ½(1 + cos(π step / 4))
    ("cosine", 0, 4, [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                      0.5 + 0.5 * math.cos(3 * math.pi / 4), 0.0]),
    ("constant", 2, 5, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]),
    ("constant", 0, 3, [1.0, 1.0, 1.0, 1.0]),
])
def test_lr_multiplier_by_hand(kind, warmup, total, expected):
    got = [lr_multiplier(kind, s, warmup, total) for s in range(len(expected))]
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_equal_transformers(kind):
    """Same learning rates as transformers.get_scheduler, which recipes used before."""
    lrs = []
    for build in ("ours", "transformers"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        sched = (make_scheduler(opt, kind, 3, 17) if build == "ours" else
                 get_scheduler(kind, opt, num_warmup_steps=3, num_training_steps=17))
        seen = []
        for _ in range(20):
            seen.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        lrs.append(seen)
    assert lrs[0] == pytest.approx(lrs[1], abs=1e-15)


def test_unknown_schedule_is_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="unknown lr_scheduler 'step'"):
        make_scheduler(opt, "step", 0, 10)


def test_fused_adamw_matches_the_for_loop_reference():
    """make_optimizer picks the fused kernel on CPU fp32; five steps land where the plain
    for-loop AdamW lands, to float rounding."""
    torch.manual_seed(0)
    init = [torch.randn(7, 5), torch.randn(5), torch.randn(3, 3, 2)]
    cfg = SimpleNamespace(lr=0.01, adam_eps=1e-8, weight_decay=0.1)
    runs = []
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = (make_optimizer(params, cfg) if fused else torch.optim.AdamW(
            params, lr=0.01, eps=1e-8, weight_decay=0.1, foreach=False))
        assert opt.defaults["fused"] is (True if fused else None)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs.append([p.detach() for p in params])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_mixed_devices_fall_back_to_the_default_adamw():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, 2))]
    cfg = SimpleNamespace(lr=0.01, adam_eps=1e-8, weight_decay=0.0)
    assert make_optimizer(params, cfg).defaults["fused"] is True
    meta = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, device="meta"))]
    assert make_optimizer(meta, cfg).defaults["fused"] is None
