"""Drive a simple memory-mapped register bus from cocotb, from async and from blocking code.

Bus protocol (one request channel with a valid/ready handshake, all on ``clk``'s rising edge):

    manager -> subordinate:  valid (1)   a request is presented
                             we    (1)   1 = write, 0 = read
                             addr  (N)   byte address of a 32-bit register
                             wdata (32)  data to write (don't care for reads)
    subordinate -> manager:  ready (1)   the request completes at this edge
                             rdata (32)  read data, valid whenever ready is high

* The manager raises ``valid`` with ``we/addr/wdata`` and holds all four steady until the
  handshake: the first rising edge of ``clk`` at which ``valid`` and ``ready`` are both 1.
  A write takes effect at that edge; a read returns the ``rdata`` seen just before it.
* The subordinate may hold ``ready`` low for any number of wait states; ``ready`` may be
  combinational (zero wait states) or registered. ``ready`` without ``valid`` means nothing.
* After the handshake the manager drops ``valid`` (or presents the next request).

Pieces:

* :class:`RegisterBus` - async ``read``/``write``/``wait_for``/``cycles`` for cocotb coroutines.
* :class:`SyncBus` - the same as blocking ``read32``/``write32``/``wait_for``/``cycles`` for
  ordinary Python code (a driver, a firmware model) that runs under ``cocotb.task.bridge``;
  each call hands control to the simulator through ``cocotb.task.resume`` and returns when
  the transaction is done. See :func:`run_blocking`.
* :func:`wait_for` - wait for a signal to reach a value, with a timeout in clock cycles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from cocotb.clock import Clock
from cocotb.handle import LogicArrayObject, LogicObject
from cocotb.task import bridge, resume
from cocotb.triggers import (
    ClockCycles,
    Lock,
    ReadOnly,
    RisingEdge,
    ValueChange,
    select,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Signal = LogicObject | LogicArrayObject
MASK32 = 0xFFFF_FFFF


class BusTimeout(TimeoutError):
    """The subordinate did not raise ``ready`` / a signal did not reach its value in time."""


def _value_is(signal: Signal, value: int) -> bool:
    v = signal.value
    # X/Z (possible on Icarus before reset) never equals a number.
    return v.is_resolvable and int(v) == value


async def wait_for(signal: Signal, value: int, timeout_cycles: int, *, clock: Signal) -> None:
    """Return once *signal* equals *value*; raise :class:`BusTimeout` after *timeout_cycles*.

    Wakes only on changes of *signal* (``RisingEdge`` for a 1-bit signal awaited high,
    ``ValueChange`` otherwise) raced against ``ClockCycles(clock, timeout_cycles)``, so a long
    wait costs no Python work per clock cycle.
    """
    if _value_is(signal, value):
        return

    async def reached() -> None:
        rising = value == 1 and isinstance(signal, LogicObject)
        while True:
            await (RisingEdge(signal) if rising else ValueChange(signal))
            if _value_is(signal, value):
                return

    index, _ = await select(reached(), ClockCycles(clock, timeout_cycles))
    if index != 0:
        raise BusTimeout(f"{signal!r} != {value:#x} after {timeout_cycles} cycles")


async def start_clock_and_reset(
    dut: Any, *, period_ns: float = 10, reset_cycles: int = 2, clk: str = "clk", rst: str = "rst"
) -> None:
    """Start a clock on ``dut.<clk>`` and pulse the active-high synchronous ``dut.<rst>``.

    Amaranth's ``sync`` domain has exactly these two ports (``clk``, ``rst``).
    """
    clock, reset = getattr(dut, clk), getattr(dut, rst)
    Clock(clock, period_ns, unit="ns").start()
    reset.value = 1
    await ClockCycles(clock, reset_cycles)
    reset.value = 0
    await RisingEdge(clock)


class RegisterBus:
    """Async manager for the register bus of *dut*.

    Signals are ``dut.<prefix>valid``, ``we``, ``addr``, ``wdata``, ``ready``, ``rdata``; the
    clock is ``dut.<clk>``. Transactions are serialised by a lock, so several tasks (or
    bridged threads) may share one bus. A request not answered within *timeout_cycles*
    raises :class:`BusTimeout`.
    """

    def __init__(self, dut: Any, *, prefix: str = "", clk: str = "clk", timeout_cycles=1000):
        self.dut = dut
        self.clk: Signal = getattr(dut, clk)
        self.valid: Signal = getattr(dut, prefix + "valid")
        self.we: Signal = getattr(dut, prefix + "we")
        self.addr: Signal = getattr(dut, prefix + "addr")
        self.wdata: Signal = getattr(dut, prefix + "wdata")
        self.ready: Signal = getattr(dut, prefix + "ready")
        self.rdata: Signal = getattr(dut, prefix + "rdata")
        self.timeout_cycles = timeout_cycles
        self._lock = Lock()
        self.valid.value = 0
        self.we.value = 0

    async def read(self, addr: int) -> int:
        """Read the 32-bit register at byte address *addr*."""
        data = await self._transfer(addr, 0, 0)
        log.debug("read  %#06x -> %#010x", addr, data)
        return data

    async def write(self, addr: int, value: int) -> None:
        """Write *value* (0 .. 2**32-1) to the register at byte address *addr*."""
        if not 0 <= value <= MASK32:
            raise ValueError(f"value {value:#x} does not fit in 32 bits")
        log.debug("write %#06x <- %#010x", addr, value)
        await self._transfer(addr, 1, value)

    async def wait_for(self, signal: Signal | str, value: int = 1, timeout_cycles=10_000):
        """:func:`wait_for` on this bus's clock; *signal* may be a handle or a port name."""
        sig = getattr(self.dut, signal) if isinstance(signal, str) else signal
        await wait_for(sig, value, timeout_cycles, clock=self.clk)

    async def cycles(self, n: int) -> None:
        """Let *n* rising clock edges pass."""
        await ClockCycles(self.clk, n)

    async def _transfer(self, addr: int, we: int, wdata: int) -> int:
        async with self._lock:
            # Drive just after a rising edge so the request is set up well before the next one.
            await RisingEdge(self.clk)
            self.addr.value = addr
            self.we.value = we
            self.wdata.value = wdata
            self.valid.value = 1
            for _ in range(self.timeout_cycles):
                # Sample once everything has settled in this cycle: if ready is high now,
                # the coming edge is the handshake.
                await ReadOnly()
                if _value_is(self.ready, 1):
                    rdata = self.rdata.value
                    await RisingEdge(self.clk)
                    self.valid.value = 0
                    self.we.value = 0
                    return int(rdata) if rdata.is_resolvable else 0
                await RisingEdge(self.clk)
            raise BusTimeout(f"no ready for {'write' if we else 'read'} of {addr:#x}")

    def sync(self) -> SyncBus:
        """A blocking facade for code running under ``cocotb.task.bridge``."""
        return SyncBus(self)


class SyncBus:
    """Blocking view of a :class:`RegisterBus`.

    Only callable from a thread started by ``cocotb.task.bridge`` (e.g. via
    :func:`run_blocking`); from anywhere else ``resume`` raises ``RuntimeError``. Each call
    blocks that thread while the simulator runs the transaction, so the code sees the
    hardware exactly as a driver on a CPU would: one register access at a time.
    """

    def __init__(self, bus: RegisterBus):
        self.bus = bus
        self._read = resume(bus.read)
        self._write = resume(bus.write)
        self._wait_for = resume(bus.wait_for)
        self._cycles = resume(bus.cycles)

    def read32(self, addr: int) -> int:
        """Read the 32-bit register at *addr*."""
        return self._read(addr)

    def write32(self, addr: int, value: int) -> None:
        """Write the 32-bit register at *addr*."""
        self._write(addr, value)

    def wait_for(self, signal: Signal | str, value: int = 1, timeout_cycles: int = 10_000):
        """Block until *signal* (handle or port name) equals *value*, like an IRQ wait."""
        self._wait_for(signal, value, timeout_cycles)

    def cycles(self, n: int) -> None:
        """Block while *n* clock cycles pass."""
        self._cycles(n)


async def run_blocking(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking *func* in a bridge thread; the calling cocotb task waits for its result.

    Exceptions raised by *func* (an ``AssertionError`` in a check, a :class:`BusTimeout`)
    come out of this ``await``, so they fail the cocotb test.
    """
    return await bridge(func)(*args, **kwargs)
