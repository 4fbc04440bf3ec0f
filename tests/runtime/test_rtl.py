"""An int8 MLP end to end on the RTL: stack -> driver -> kernel -> firmware -> gates.

The outputs must equal the functional model's (through the driver, and direct) bit for bit
and an independent numpy integer reference built from the quantised weights.
"""

import numpy as np
import pytest
import torch

import stack
from stack.compiler import run_on_model
from stack.compiler.quant import quantize_input

pytestmark = [pytest.mark.rtl, pytest.mark.slow]



def test_int8_mlp_on_the_rtl_equals_the_model_and_numpy(numpy_int8_mlp):
    torch.manual_seed(3)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 16)).eval()
    x = torch.randn(4, 16)
    exe = stack.compile(m, (x,), spec="small", dtype="int8")
    assert exe.num_pes == 2
    on_rtl = stack.compile_and_run(m, (x,), spec="small", dtype="int8", backend="rtl")
    on_model = stack.compile_and_run(m, (x,), spec="small", dtype="int8")
    direct, _ = run_on_model(exe, (x,))
    ref = numpy_int8_mlp(exe.int8_layers, quantize_input(exe, x).numpy())
    assert on_rtl.outputs.dtype == torch.int32
    assert torch.equal(on_rtl.outputs, on_model.outputs)
    assert torch.equal(on_rtl.outputs, direct)
    np.testing.assert_array_equal(on_rtl.outputs.numpy(), ref)
    assert np.abs(ref).max() > 16  # the check is not vacuous: the codes use the range
    assert on_rtl.stats["cycles"] > 0 and on_rtl.stats["backend"] == "rtl"
