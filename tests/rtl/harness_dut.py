"""A tiny Amaranth design to exercise the simulation harness (not part of the NPU).

It sits on the register bus described in :mod:`hw.sim.bus` and answers every request with
one wait state (``ready`` is registered), so the bus driver's wait-state handling is tested.

Register map (byte addresses, 32-bit registers): see harness_map.py.

``done`` (output) goes high when COUNT reaches TARGET and stays high until the next start.
"""

# No `from __future__ import annotations`: Amaranth reads the port annotations as live objects.
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from harness_map import COUNT, CTRL, ID, ID_VALUE, SCRATCH0, SCRATCH1, TARGET, TOP

__all__ = ["TOP", "HarnessDut"]


class HarnessDut(wiring.Component):
    """Ports: the bus (``valid we addr wdata`` in, ``ready rdata`` out) and ``done`` out."""

    valid: In(1)
    we: In(1)
    addr: In(8)
    wdata: In(32)
    ready: Out(1)
    rdata: Out(32)
    done: Out(1)

    def elaborate(self, platform):
        m = Module()
        scratch0 = Signal(32)
        scratch1 = Signal(32)
        target = Signal(32)
        count = Signal(32)
        busy = Signal()

        # One wait state: ready rises the cycle after valid and drops after the handshake.
        m.d.sync += self.ready.eq(self.valid & ~self.ready)
        with m.Switch(self.addr):
            with m.Case(SCRATCH0):
                m.d.sync += self.rdata.eq(scratch0)
            with m.Case(SCRATCH1):
                m.d.sync += self.rdata.eq(scratch1)
            with m.Case(TARGET):
                m.d.sync += self.rdata.eq(target)
            with m.Case(CTRL):
                m.d.sync += self.rdata.eq(busy | (self.done << 1))
            with m.Case(COUNT):
                m.d.sync += self.rdata.eq(count)
            with m.Case(ID):
                m.d.sync += self.rdata.eq(ID_VALUE)
            with m.Default():
                m.d.sync += self.rdata.eq(0)

        with m.If(busy):
            m.d.sync += count.eq(count + 1)
            with m.If(count + 1 >= target):
                m.d.sync += [busy.eq(0), self.done.eq(1)]

        # Bus writes come last so that a start wins over the counter's own update.
        with m.If(self.valid & self.ready & self.we):
            with m.Switch(self.addr):
                with m.Case(SCRATCH0):
                    m.d.sync += scratch0.eq(self.wdata)
                with m.Case(SCRATCH1):
                    m.d.sync += scratch1.eq(self.wdata)
                with m.Case(TARGET):
                    m.d.sync += target.eq(self.wdata)
                with m.Case(CTRL):
                    with m.If(self.wdata[0]):
                        m.d.sync += [busy.eq(1), count.eq(0), self.done.eq(0)]
        return m
