"""Small NPU programs for the firmware and driver tests, built with the generated encoders."""

from __future__ import annotations

from hw.generated import isa

ROWS, COLS = 4, 16  # an int32 tile of 256 bytes
TILE = ROWS * COLS * 4


def add_int32() -> list:
    """out = x + y over a [4, 16] int32 tile; ARG0 = x, ARG1 = y, ARG2 = out."""
    def dma(cls, base, sram):
        return cls(base=base, sram_addr=sram, n0=TILE, n1=1, n2=1)

    return [
        dma(isa.Load, 0, 0),
        dma(isa.Load, 1, 1024),
        isa.SemSignal(queue=isa.QUEUES["load"], sem=0),
        isa.SemWait(queue=isa.QUEUES["compute"], sem=0),
        isa.Vector(
            func=isa.VECTOR_FUNCS["add"], in_dtype=isa.DTYPE_INT32, out_dtype=isa.DTYPE_INT32,
            src2_mode=isa.SRC2_MODES["tile"], rows=ROWS, cols=COLS,
            src1_addr=0, src2_addr=1024, dst_addr=2048,
            src1_stride=COLS * 4, src2_stride=COLS * 4, dst_stride=COLS * 4,
        ),
        isa.SemSignal(queue=isa.QUEUES["compute"], sem=1),
        isa.SemWait(queue=isa.QUEUES["store"], sem=1),
        dma(isa.Store, 2, 2048),
        isa.End(),
    ]


def slow(loads: int = 4) -> list:
    """Several LOADs of 4 MiB each from the same 4 KiB of ARG0: long, but never stuck."""
    big = isa.Load(base=0, sram_addr=0, n0=4096, n1=1024, n2=1, dram_s1=0, sram_s1=0)
    return [big] * loads + [isa.End()]


def deadlock() -> list:
    """The load queue waits on a semaphore nothing signals."""
    return [isa.SemWait(queue=isa.QUEUES["load"], sem=1), isa.End()]


def no_end() -> bytes:
    """One instruction that does nothing and no END: the dispatcher runs off the end."""
    return isa.encode_program([isa.Load(base=0, n0=0)])


def load_from(offset: int = 0) -> list:
    """Reads 64 bytes at ARG0 + offset into SRAM."""
    return [isa.Load(base=0, dram_offset=offset, sram_addr=0, n0=64, n1=1, n2=1), isa.End()]


def _tile_op(func: str, src2: int = 1024) -> isa.Vector:
    return isa.Vector(
        func=isa.VECTOR_FUNCS[func], in_dtype=isa.DTYPE_INT32, out_dtype=isa.DTYPE_INT32,
        src2_mode=isa.SRC2_MODES["tile"], rows=ROWS, cols=COLS,
        src1_addr=0, src2_addr=src2, dst_addr=2048,
        src1_stride=COLS * 4, src2_stride=COLS * 4, dst_stride=COLS * 4,
    )


def _staged(first: list, last: list) -> list:
    """LOADs, then the compute op, then the STORE, ordered by semaphores 0 and 1."""
    return [
        *first,
        isa.SemSignal(queue=isa.QUEUES["load"], sem=0),
        isa.SemWait(queue=isa.QUEUES["compute"], sem=0),
        *last[:-1],
        isa.SemSignal(queue=isa.QUEUES["compute"], sem=1),
        isa.SemWait(queue=isa.QUEUES["store"], sem=1),
        last[-1],
    ]


def barrier_producer(mask: int = 0b11) -> list:
    """PE side 1 of a two-PE job: t = x + x to DRAM, then BARRIER. ARG0 = x, ARG1 = t."""
    def dma(cls, base, sram):
        return cls(base=base, sram_addr=sram, n0=TILE, n1=1, n2=1)

    return [
        *_staged([dma(isa.Load, 0, 0)], [_tile_op("add", src2=0), dma(isa.Store, 1, 2048)]),
        isa.Barrier(pe_mask=mask),
        isa.End(),
    ]


def barrier_consumer(mask: int = 0b11) -> list:
    """PE side 2: BARRIER, then out = t - y with t read from DRAM. ARG0 = t, ARG1 = y,
    ARG2 = out. Without the barrier t would still be zero (or stale)."""
    def dma(cls, base, sram):
        return cls(base=base, sram_addr=sram, n0=TILE, n1=1, n2=1)

    return [
        isa.Barrier(pe_mask=mask),
        *_staged([dma(isa.Load, 0, 0), dma(isa.Load, 1, 1024)],
                 [_tile_op("sub"), dma(isa.Store, 2, 2048)]),
        isa.End(),
    ]
