"""Kernels on the vector unit: elementwise ops, row reductions, softmax, layer/RMS norm.

All work on fp32 tiles of `rows x cols`, a block of rows per pipeline step, with the rows
split evenly across PEs. Broadcast operands follow the plan the legaliser attached
(`tile`, `row`, `col` or an immediate scalar).
"""

from __future__ import annotations

import logging
from typing import Any

from stack.compiler.context import ARG_CONST, Ctx
from stack.compiler.emit import SramAlloc, Step, split_even
from stack.compiler.ir import Node

__all__ = ["k_eltwise", "k_reduce", "k_softmax", "k_norm", "ELT_FUNCS"]

log = logging.getLogger(__name__)

# Vector-unit funcs that take one fp32 operand.
UNARY = {"exp", "rsqrt", "relu", "silu", "sigmoid", "tanh", "gelu_tanh", "gelu_erf", "recip"}
BINARY = {"add", "sub", "mul", "div", "max", "min"}
ELT_FUNCS = UNARY | BINARY | {"neg", "sqrt", "abs", "rsub", "rdiv"}


def _row_blocks(ctx: Ctx, R: int, row_bytes: int, nbufs: int) -> list[list[tuple[int, int]]]:
    """Per PE, the [start, stop) row blocks, sized so `nbufs` buffers of a block fit SRAM."""
    budget = (ctx.sram - 4096) // nbufs
    tr = max(1, min(budget // max(row_bytes, 1), 16383, 4096))
    out = []
    for lo, hi in split_even(R, ctx.num_pes):
        out.append([(s, min(s + tr, hi)) for s in range(lo, hi, tr)])
    return out


def _tile_ops(ctx: Ctx, func: str, scalar: float | None, rows: int, cols: int, src: int,
              dst: int, stride: int, src2: int, mode: str) -> list[Any]:
    """Vector instructions computing func into dst (in place allowed)."""
    em = ctx.em

    def v(f: str, s1: int, s2: int = 0, md: str = "tile", imm: float = 0.0) -> Any:
        s2_stride = 4 if md == "col" else stride
        return em.vec(f, rows, cols, s1, stride, dst, stride, src2=s2, s2=s2_stride, mode=md,
                      imm=imm)

    if scalar is not None:
        if func in BINARY:
            return [v(func, src, md="imm", imm=scalar)]
        if func == "rsub":
            return [v("mul", src, md="imm", imm=-1.0), v("add", dst, md="imm", imm=scalar)]
        if func == "rdiv":
            return [v("recip", src), v("mul", dst, md="imm", imm=scalar)]
        raise ValueError(f"scalar form of {func}")
    if func in UNARY:
        return [v(func, src)]
    if func == "neg":
        return [v("mul", src, md="imm", imm=-1.0)]
    if func == "sqrt":
        return [v("rsqrt", src), v("recip", dst)]
    if func == "abs":
        return [v("mul", src, md="imm", imm=-1.0), v("max", dst, src, "tile")]
    if func in BINARY:
        return [v(func, src, src2, mode)]
    if func == "rsub":  # src2 - src1, with src1 the full operand
        return [v("sub", src, src2, mode), v("mul", dst, md="imm", imm=-1.0)]
    if func == "rdiv":  # src2 / src1
        return [v("recip", src), v("mul", dst, src2, mode)]
    raise ValueError(f"no vector lowering for {func}")


def k_eltwise(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    plan = node.attrs["plan"]
    R, C, func = plan["R"], plan["C"], plan["func"]
    scalar = node.attrs.get("scalar")
    em = ctx.em
    a = node.inputs[0]
    b = node.inputs[1] if len(node.inputs) > 1 else None
    mode = plan.get("mode", "tile")
    a_arg, a_off = ctx.place(a)
    o_arg, o_off = ctx.place(node.output)
    row = C * 4
    nb = 2 * (3 if b is not None and mode == "tile" else 2)
    per_pe = []
    for blocks in _row_blocks(ctx, R, row, nb + 1):
        sram = SramAlloc(ctx.sram)
        prologue: list[Any] = []
        src2_row = 0
        if b is not None and mode == "row":
            src2_row = sram(row)
            prologue += _load_operand(ctx, b, plan, src2_row, 0, 1, C)
        tr = max((hi - lo for lo, hi in blocks), default=0)
        ibuf = [sram(tr * row) for _ in range(2)]
        bbuf = [sram(tr * row if mode == "tile" else tr * 4) for _ in range(2)] \
            if b is not None and mode in ("tile", "col") else [0, 0]
        obuf = [sram(tr * row) for _ in range(2)]
        steps = []
        for i, (lo, hi) in enumerate(blocks):
            s = i % 2
            n = hi - lo
            loads = em.rows(False, a_arg, a_off + lo * row, ibuf[s], n, row, row, row)
            src2 = src2_row
            if b is not None and mode in ("tile", "col"):
                loads += _load_operand(ctx, b, plan, bbuf[s], lo, n, C)
                src2 = bbuf[s]
            comp = _tile_ops(ctx, func, scalar, n, C, ibuf[s], obuf[s], row, src2, mode)
            stores = em.rows(True, o_arg, o_off + lo * row, obuf[s], n, row, row, row)
            steps.append(Step(loads, comp, stores))
        per_pe.append((prologue, steps))
    return per_pe


def _load_operand(ctx: Ctx, b: Any, plan: dict, addr: int, lo: int, n: int, C: int) -> list:
    """Load rows [lo, lo+n) of the second operand in its broadcast form."""
    mode = plan["mode"]
    if b.kind == "const":
        t = plan["b_const"]
        arg, off = ARG_CONST, ctx.consts.tensor(t, "f32")
    else:
        arg, off = ctx.place(b)
    if mode == "row":
        return ctx.em.rows(False, arg, off, addr, 1, C * 4, C * 4, C * 4)
    if mode == "col":
        return ctx.em.rows(False, arg, off + lo * 4, addr, 1, n * 4, n * 4, n * 4)
    return ctx.em.rows(False, arg, off + lo * C * 4, addr, n, C * 4, C * 4, C * 4)


def _rowwise(ctx: Ctx, node: Node, out_cols: int, body: Any, extra_tiles: int = 0,
             resident: list[Any] | None = None) -> list[tuple[list[Any], list[Step]]]:
    """Shared skeleton: load a block of rows, run body(...), store [n, out_cols]."""
    x = node.inputs[0]
    R, C = x.shape
    em = ctx.em
    x_arg, x_off = ctx.place(x)
    o_arg, o_off = ctx.place(node.output)
    row = C * 4
    per_pe = []
    for blocks in _row_blocks(ctx, R, row, 4 + extra_tiles):
        sram = SramAlloc(ctx.sram)
        prologue: list[Any] = []
        res_addrs = []
        for t in resident or []:
            addr = sram(C * 4)
            res_addrs.append(addr)
            off = ctx.consts.tensor(t, "f32")
            prologue += em.rows(False, ARG_CONST, off, addr, 1, C * 4, C * 4, C * 4)
        tr = max((hi - lo for lo, hi in blocks), default=0)
        ibuf = [sram(tr * row) for _ in range(2)]
        obuf = [sram(tr * out_cols * 4) for _ in range(2)]
        cbuf = [sram(tr * 4) for _ in range(2)]
        tbuf = [sram(tr * row) for _ in range(extra_tiles)]
        steps = []
        for i, (lo, hi) in enumerate(blocks):
            s = i % 2
            n = hi - lo
            loads = em.rows(False, x_arg, x_off + lo * row, ibuf[s], n, row, row, row)
            comp = body(n, C, ibuf[s], obuf[s], cbuf[s], tbuf, res_addrs)
            ob = out_cols * 4
            stores = em.rows(True, o_arg, o_off + lo * ob, obuf[s], n, ob, ob, ob)
            steps.append(Step(loads, comp, stores))
        per_pe.append((prologue, steps))
    return per_pe


def k_reduce(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    func = node.attrs["func"]
    em = ctx.em

    def body(n, C, x, o, c, t, r):
        row = C * 4
        f = "row_max" if func == "amax" else "row_sum"
        ops = [em.vec(f, n, C, x, row, o, 4)]
        if func == "mean":
            ops.append(em.vec("mul", n, 1, o, 4, o, 4, mode="imm", imm=1.0 / C))
        return ops
    return _rowwise(ctx, node, 1, body)


def k_softmax(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    em = ctx.em
    x = node.inputs[0]
    if len(x.shape) != 2:
        raise ValueError("softmax must be legalised to 2-D")

    fused = "softmax" in ctx.spec.pe.vector.ops

    def body(n, C, x, o, c, t, r):
        row = C * 4
        if fused:
            return [em.vec("softmax", n, C, x, row, o, row)]
        # a vector unit without softmax: max, subtract, exp, sum, reciprocal, scale
        return [
            em.vec("row_max", n, C, x, row, c, 4),
            em.vec("sub", n, C, x, row, o, row, src2=c, s2=4, mode="col"),
            em.vec("exp", n, C, o, row, o, row),
            em.vec("row_sum", n, C, o, row, c, 4),
            em.vec("recip", n, 1, c, 4, c, 4),
            em.vec("mul", n, C, o, row, o, row, src2=c, s2=4, mode="col"),
        ]
    return _rowwise(ctx, node, node.output.shape[-1], body)


def k_norm(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    em = ctx.em
    kind, eps = node.attrs["kind"], node.attrs["eps"]
    w, b = node.attrs.get("weight"), node.attrs.get("bias")
    resident = [t for t in (w, b) if t is not None]

    def body(n, C, x, o, c, t, r):
        row = C * 4
        inv = 1.0 / C
        ops = []
        if kind == "layer_norm":
            ops += [
                em.vec("row_sum", n, C, x, row, c, 4),
                em.vec("mul", n, 1, c, 4, c, 4, mode="imm", imm=inv),
                em.vec("sub", n, C, x, row, o, row, src2=c, s2=4, mode="col"),
                em.vec("mul", n, C, o, row, x, row, src2=o, s2=row),  # x slot is free now
                em.vec("row_sum", n, C, x, row, c, 4),
            ]
            src = o
        else:
            ops += [
                em.vec("mul", n, C, x, row, o, row, src2=x, s2=row),
                em.vec("row_sum", n, C, o, row, c, 4),
            ]
            src = x
        ops += [
            em.vec("mul", n, 1, c, 4, c, 4, mode="imm", imm=inv),
            em.vec("add", n, 1, c, 4, c, 4, mode="imm", imm=eps),
            em.vec("rsqrt", n, 1, c, 4, c, 4),
            em.vec("mul", n, C, src, row, o, row, src2=c, s2=4, mode="col"),
        ]
        k = 0
        if w is not None:
            ops.append(em.vec("mul", n, C, o, row, o, row, src2=r[k], s2=0, mode="row"))
            k += 1
        if b is not None:
            ops.append(em.vec("add", n, C, o, row, o, row, src2=r[k], s2=0, mode="row"))
        return ops
    return _rowwise(ctx, node, node.output.shape[-1], body, resident=resident)
