"""Data-movement kernels: strided copies (permute, expand, slice, cat), embedding gathers,
im2col for convolutions and pooling windows.

Elements are 4 bytes (fp32 or int32) in DRAM, so any strided view can be read by DMA:
a contiguous innermost run when both sides have one, else single-element rows. Each step
loads boxes into one SRAM slot; the compute queue copies the slot to an output slot that
the store queue drains (so a slot is never reloaded while a store still reads it).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

from stack.compiler.context import ARG_CONST, Ctx
from stack.compiler.emit import SramAlloc, Step, split_even
from stack.compiler.ir import Node, Value

__all__ = ["k_copy", "k_cat", "k_gather", "k_im2col", "k_pool"]

log = logging.getLogger(__name__)

MAX_RUN = 16383  # elements in one DMA row (n0 is 16 bits of bytes)


def _merge(shape, s1, s2):
    dims = [(d, a, b) for d, a, b in zip(shape, s1, s2, strict=False) if d != 1]
    out: list[list[int]] = []
    for d, a, b in dims:
        if out and out[-1][1] == a * d and out[-1][2] == b * d:
            out[-1] = [out[-1][0] * d, a, b]
        else:
            out.append([d, a, b])
    return out or [[1, 1, 1]]


def _boxes(shape, s_src, s_dst) -> tuple[int, list[tuple[int, int, int, int, int, int, int]]]:
    """Split a strided copy into DMA boxes.

    Returns (run, boxes) with each box (src_off, dst_off, n1, n2, src_s1, src_s2, dst_s1,
    dst_s2) in elements, plus box size n2 x n1 x run elements.
    """
    dims = _merge(shape, s_src, s_dst)
    if dims[-1][1] == 1 and dims[-1][2] == 1:
        run = dims.pop()[0]
        if run > MAX_RUN:
            d = max(x for x in range(1, MAX_RUN + 1) if run % x == 0)
            dims.append([run // d, d, d])
            run = d
    else:
        run = 1
    while len(dims) < 2:
        dims.insert(0, [1, 0, 0])
    (n2, a2, b2), (n1, a1, b1) = dims[-2], dims[-1]
    outer = dims[:-2]
    boxes = []
    for idx in itertools.product(*[range(d[0]) for d in outer]):
        so = sum(i * d[1] for i, d in zip(idx, outer, strict=False))
        do = sum(i * d[2] for i, d in zip(idx, outer, strict=False))
        boxes.append((so, do, n1, n2, a1, a2, b1, b2))
    return run, boxes


def _vcopy(ctx: Ctx, n: int, src: int, dst: int) -> list[Any]:
    """Copy n contiguous fp32 words in SRAM."""
    out = []
    cols = min(n, 16384)
    full = n // cols if cols else 0
    if full:
        out.append(ctx.em.vec("copy", full, cols, src, cols * 4, dst, cols * 4))
    tail = n - full * cols
    if tail:
        off = full * cols * 4
        out.append(ctx.em.vec("copy", 1, tail, src + off, tail * 4, dst + off, tail * 4))
    return out


def _copy_pairs(ctx: Ctx, pairs: list[tuple[int, int, int, int, tuple, tuple, tuple]]
                ) -> list[tuple[list[Any], list[Step]]]:
    """Copy kernels for (src_arg, src_off, dst_arg, dst_off, shape, src_st, dst_st) pairs."""
    em = ctx.em
    budget = (ctx.sram - 4096) // 4
    cap = budget // 4  # elements per slot
    units = []  # (src_arg, src_off_bytes, dst_arg, dst_off_bytes, n1, n2, run, strides)
    for sarg, soff, darg, doff, shape, sst, dst in pairs:
        run, boxes = _boxes(shape, sst, dst)
        for so, do, n1, n2, a1, a2, b1, b2 in boxes:
            per_plane = n1 * run
            if per_plane > cap:
                # A plane is too big for one slot: one box per row chunk.
                rows_per = max(1, cap // run)
                for i2 in range(n2):
                    for r in range(0, n1, rows_per):
                        k = min(rows_per, n1 - r)
                        units.append((sarg, soff + (so + i2 * a2 + r * a1) * 4, darg,
                                      doff + (do + i2 * b2 + r * b1) * 4, k, 1, run, a1, 0, b1,
                                      0))
                continue
            planes_per = max(1, cap // per_plane)
            for p in range(0, n2, planes_per):
                k = min(planes_per, n2 - p)
                units.append((sarg, soff + (so + p * a2) * 4, darg, doff + (do + p * b2) * 4,
                              n1, k, run, a1, a2, b1, b2))
    per_pe = []
    for lo, hi in split_even(len(units), ctx.num_pes):
        sram = SramAlloc(ctx.sram)
        ib = [sram(cap * 4) for _ in range(2)]
        ob = [sram(cap * 4) for _ in range(2)]
        steps: list[Step] = []
        used = cap + 1
        for u in units[lo:hi]:
            sarg, sb, darg, db, n1, n2, run, a1, a2, b1, b2 = u
            size = n1 * n2 * run
            if used + size > cap:
                steps.append(Step())
                used = 0
            st = steps[-1]
            s = (len(steps) - 1) % 2
            r4 = run * 4
            st.loads.append(em.dma(False, sarg, sb, ib[s] + used * 4, r4, n1, n2, a1 * 4, a2 * 4,
                                   r4, n1 * r4))
            st.stores.append(em.dma(True, darg, db, ob[s] + used * 4, r4, n1, n2, b1 * 4,
                                    b2 * 4, r4, n1 * r4))
            st.compute = [("pending", s)]
            used += size
            st.out_first = True
            st.n_used = used  # type: ignore[attr-defined]
        for st in steps:
            s = st.compute[0][1]
            st.compute = _vcopy(ctx, st.n_used, ib[s], ob[s])  # type: ignore[attr-defined]
        per_pe.append(([], steps))
    return per_pe


def _view_place(ctx: Ctx, v: Value) -> tuple[int, int]:
    return ctx.place(v)


def k_copy(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    src, out = node.inputs[0], node.output
    sarg, soff = ctx.place(src)
    darg, doff = ctx.place(out)
    return _copy_pairs(ctx, [(sarg, soff, darg, doff, src.shape, src.strides, out.strides)])


def k_cat(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    out, dim = node.output, node.attrs["dim"]
    darg, doff = ctx.place(out)
    pairs = []
    at = 0
    for x in node.inputs:
        if x.kind == "const":
            sarg, soff = ARG_CONST, ctx.consts.tensor(x.const.contiguous(), "f32")
            sst = x.const.contiguous().stride()
        else:
            sarg, soff = ctx.place(x)
            sst = x.strides
        pairs.append((sarg, soff, darg, doff + at * out.strides[dim] * 4, x.shape, tuple(sst),
                      out.strides))
        at += x.shape[dim]
    return _copy_pairs(ctx, pairs)


def k_gather(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    """Embedding rows through the DMA gather mode: the indices are the block table."""
    em = ctx.em
    idx, out = node.inputs[0], node.output
    table = node.attrs["table"]
    V, D = table.shape
    t_off = ctx.consts.tensor(table, "f32")
    iarg, ioff = ctx.place(idx)
    oarg, ooff = ctx.place(out)
    n = idx.numel
    row = D * 4
    budget = (ctx.sram - 4096) // 4
    per_step = max(1, min(budget // (row + 4), ctx.spec.dma.gather_max_entries, 16383))
    per_pe = []
    for lo, hi in split_even(n, ctx.num_pes):
        sram = SramAlloc(ctx.sram)
        tb = [sram(per_step * 4) for _ in range(2)]
        ib = [sram(per_step * row) for _ in range(2)]
        ob = [sram(per_step * row) for _ in range(2)]
        steps = []
        for i, s0 in enumerate(range(lo, hi, per_step)):
            s = i % 2
            k = min(per_step, hi - s0)
            pieces = em.rows(False, 0, 0, 0, 1, row, row, row)[0]
            loads = [em.dma(False, iarg, ioff + s0 * 4, tb[s], k * 4)]
            if pieces.n2 == 1:
                loads.append(em.dma(False, ARG_CONST, t_off, ib[s], row, 1, k, 0, row, 0, row,
                                    gather=1, table=tb[s]))
            else:  # a row longer than one DMA row: pieces x planes
                p = pieces.n0
                loads.append(em.dma(False, ARG_CONST, t_off, ib[s], p, row // p, k, p, row, p,
                                    row, gather=1, table=tb[s]))
            comp = _vcopy(ctx, k * D, ib[s], ob[s])
            stores = em.rows(True, oarg, ooff + s0 * row, ob[s], k, row, row, row)
            steps.append(Step(loads, comp, stores))
        per_pe.append(([], steps))
    return per_pe


def k_im2col(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    """cols[(n, oh, ow), (c, kh, kw)] = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]."""
    em = ctx.em
    x, out = node.inputs[0], node.output
    N, C, H, W = x.shape
    (KH, KW), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    (ph, pw), (dh, dw) = node.attrs["padding"], node.attrs["dilation"]
    OH, OW = node.attrs["out_hw"]
    K = C * KH * KW
    xarg, xoff = ctx.place(x)
    oarg, ooff = ctx.place(out)
    row = OW * K * 4  # one output row of the image
    budget = (ctx.sram - 4096) // 4
    rows_per = max(1, min(OH, budget // row))
    padded = bool(ph or pw)
    zeros = ctx.consts.zeros(rows_per * row) if padded else 0
    units = [(n, r0, min(OH, r0 + rows_per)) for n in range(N) for r0 in range(0, OH, rows_per)]
    per_pe = []
    for lo, hi in split_even(len(units), ctx.num_pes):
        sram = SramAlloc(ctx.sram)
        ib = [sram(rows_per * row) for _ in range(2)]
        ob = [sram(rows_per * row) for _ in range(2)]
        steps = []
        for i, (n, r0, r1) in enumerate(units[lo:hi]):
            s = i % 2
            nbytes = (r1 - r0) * row
            loads = em.rows(False, ARG_CONST, zeros, ib[s], 1, nbytes, nbytes, nbytes) \
                if padded else []
            for c, kh, kw in itertools.product(range(C), range(KH), range(KW)):
                kidx = (c * KH + kh) * KW + kw
                ohs = [o for o in range(r0, r1) if 0 <= o * sh - ph + kh * dh < H]
                ows = [o for o in range(OW) if 0 <= o * sw - pw + kw * dw < W]
                if not ohs or not ows:
                    continue
                ih, iw = ohs[0] * sh - ph + kh * dh, ows[0] * sw - pw + kw * dw
                src = xoff + (((n * C + c) * H + ih) * W + iw) * 4
                dst = ib[s] + ((ohs[0] - r0) * OW + ows[0]) * K * 4 + kidx * 4
                loads.append(em.dma(False, xarg, src, dst, 4, len(ows), len(ohs), sw * 4,
                                    sh * W * 4, K * 4, OW * K * 4))
            comp = _vcopy(ctx, nbytes // 4, ib[s], ob[s])
            dst = ooff + (n * OH + r0) * OW * K * 4
            stores = em.rows(True, oarg, dst, ob[s], 1, nbytes, nbytes, nbytes)
            steps.append(Step(loads, comp, stores))
        per_pe.append(([], steps))
    return per_pe


def k_pool(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    em = ctx.em
    x, out = node.inputs[0], node.output
    N, C, H, W = x.shape
    (KH, KW), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    _, _, OH, OW = out.shape
    func = node.attrs["func"]
    xarg, xoff = ctx.place(x)
    oarg, ooff = ctx.place(out)
    plane = OH * OW * 4
    nt = KH * KW
    budget = (ctx.sram - 4096) // (2 * nt + 2)
    per_step = max(1, budget // plane)
    planes = N * C
    per_pe = []
    for lo, hi in split_even(planes, ctx.num_pes):
        sram = SramAlloc(ctx.sram)
        ib = [[sram(per_step * plane) for _ in range(nt)] for _ in range(2)]
        ob = [sram(per_step * plane) for _ in range(2)]
        steps = []
        for i, p0 in enumerate(range(lo, hi, per_step)):
            s = i % 2
            k = min(per_step, hi - p0)
            loads = []
            for p in range(k):
                for j, (kh, kw) in enumerate(itertools.product(range(KH), range(KW))):
                    src = xoff + ((p0 + p) * H * W + kh * W + kw) * 4
                    loads.append(em.dma(False, xarg, src, ib[s][j] + p * plane, 4, OW, OH,
                                        sw * 4, sh * W * 4, 4, OW * 4))
            cols = OH * OW
            f = "max" if func == "max" else "add"
            comp = [em.vec("copy", k, cols, ib[s][0], plane, ob[s], plane)]
            for j in range(1, nt):
                comp.append(em.vec(f, k, cols, ob[s], plane, ob[s], plane, src2=ib[s][j],
                                   s2=plane))
            if func == "avg":
                comp.append(em.vec("mul", k, cols, ob[s], plane, ob[s], plane, mode="imm",
                                   imm=1.0 / nt))
            stores = em.rows(True, oarg, ooff + p0 * plane, ob[s], 1, k * plane, k * plane,
                             k * plane)
            steps.append(Step(loads, comp, stores))
        per_pe.append(([], steps))
    return per_pe


_ = math
