"""The same firmware on the RTL: a program, a rejected command and the watchdog, with a test
host playing the kernel on the rings (tests/driver/test_driver_rtl.py goes through the
whole driver)."""

import numpy as np
import pytest
from rtl_run import run_bench

from firmware import Status
from hw.generated import isa

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


def test_firmware_serves_the_rings_on_the_rtl(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    y = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    got = run_bench("rtl_firmware_bench", (x.tobytes(), y.tobytes()), tmp_path)
    assert got["good"] is not None and got["good"][2] == Status.OK, got
    out = np.frombuffer(got["out"], np.int32).reshape(4, 16)
    np.testing.assert_array_equal(out, x + y)
    assert got["bad"][2] == Status.BAD_ADDRESS
    hung = got["hung"]
    assert (hung[2], hung[4], hung[3]) == (Status.PE_ERROR, isa.ERR_WATCHDOG, 1)
