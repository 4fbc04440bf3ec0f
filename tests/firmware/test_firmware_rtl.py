"""The same firmware on the RTL: a program, a rejected command and the watchdog."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from firmware import Status
from hw import spec as hwspec
from hw.generated import isa

pytestmark = [pytest.mark.rtl, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


# First run (icarus, RTL of this session): the watchdog and the rejected command behave as on
# the model, but the add program stops with ILLEGAL_OPCODE at pc 1 on the RTL while the
# model runs it; reported to the RTL side, kept here so that the fix shows up as XPASS.
@pytest.mark.xfail(reason="RTL reports ILLEGAL_OPCODE at pc 1 of the add program", strict=False)
def test_firmware_serves_the_rings_on_the_rtl(tmp_path):
    from hw.sim.npu import TOP, npu_verilog
    from hw.sim.runner import run_cocotb

    spec = hwspec.load("small")
    rng = np.random.default_rng(7)
    x = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    y = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((x.tobytes(), y.tobytes())))
    path, key = npu_verilog(spec)
    run_cocotb(path, TOP, "rtl_firmware_bench", cache_key=key,
               python_paths=[HERE, HERE.parent / "driver"],
               extra_env={"NPU_FW_BENCH_IN": str(tmp_path / "in.pkl"),
                          "NPU_FW_BENCH_OUT": str(tmp_path / "out.pkl")})
    got = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert got["good"] is not None and got["good"][2] == Status.OK, got
    out = np.frombuffer(got["out"], np.int32).reshape(4, 16)
    np.testing.assert_array_equal(out, x + y)
    assert got["bad"][2] == Status.BAD_ADDRESS
    hung = got["hung"]
    assert (hung[2], hung[4], hung[3]) == (Status.PE_ERROR, isa.ERR_WATCHDOG, 1)
