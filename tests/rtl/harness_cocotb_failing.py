"""cocotb tests of which one fails on purpose, to prove that run_cocotb reports failures."""

import cocotb
from harness_map import ID, ID_VALUE

from hw.sim.bus import RegisterBus, SyncBus, run_blocking, start_clock_and_reset


def wrong_expectation(bus: SyncBus) -> None:
    assert bus.read32(ID) == ID_VALUE + 1, "deliberate failure"


@cocotb.test()
async def passes(dut):
    await start_clock_and_reset(dut)
    assert await RegisterBus(dut).read(ID) == ID_VALUE


@cocotb.test()
async def fails_on_purpose(dut):
    await start_clock_and_reset(dut)
    await run_blocking(wrong_expectation, RegisterBus(dut).sync())
