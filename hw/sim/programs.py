"""Programs for benchmarks and calibration: tiled GEMMs, DMA copies, vector chains.

`gemm` splits ``C[M, N] = A[M, K] @ B[K, N]`` (int8 into int32, row-major in DRAM at
ARG0, ARG1, ARG2) by rows over the PEs and, per PE, over ``tm x tn`` C tiles with the whole
K. Loads, MATMULs and stores of consecutive tiles overlap through double buffers and
semaphores, in software-pipeline order (loads of tile t, compute of t-1, store of t-2) so
that the dispatcher never stalls on a queue whose head waits for a later instruction.
"""

from __future__ import annotations

import gen
from hw.spec import Spec

# Semaphores: operand buffer b full / free, C buffer b computed / stored.
FULL, FREE, CDONE, CFREE = 0, 2, 4, 6


def gemm(spec: Spec, m: int, n: int, k: int, tm: int = 64, tn: int = 64,
         pes: int | None = None) -> dict[int, list]:
    """{pe: program} for the GEMM; every dimension must divide by its tile and the PEs."""
    isa = gen.build(spec).isa
    pes = pes or spec.npu.num_pes
    if m % (tm * pes) or n % tn:
        raise ValueError(f"m must be a multiple of tm * pes = {tm * pes} and n of tn = {tn}, "
                         f"got m={m}, n={n}")
    a_bytes, b_bytes, c_bytes = tm * k, k * tn, tm * tn * 4
    if 2 * (a_bytes + b_bytes + c_bytes) > spec.sram_bytes_per_pe:
        raise ValueError(f"tiles of {tm}x{tn} with k={k} do not fit SRAM twice over")
    q = isa.QUEUES
    out = {}
    for pe in range(pes):
        rows = m // pes
        tiles = [(pe * rows + i, j) for i in range(0, rows, tm) for j in range(0, n, tn)]

        def sa(b):
            return b * a_bytes

        def sb(b):
            return 2 * a_bytes + b * b_bytes

        def sc(b):
            return 2 * (a_bytes + b_bytes) + b * c_bytes

        def loads(t, tiles=tiles):
            i0, j0 = tiles[t]
            b = t % 2
            ins = [isa.SemWait(queue=q["load"], sem=FREE + b)] if t >= 2 else []
            ins += [
                isa.Load(base=0, gather=0, dram_offset=i0 * k, sram_addr=sa(b), n0=k, n1=tm,
                         n2=1, dram_s1=k, dram_s2=0, sram_s1=k, sram_s2=0, gather_addr=0),
                isa.Load(base=1, gather=0, dram_offset=j0, sram_addr=sb(b), n0=tn, n1=k, n2=1,
                         dram_s1=n, dram_s2=0, sram_s1=tn, sram_s2=0, gather_addr=0),
                isa.SemSignal(queue=q["load"], sem=FULL + b),
            ]
            return ins

        def compute(t):
            b = t % 2
            ins = [isa.SemWait(queue=q["compute"], sem=FULL + b)]
            if t >= 2:
                ins.append(isa.SemWait(queue=q["compute"], sem=CFREE + b))
            ins += [
                isa.Matmul(dtype=isa.DTYPES["int8"], accumulate=0, transpose_b=0, m=tm, n=tn,
                           k=k, a_addr=sa(b), b_addr=sb(b), c_addr=sc(b), a_stride=k,
                           b_stride=tn, c_stride=4 * tn),
                isa.SemSignal(queue=q["compute"], sem=FREE + b),
                isa.SemSignal(queue=q["compute"], sem=CDONE + b),
            ]
            return ins

        def store(t, tiles=tiles):
            i0, j0 = tiles[t]
            b = t % 2
            return [
                isa.SemWait(queue=q["store"], sem=CDONE + b),
                isa.Store(base=2, gather=0, dram_offset=(i0 * n + j0) * 4, sram_addr=sc(b),
                          n0=4 * tn, n1=tm, n2=1, dram_s1=4 * n, dram_s2=0, sram_s1=4 * tn,
                          sram_s2=0, gather_addr=0),
                isa.SemSignal(queue=q["store"], sem=CFREE + b),
            ]

        prog = []
        for s in range(len(tiles) + 2):
            if s < len(tiles):
                prog += loads(s)
            if 0 <= s - 1 < len(tiles):
                prog += compute(s - 1)
            if 0 <= s - 2 < len(tiles):
                prog += store(s - 2)
        out[pe] = prog + [isa.End()]
    return out


def copy(spec: Spec, nbytes: int, row: int = 1024) -> dict[int, list]:
    """A DMA-bound copy of `nbytes` on PE 0: LOAD ARG0 -> SRAM, STORE -> ARG1."""
    isa = gen.build(spec).isa
    q = isa.QUEUES
    rows = nbytes // row
    return {0: [
        isa.Load(base=0, gather=0, dram_offset=0, sram_addr=0, n0=row, n1=rows, n2=1,
                 dram_s1=row, dram_s2=0, sram_s1=row, sram_s2=0, gather_addr=0),
        isa.SemSignal(queue=q["load"], sem=0), isa.SemWait(queue=q["store"], sem=0),
        isa.Store(base=1, gather=0, dram_offset=0, sram_addr=0, n0=row, n1=rows, n2=1,
                  dram_s1=row, dram_s2=0, sram_s1=row, sram_s2=0, gather_addr=0),
        isa.End(),
    ]}


def vector_chain(spec: Spec, rows: int, cols: int, steps: int) -> dict[int, list]:
    """`steps` dependent int32 VECTOR adds on a [rows, cols] tile already in SRAM."""
    isa = gen.build(spec).isa
    v = isa.Vector(func=isa.VECTOR_FUNCS["add"], in_dtype=isa.DTYPES["int32"],
                   out_dtype=isa.DTYPES["int32"], src2_mode=isa.SRC2_MODES["imm"], rows=rows,
                   cols=cols, src1_addr=0, src2_addr=0, dst_addr=0, src1_stride=4 * cols,
                   src2_stride=0, dst_stride=4 * cols, shift=0, imm=1)
    return {0: [v] * steps + [isa.End()]}
