"""A small assembler for hand-written NPU kernels: SRAM arenas, queue dependencies, DMA helpers.

Dependencies between the three queues use one counting semaphore per ordered pair of
queues. Because queues are in order, the k-th wait on a pair is released by the k-th
signal on that pair; `signal` must therefore always be emitted before its `wait` in
program order (checked), which also rules out dispatch deadlocks. Every signal must be
waited for before a BARRIER or END (checked), so semaphore counts never leak across phases.
"""

from __future__ import annotations

import struct
from collections import Counter

from hw.spec import Spec

__all__ = ["Arena", "Builder", "QUEUE_PAIRS", "f32_bits"]

QUEUE_PAIRS = {
    ("load", "compute"): 0, ("compute", "load"): 1, ("compute", "store"): 2,
    ("store", "compute"): 3, ("store", "load"): 4, ("load", "store"): 5,
}
ELEM = {"bf16": 2, "fp32": 4, "int32": 4, "int8": 1}
DMA_N0_MAX = (1 << 16) - 1


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


class Arena:
    """Bump allocator over one PE's SRAM."""

    def __init__(self, size: int, what: str = "SRAM"):
        self.size, self.top, self.what = size, 0, what
        self.high = 0

    def alloc(self, nbytes: int, align: int = 64) -> int:
        addr = -(-self.top // align) * align
        if addr + nbytes > self.size:
            raise MemoryError(
                f"{self.what}: {nbytes} more bytes do not fit in {self.size} bytes of SRAM "
                f"({addr} in use); lower max_num_batched_tokens / max_model_len or use a spec "
                f"with more SRAM per PE")
        self.top = addr + nbytes
        self.high = max(self.high, self.top)
        return addr

    def mark(self) -> int:
        return self.top

    def release(self, mark: int) -> None:
        self.top = mark


class Builder:
    """Collects instructions of one program for `spec`."""

    def __init__(self, spec: Spec, isa):
        self.spec, self.isa = spec, isa
        self.ins: list = []
        self.sig: Counter = Counter()
        self.wt: Counter = Counter()
        self.align = spec.dma.align_bytes

    # synchronisation

    def signal(self, src: str, dst: str) -> None:
        q = self.isa.QUEUES[src]
        self.ins.append(self.isa.SemSignal(queue=q, sem=QUEUE_PAIRS[(src, dst)]))
        self.sig[(src, dst)] += 1

    def wait(self, src: str, dst: str) -> None:
        if self.wt[(src, dst)] >= self.sig[(src, dst)]:
            raise AssertionError(f"wait {src}->{dst} emitted before its signal")
        self.ins.append(self.isa.SemWait(queue=self.isa.QUEUES[dst], sem=QUEUE_PAIRS[(src, dst)]))
        self.wt[(src, dst)] += 1

    def dep(self, src: str, dst: str) -> None:
        """Everything queued so far on `src` happens before what comes next on `dst`."""
        self.signal(src, dst)
        self.wait(src, dst)

    def drain(self, src: str, dst: str) -> None:
        while self.wt[(src, dst)] < self.sig[(src, dst)]:
            self.wait(src, dst)

    def _check_balanced(self) -> None:
        left = {k: self.sig[k] - self.wt[k] for k in self.sig if self.sig[k] != self.wt[k]}
        if left:
            raise AssertionError(f"unwaited semaphore signals at a barrier: {left}")

    def barrier(self, mask: int) -> None:
        self._check_balanced()
        self.ins.append(self.isa.Barrier(pe_mask=mask))

    def end(self) -> list:
        self._check_balanced()
        self.ins.append(self.isa.End())
        return self.ins

    # DMA

    def _dma(self, cls, base, off, sram, n0, n1, n2, ds1, ds2, ss1, ss2, gather):
        a = self.align
        for v, what in ((off, "dram_offset"), (sram, "sram_addr"), (n0, "n0"), (ds1, "dram_s1"),
                        (ds2, "dram_s2"), (ss1, "sram_s1"), (ss2, "sram_s2")):
            if v % a:
                raise ValueError(f"DMA {what} = {v} is not a multiple of {a} bytes")
        # split rows longer than the n0 field into column chunks
        step = DMA_N0_MAX // a * a
        for c in range(0, n0, step):
            w = min(step, n0 - c)
            self.ins.append(cls(
                base=base, gather=0 if gather is None else 1, dram_offset=off + c,
                sram_addr=sram + c, n0=w, n1=n1, n2=n2, dram_s1=ds1, dram_s2=ds2,
                sram_s1=ss1, sram_s2=ss2, gather_addr=gather or 0))

    def load(self, base: int, off: int, sram: int, n0: int, n1: int = 1, n2: int = 1, *,
             ds1: int = 0, ds2: int = 0, ss1: int = 0, ss2: int = 0,
             gather: int | None = None) -> None:
        self._dma(self.isa.Load, base, off, sram, n0, n1, n2, ds1, ds2, ss1, ss2, gather)

    def store(self, base: int, off: int, sram: int, n0: int, n1: int = 1, n2: int = 1, *,
              ds1: int = 0, ds2: int = 0, ss1: int = 0, ss2: int = 0,
              gather: int | None = None) -> None:
        self._dma(self.isa.Store, base, off, sram, n0, n1, n2, ds1, ds2, ss1, ss2, gather)

    # compute

    def matmul(self, m: int, n: int, k: int, a: int, a_stride: int, b: int, b_stride: int,
               c: int, c_stride: int, *, transpose_b: bool = False, accumulate: bool = False,
               dtype: str = "bf16", narrow: bool = False, group: int = 0,
               b_group_stride: int = 0) -> None:
        self.ins.append(self.isa.Matmul(
            dtype=self.isa.DTYPES[dtype], accumulate=int(accumulate),
            transpose_b=int(transpose_b), m=m, n=n, k=k, a_addr=a, b_addr=b, c_addr=c,
            a_stride=a_stride, b_stride=b_stride, c_stride=c_stride, narrow=int(narrow),
            group=group, b_group_stride=b_group_stride))

    def vector(self, func: str, rows: int, cols: int, src1: int, s1_stride: int, dst: int,
               dst_stride: int, *, in_dtype: str, out_dtype: str, src2: int | None = None,
               s2_stride: int = 0, mode: str = "tile", imm: int = 0) -> None:
        if src2 is None and mode != "imm":
            src2, s2_stride = src1, s1_stride  # unary: point src2 at valid memory
        self.ins.append(self.isa.Vector(
            func=self.isa.VECTOR_FUNCS[func], in_dtype=self.isa.DTYPES[in_dtype],
            out_dtype=self.isa.DTYPES[out_dtype], src2_mode=self.isa.SRC2_MODES[mode],
            rows=rows, cols=cols, src1_addr=src1, src2_addr=src2 or 0, dst_addr=dst,
            src1_stride=s1_stride, src2_stride=s2_stride, dst_stride=dst_stride, shift=0,
            imm=imm))
