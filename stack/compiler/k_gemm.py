"""GEMM on the MAC array: C[b, m, n] = A[b, m, k] @ B[b, k, n] (+ bias, activation).

A is an fp32 activation, converted to bf16 in SRAM; B is either a constant, stored bf16
as B^T ([N, K], rows padded to 4 bytes) and read with `transpose_b`, or an activation
(fp32, in either orientation) converted like A. Products accumulate in fp32 tiles; the
epilogue adds the bias row and applies the activation before the tile is stored.

Work is split across PEs along M when M is large (each PE keeps its A rows and streams
B), else along N. Tiles are sized to the SRAM with double buffering; an operand tile that
does not change between consecutive steps is not loaded again.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import torch

from stack.compiler.context import ARG_CONST, Ctx
from stack.compiler.emit import SramAlloc, SramFull, Step, split_even
from stack.compiler.ir import DTYPE_BYTES, Node

__all__ = ["k_gemm"]

log = logging.getLogger(__name__)


def _round(x: int, q: int) -> int:
    return max(q, x // q * q)


def _operand(v: Any, rows_dim: int) -> tuple[int, int, bool]:
    """(row stride, batch-free) of a view whose last two dims are a matrix; transposed?"""
    st = v.strides
    if st[-1] == 1 or v.shape[-1] == 1:
        return st[-2], 0, False
    if st[-2] == 1 or v.shape[-2] == 1:
        return st[-1], 0, True
    raise ValueError(f"{v} is not a row- or column-major matrix")


def k_gemm(ctx: Ctx, node: Node) -> list[tuple[list[Any], list[Step]]]:
    _em, spec = ctx.em, ctx.spec
    a, b = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if node.attrs.get("bias") else None
    act = node.attrs.get("act")
    out = node.output
    batch = out.shape[:-2]
    M, N = out.shape[-2:]
    K = a.shape[-1]
    rows, cols = spec.pe.mac.rows, spec.pe.mac.cols

    a_arg, a_off = ctx.place(a)
    sa = a.strides[-2] if M > 1 else K
    o_arg, o_off = ctx.place(out)
    b_const = b.kind == "const"
    if b_const:
        Kp = K + (K % 2)
        wt = torch.zeros(N, Kp)
        wt[:, :K] = b.const.reshape(K, N).t()
        b_arg, b_off = ARG_CONST, ctx.consts.tensor(wt, "bf16")
        b_trans, sb, b_es = True, Kp, 2
    else:
        b_arg, b_off = ctx.place(b)
        sb, _, b_trans = _operand(b, 0)
        b_es = 4
    bias_off = None
    if bias is not None:
        bias_off = ctx.consts.tensor(bias.const.reshape(N).float(), "f32") \
            if bias.kind == "const" else None
        if bias_off is None:
            raise ValueError("gemm bias must be a constant (the legaliser splits it off)")

    split_m = M >= 2 * rows * ctx.num_pes
    ranges = split_even(M if split_m else N, ctx.num_pes)
    if not split_m:
        # Keep N slices whole multiples of the array width where possible.
        q = cols
        units = -(-N // q)
        ranges = [(min(lo * q, N), min(hi * q, N)) for lo, hi in split_even(units, ctx.num_pes)]

    per_pe = []
    for lo, hi in ranges:
        mr = (lo, hi) if split_m else (0, M)
        nr = (0, N) if split_m else (lo, hi)
        if mr[1] <= mr[0] or nr[1] <= nr[0]:
            per_pe.append(([], []))
            continue
        per_pe.append(_pe_gemm(ctx, node, mr, nr, K, batch, a, b, a_arg, a_off, sa, b_arg,
                               b_off, sb, b_trans, b_es, b_const, o_arg, o_off, bias_off, act))
    return per_pe


def _pe_gemm(ctx, node, mr, nr, K, batch, a, b, a_arg, a_off, sa, b_arg, b_off, sb, b_trans,
             b_es, b_const, o_arg, o_off, bias_off, act):
    em, spec = ctx.em, ctx.spec
    rows, cols = spec.pe.mac.rows, spec.pe.mac.cols
    Mp, Np = mr[1] - mr[0], nr[1] - nr[0]
    N = node.output.shape[-1]
    if math.prod(batch) == 1 and Mp >= 2 * rows:
        plan = _resident_plan(ctx, Mp, Np, K, b_const, bias_off is not None,
                              _a_bytes(a))
        if plan is not None:
            return _resident_a(ctx, node, mr, nr, K, a, a_arg, a_off, sa, b_arg, b_off, sb,
                               b_trans, b_const, o_arg, o_off, bias_off, act, plan)
    tm, tn, tk = min(Mp, 512), min(Np, 512), min(K, 4096)
    while True:
        nm, nn, nk = -(-Mp // tm), -(-Np // tn), -(-K // tk)
        one = math.prod(batch) == 1
        a_groups = 1 if one and nk == 1 and nm == 1 else 2
        b_groups = 1 if one and nk == 1 and nn == 1 else 2
        need = (a_groups * tm * tk * 6 + b_groups * tk * tn * (2 + (0 if b_const else 4))
                + 2 * tm * tn * 4 + 2 * tn * 4 + 4096)
        if need <= ctx.sram:
            break
        big = max((tk, "k"), (tm, "m"), (tn, "n"))
        if big[0] <= 16:
            raise SramFull(f"no GEMM tiling of {node.output} fits {ctx.sram} bytes of SRAM")
        if big[1] == "k":
            tk = _round(tk // 2, 32)
        elif big[1] == "m":
            tm = _round(tm // 2, rows)
        else:
            tn = _round(tn // 2, cols)
        tk, tm, tn = min(tk, K), min(tm, Mp), min(tn, Np)
    if tk < K and tk % 2:
        tk -= 1
    a_es = _a_bytes(a)
    sram = SramAlloc(ctx.sram)
    A32 = [sram(tm * tk * 4) for _ in range(a_groups)] if a_es == 4 else []
    A16 = [sram(tm * tk * 2) for _ in range(a_groups)]
    B32 = [sram(tk * tn * 4) for _ in range(b_groups)] if not b_const else []
    tkb = _even(tk)  # const B rows are padded to whole 4-byte DMA units
    B16 = [sram(tkb * tn * 2) for _ in range(b_groups)]
    Cb = [sram(tm * tn * 4) for _ in range(2)]
    biasb = [sram(tn * 4) for _ in range(2)] if bias_off is not None else []

    nm, nn, nk = -(-Mp // tm), -(-Np // tn), -(-K // tk)
    # Loop order: keep whichever operand is bigger per reload still between steps.
    a_bytes, b_bytes = tm * K * 4, tn * K * b_es
    n_inner = nk == 1 and (nn > 1 and a_bytes * nn >= b_bytes * nm or nm == 1)
    tiles = list(itertools.product(range(nm), range(nn))) if n_inner else \
        [(mi, ni) for ni in range(nn) for mi in range(nm)]
    steps: list[Step] = []
    prev_a = prev_b = None
    ga = gb = -1
    tile_no = 0
    for bidx in itertools.product(*[range(d) for d in batch]):
        a_boff = sum(i * s for i, s in zip(bidx, a.strides[:-2], strict=False)) * a_es
        b_boff = 0 if b_const else \
            sum(i * s for i, s in zip(bidx, b.strides[:-2], strict=False)) * 4
        o_boff = sum(i * s for i, s in zip(bidx, node.output.strides[:-2], strict=False)) * 4
        for mi, ni in tiles:
            m0 = mr[0] + mi * tm
            m = min(tm, mr[1] - m0)
            n0 = nr[0] + ni * tn
            n = min(tn, nr[1] - n0)
            cs = tile_no % 2
            for ki in range(nk):
                k0 = ki * tk
                k = min(tk, K - k0)
                loads: list[Any] = []
                comp: list[Any] = []
                akey, bkey = (bidx, m0, k0), (bidx, n0, k0)
                if akey != prev_a:
                    ga += 1
                    prev_a = akey
                    s = ga % a_groups
                    if a_es == 2:  # bound as bf16 by the host: no conversion
                        loads += em.rows(False, a_arg, a_off + a_boff + (m0 * sa + k0) * 2,
                                         A16[s], m, _even(k) * 2, sa * 2, tk * 2)
                    else:
                        loads += em.rows(False, a_arg, a_off + a_boff + (m0 * sa + k0) * 4,
                                         A32[s], m, k * 4, sa * 4, tk * 4)
                        comp.append(em.vec("copy", m, k, A32[s], tk * 4, A16[s], tk * 2,
                                           out_dt="bf16"))
                sA = A16[ga % a_groups]
                if bkey != prev_b:
                    gb += 1
                    prev_b = bkey
                    s = gb % b_groups
                    if b_const:
                        loads += em.rows(False, b_arg, b_off + (n0 * sb + k0) * 2, B16[s], n,
                                         _even(k) * 2, sb * 2, tkb * 2)
                    elif b_trans:
                        loads += em.rows(False, b_arg, b_off + b_boff + (n0 * sb + k0) * 4,
                                         B32[s], n, k * 4, sb * 4, tk * 4)
                        comp.append(em.vec("copy", n, k, B32[s], tk * 4, B16[s], tk * 2,
                                           out_dt="bf16"))
                    else:
                        loads += em.rows(False, b_arg, b_off + b_boff + (k0 * sb + n0) * 4,
                                         B32[s], k, n * 4, sb * 4, tn * 4)
                        comp.append(em.vec("copy", k, n, B32[s], tn * 4, B16[s], tn * 2,
                                           out_dt="bf16"))
                sB = B16[gb % b_groups]
                trans = b_const or b_trans
                bs = tkb if b_const else (tk if trans else tn)
                comp.append(em.matmul(m, n, k, sA, tk * 2, sB, bs * 2,
                                      Cb[cs], tn * 4, accumulate=ki > 0, transpose_b=trans))
                last = ki == nk - 1
                stores: list[Any] = []
                if last:
                    if bias_off is not None:
                        loads += em.rows(False, ARG_CONST, bias_off + n0 * 4, biasb[cs], 1,
                                         n * 4, n * 4, n * 4)
                        comp.append(em.vec("add", m, n, Cb[cs], tn * 4, Cb[cs], tn * 4,
                                           src2=biasb[cs], mode="row"))
                    if act:
                        comp.append(em.vec(act, m, n, Cb[cs], tn * 4, Cb[cs], tn * 4))
                    stores = em.rows(True, o_arg, o_off + o_boff + (m0 * N + n0) * 4, Cb[cs],
                                     m, n * 4, N * 4, tn * 4)
                    tile_no += 1
                steps.append(Step(loads, comp, stores, out_first=ki == 0, out_last=last))
    log.debug("gemm %s: tiles m%d n%d k%d, %d steps", node.output, tm, tn, tk, len(steps))
    return [], steps


def _even(k: int) -> int:
    return k + (k % 2)


def _a_bytes(a: Any) -> int:
    """Bytes per element of A in DRAM: 2 for an input the host binds as bf16, else 4."""
    return DTYPE_BYTES[a.root.dtype]


def _resident_plan(ctx: Ctx, Mp: int, Np: int, K: int, b_const: bool, bias: bool,
                   a_es: int) -> tuple[int, int] | None:
    """(tn, tk) for the resident-A schedule, or None when the PE's A rows do not fit.

    K chunks of about 256 keep the first N pass (which also streams A) short and the
    per-MATMUL pipeline fill small; N tiles of four array widths keep each step's
    MATMUL long against its B load.
    """
    cols = ctx.spec.pe.mac.cols
    Kp = _even(K)
    nk = -(-K // 256)
    tk = _even(-(-K // nk))
    tn = min(Np, 8 * cols)
    while True:
        tkb = _even(tk)
        need = (Mp * Kp * 2 + (2 * Mp * tk * 4 if a_es == 4 else 0)
                + 2 * tkb * tn * 2 + (0 if b_const else 2 * tk * tn * 4)
                + 2 * Mp * tn * 4 + (2 * tn * 4 if bias else 0) + 4096)
        if need <= ctx.sram:
            return tn, tk
        if tn > cols:
            tn = max(cols, tn // 2)
        elif tk > 64:
            tk = _even(tk // 2)
        else:
            return None


def _resident_a(ctx, node, mr, nr, K, a, a_arg, a_off, sa, b_arg, b_off, sb, b_trans, b_const,
                o_arg, o_off, bias_off, act, plan):
    """One PE's GEMM with its A rows resident in SRAM as bf16.

    Steps run over (N tile, K chunk). During the first N tile each step also brings in one
    K chunk of A (converted to bf16 when it is fp32 in DRAM), so A is read from DRAM once
    and its load overlaps the first MATMULs; later N tiles stream only B.
    """
    em = ctx.em
    Mp, Np = mr[1] - mr[0], nr[1] - nr[0]
    N = node.output.shape[-1]
    tn, tk = plan
    Kp = _even(K)
    a_es = _a_bytes(a)
    sram = SramAlloc(ctx.sram)
    Ares = sram(Mp * Kp * 2)
    A32 = [sram(Mp * tk * 4) for _ in range(2)] if a_es == 4 else []
    tkb = _even(tk)
    B32 = [sram(tk * tn * 4) for _ in range(2)] if not b_const else []
    B16 = [sram(tkb * tn * 2) for _ in range(2)]
    Cb = [sram(Mp * tn * 4) for _ in range(2)]
    biasb = [sram(tn * 4) for _ in range(2)] if bias_off is not None else []
    nn, nk = -(-Np // tn), -(-K // tk)
    m0 = mr[0]
    steps: list[Step] = []
    gb = -1
    for ni in range(nn):
        n0 = nr[0] + ni * tn
        n = min(tn, nr[1] - n0)
        cs = ni % 2
        for ki in range(nk):
            k0 = ki * tk
            k = min(tk, K - k0)
            loads: list[Any] = []
            comp: list[Any] = []
            if ni == 0:
                if a_es == 4:
                    s = ki % 2
                    loads += em.rows(False, a_arg, a_off + (m0 * sa + k0) * 4, A32[s], Mp,
                                     k * 4, sa * 4, tk * 4)
                    comp.append(em.vec("copy", Mp, k, A32[s], tk * 4, Ares + k0 * 2, Kp * 2,
                                       out_dt="bf16"))
                else:
                    loads += em.rows(False, a_arg, a_off + (m0 * sa + k0) * 2, Ares + k0 * 2,
                                     Mp, _even(k) * 2, sa * 2, Kp * 2)
            if nn > 1 or nk > 1 or gb < 0:
                gb += 1
                s = gb % 2
                if b_const:
                    loads += em.rows(False, b_arg, b_off + (n0 * sb + k0) * 2, B16[s], n,
                                     _even(k) * 2, sb * 2, tkb * 2)
                elif b_trans:
                    loads += em.rows(False, b_arg, b_off + (n0 * sb + k0) * 4, B32[s], n,
                                     k * 4, sb * 4, tk * 4)
                    comp.append(em.vec("copy", n, k, B32[s], tk * 4, B16[s], tk * 2,
                                       out_dt="bf16"))
                else:
                    loads += em.rows(False, b_arg, b_off + (k0 * sb + n0) * 4, B32[s], k,
                                     n * 4, sb * 4, tn * 4)
                    comp.append(em.vec("copy", k, n, B32[s], tn * 4, B16[s], tn * 2,
                                       out_dt="bf16"))
            trans = b_const or b_trans
            bs = tkb if b_const else (tk if trans else tn)
            comp.append(em.matmul(Mp, n, k, Ares + k0 * 2, Kp * 2, B16[gb % 2], bs * 2,
                                  Cb[cs], tn * 4, accumulate=ki > 0, transpose_b=trans))
            last = ki == nk - 1
            stores: list[Any] = []
            if last:
                if bias_off is not None:
                    loads += em.rows(False, ARG_CONST, bias_off + n0 * 4, biasb[cs], 1, n * 4,
                                     n * 4, n * 4)
                    comp.append(em.vec("add", Mp, n, Cb[cs], tn * 4, Cb[cs], tn * 4,
                                       src2=biasb[cs], mode="row"))
                if act:
                    comp.append(em.vec(act, Mp, n, Cb[cs], tn * 4, Cb[cs], tn * 4))
                stores = em.rows(True, o_arg, o_off + (m0 * N + n0) * 4, Cb[cs], Mp, n * 4,
                                 N * 4, tn * 4)
            steps.append(Step(loads, comp, stores, out_first=ki == 0, out_last=last))
    log.debug("gemm %s: resident A m%d, tiles n%d k%d, %d steps", node.output, Mp, tn, tk,
              len(steps))
    return [], steps

