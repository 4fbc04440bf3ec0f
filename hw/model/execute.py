"""Apply one predecoded instruction to DRAM and a PE's SRAM, as whole-array operations.

Every operand is a strided numpy view over the byte memories (`np.ndarray` with a buffer,
an offset and byte strides), so a DMA box, a MATMUL tile or a VECTOR tile is one array
operation whatever its strides. The executor runs the checks that need run-time state
(ARG registers, the DRAM window, gather tables) after the static ones found at predecode,
in the order docs/isa.md gives, and returns the error code (0 when none); a faulting
instruction writes nothing, except a gather DMA whose planes before the faulting one moved.

Not modelled: overlapping destination rows of one instruction (the last write wins here;
the ISA leaves it undefined) and any timing; `hw.model.schedule` decides when this runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np

from hw.model import numerics
from hw.model.numerics import NP_DTYPES
from hw.model.program import LOAD, MATMUL, STORE, VECTOR, Limits, Op

log = logging.getLogger(__name__)


class Context:
    """The run-time state a PE's instructions address DRAM through."""

    __slots__ = ("args", "win_lo", "win_hi", "sram")

    def __init__(self, args: list[int], win_base: int, win_size: int, dram_bytes: int,
                 sram: np.ndarray | None):
        self.args = args
        self.win_lo = win_base
        # One past the last byte the PE may touch: the window clipped to the DRAM.
        self.win_hi = min(win_base + win_size, dram_bytes)
        self.sram = sram


def _view(mem: np.ndarray, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
          dtype: np.dtype) -> np.ndarray:
    return np.ndarray(shape, dtype=dtype, buffer=mem, offset=offset, strides=strides)


class Executor:
    """Executes ops on real memories. `exact` selects the exact-mode MATMUL order."""

    def __init__(self, lim: Limits, dram: np.ndarray, exact: bool = False):
        self.lim = lim
        self.dram = dram
        self.exact = exact
        e = lim.errors
        self.E_MISALIGNED = e["MISALIGNED"]
        self.E_SRAM = e["SRAM_RANGE"]
        self.E_DRAM = e["DRAM_RANGE"]

    def execute(self, ctx: Context, op: Op) -> int:
        """Run `op` for the PE whose state is `ctx`; returns an error code or 0."""
        return self.bind(ctx, op)()

    def bind(self, ctx: Context, op: Op) -> Callable[[], int]:
        """`op`'s effect for the PE whose state is `ctx`, as a call returning the error code.

        What depends only on the instruction, the ARG registers, the window and the memories
        (the operand views, every check but a gather table's) is done here, once; a replayed
        run calls the result again on every repetition.
        """
        if op.err:
            return partial(_const, op.err)
        if op.empty:
            return _ok
        kind = op.kind
        if kind == LOAD or kind == STORE:
            return self._bind_dma(ctx, op)
        if op.sram_err:
            return partial(_const, self.E_SRAM)
        if kind == MATMUL:
            return self._bind_matmul(ctx.sram, op)
        if kind == VECTOR:
            return self._bind_vector(ctx.sram, op)
        return _ok

    # DMA

    def _bind_dma(self, ctx: Context, op: Op) -> Callable[[], int]:
        ins = op.ins
        base = ctx.args[ins.base] + ins.dram_offset
        if base % self.lim.align:
            return partial(_const, self.E_MISALIGNED)
        if op.sram_err:
            return partial(_const, self.E_SRAM)
        if ins.gather:
            return self._bind_gather(ctx, op, base)
        if base < ctx.win_lo or base + op.extent > ctx.win_hi:
            return partial(_const, self.E_DRAM)
        # (the window lies inside DRAM, so a box that passes addresses nothing beyond it)
        n0, n1, n2 = ins.n0, ins.n1, ins.n2
        u8 = self.dram.dtype
        dram = _view(self.dram, base, (n2, n1, n0), (ins.dram_s2, ins.dram_s1, 1), u8)
        sram = _view(ctx.sram, ins.sram_addr, (n2, n1, n0), (ins.sram_s2, ins.sram_s1, 1), u8)
        if op.kind == LOAD:
            return partial(_copy, sram, dram)
        return partial(_copy, dram, sram)

    def _bind_gather(self, ctx: Context, op: Op, base: int) -> Callable[[], int]:
        """A gather DMA whose table entries are checked against one bound made here.

        With `base` inside the window an entry e is in range exactly when
        `e <= (win_hi - base - span) // dram_s2`; a table that passes moves all its planes
        by one fancy index. Anything else (a zero plane stride, a base below the window, an
        entry out of range) takes `_gather`, which also moves the planes before a fault.
        """
        ins = op.ins
        n0, n1, n2, s2 = ins.n0, ins.n1, ins.n2, ins.dram_s2
        span = (n1 - 1) * ins.dram_s1 + n0
        top = (ctx.win_hi - base - span) // s2 if s2 and base >= ctx.win_lo else -1
        if top < 0:
            return partial(self._gather, ctx, op, base)
        table = _view(ctx.sram, ins.gather_addr, (n2,), (4,), np.dtype("<u4"))
        u8 = self.dram.dtype
        planes = _view(self.dram, base, (top + 1, n1, n0), (s2, ins.dram_s1, 1), u8)
        sram = _view(ctx.sram, ins.sram_addr, (n2, n1, n0), (ins.sram_s2, ins.sram_s1, 1), u8)
        slow = partial(self._gather, ctx, op, base)
        small = n2 <= 64  # below this a Python max beats numpy's reduction call

        if op.kind == LOAD:
            def run() -> int:
                if (max(table.tolist()) if small else int(table.max())) > top:
                    return slow()
                sram[...] = planes[table]
                return 0
        else:
            def run() -> int:
                if (max(table.tolist()) if small else int(table.max())) > top:
                    return slow()
                planes[table] = sram
                return 0
        return run

    def _gather(self, ctx: Context, op: Op, base: int) -> int:
        """Planes addressed through a u32 table; planes before a faulting one still move."""
        ins = op.ins
        n0, n1, n2 = ins.n0, ins.n1, ins.n2
        if base >= ctx.win_hi:
            return self.E_DRAM
        table = _view(ctx.sram, ins.gather_addr, (n2,), (4,), np.dtype("<u4")).astype(np.int64)
        # Entries that would land past the window are cut before multiplying, so that no
        # product of two 32-bit fields wraps around int64 into the window.
        s2 = ins.dram_s2
        fits = table <= (ctx.win_hi - base) // s2 if s2 else np.ones(n2, bool)
        first = base + np.where(fits, table, 0) * s2
        span = (n1 - 1) * ins.dram_s1 + n0
        ok = fits & (first >= ctx.win_lo) & (first + span <= ctx.win_hi)
        good = n2 if ok.all() else int(np.argmin(ok))
        if good:
            # DRAM from `base` as planes of the box, indexed by the table: numpy then moves
            # whole rows, with no per-byte index array
            idx = table[:good] if s2 else np.zeros(good, np.int64)
            u8 = self.dram.dtype
            planes = _view(self.dram, base, (int(idx.max()) + 1, n1, n0),
                           (s2, ins.dram_s1, 1), u8)
            sram = _view(ctx.sram, ins.sram_addr, (good, n1, n0),
                         (ins.sram_s2, ins.sram_s1, 1), u8)
            if op.kind == LOAD:
                sram[...] = planes[idx]
            else:
                planes[idx] = sram
        return 0 if good == n2 else self.E_DRAM

    # compute

    def _bind_matmul(self, sram: np.ndarray, op: Op) -> Callable[[], int]:
        ins = op.ins
        dtype, acc, es, c_type, groups = op.p
        m, n, k = ins.m, ins.n, ins.k
        dt = NP_DTYPES[dtype]
        c = _view(sram, ins.c_addr, (m, n), (ins.c_stride, NP_DTYPES[c_type].itemsize),
                  NP_DTYPES[c_type])
        if groups == 1:
            a = _view(sram, ins.a_addr, (m, k), (ins.a_stride, es), dt)
            if ins.transpose_b:
                b = _view(sram, ins.b_addr, (n, k), (ins.b_stride, es), dt).T
            else:
                b = _view(sram, ins.b_addr, (k, n), (ins.b_stride, es), dt)
        else:
            # (groups, rows, k) over the same rows, B one tile per group
            g, gs = m // groups, ins.b_group_stride
            a = _view(sram, ins.a_addr, (groups, g, k), (g * ins.a_stride, ins.a_stride, es), dt)
            if ins.transpose_b:
                b = _view(sram, ins.b_addr, (groups, n, k), (gs, ins.b_stride, es),
                          dt).transpose(0, 2, 1)
            else:
                b = _view(sram, ins.b_addr, (groups, k, n), (gs, ins.b_stride, es), dt)
        acc_in = c.reshape(a.shape[:-1] + (n,)) if ins.accumulate else None
        narrow = c_type if ins.narrow else None
        if numerics.on_torch_gemm(narrow, ins.accumulate, self.exact):
            # as numerics.matmul computes it, but straight from and into the SRAM views
            ta, tb = numerics.torch_bf16(a), numerics.torch_bf16(b)
            tc = numerics.torch_bf16(c.reshape(a.shape[:-1] + (n,)))

            def run_torch() -> int:
                numerics.torch_bf16_mm(ta, tb, tc)
                return 0
            return run_torch

        def run() -> int:
            c[...] = numerics.matmul(a, b, acc_in, acc, self.exact, narrow).reshape(m, n)
            return 0
        return run

    def _bind_vector(self, sram: np.ndarray, op: Op) -> Callable[[], int]:
        ins = op.ins
        func, in_t, out_t, mode, ies, oes, dst_cols = op.p
        rows, cols = ins.rows, ins.cols
        it = NP_DTYPES[in_t]
        a = _view(sram, ins.src1_addr, (rows, cols), (ins.src1_stride, ies), it)
        b = None
        if mode == "tile":
            b = _view(sram, ins.src2_addr, (rows, cols), (ins.src2_stride, ies), it)
        elif mode == "row":
            b = _view(sram, ins.src2_addr, (1, cols), (0, ies), it)
        elif mode == "col":
            b = _view(sram, ins.src2_addr, (rows, 1), (ins.src2_stride, ies), it)
        elif mode == "imm":
            b = numerics.imm_operand(ins.imm, in_t)
        dst = _view(sram, ins.dst_addr, (rows, dst_cols), (ins.dst_stride, oes), NP_DTYPES[out_t])
        shift, imm = ins.shift, ins.imm
        if not self.exact:
            fast = numerics.torch_vector(func, in_t, out_t, a, b, dst)
            if fast is not None:
                return partial(_after, fast)

        def run() -> int:
            result = numerics.vector(func, in_t, a, b, shift, imm, self.exact)
            dst[...] = numerics.convert(result, out_t)
            return 0
        return run


def _after(fn: Callable[[], object]) -> int:
    fn()
    return 0


def _const(err: int) -> int:
    return err


def _ok() -> int:
    return 0


def _copy(dst: np.ndarray, src: np.ndarray) -> int:
    dst[...] = src
    return 0
