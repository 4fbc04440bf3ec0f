"""cocotb tests for the harness DUT: blocking driver code runs against RTL through the bridge.

Run by ``test_sim_harness.py`` via :func:`hw.sim.runner.run_cocotb`; not collected by pytest.
"""

import cocotb
from cocotb.utils import get_sim_time
from harness_map import COUNT, CTRL, ID, ID_VALUE, SCRATCH0, SCRATCH1, TARGET

from hw.sim.bus import BusTimeout, RegisterBus, SyncBus, run_blocking, start_clock_and_reset

CLOCK_NS = 10


def driver_program(bus: SyncBus, cycles: int) -> dict[str, int]:
    """Plain blocking code, written like a host driver: registers, start, wait for done."""
    bus.write32(SCRATCH0, 0xDEADBEEF)
    bus.write32(SCRATCH1, 0x0123_4567)
    assert bus.read32(SCRATCH0) == 0xDEADBEEF
    assert bus.read32(SCRATCH1) == 0x0123_4567
    assert bus.read32(ID) == ID_VALUE
    bus.write32(TARGET, cycles)
    bus.write32(CTRL, 1)
    assert bus.read32(CTRL) & 1, "counter should be busy right after the start"
    bus.wait_for("done", 1, timeout_cycles=cycles + 50)
    return {"ctrl": bus.read32(CTRL), "count": bus.read32(COUNT)}


def timeout_program(bus: SyncBus) -> str:
    """A wait that cannot finish in time must raise in the blocking code, not hang."""
    bus.write32(TARGET, 1_000_000)
    bus.write32(CTRL, 1)
    try:
        bus.wait_for("done", 1, timeout_cycles=20)
    except BusTimeout as e:
        return str(e)
    return "no timeout"


@cocotb.test()
async def bridge_registers_and_done(dut):
    """Blocking driver code reads/writes registers and waits for done."""
    await start_clock_and_reset(dut, period_ns=CLOCK_NS)
    bus = RegisterBus(dut)
    cycles = 200
    t0 = get_sim_time("ns")
    got = await run_blocking(driver_program, bus.sync(), cycles)
    elapsed_cycles = (get_sim_time("ns") - t0) / CLOCK_NS
    assert got == {"ctrl": 0b10, "count": cycles}, got
    assert dut.done.value == 1
    # The wait really covered the counter's run (plus a few bus transactions).
    assert cycles <= elapsed_cycles < cycles + 60, elapsed_cycles


@cocotb.test()
async def async_bus_and_restart(dut):
    """The async API directly; a second start clears done until the counter finishes again."""
    await start_clock_and_reset(dut, period_ns=CLOCK_NS)
    bus = RegisterBus(dut)
    await bus.write(TARGET, 5)
    await bus.write(CTRL, 1)
    await bus.wait_for(dut.done, 1, timeout_cycles=50)
    assert await bus.read(COUNT) == 5
    await bus.write(TARGET, 30)
    await bus.write(CTRL, 1)
    assert await bus.read(CTRL) == 0b01, "restart clears done"
    await bus.wait_for("done", 1, timeout_cycles=60)
    assert await bus.read(COUNT) == 30


@cocotb.test()
async def wait_for_times_out(dut):
    """wait_for raises BusTimeout through the bridge when done never comes."""
    await start_clock_and_reset(dut, period_ns=CLOCK_NS)
    message = await run_blocking(timeout_program, RegisterBus(dut).sync())
    assert "after 20 cycles" in message, message
