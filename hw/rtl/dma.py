"""The DMA engine: LOAD (DRAM to SRAM) or STORE (SRAM to DRAM) over a 3-D box, with gather.

One engine per direction per PE. It walks ``i2 < n2`` planes, ``i1 < n1`` rows and the
``n0`` bytes of a row in beats of 4 or 8 bytes (8 when both the DRAM and the SRAM address
are 8-byte aligned and 8 bytes remain in the row; the ISA's 4-byte alignment makes every
beat one of the two). Loads keep up to ``MAX_OUTSTANDING`` reads in flight, one request a
cycle, and write each response into SRAM as it returns; stores read SRAM and post a write,
two cycles a beat. With ``gather`` set, each plane first reads its u32 table entry from
SRAM and checks that plane's DRAM range; a plane outside the window stops the engine with
DRAM_RANGE after the earlier planes have fully moved (the static checks of ``checks.py``
have already passed). Not modelled: bursts (every beat is its own request) and SRAM bank
conflicts.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.common import DATA_BITS, dram_port, sram_word_bits
from hw.spec import Spec

MAX_OUTSTANDING = 64


class Dma(wiring.Component):
    """Ports: ``start`` with ``word``/``arg_base``/``win_*``; ``done`` pulses at the end with
    ``error`` high when a gather plane fell outside the window. ``bytes`` is the number of
    bytes moved this cycle (for PERF_DRAM_BYTES)."""

    def __init__(self, spec: Spec, store: bool):
        self.spec = spec
        self.store = store
        wbits = sram_word_bits(spec)
        super().__init__({
            "start": In(1),
            "word": In(256),
            "arg_base": In(64),
            "win_base": In(64),
            "win_size": In(64),
            "done": Out(1),
            "error": Out(1),
            "busy": Out(1),
            "bytes": Out(4),
            "dram": Out(dram_port()),
            "rd_addr": Out(wbits),
            "rd_en": Out(1),
            "rd_data": In(DATA_BITS),
            "wr_addr": Out(wbits),
            "wr_data": Out(DATA_BITS),
            "wr_en": Out(DATA_BITS // 8),
        })

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        lay = gen.build(spec).layouts
        w = Signal(256)
        f = lay.Load(w)
        base = Signal(64)
        win_lo = Signal(64)
        win_hi = Signal(66)

        plane_dram = Signal(72)   # DRAM address of plane i2 (without the gather)
        plane_sram = Signal(28)
        row_dram = Signal(72)
        row_sram = Signal(28)
        off = Signal(16)
        i1 = Signal(16)
        i2 = Signal(16)

        d = Signal(72)
        s = Signal(28)
        size = Signal(4)
        m.d.comb += [
            d.eq(row_dram + off),
            s.eq(row_sram + off),
            size.eq(Mux((d[0:3] == 0) & (s[0:3] == 0) & (f.n0 - off >= 8), 8, 4)),
        ]

        # Loads: what each outstanding read must do when its data comes back.
        meta = None
        if not self.store:
            meta = SyncFIFOBuffered(width=28 + 4 + 3, depth=MAX_OUTSTANDING)
            m.submodules.meta = meta

        advance = Signal()   # the current beat is taken this cycle

        def step():
            """Move to the next beat once the current one is taken."""
            m.d.comb += self.bytes.eq(size)
            with m.If(off + size < f.n0):
                m.d.sync += off.eq(off + size)
                if self.store:
                    m.next = "READ"
            with m.Else():
                m.d.sync += off.eq(0)
                with m.If(i1 + 1 < f.n1):
                    m.d.sync += [
                        i1.eq(i1 + 1),
                        row_dram.eq(row_dram + f.dram_s1),
                        row_sram.eq(row_sram + f.sram_s1),
                    ]
                    if self.store:
                        m.next = "READ"
                with m.Else():
                    m.d.sync += i1.eq(0)
                    with m.If(i2 + 1 < f.n2):
                        m.d.sync += [
                            i2.eq(i2 + 1),
                            plane_dram.eq(plane_dram + f.dram_s2),
                            plane_sram.eq(plane_sram + f.sram_s2),
                        ]
                        m.next = "PLANE"
                    with m.Else():
                        m.next = "FINISH" if self.store else "DRAIN"


        m.d.comb += self.busy.eq(1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    f_in = lay.Load(self.word)
                    m.d.sync += [
                        w.eq(self.word),
                        base.eq(self.arg_base),
                        win_lo.eq(self.win_base),
                        win_hi.eq(self.win_base + self.win_size),
                        plane_dram.eq(self.arg_base + f_in.dram_offset),
                        plane_sram.eq(f_in.sram_addr),
                        off.eq(0), i1.eq(0), i2.eq(0),
                    ]
                    m.next = "PLANE"
            with m.State("PLANE"):
                with m.If(f.gather):
                    tab = f.gather_addr + i2 * 4
                    m.d.comb += [self.rd_addr.eq(tab[3:]), self.rd_en.eq(1)]
                    m.next = "TABLE"
                with m.Else():
                    m.d.sync += [row_dram.eq(plane_dram), row_sram.eq(plane_sram)]
                    m.next = "READ" if self.store else "BEATS"
            with m.State("TABLE"):
                tab = f.gather_addr + i2 * 4
                entry = self.rd_data.word_select(tab[2], 32)
                lo = Signal(72)
                hi = Signal(72)
                m.d.comb += [
                    lo.eq(base + f.dram_offset + entry * f.dram_s2),
                    hi.eq(lo + (f.n1 - 1) * f.dram_s1 + f.n0),
                ]
                m.d.sync += [row_dram.eq(lo), row_sram.eq(plane_sram)]
                with m.If((lo < win_lo) | (hi > win_hi) | (hi > spec.dram_bytes)):
                    m.next = "FAIL"
                with m.Else():
                    m.next = "READ" if self.store else "BEATS"

            if self.store:
                with m.State("READ"):
                    m.d.comb += [self.rd_addr.eq(s[3:]), self.rd_en.eq(1)]
                    m.next = "WRITE"
                with m.State("WRITE"):
                    lane = self.rd_data >> (s[0:3] * 8)
                    m.d.comb += [
                        self.dram.req_valid.eq(1),
                        self.dram.req_we.eq(1),
                        self.dram.req_addr.eq(d[3:32] << 3),
                        self.dram.req_wdata.eq(lane << (d[0:3] * 8)),
                        self.dram.req_wstrb.eq(((1 << size) - 1) << d[0:3]),
                        advance.eq(self.dram.req_ready),
                    ]
                    with m.If(advance):
                        step()
            else:
                with m.State("BEATS"):
                    m.d.comb += [
                        self.dram.req_valid.eq(meta.w_rdy),
                        self.dram.req_addr.eq(d[3:32] << 3),
                        advance.eq(meta.w_rdy & self.dram.req_ready),
                        meta.w_en.eq(advance),
                        meta.w_data.eq(s | (size << 28) | (d[0:3] << 32)),
                    ]
                    with m.If(advance):
                        step()
                with m.State("DRAIN"):
                    with m.If(meta.level == 0):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"

            with m.State("FAIL"):
                # Earlier planes' reads must land before the error drops the queues.
                with m.If(1 if meta is None else meta.level == 0):
                    m.d.comb += [self.done.eq(1), self.error.eq(1)]
                    m.next = "IDLE"

            with m.State("FINISH"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        if not self.store:
            # Responses come back in request order: write each where its metadata says.
            r_s = meta.r_data[0:28]
            r_size = meta.r_data[28:32]
            r_d = meta.r_data[32:35]
            m.d.comb += [
                meta.r_en.eq(self.dram.resp_valid),
                self.wr_addr.eq(r_s[3:]),
                self.wr_data.eq((self.dram.resp_data >> (r_d * 8)) << (r_s[0:3] * 8)),
            ]
            with m.If(self.dram.resp_valid):
                m.d.comb += self.wr_en.eq(((1 << r_size) - 1) << r_s[0:3])
        return m
