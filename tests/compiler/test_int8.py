"""dtype='int8': power-of-two calibration and integer-only programs on the functional model."""

import numpy as np
import pytest
import torch

import gen
import hw.spec
import stack
from stack.compiler import run_on_model
from stack.compiler.quant import dequantize_output, quantize_input


@pytest.mark.parametrize("pes", [1, 2])
def test_int8_mlp_matches_numpy_integers_and_approximates_float(pes, numpy_int8_mlp):
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                            torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()
    x = torch.randn(6, 32)
    exe = stack.compile(m, (x,), spec="small", pes=pes, dtype="int8")
    assert exe.num_pes == pes
    y, _ = run_on_model(exe, (x,))
    xq = quantize_input(exe, x).numpy()
    assert np.abs(xq).max() <= 127 and np.abs(xq).max() >= 64  # calibrated to the range
    np.testing.assert_array_equal(y.numpy(), numpy_int8_mlp(exe.int8_layers, xq))
    ref = m(x).detach()
    err = (dequantize_output(exe, y) - ref).abs().max().item()
    assert err < 0.1 * ref.abs().max().item()
    with stack.Session(exe) as s:  # through the driver: the same bits
        assert torch.equal(s.run(x).outputs, y)


def test_int8_programs_use_integer_instructions_only():
    m = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU()).eval()
    exe = stack.compile(m, (torch.randn(4, 16),), spec="small", dtype="int8")
    isa = gen.build(hw.spec.load("small")).isa
    ints = {isa.DTYPE_INT8, isa.DTYPE_INT32}
    for prog in exe.programs.values():
        for ins in isa.decode_program(prog):
            if isinstance(ins, isa.Matmul):
                assert ins.dtype == isa.DTYPE_INT8
            if isinstance(ins, isa.Vector):
                assert {ins.in_dtype, ins.out_dtype} <= ints


def test_int8_refuses_other_layers():
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())
    with pytest.raises(ValueError, match="GELU"):
        stack.compile(m, (torch.randn(2, 8),), spec="small", dtype="int8")
    with pytest.raises(ValueError, match="dtype must be"):
        stack.compile(m, (torch.randn(2, 8),), dtype="int4")
