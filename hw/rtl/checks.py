"""The static checks the dispatcher runs on an instruction before it enters a queue.

Everything docs/isa.md asks of an instruction that the word and the PE's registers decide
is checked here, in the documented order (BAD_FIELD, MISALIGNED, SRAM_RANGE, DRAM_RANGE),
in one combinational pass. What only execution can know (a gather plane's DRAM range,
which needs the table) is checked by the DMA engine. A count of zero in a loop bound makes
the instruction a no-op after the BAD_FIELD check: ``nop`` tells the dispatcher to drop it.

The RTL implements a subset of the data types (see ``hw.rtl.common``); an instruction
asking for one it lacks fails with BAD_FIELD, as docs/rtl.md says.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.common import (
    BINARY_FUNCS,
    INT_DTYPES,
    ROW_REDUCTIONS,
    RTL_MAC_DTYPES,
    RTL_VECTOR_FUNCS,
    elem_bytes_table,
)
from hw.spec import Spec

WIDE = 72  # enough for any address sum here without overflow


class Checker(wiring.Component):
    """Ports: ``word`` and the PE's context in; ``code`` (0 when legal) and ``nop`` out."""

    def __init__(self, spec: Spec, pe_index: int):
        self.spec = spec
        self.pe_index = pe_index
        super().__init__({
            "word": In(256),
            "arg_base": In(64),   # ARG[word.base] for DMA instructions
            "win_base": In(64),
            "win_size": In(64),
            "code": Out(4),
            "nop": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        spec, g = self.spec, gen.build(self.spec)
        isa, lay = g.isa, g.layouts
        err = isa.ERRORS
        esz = elem_bytes_table(spec)
        sram_bytes = spec.sram_bytes_per_pe
        align = spec.dma.align_bytes - 1

        def sram_over(hi):
            return hi > sram_bytes

        def mis(value, size):
            """value is not a multiple of size (size in {1, 2, 4}, a signal)."""
            return (value & (size - 1).as_unsigned()) != 0

        bad = Signal()
        zero = Signal()
        misaligned = Signal()
        sram_range = Signal()
        dram_range = Signal()
        illegal = Signal()

        op = self.word[0:8]
        with m.Switch(op):
            with m.Case(isa.OPCODES["LOAD"], isa.OPCODES["STORE"]):
                f = lay.Load(self.word)
                m.d.comb += [
                    bad.eq(f.gather & (f.n2 > spec.dma.gather_max_entries)),
                    zero.eq((f.n0 == 0) | (f.n1 == 0) | (f.n2 == 0)),
                ]
                lo = Signal(WIDE)
                hi = Signal(WIDE)
                m.d.comb += [
                    misaligned.eq(((lo | f.n0 | f.dram_s1 | f.dram_s2 | f.sram_addr
                                    | f.sram_s1 | f.sram_s2) & align).any()
                                  | (f.gather & (f.gather_addr[0:2] != 0))),
                    sram_range.eq(
                        sram_over(f.sram_addr + (f.n2 - 1) * f.sram_s2 + (f.n1 - 1) * f.sram_s1
                                  + f.n0)
                        | (f.gather & sram_over(f.gather_addr + f.n2 * 4))),
                    lo.eq(self.arg_base + f.dram_offset),
                    hi.eq(lo + (f.n2 - 1) * f.dram_s2 + (f.n1 - 1) * f.dram_s1 + f.n0),
                    # A gather's planes are checked one by one as the DMA reads the table.
                    dram_range.eq(~f.gather & ((lo < self.win_base)
                                               | (hi > self.win_base + self.win_size)
                                               | (hi > spec.dram_bytes))),
                ]
            with m.Case(isa.OPCODES["MATMUL"]):
                f = lay.Matmul(self.word)
                ok = Const(0)
                for name in RTL_MAC_DTYPES:
                    if name in spec.pe.mac.dtypes:
                        ok = ok | (f.dtype == isa.DTYPES[name])
                # narrow (a float C) and grouped B tiles are the functional model's only
                m.d.comb += bad.eq(~ok | f.narrow | (f.group != 0))
                m.d.comb += zero.eq((f.m == 0) | (f.n == 0) | (f.k == 0))
                e = esz[f.dtype]
                b_hi = Signal(WIDE)
                with m.If(f.transpose_b):
                    m.d.comb += b_hi.eq(f.b_addr + (f.n - 1) * f.b_stride + f.k * e)
                with m.Else():
                    m.d.comb += b_hi.eq(f.b_addr + (f.k - 1) * f.b_stride + f.n * e)
                m.d.comb += [
                    misaligned.eq(mis(f.a_addr, e) | mis(f.a_stride, e) | mis(f.b_addr, e)
                                  | mis(f.b_stride, e) | (f.c_addr[0:2] != 0)
                                  | (f.c_stride[0:2] != 0)),
                    sram_range.eq(sram_over(f.a_addr + (f.m - 1) * f.a_stride + f.k * e)
                                  | sram_over(b_hi)
                                  | sram_over(f.c_addr + (f.m - 1) * f.c_stride + f.n * 4)),
                ]
            with m.Case(isa.OPCODES["VECTOR"]):
                f = lay.Vector(self.word)
                funcs = isa.VECTOR_FUNCS
                ok_func = Const(0)
                for name in RTL_VECTOR_FUNCS:
                    if name in spec.pe.vector.ops:
                        ok_func = ok_func | (f.func == funcs[name])
                ok_in = Const(0)
                ok_out = Const(0)
                for name in INT_DTYPES:
                    ok_in = ok_in | (f.in_dtype == isa.DTYPES[name])
                    ok_out = ok_out | (f.out_dtype == isa.DTYPES[name])
                binary = Const(0)
                for name in BINARY_FUNCS:
                    binary = binary | (f.func == funcs[name])
                reduce = (f.func == funcs[ROW_REDUCTIONS[0]]) | (f.func == funcs[ROW_REDUCTIONS[1]])
                modes = isa.SRC2_MODES
                ie, oe = esz[f.in_dtype], esz[f.out_dtype]
                src2_hi = Signal(WIDE)
                with m.Switch(f.src2_mode):
                    with m.Case(modes["tile"]):
                        m.d.comb += src2_hi.eq(f.src2_addr + (f.rows - 1) * f.src2_stride
                                               + f.cols * ie)
                    with m.Case(modes["row"]):
                        m.d.comb += src2_hi.eq(f.src2_addr + f.cols * ie)
                    with m.Case(modes["col"]):
                        m.d.comb += src2_hi.eq(f.src2_addr + (f.rows - 1) * f.src2_stride + ie)
                src2_tile = binary & (f.src2_mode != modes["imm"])
                src2_strided = binary & ((f.src2_mode == modes["tile"])
                                         | (f.src2_mode == modes["col"]))
                dst_hi = Signal(WIDE)
                with m.If(reduce):
                    m.d.comb += dst_hi.eq(f.dst_addr + (f.rows - 1) * f.dst_stride + oe)
                with m.Else():
                    m.d.comb += dst_hi.eq(f.dst_addr + (f.rows - 1) * f.dst_stride + f.cols * oe)
                m.d.comb += [
                    bad.eq(~ok_func | ~ok_in | ~ok_out),
                    zero.eq((f.rows == 0) | (f.cols == 0)),
                    misaligned.eq(mis(f.src1_addr, ie) | mis(f.src1_stride, ie)
                                  | (src2_tile & mis(f.src2_addr, ie))
                                  | (src2_strided & mis(f.src2_stride, ie))
                                  | mis(f.dst_addr, oe) | mis(f.dst_stride, oe)),
                    sram_range.eq(sram_over(f.src1_addr + (f.rows - 1) * f.src1_stride
                                            + f.cols * ie)
                                  | (src2_tile & sram_over(src2_hi)) | sram_over(dst_hi)),
                ]
            with m.Case(isa.OPCODES["SEM_WAIT"], isa.OPCODES["SEM_SIGNAL"]):
                f = lay.SemWait(self.word)
                m.d.comb += bad.eq((f.queue == 3) | (f.sem >= spec.pe.queues.num_semaphores))
            with m.Case(isa.OPCODES["BARRIER"]):
                f = lay.Barrier(self.word)
                others = ~((1 << spec.npu.num_pes) - 1) & 0xFFFF
                m.d.comb += bad.eq(((f.pe_mask & others) != 0) | ~f.pe_mask[self.pe_index])
            with m.Case(isa.OPCODES["END"]):
                pass
            with m.Default():
                m.d.comb += illegal.eq(1)

        with m.If(illegal):
            m.d.comb += self.code.eq(err["ILLEGAL_OPCODE"])
        with m.Elif(bad):
            m.d.comb += self.code.eq(err["BAD_FIELD"])
        with m.Elif(zero):
            m.d.comb += self.nop.eq(1)
        with m.Elif(misaligned):
            m.d.comb += self.code.eq(err["MISALIGNED"])
        with m.Elif(sram_range):
            m.d.comb += self.code.eq(err["SRAM_RANGE"])
        with m.Elif(dram_range):
            m.d.comb += self.code.eq(err["DRAM_RANGE"])
        return m
