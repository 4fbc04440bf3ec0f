"""The driver on the RTL: the same program, through driver, kernel and firmware, gives the
same bytes on the simulated gates as on the functional model."""

import numpy as np
import pytest
from npu_programs import TILE, add_int32, barrier_consumer, barrier_producer
from rtl_run import run_bench

import driver
from driver import Status

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


def _on_the_model(x, y):
    with driver.open(local=True, spec="small") as dev, dev.context(memory=1 << 20) as ctx:
        bx, by, bout, t = ctx.upload(x), ctx.upload(y), ctx.alloc(TILE), ctx.alloc(TILE)
        ctx.run(ctx.load_program(add_int32()), [bx, by, bout])
        add = bout.read()
        ctx.run_multi({1: (ctx.load_program(barrier_producer()), [bx, t]),
                       0: (ctx.load_program(barrier_consumer()), [t, by, bout])})
        return add, bout.read()


def test_a_program_through_the_driver_on_the_rtl_matches_the_model(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    y = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    got = run_bench("rtl_driver_bench", (x.tobytes(), y.tobytes()), tmp_path)
    add, multi = _on_the_model(x, y)
    assert got["num_pes"] == 2
    assert got["add"] == (add, Status.OK)
    assert got["multi"] == (multi, Status.OK)
    np.testing.assert_array_equal(np.frombuffer(add, np.int32).reshape(4, 16), x + y)
    np.testing.assert_array_equal(np.frombuffer(multi, np.int32).reshape(4, 16), 2 * x - y)
