"""Gradients flow through bitsandbytes 4-bit layers exactly as through the dequantised
weights (the CPU backend warns that gemv_4bit has no autograd kernel; this checks it)."""

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("shape", [(3, 128), (1, 1, 128), (2, 5, 128)])
def test_linear4bit_input_gradient_matches_dequantised_reference(shape):
    torch.manual_seed(0)
    dense = torch.nn.Linear(128, 64)
    q = bnb.nn.Linear4bit(128, 64, compute_dtype=torch.float32, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False,
                                 quant_type="nf4")
    q.bias = torch.nn.Parameter(dense.bias.data.clone())
    q = q.to("cpu")
    x = torch.randn(*shape, requires_grad=True)
    q(x).pow(2).sum().backward()
    w = bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state).float()
    x_ref = x.detach().clone().requires_grad_(True)
    (x_ref @ w.t() + q.bias).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    assert x.grad.abs().max() > 0.1
