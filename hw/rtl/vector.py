"""The vector unit: integer VECTOR instructions, one element a cycle in a 2-stage pipeline.

Stage 0 walks ``r < rows``, ``c < cols`` and reads src1 and src2 (by ``src2_mode``) from
SRAM; stage 1 sign-extends them to a wide integer, applies the function, saturates to
``out_dtype`` and writes the element (or, for ``row_sum``/``row_max``, folds it into the
row's accumulator and writes the row's result after its last column). Integer inputs only
(int8, int16, int32 in and out); arithmetic is done in 72 bits, so nothing a 64-bit
computation of docs/isa.md keeps can wrap. Not modelled: the spec's vector lanes (this
unit is one lane wide), float inputs and the transcendental functions (BAD_FIELD in
``checks.py``).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.common import DATA_BITS, elem_bytes_table, sram_word_bits
from hw.spec import Spec

WIDE = signed(72)


class VectorUnit(wiring.Component):
    """Ports: ``start`` with ``word`` (a VECTOR); ``done`` pulses after the last write.
    SRAM: read ports ``s1_addr``/``s1_data``, ``s2_addr``/``s2_data``; write port
    ``w_addr``/``w_data``/``w_en``."""

    def __init__(self, spec: Spec):
        self.spec = spec
        wbits = sram_word_bits(spec)
        super().__init__({
            "start": In(1),
            "word": In(256),
            "done": Out(1),
            "busy": Out(1),
            "s1_addr": Out(wbits),
            "s1_data": In(DATA_BITS),
            "s2_addr": Out(wbits),
            "s2_data": In(DATA_BITS),
            "w_addr": Out(wbits),
            "w_data": Out(DATA_BITS),
            "w_en": Out(DATA_BITS // 8),
        })

    def elaborate(self, platform):
        m = Module()
        g = gen.build(self.spec)
        isa, lay = g.isa, g.layouts
        fn, dt, modes = isa.VECTOR_FUNCS, isa.DTYPES, isa.SRC2_MODES
        esz = elem_bytes_table(self.spec)
        w = Signal(256)
        f = lay.Vector(w)
        ie = Signal(3)
        oe = Signal(3)
        m.d.comb += [ie.eq(esz[f.in_dtype]), oe.eq(esz[f.out_dtype])]
        reduce = Signal()
        m.d.comb += reduce.eq((f.func == fn["row_sum"]) | (f.func == fn["row_max"]))

        # ---- stage 0: walk the tile, read operands ----
        running = Signal()
        r, c = Signal(16), Signal(16)
        x1, x2, xd = Signal(48), Signal(48), Signal(48)
        m.d.comb += [
            x1.eq(f.src1_addr + r * f.src1_stride + c * ie),
            xd.eq(f.dst_addr + r * f.dst_stride + Mux(reduce, 0, c * oe)),
        ]
        with m.Switch(f.src2_mode):
            with m.Case(modes["tile"]):
                m.d.comb += x2.eq(f.src2_addr + r * f.src2_stride + c * ie)
            with m.Case(modes["row"]):
                m.d.comb += x2.eq(f.src2_addr + c * ie)
            with m.Case(modes["col"]):
                m.d.comb += x2.eq(f.src2_addr + r * f.src2_stride)
        m.d.comb += [self.s1_addr.eq(x1[3:]), self.s2_addr.eq(x2[3:])]

        v1 = Signal()
        p_x1, p_x2 = Signal(3), Signal(3)
        p_xd = Signal(48)
        p_first, p_last, p_end = Signal(), Signal(), Signal()
        last_col = c + 1 >= f.cols
        last_row = r + 1 >= f.rows
        m.d.sync += [
            v1.eq(running),
            p_x1.eq(x1[0:3]), p_x2.eq(x2[0:3]), p_xd.eq(xd),
            p_first.eq(c == 0), p_last.eq(last_col), p_end.eq(last_col & last_row),
        ]
        with m.If(running):
            with m.If(~last_col):
                m.d.sync += c.eq(c + 1)
            with m.Else():
                m.d.sync += [c.eq(0), r.eq(r + 1)]
                with m.If(last_row):
                    m.d.sync += running.eq(0)
        with m.If(self.start):
            m.d.sync += [w.eq(self.word), running.eq(1), r.eq(0), c.eq(0)]
        m.d.comb += self.busy.eq(running | v1)

        # ---- stage 1: compute and write ----
        def extract(word, lo):
            out = Signal(WIDE)
            with m.Switch(f.in_dtype):
                with m.Case(dt["int8"]):
                    m.d.comb += out.eq(word.word_select(lo, 8).as_signed())
                with m.Case(dt["int16"]):
                    m.d.comb += out.eq(word.word_select(lo[1:3], 16).as_signed())
                with m.Default():
                    m.d.comb += out.eq(word.word_select(lo[2], 32).as_signed())
            return out

        a = extract(self.s1_data, p_x1)
        b = Signal(WIDE)
        with m.If(f.src2_mode == modes["imm"]):
            m.d.comb += b.eq(f.imm.as_signed())
        with m.Else():
            m.d.comb += b.eq(extract(self.s2_data, p_x2))

        res = Signal(WIDE)
        lo16 = f.imm[0:16].as_signed()
        hi16 = f.imm[16:32].as_signed()
        acc = Signal(WIDE)
        with m.Switch(f.func):
            with m.Case(fn["add"]):
                m.d.comb += res.eq(a + b)
            with m.Case(fn["sub"]):
                m.d.comb += res.eq(a - b)
            with m.Case(fn["mul"]):
                m.d.comb += res.eq(a * b)
            with m.Case(fn["max"]):
                m.d.comb += res.eq(Mux(a > b, a, b))
            with m.Case(fn["min"]):
                m.d.comb += res.eq(Mux(a < b, a, b))
            with m.Case(fn["relu"]):
                m.d.comb += res.eq(Mux(a > 0, a, 0))
            with m.Case(fn["mul_shift"]):
                prod = Signal(WIDE)
                m.d.comb += prod.eq(a * b)
                with m.If(f.shift == 0):
                    m.d.comb += res.eq(prod)
                with m.Else():
                    rnd = Signal(WIDE)
                    m.d.comb += rnd.eq(prod + ((Const(1, 64) << f.shift) >> 1))
                    m.d.comb += res.eq(rnd >> f.shift)
            with m.Case(fn["clamp"]):
                up = Mux(a < lo16, lo16, a)
                m.d.comb += res.eq(Mux(up > hi16, hi16, up))
            with m.Case(fn["row_sum"]):
                m.d.comb += res.eq(Mux(p_first, a, acc + a))
            with m.Case(fn["row_max"]):
                m.d.comb += res.eq(Mux(p_first | (a > acc), a, acc))
            with m.Default():   # copy
                m.d.comb += res.eq(a)
        with m.If(v1):
            m.d.sync += acc.eq(res)

        sat = Signal(32)
        with m.Switch(f.out_dtype):
            with m.Case(dt["int8"]):
                m.d.comb += sat.eq(Mux(res > 127, 127, Mux(res < -128, -128, res)))
            with m.Case(dt["int16"]):
                m.d.comb += sat.eq(Mux(res > 32767, 32767, Mux(res < -32768, -32768, res)))
            with m.Default():
                m.d.comb += sat.eq(Mux(res > 2**31 - 1, 2**31 - 1,
                                       Mux(res < -(2**31), -(2**31), res)))
        m.d.comb += [
            self.w_addr.eq(p_xd[3:]),
            self.w_data.eq(sat << (p_xd[0:3] * 8)),
        ]
        with m.If(v1 & (~reduce | p_last)):
            m.d.comb += self.w_en.eq(((1 << oe) - 1) << p_xd[0:3])
        with m.If(v1 & p_end):
            m.d.comb += self.done.eq(1)
        return m
