"""NPU programs for one engine step of a Llama-family decoder, written with the ISA encoders.

One program serves every PE of a run, except that a PE with no KV head of its own (a model
with fewer KV heads than PEs) runs it without the attention phases; what differs per PE
comes from its ARG registers:

| ARG | points at |
| --- | --- |
| 0 | this PE's weight blob: its column slices of every projection (and embedding) |
| 1 | the shared region: norm weights, rope tables, activations, step inputs, logits |
| 2 | the KV cache, shifted to this PE's first KV head (unused by a PE without one) |
| 3 | the attention output, shifted to this PE's first query head (likewise) |
| 4 | the residual stream `h`, shifted to this PE's column slice (or a dummy area) |
| 5 | the MLP activation, shifted to this PE's column slice (or a dummy area) |
| 6 | the logits, shifted to this PE's vocabulary slice (or a dummy area) |

A step is: embedding gather; per layer [RMSNorm, one fused Q/K/V projection of this PE's
KV heads, RoPE (a gathered cos/sin row per query row), KV write through the slot table
(scatter STORE), paged attention] | BARRIER | [O projection slice + residual] | BARRIER |
[RMSNorm, the fused gate/up slice, SiLU * up] | BARRIER | [down slice + residual] | BARRIER;
then the final norm of the rows that need logits and the LM head slice. Attention takes
as many sequences per pass as SRAM holds: one gather LOAD each brings their K and V blocks
through the block table, the DMA repeats each token's mask row for its query heads, and
one grouped MATMUL (a group per sequence) makes all their scores, one VECTOR softmax
normalises them and one grouped MATMUL multiplies by V. A program is specialised to a
bucket (B sequences x Q query tokens each, NBLK KV blocks per sequence) and is independent
of block tables, positions, token ids and masks, which are step inputs in DRAM.

Numerics follow the bf16 Hugging Face Llama (eager attention): projections accumulate in
fp32 and round to bf16 once (narrow MATMULs); RMSNorm computes in fp32; scores are
rounded to bf16, scaled, masked and soft-maxed in fp32; probabilities are rounded to bf16
before P @ V. In the functional model's fast mode these products run on the host's
PyTorch kernels, so the logits equal transformers' on the same host (docs/llm.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hw.spec import Spec
from stack.llm.builder import Arena, Builder, f32_bits
from stack.llm.loader import ModelConfig

__all__ = ["Plan", "step_program", "largest_divisor"]

BF16_LOWEST = -3.3895313892515355e38
A64 = 64


def largest_divisor(n: int, most: int, unit: int = 1) -> int:
    """Largest d <= most dividing n such that (n // d) is a multiple of `unit`."""
    for d in range(min(n, most), 0, -1):
        if n % d == 0 and (n // d) % unit == 0:
            return d
    return 1


def _up(x: int, a: int = A64) -> int:
    return -(-x // a) * a


@dataclass(frozen=True)
class Plan:
    """Static sizes and DRAM offsets shared by the kernels and the runner."""

    cfg: ModelConfig
    num_pes: int
    block_size: int
    num_blocks: int
    max_tokens: int  # rows of a step (B * Q), sizes the activation buffers
    max_seqs: int
    max_blocks: int  # KV blocks per sequence
    max_pos: int  # rope table rows

    # work split
    @property
    def p_att(self) -> int:
        return largest_divisor(self.cfg.num_kv_heads, self.num_pes)

    @property
    def p_h(self) -> int:
        return largest_divisor(self.cfg.hidden_size, self.num_pes, 2)

    @property
    def p_i(self) -> int:
        return largest_divisor(self.cfg.intermediate_size, self.num_pes, 2)

    @property
    def p_v(self) -> int:
        return largest_divisor(self.cfg.vocab_size, self.num_pes, 2)

    @property
    def groups_per_pe(self) -> int:
        return self.cfg.num_kv_heads // self.p_att

    @property
    def hg(self) -> int:
        return self.cfg.num_heads // self.cfg.num_kv_heads

    @property
    def ns_h(self) -> int:
        return self.cfg.hidden_size // self.p_h

    @property
    def ns_i(self) -> int:
        return self.cfg.intermediate_size // self.p_i

    @property
    def ns_v(self) -> int:
        return self.cfg.vocab_size // self.p_v

    @property
    def qkv_rows(self) -> int:
        return (self.hg + 2) * self.cfg.head_dim

    # per-PE weight blob (ARG0)
    def blob_layout(self) -> dict[str, int]:
        c, off, out = self.cfg, 0, {}
        H, I = c.hidden_size, c.intermediate_size

        def put(name, nbytes):
            nonlocal off
            out[name] = off
            off = _up(off + nbytes, 256)

        put("embed", c.vocab_size * self.ns_h * 2)
        for l in range(c.num_layers):
            for i in range(self.groups_per_pe):
                put(f"{l}.qkv{i}", self.qkv_rows * H * 2)
                if c.attention_bias:
                    put(f"{l}.qkv_bias{i}", self.qkv_rows * 4)
            put(f"{l}.o", self.ns_h * c.q_dim * 2)
            put(f"{l}.gate_up", 2 * self.ns_i * H * 2)  # the gate slice's rows, then up's
            put(f"{l}.down", self.ns_h * I * 2)
        put("lm_head", self.ns_v * H * 2)
        out["size"] = off
        return out

    # shared region (ARG1)
    def shared_layout(self) -> dict[str, int]:
        c, off, out = self.cfg, 0, {}
        M, B, T = self.max_tokens, self.max_seqs, self.max_blocks * self.block_size

        def put(name, nbytes):
            nonlocal off
            out[name] = off
            off = _up(off + nbytes, 256)

        for l in range(c.num_layers):
            put(f"{l}.in_norm", c.hidden_size * 2)
            put(f"{l}.post_norm", c.hidden_size * 2)
        put("final_norm", c.hidden_size * 2)
        put("cos", self.max_pos * c.head_dim * 2)
        put("sin", self.max_pos * c.head_dim * 2)
        put("h", M * c.hidden_size * 2)
        put("attn", M * c.q_dim * 2)
        put("act", M * c.intermediate_size * 2)
        put("ids", M * 4)
        put("slots", M * 4)
        put("rope_pos", M * self.hg * 4)  # each token's position once per query head
        put("block_tables", B * self.max_blocks * 4)
        put("mask", M * T * 2)
        put("rows", B * 4)
        put("logits", B * c.vocab_size * 2)
        put("dummy", max(M * max(c.hidden_size, c.intermediate_size),
                         B * c.vocab_size) * 2)
        out["size"] = off
        return out

    # KV cache (ARG2 before the per-PE shift)
    @property
    def kv_plane_bytes(self) -> int:
        return self.num_blocks * self.block_size * self.cfg.kv_dim * 2

    @property
    def kv_bytes(self) -> int:
        return self.cfg.num_layers * 2 * self.kv_plane_bytes

    def kv_offset(self, layer: int, which: str) -> int:
        return (2 * layer + (which == "v")) * self.kv_plane_bytes


# kernel pieces (all SRAM addresses are byte offsets from 0 in the arena)


def rmsnorm(b: Builder, ar: Arena, x: int, M: int, H: int, w: int, out: int, eps: float) -> None:
    """out[M, H] bf16 = (x / rms(x)) * w, as HF: fp32 math, bf16 result times bf16 weight."""
    mark = ar.mark()
    tmp = ar.alloc(M * H * 4)
    ss = ar.alloc(M * 4)
    b.vector("mul", M, H, x, H * 2, tmp, H * 4, in_dtype="bf16", out_dtype="fp32",
             src2=x, s2_stride=H * 2)
    b.vector("row_sum", M, H, tmp, H * 4, ss, 4, in_dtype="fp32", out_dtype="fp32")
    b.vector("div", M, 1, ss, 4, ss, 4, in_dtype="fp32", out_dtype="fp32", mode="imm",
             imm=f32_bits(float(H)))
    b.vector("add", M, 1, ss, 4, ss, 4, in_dtype="fp32", out_dtype="fp32", mode="imm",
             imm=f32_bits(eps))
    b.vector("rsqrt", M, 1, ss, 4, ss, 4, in_dtype="fp32", out_dtype="fp32")
    b.vector("copy", M, H, x, H * 2, tmp, H * 4, in_dtype="bf16", out_dtype="fp32")
    b.vector("mul", M, H, tmp, H * 4, out, H * 2, in_dtype="fp32", out_dtype="bf16",
             src2=ss, s2_stride=4, mode="col")
    b.vector("mul", M, H, out, H * 2, out, H * 2, in_dtype="bf16", out_dtype="bf16",
             src2=w, s2_stride=0, mode="row")
    ar.release(mark)


def linear(b: Builder, ar: Arena, x: int, M: int, K: int, w_arg: int, w_off: int,
           outs: list[tuple[int, int, int]], *, bias: int | None = None) -> None:
    """x[M, K] @ W^T for W [N, K] streaming from DRAM, its rows cut into consecutive outputs.

    `outs` lists (n, out, out_stride): the next n rows of W give the bf16 tile out[M, n].
    The MATMULs round to bf16 themselves (`narrow`); with `bias` (fp32 [N]) they keep fp32
    and a VECTOR adds the bias before the single rounding. Weight tiles are
    double-buffered: the load queue fetches tile t+2 once the compute queue is done with
    tile t. `x` (and `bias`) must already be visible to the compute queue.
    """
    N = sum(n for n, _, _ in outs)
    mark = ar.mark()
    free = ar.size - _up(ar.top) - 3 * A64
    per_row = 4 * K + (4 * M if bias is not None else 0)
    nt = max(1, min(N, free // per_row))
    wb = [ar.alloc(nt * K * 2), ar.alloc(nt * K * 2)]
    cf = ar.alloc(M * nt * 4) if bias is not None else None
    tiles = [(t0, min(nt, N - t0)) for t0 in range(0, N, nt)]
    # (first row of W, rows, out, out_stride) of each output
    spans, r0 = [], 0
    for n, out, stride in outs:
        spans.append((r0, n, out, stride))
        r0 += n

    def emit_load(t: int) -> None:
        t0, n = tiles[t]
        if t >= 2:
            b.wait("compute", "load")
        b.load(w_arg, w_off + t0 * K * 2, wb[t % 2], K * 2, n, ds1=K * 2, ss1=K * 2)
        b.signal("load", "compute")

    # the weight buffers may reuse SRAM that the compute queue was still using
    b.dep("compute", "load")
    for t in range(min(2, len(tiles))):
        emit_load(t)
    for t, (t0, n) in enumerate(tiles):
        b.wait("load", "compute")
        for s0, sn, out, stride in spans:
            lo, hi = max(t0, s0), min(t0 + n, s0 + sn)
            if lo >= hi:
                continue
            w = wb[t % 2] + (lo - t0) * K * 2
            dst = out + (lo - s0) * 2
            if bias is None:
                b.matmul(M, hi - lo, K, x, K * 2, w, K * 2, dst, stride, transpose_b=True,
                         narrow=True)
            else:
                b.matmul(M, hi - lo, K, x, K * 2, w, K * 2, cf, nt * 4, transpose_b=True)
                b.vector("add", M, hi - lo, cf, nt * 4, dst, stride, in_dtype="fp32",
                         out_dtype="bf16", src2=bias + lo * 4, s2_stride=0, mode="row")
        b.signal("compute", "load")
        if t + 2 < len(tiles):
            emit_load(t + 2)
    b.drain("compute", "load")
    ar.release(mark)


def rope(b: Builder, x: int, stride: int, rows: int, hd: int, cos: int, sin: int, out: int,
         out_stride: int, tmp: int, cs_stride: int | None = None) -> None:
    """out = x * cos + rotate_half(x) * sin: x [rows, hd] bf16, cos/sin [rows, hd] bf16.

    Each product and the sum round to bf16, as the bf16 Hugging Face model does.
    `cs_stride` is the cos/sin row stride (default one row per x row; 0 repeats one row,
    which rotates several heads of one token in one instruction).
    """
    h = hd // 2
    cs = sn = hd * 2 if cs_stride is None else cs_stride
    ts = h * 2
    t1, t2 = tmp, tmp + rows * h * 2
    # first half: x_lo * cos_lo - x_hi * sin_lo
    b.vector("mul", rows, h, x, stride, t1, ts, in_dtype="bf16", out_dtype="bf16",
             src2=cos, s2_stride=cs)
    b.vector("mul", rows, h, x + h * 2, stride, t2, ts, in_dtype="bf16", out_dtype="bf16",
             src2=sin, s2_stride=sn)
    b.vector("sub", rows, h, t1, ts, out, out_stride, in_dtype="bf16", out_dtype="bf16",
             src2=t2, s2_stride=ts)
    # second half: x_hi * cos_hi + x_lo * sin_hi
    b.vector("mul", rows, h, x + h * 2, stride, t1, ts, in_dtype="bf16", out_dtype="bf16",
             src2=cos + h * 2, s2_stride=cs)
    b.vector("mul", rows, h, x, stride, t2, ts, in_dtype="bf16", out_dtype="bf16",
             src2=sin + h * 2, s2_stride=sn)
    b.vector("add", rows, h, t1, ts, out + h * 2, out_stride, in_dtype="bf16",
             out_dtype="bf16", src2=t2, s2_stride=ts)


# phases


def _attention_phase(b: Builder, plan: Plan, spec: Spec, layer: int, B: int, Q: int,
                     nblk: int, shared: dict, blob: dict) -> None:
    c = plan.cfg
    H, hd, hg, kvd, qd = c.hidden_size, c.head_dim, plan.hg, c.kv_dim, c.q_dim
    M, bs = B * Q, plan.block_size
    T, R = nblk * bs, M * hg  # R query rows (token, head), token-major
    ar = Arena(spec.sram_bytes_per_pe, "attention phase")
    # step inputs and the residual stream
    xs = ar.alloc(M * H * 2)
    nw = ar.alloc(H * 2)
    slots = ar.alloc(M * 4)
    rpos = ar.alloc(R * 4)
    bt = ar.alloc(B * nblk * 4)
    cos = ar.alloc(R * hd * 2)
    sin = ar.alloc(R * hd * 2)
    b.load(1, shared["h"], xs, M * H * 2)
    b.load(1, shared[f"{layer}.in_norm"], nw, H * 2)
    b.load(1, shared["slots"], slots, M * 4)
    b.load(1, shared["rope_pos"], rpos, R * 4)
    b.load(1, shared["block_tables"], bt, B * nblk * 4)
    b.signal("load", "store")  # slot table for the KV scatter
    b.signal("load", "compute")
    # a cos/sin row per query row (the tables need the positions in SRAM first: same queue)
    b.load(1, shared["cos"], cos, hd * 2, 1, R, ds2=hd * 2, ss2=hd * 2, gather=rpos)
    b.load(1, shared["sin"], sin, hd * 2, 1, R, ds2=hd * 2, ss2=hd * 2, gather=rpos)
    b.signal("load", "compute")
    b.wait("load", "compute")
    b.wait("load", "store")
    xn = ar.alloc(M * H * 2)
    rmsnorm(b, ar, xs, M, H, nw, xn, c.rms_norm_eps)
    b.wait("load", "compute")
    q = ar.alloc(R * hd * 2)  # [M, hg, hd]
    k = ar.alloc(M * hd * 2)
    v = ar.alloc(M * hd * 2)
    qr = ar.alloc(R * hd * 2)
    kr = ar.alloc(M * hd * 2)
    tmp = ar.alloc(R * hd * 2)
    bias = ar.alloc(plan.qkv_rows * 4) if c.attention_bias else None
    # sequences per pass: their K, V, expanded mask, scores and outputs must fit
    rows = Q * hg  # query rows of one sequence
    per_seq = 4 * T * hd + rows * T * (2 + 2 + 4) + rows * hd * 2 + 3 * A64
    S = max(1, min(B, (ar.size - _up(ar.top)) // per_seq))
    kt = ar.alloc(S * T * hd * 2)  # [S, T, hd]
    vt = ar.alloc(S * T * hd * 2)
    mk = ar.alloc(S * rows * T * 2)  # [S, Q, hg, T]: each token's mask row once per head
    sb = ar.alloc(S * rows * T * 2)
    sf = ar.alloc(S * rows * T * 4)
    ob = ar.alloc(S * rows * hd * 2)  # [S, Q, hg, hd]
    scale = 1.0 / math.sqrt(hd)
    for i in range(plan.groups_per_pe):
        kv_col = i * plan.p_att * hd * 2
        if bias is not None:
            b.load(0, blob[f"{layer}.qkv_bias{i}"], bias, plan.qkv_rows * 4)
            b.dep("load", "compute")
        linear(b, ar, xn, M, H, 0, blob[f"{layer}.qkv{i}"],
               [(hg * hd, q, hg * hd * 2), (hd, k, hd * 2), (hd, v, hd * 2)], bias=bias)
        rope(b, q, hd * 2, R, hd, cos, sin, qr, hd * 2, tmp)
        # a token's key takes the cos/sin row of its first query row
        rope(b, k, hd * 2, M, hd, cos, sin, kr, hd * 2, tmp, cs_stride=hg * hd * 2)
        b.dep("compute", "store")
        # write this step's keys and values into their cache slots
        b.store(2, plan.kv_offset(layer, "k") + kv_col, kr, hd * 2, 1, M, ds2=kvd * 2,
                ss2=hd * 2, gather=slots)
        b.store(2, plan.kv_offset(layer, "v") + kv_col, v, hd * 2, 1, M, ds2=kvd * 2,
                ss2=hd * 2, gather=slots)
        b.dep("store", "load")
        for s0 in range(0, B, S):
            n = min(S, B - s0)
            if s0 > 0:
                b.wait("compute", "load")
            # K/V blocks of n sequences through their block tables, and their masks
            tbl = bt + s0 * nblk * 4
            for dst, which in ((kt, "k"), (vt, "v")):
                b.load(2, plan.kv_offset(layer, which) + kv_col, dst, hd * 2, bs, n * nblk,
                       ds1=kvd * 2, ds2=bs * kvd * 2, ss1=hd * 2, ss2=bs * hd * 2, gather=tbl)
            b.load(1, shared["mask"] + s0 * Q * T * 2, mk, T * 2, hg, n * Q, ds1=0,
                   ds2=T * 2, ss1=T * 2, ss2=hg * T * 2)
            b.signal("load", "compute")
            b.wait("load", "compute")
            if s0 > 0:
                b.wait("store", "compute")
            # scores of each sequence's query rows against its own keys: one group each
            m = n * rows
            b.matmul(m, T, hd, qr + s0 * rows * hd * 2, hd * 2, kt, hd * 2, sb, T * 2,
                     transpose_b=True, narrow=True, group=rows, b_group_stride=T * hd * 2)
            b.vector("mul", m, T, sb, T * 2, sb, T * 2, in_dtype="bf16", out_dtype="bf16",
                     mode="imm", imm=f32_bits(scale))
            b.vector("add", m, T, sb, T * 2, sf, T * 4, in_dtype="bf16", out_dtype="fp32",
                     src2=mk, s2_stride=T * 2)
            b.vector("softmax", m, T, sf, T * 4, sb, T * 2, in_dtype="fp32", out_dtype="bf16")
            b.matmul(m, hd, T, sb, T * 2, vt, hd * 2, ob, hd * 2, narrow=True, group=rows,
                     b_group_stride=T * hd * 2)
            b.signal("compute", "load")
            b.signal("compute", "store")
            b.wait("compute", "store")
            # (token, head) rows: a token's hg heads are adjacent in the attention output
            b.store(3, i * plan.p_att * hg * hd * 2 + s0 * Q * qd * 2, ob, hg * hd * 2, n * Q,
                    ds1=qd * 2, ss1=hg * hd * 2)
            b.signal("store", "compute")
        b.drain("compute", "load")
        b.drain("store", "compute")


def _residual_linear_phase(b: Builder, plan: Plan, spec: Spec, M: int, src: int, K: int,
                           w_off: int) -> None:
    """h[:, slice] += src[M, K] @ W_slice^T  (O projection or down projection)."""
    c = plan.cfg
    H, ns = c.hidden_size, plan.ns_h
    ar = Arena(spec.sram_bytes_per_pe, "residual phase")
    xa = ar.alloc(M * K * 2)
    res = ar.alloc(M * ns * 2)
    y = ar.alloc(M * ns * 2)
    b.load(1, src, xa, M * K * 2)
    b.load(4, 0, res, ns * 2, M, ds1=H * 2, ss1=ns * 2)
    b.dep("load", "compute")
    linear(b, ar, xa, M, K, 0, w_off, [(ns, y, ns * 2)])
    b.vector("add", M, ns, y, ns * 2, y, ns * 2, in_dtype="bf16", out_dtype="bf16",
             src2=res, s2_stride=ns * 2)
    b.dep("compute", "store")
    b.store(4, 0, y, ns * 2, M, ds1=H * 2, ss1=ns * 2)



def _mlp_phase(b: Builder, plan: Plan, spec: Spec, layer: int, M: int, shared: dict,
               blob: dict) -> None:
    c = plan.cfg
    H, I, ns = c.hidden_size, c.intermediate_size, plan.ns_i
    ar = Arena(spec.sram_bytes_per_pe, "MLP phase")
    xs = ar.alloc(M * H * 2)
    nw = ar.alloc(H * 2)
    b.load(1, shared["h"], xs, M * H * 2)
    b.load(1, shared[f"{layer}.post_norm"], nw, H * 2)
    b.dep("load", "compute")
    xn = ar.alloc(M * H * 2)
    rmsnorm(b, ar, xs, M, H, nw, xn, c.rms_norm_eps)
    g = ar.alloc(M * ns * 2)
    u = ar.alloc(M * ns * 2)
    linear(b, ar, xn, M, H, 0, blob[f"{layer}.gate_up"], [(ns, g, ns * 2), (ns, u, ns * 2)])
    b.vector("silu", M, ns, g, ns * 2, g, ns * 2, in_dtype="bf16", out_dtype="bf16")
    b.vector("mul", M, ns, g, ns * 2, g, ns * 2, in_dtype="bf16", out_dtype="bf16",
             src2=u, s2_stride=ns * 2)
    b.dep("compute", "store")
    b.store(5, 0, g, ns * 2, M, ds1=I * 2, ss1=ns * 2)


def _embed_phase(b: Builder, plan: Plan, spec: Spec, M: int, shared: dict, blob: dict) -> None:
    H, ns = plan.cfg.hidden_size, plan.ns_h
    ar = Arena(spec.sram_bytes_per_pe, "embedding phase")
    ids = ar.alloc(M * 4)
    e = ar.alloc(M * ns * 2)
    b.load(1, shared["ids"], ids, M * 4)
    b.load(0, blob["embed"], e, ns * 2, 1, M, ds2=ns * 2, ss2=ns * 2, gather=ids)
    b.dep("load", "store")
    b.store(4, 0, e, ns * 2, M, ds1=H * 2, ss1=ns * 2)


def _head_phase(b: Builder, plan: Plan, spec: Spec, R: int, shared: dict, blob: dict) -> None:
    c = plan.cfg
    H, V, ns = c.hidden_size, c.vocab_size, plan.ns_v
    ar = Arena(spec.sram_bytes_per_pe, "LM head phase")
    rows = ar.alloc(R * 4)
    x = ar.alloc(R * H * 2)
    nw = ar.alloc(H * 2)
    b.load(1, shared["rows"], rows, R * 4)
    b.load(1, shared["h"], x, H * 2, 1, R, ds2=H * 2, ss2=H * 2, gather=rows)
    b.load(1, shared["final_norm"], nw, H * 2)
    b.dep("load", "compute")
    xn = ar.alloc(R * H * 2)
    rmsnorm(b, ar, x, R, H, nw, xn, c.rms_norm_eps)
    logits = ar.alloc(R * ns * 2)
    linear(b, ar, xn, R, H, 0, blob["lm_head"], [(ns, logits, ns * 2)])
    b.dep("compute", "store")
    b.store(6, 0, logits, ns * 2, R, ds1=V * 2, ss1=ns * 2)


def step_program(plan: Plan, spec: Spec, isa, B: int, Q: int, nblk: int, *,
                 layers: range | None = None, embed: bool = True, head: bool = True,
                 attention: bool = True) -> list:
    """Instructions of one engine step for a (B, Q, NBLK) bucket; see the module docstring.

    `attention=False` is the program of a PE beyond the last one with KV heads (when the
    model has fewer KV heads than there are PEs): its attention phases are only their
    barriers.
    """
    c = plan.cfg
    M = B * Q
    if M > plan.max_tokens or B > plan.max_seqs or nblk > plan.max_blocks:
        raise ValueError(f"bucket B={B} Q={Q} NBLK={nblk} exceeds the plan "
                         f"({plan.max_seqs} seqs, {plan.max_tokens} tokens, "
                         f"{plan.max_blocks} blocks)")
    shared, blob = plan.shared_layout(), plan.blob_layout()
    mask = (1 << plan.num_pes) - 1
    b = Builder(spec, isa)
    if embed:
        _embed_phase(b, plan, spec, M, shared, blob)
        b.barrier(mask)
    for layer in (range(c.num_layers) if layers is None else layers):
        if attention:
            _attention_phase(b, plan, spec, layer, B, Q, nblk, shared, blob)
        b.barrier(mask)
        _residual_linear_phase(b, plan, spec, M, shared["attn"], c.q_dim, blob[f"{layer}.o"])
        b.barrier(mask)
        _mlp_phase(b, plan, spec, layer, M, shared, blob)
        b.barrier(mask)
        _residual_linear_phase(b, plan, spec, M, shared["act"], c.intermediate_size,
                               blob[f"{layer}.down"])
        b.barrier(mask)
    if head:
        _head_phase(b, plan, spec, B, shared, blob)
    return b.end()
