"""The MAC array: MATMUL on int8 tiles into int32, output-stationary rows x cols.

The array holds one ``rows x cols`` block of C in its accumulators while K streams
through it in chunks of ``KC = 8``. Two engines run concurrently:

* the *fill* engine reads, for each (C block, K chunk) in order, the ``rows`` rows of A
  (``A[i0 + r, k0:k0+8]``) and the 8 rows of B (``B[k0 + r, j0:j0+cols]``, or with
  ``transpose_b`` ``Bt[j0 + r, k0:k0+8]``) into one of two operand buffers, one row of each
  per cycle through two read ports per operand (an unaligned 8-byte span touches at most
  two SRAM words);
* the *compute* engine takes a full buffer and does one K step per cycle: every cell
  ``acc[r][c] += A[r][kk] * B[kk][c]`` (int8 x int8 summed into int32, wrapping);
  at the end of a block it hands the accumulators to the *writeback* engine, which writes
  them to C (two int32 a cycle when 8-byte aligned) while the next block computes.

With ``accumulate``, the block's C is first read into the accumulators (one element a
cycle, not overlapped). The array is square in K chunks: the rows/cols of the spec
must be at most 8 wide in this implementation's operand rows (one 64-bit SRAM word span).
Not modelled: float inputs (BAD_FIELD in ``checks.py``) and SRAM bank conflicts.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.common import DATA_BITS, sram_word_bits
from hw.spec import Spec

KC = 8  # K elements per chunk: one 8-byte row of int8


class MacArray(wiring.Component):
    """Ports: ``start`` with ``word`` (a MATMUL); ``done`` pulses when C is written.

    SRAM: read ports ``a_lo``/``a_hi``/``b_lo``/``b_hi``/``c`` (``*_addr``, ``*_data``), one
    write port ``w_addr``/``w_data``/``w_en`` (byte enables). ``busy`` is high from start
    to done."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.rows = spec.pe.mac.rows
        self.cols = spec.pe.mac.cols
        if self.rows > 8 or self.cols > 8:
            raise ValueError(f"pe.mac.rows and cols must be at most 8 for this RTL, got "
                             f"{self.rows}x{self.cols}")
        wbits = sram_word_bits(spec)
        ports = {}
        for p in ("a_lo", "a_hi", "b_lo", "b_hi", "c"):
            ports[f"{p}_addr"] = Out(wbits)
            ports[f"{p}_data"] = In(DATA_BITS)
        super().__init__({
            "start": In(1),
            "word": In(256),
            "done": Out(1),
            "busy": Out(1),
            **ports,
            "w_addr": Out(wbits),
            "w_data": Out(DATA_BITS),
            "w_en": Out(DATA_BITS // 8),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        lay = gen.build(self.spec).layouts
        w = Signal(256)
        f = lay.Matmul(w)

        # Operand buffers: [buffer][row] of 8 bytes each.
        arow = [[Signal(64, name=f"a{b}_{r}") for r in range(R)] for b in range(2)]
        brow = [[Signal(64, name=f"b{b}_{r}") for r in range(KC)] for b in range(2)]
        full = Array([Signal(name="full0"), Signal(name="full1")])
        acc = [[Signal(32, name=f"acc{r}_{c}") for c in range(C)] for r in range(R)]
        wb = [[Signal(32, name=f"wb{r}_{c}") for c in range(C)] for r in range(R)]
        flat_acc = Array(x for row in acc for x in row)

        # ---- fill engine ----
        fi0, fj0, fk0 = Signal(16), Signal(16), Signal(16)
        fr = Signal(4)
        fb = Signal()
        cb = Signal()   # the buffer the compute engine works on
        filling = Signal()
        land = Signal()
        land_b = Signal()
        land_r = Signal(4)
        land_ax = Signal(3)
        land_bx = Signal(3)
        a_x = Signal(48)
        b_x = Signal(48)
        m.d.comb += [
            a_x.eq(f.a_addr + (fi0 + fr) * f.a_stride + fk0),
            b_x.eq(Mux(f.transpose_b, f.b_addr + (fj0 + fr) * f.b_stride + fk0,
                                     f.b_addr + (fk0 + fr) * f.b_stride + fj0)),
            self.a_lo_addr.eq(a_x[3:]),
            self.a_hi_addr.eq(a_x[3:] + 1),
            self.b_lo_addr.eq(b_x[3:]),
            self.b_hi_addr.eq(b_x[3:] + 1),
        ]
        issue = Signal()
        # A buffer may be refilled from the cycle of its last K step: row 0 lands a cycle
        # later, after the step has read it.
        release = Signal()
        m.d.comb += issue.eq(filling & (~full[fb] | (release & (cb == fb))))
        m.d.sync += [land.eq(issue), land_b.eq(fb), land_r.eq(fr),
                     land_ax.eq(a_x[0:3]), land_bx.eq(b_x[0:3])]
        a_data = (Cat(self.a_lo_data, self.a_hi_data) >> (land_ax * 8))[0:64]
        b_data = (Cat(self.b_lo_data, self.b_hi_data) >> (land_bx * 8))[0:64]
        with m.If(land):
            for b in range(2):
                for r in range(KC):
                    with m.If((land_b == b) & (land_r == r)):
                        if r < R:
                            m.d.sync += arow[b][r].eq(a_data)
                        m.d.sync += brow[b][r].eq(b_data)
            with m.If(land_r == KC - 1):
                m.d.sync += full[land_b].eq(1)
        with m.If(issue):
            with m.If(fr != KC - 1):
                m.d.sync += fr.eq(fr + 1)
            with m.Else():
                m.d.sync += [fr.eq(0), fb.eq(~fb)]
                with m.If(fk0 + KC < f.k):
                    m.d.sync += fk0.eq(fk0 + KC)
                with m.Else():
                    m.d.sync += fk0.eq(0)
                    with m.If(fj0 + C < f.n):
                        m.d.sync += fj0.eq(fj0 + C)
                    with m.Else():
                        m.d.sync += fj0.eq(0)
                        with m.If(fi0 + R < f.m):
                            m.d.sync += fi0.eq(fi0 + R)
                        with m.Else():
                            m.d.sync += filling.eq(0)

        # ---- writeback engine ----
        wb_busy = Signal()
        wi0, wj0 = Signal(16), Signal(16)
        wr, wc = Signal(4), Signal(4)
        wx = Signal(48)
        m.d.comb += wx.eq(f.c_addr + (wi0 + wr) * f.c_stride + (wj0 + wc) * 4)
        wb_flat = Array(x for row in wb for x in row)
        val0 = wb_flat[wr * C + wc]
        val1 = wb_flat[wr * C + wc + 1]
        pair = Signal()
        m.d.comb += pair.eq((wx[2] == 0) & (wc + 1 < C) & (wj0 + wc + 1 < f.n))
        with m.If(wb_busy):
            m.d.comb += [self.w_addr.eq(wx[3:])]
            with m.If(pair):
                m.d.comb += [self.w_data.eq(Cat(val0, val1)), self.w_en.eq(0xFF)]
            with m.Else():
                m.d.comb += [self.w_data.eq(Cat(val0, val0)),
                             self.w_en.eq(Mux(wx[2], 0xF0, 0x0F))]
            step = Mux(pair, 2, 1)
            with m.If((wc + step < C) & (wj0 + wc + step < f.n)):
                m.d.sync += wc.eq(wc + step)
            with m.Else():
                m.d.sync += wc.eq(0)
                with m.If((wr + 1 < R) & (wi0 + wr + 1 < f.m)):
                    m.d.sync += wr.eq(wr + 1)
                with m.Else():
                    m.d.sync += [wr.eq(0), wb_busy.eq(0)]

        # ---- compute engine ----
        ci0, cj0, ck0 = Signal(16), Signal(16), Signal(16)
        kk = Signal(4)
        ce = Signal(7)
        cx = Signal(48)
        kn = Signal(16)
        m.d.comb += kn.eq(Mux(f.k - ck0 < KC, f.k - ck0, KC))
        m.d.comb += self.busy.eq(1)

        def next_block():
            """After a block's last chunk: hand it to writeback and move on."""
            with m.If(~wb_busy):
                m.d.sync += [wb_busy.eq(1), wi0.eq(ci0), wj0.eq(cj0), wr.eq(0), wc.eq(0)]
                m.d.sync += [wb[r][c].eq(acc[r][c]) for r in range(R) for c in range(C)]
                m.d.sync += [acc[r][c].eq(0) for r in range(R) for c in range(C)]
                m.d.sync += ck0.eq(0)
                last = Signal()
                m.d.comb += last.eq((cj0 + C >= f.n) & (ci0 + R >= f.m))
                with m.If(cj0 + C < f.n):
                    m.d.sync += cj0.eq(cj0 + C)
                with m.Else():
                    m.d.sync += [cj0.eq(0), ci0.eq(ci0 + R)]
                with m.If(last):
                    m.next = "FINISH"
                with m.Elif(f.accumulate):
                    m.d.sync += ce.eq(0)
                    m.next = "CREAD"
                with m.Else():
                    m.next = "RUN"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [w.eq(self.word), filling.eq(1), fi0.eq(0), fj0.eq(0),
                                 fk0.eq(0), fr.eq(0), fb.eq(0), cb.eq(0), kk.eq(0),
                                 ci0.eq(0), cj0.eq(0), ck0.eq(0), ce.eq(0),
                                 full[0].eq(0), full[1].eq(0)]
                    m.d.sync += [acc[r][c].eq(0) for r in range(R) for c in range(C)]
                    m.next = "START"
            with m.State("START"):
                with m.If(f.accumulate):
                    m.next = "CREAD"
                with m.Else():
                    m.next = "RUN"
            with m.State("CREAD"):
                er, ec = ce[3:7], ce[0:3]
                m.d.comb += cx.eq(f.c_addr + (ci0 + er) * f.c_stride + (cj0 + ec) * 4)
                m.d.comb += self.c_addr.eq(cx[3:])
                prev_x2 = Signal()
                m.d.sync += [prev_x2.eq(cx[2]), ce.eq(ce + 1)]
                with m.If((ce != 0) & ((ce - 1)[0:3] < C)):
                    pe = ce - 1
                    val = self.c_data.word_select(prev_x2, 32)
                    m.d.sync += flat_acc[pe[3:7] * C + pe[0:3]].eq(val)
                with m.If(ce == 8 * R):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(full[cb]):
                    arows = Array(Array(arow[b]) for b in range(2))
                    brows = Array(Array(brow[b]) for b in range(2))
                    for r in range(R):
                        a = arows[cb][r].word_select(kk, 8).as_signed()
                        for c in range(C):
                            b_plain = brows[cb][kk].word_select(c, 8)
                            b_trans = brows[cb][c].word_select(kk, 8)
                            b = Mux(f.transpose_b, b_trans, b_plain).as_signed()
                            m.d.sync += acc[r][c].eq(acc[r][c] + a * b)
                    with m.If(kk + 1 < kn):
                        m.d.sync += kk.eq(kk + 1)
                    with m.Else():
                        m.d.comb += release.eq(1)
                        m.d.sync += [kk.eq(0), full[cb].eq(0), cb.eq(~cb)]
                        with m.If(ck0 + KC < f.k):
                            m.d.sync += ck0.eq(ck0 + KC)
                        with m.Else():
                            m.next = "XFER"
            with m.State("XFER"):
                next_block()
            with m.State("FINISH"):
                with m.If(~wb_busy):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
