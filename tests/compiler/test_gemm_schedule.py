"""GEMM schedules against eager PyTorch: resident A (read once), A bound as bf16 by the host.

Tolerance as in test_models.py: bf16 operands, fp32 accumulation,
atol = 2e-2 * max|ref| + 1e-3.
"""

import torch

from stack.compiler import compile_model, run_on_model


def _close(out, ref):
    ref = ref.detach()
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 2e-2 * ref.abs().max().item() + 1e-3


def test_resident_a_input_bound_as_bf16():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(72, 40), torch.nn.GELU()).eval()
    x = torch.randn(64, 72)
    exe = compile_model(m, (x,), pes=2)
    assert exe.inputs[0]["dtype"] == "bf16"  # only a GEMM reads it
    out, tl = run_on_model(exe, (x,))
    _close(out, m(x))
    assert tl.macs == 64 * 72 * 40


def test_resident_a_from_an_fp32_activation():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(30, 96), torch.nn.ReLU(),
                            torch.nn.Linear(96, 50)).eval()
    x = torch.randn(80, 30)
    exe = compile_model(m, (x,), pes=2)
    out, _ = run_on_model(exe, (x,))
    _close(out, m(x))


def test_input_read_elsewhere_stays_fp32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16).eval()
    x = torch.randn(40, 16)

    class M(torch.nn.Module):
        def forward(self, x):
            return lin(x) + x  # x is also an elementwise operand: keep it exact
    exe = compile_model(M(), (x,))
    assert exe.inputs[0]["dtype"] == "f32"
    out, _ = run_on_model(exe, (x,))
    _close(out, M()(x))
