"""Instruction emission: SRAM allocation, DMA boxes and the double-buffered pipeline.

A kernel describes its work per PE as a prologue (loads of operands kept resident) and a
list of `Step`s: loads into the step's input slot, compute, and stores of a finished output
tile. `pipeline` turns that into one instruction stream in which the load queue runs one
step ahead of the compute queue and the store queue one tile behind, ordered by four
counting semaphores:

- LOADED   (load -> compute): a step's operands are in SRAM;
- CONSUMED (compute -> load): the compute queue is done with a step's input slot;
- COMPUTED (compute -> store): an output tile is ready;
- STORED   (store -> compute): an output slot may be overwritten.

With `nbuf` slots, loads of step i wait for the compute of step i - nbuf, and compute of
tile t waits for the store of tile t - nbuf. At the end every semaphore is drained to zero,
so kernels can follow each other in one program.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Step", "SramAlloc", "Emitter", "pipeline", "f32_bits", "SramFull"]

log = logging.getLogger(__name__)

LOADED, CONSUMED, COMPUTED, STORED = 0, 1, 2, 3


class SramFull(RuntimeError):
    """A kernel's tiles do not fit the PE's SRAM (the tiler then shrinks them)."""


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


@dataclass
class Step:
    loads: list[Any] = field(default_factory=list)
    compute: list[Any] = field(default_factory=list)
    stores: list[Any] = field(default_factory=list)
    out_first: bool = True  # first step writing its output slot
    out_last: bool = True  # the output tile is complete: store it


class SramAlloc:
    """Bump allocator over one PE's SRAM, reset for every kernel."""

    def __init__(self, size: int, align: int = 64):
        self.size, self.align, self.top = size, align, 0

    def __call__(self, nbytes: int) -> int:
        addr = self.top
        self.top = addr + -(-nbytes // self.align) * self.align
        if self.top > self.size:
            raise SramFull(f"tiles need {self.top} bytes of SRAM, the PE has {self.size}")
        return addr

    @property
    def free(self) -> int:
        return self.size - self.top


def pipeline(isa: Any, prologue: list[Any], steps: list[Step], nbuf: int = 2) -> list[Any]:
    """One PE's instruction stream for a kernel (without the closing barrier)."""
    q = isa.QUEUES
    ql, qc, qs = q["load"], q["compute"], q["store"]
    out: list[Any] = list(prologue)
    n = len(steps)

    def emit_loads(i: int) -> None:
        if i >= nbuf:
            out.append(isa.SemWait(queue=ql, sem=CONSUMED))
        out.extend(steps[i].loads)
        out.append(isa.SemSignal(queue=ql, sem=LOADED))

    for i in range(min(nbuf - 1, n)):
        emit_loads(i)
    tile = 0
    for i, st in enumerate(steps):
        if i + nbuf - 1 < n:
            emit_loads(i + nbuf - 1)
        out.append(isa.SemWait(queue=qc, sem=LOADED))
        if st.out_first and tile >= nbuf:
            out.append(isa.SemWait(queue=qc, sem=STORED))
        out.extend(st.compute)
        out.append(isa.SemSignal(queue=qc, sem=CONSUMED))
        if st.out_last:
            out.append(isa.SemSignal(queue=qc, sem=COMPUTED))
            out.append(isa.SemWait(queue=qs, sem=COMPUTED))
            out.extend(st.stores)
            out.append(isa.SemSignal(queue=qs, sem=STORED))
            tile += 1
    # Drain what nobody waited for, so the next kernel starts with every semaphore at 0.
    for _ in range(min(nbuf, n)):
        out.append(isa.SemWait(queue=ql, sem=CONSUMED))
    for _ in range(min(nbuf, tile)):
        out.append(isa.SemWait(queue=qc, sem=STORED))
    return out


class Emitter:
    """Instruction helpers bound to one spec's generated ISA."""

    def __init__(self, spec: Any, isa: Any):
        self.spec, self.isa = spec, isa
        self.dt = isa.DTYPES
        self.fn = isa.VECTOR_FUNCS
        self.mode = isa.SRC2_MODES
        self.max_n0 = (1 << 16) - 1

    def dma(self, store: bool, base: int, dram: int, sram: int, n0: int, n1: int = 1,
            n2: int = 1, ds1: int = 0, ds2: int = 0, ss1: int = 0, ss2: int = 0,
            gather: int = 0, table: int = 0) -> Any:
        cls = self.isa.Store if store else self.isa.Load
        return cls(base=base, gather=gather, dram_offset=dram, sram_addr=sram, n0=n0, n1=n1,
                   n2=n2, dram_s1=ds1, dram_s2=ds2, sram_s1=ss1, sram_s2=ss2,
                   gather_addr=table)

    def rows(self, store: bool, base: int, dram: int, sram: int, rows: int, row_bytes: int,
             dram_stride: int, sram_stride: int) -> list[Any]:
        """Move `rows` rows of `row_bytes` bytes; rows longer than a DMA row are split."""
        if rows == 0 or row_bytes == 0:
            return []
        if row_bytes <= self.max_n0:
            return [self.dma(store, base, dram, sram, row_bytes, rows, 1, dram_stride, 0,
                             sram_stride, 0)]
        piece = max(d for d in range(4, self.max_n0 + 1, 4) if row_bytes % d == 0)
        k = row_bytes // piece
        return [self.dma(store, base, dram, sram, piece, k, rows, piece, dram_stride, piece,
                         sram_stride)]

    def vec(self, func: str, rows: int, cols: int, src1: int, s1: int, dst: int, ds: int,
            src2: int = 0, s2: int = 0, mode: str = "tile", imm: float | int = 0,
            in_dt: str = "fp32", out_dt: str = "fp32", shift: int = 0) -> Any:
        if isinstance(imm, float) or (in_dt in ("fp32", "bf16") and mode == "imm"):
            imm = f32_bits(float(imm))
        return self.isa.Vector(func=self.fn[func], in_dtype=self.dt[in_dt],
                               out_dtype=self.dt[out_dt], src2_mode=self.mode[mode], rows=rows,
                               cols=cols, src1_addr=src1, src2_addr=src2, dst_addr=dst,
                               src1_stride=s1, src2_stride=s2, dst_stride=ds, shift=shift,
                               imm=imm)

    def matmul(self, m: int, n: int, k: int, a: int, sa: int, b: int, sb: int, c: int, sc: int,
               accumulate: bool, transpose_b: bool, dtype: str = "bf16") -> Any:
        return self.isa.Matmul(dtype=self.dt[dtype], accumulate=int(accumulate),
                               transpose_b=int(transpose_b), m=m, n=n, k=k, a_addr=a, b_addr=b,
                               c_addr=c, a_stride=sa, b_stride=sb, c_stride=sc)


def split_even(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of `n` items over `parts` workers, the first ones larger."""
    out, start = [], 0
    for p in range(parts):
        size = n // parts + (1 if p < n % parts else 0)
        out.append((start, start + size))
        start += size
    return out
