"""Each supported operator on its own, compiled and run on the functional model."""

import pytest
import torch
import torch.nn.functional as F

from stack.compiler import compile_model, run_on_model


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def r(*shape):
    return torch.randn(*shape)


torch.manual_seed(0)
W = torch.randn(24, 16)
G, B = torch.rand(12), torch.rand(12)
EMB = torch.randn(20, 6)
MASK = torch.rand(5, 5) > 0.3
CW, CB = torch.randn(4, 3, 3, 3), torch.randn(4)
CASES = {
    "linear": (lambda x: F.linear(x, W), (r(5, 16),)),
    "matmul": (lambda a, b: a @ b, (r(3, 6, 16), r(16, 10))),
    "bmm": (lambda a, b: torch.bmm(a, b), (r(2, 5, 8), r(2, 8, 6))),
    "addmm": (lambda a: torch.addmm(torch.ones(24), a, W.t()), (r(4, 16),)),
    "add_broadcast": (lambda a, b: a + b, (r(2, 3, 8), r(3, 1))),
    "sub_div": (lambda a, b: (a - b) / (b.abs() + 1), (r(4, 8), r(4, 8))),
    "mul_neg_scalar": (lambda a: -a * 3 - 1, (r(4, 8),)),
    "pow_rsqrt_exp": (lambda a: a.pow(2) + torch.rsqrt(a.abs() + 1) + torch.exp(a), (r(4, 8),)),
    "activations": (lambda a: F.relu(a) + F.gelu(a) + F.gelu(a, approximate="tanh") + F.silu(a)
                    + torch.sigmoid(a) + torch.tanh(a), (r(4, 8),)),
    "softmax_last": (lambda a: F.softmax(a, -1), (r(3, 4, 10),)),
    "softmax_dim1": (lambda a: F.softmax(a, 1), (r(3, 4, 10),)),
    "layer_norm": (lambda a: F.layer_norm(a, (12,), G, B), (r(3, 12),)),
    "rms_norm": (lambda a: F.rms_norm(a, (12,), G, 1e-6), (r(3, 12),)),
    "mean_sum_amax": (lambda a: a.mean(-1) + a.amax(-1) + a.sum(1)[:, :4], (r(3, 4, 6),)),
    "embedding": (lambda i: F.embedding(i, EMB), (torch.randint(0, 20, (2, 5)),)),
    "reshape_permute": (lambda a: a.reshape(2, 3, 4).permute(2, 0, 1) * 2, (r(6, 4),)),
    "transpose_slice_cat": (lambda a: torch.cat([a[:, :1], a[:, 1:] * 2], 1).t() + 0, (r(4, 3),)),
    "expand": (lambda a: a.expand(3, 4, 5) + 1, (r(4, 1),)),
    "rotary": (lambda q: q * torch.cos(torch.arange(8.0)) +
               torch.cat([-q[..., 4:], q[..., :4]], -1) * torch.sin(torch.arange(8.0)),
               (r(2, 3, 8),)),
    "sdpa_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                    (r(1, 2, 5, 8), r(1, 2, 5, 8), r(1, 2, 5, 8))),
    "sdpa_masked": (lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=MASK), (r(1, 2, 5, 8), r(1, 2, 5, 8), r(1, 2, 5, 8))),
    "conv2d": (lambda x: F.conv2d(x, CW, CB, padding=1),
               (r(1, 3, 6, 6),)),
    "pools": (lambda x: F.max_pool2d(x, 2) + F.avg_pool2d(x, 2), (r(1, 2, 6, 6),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op(name):
    torch.manual_seed(1)
    fn, inputs = CASES[name]
    m = Fn(fn)
    out, _ = run_on_model(compile_model(m, inputs), inputs)
    ref = fn(*inputs)
    tol = 2e-2 * ref.abs().max().item() + 1e-3
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= tol
