"""Helpers shared by the functional model's tests: run programs on a device by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import gen
from hw.model import Device
from hw.spec import load

SPEC = load("small")
ISA = gen.build(SPEC).isa
REGS = gen.build(SPEC).regs
E = ISA.ERRORS
DT = ISA.DTYPES
# Programs live here, above the data the tests place from address 0.
PROG_AT = 8 << 20


def start(dev: Device, pe: int, program: Sequence[object] | bytes, *, args: Sequence[int] = (),
          win: tuple[int, int] | None = None, prog_at: int = PROG_AT,
          prog_len: int | None = None) -> None:
    """Write `program` to DRAM, set PE `pe`'s registers and start it (no time passes)."""
    regs = dev.regs
    blob = program if isinstance(program, bytes) else ISA.encode_program(list(program))
    dev.write_dram(prog_at, blob)
    base, size = win if win is not None else (0, dev.spec.dram_bytes)

    def w(off: int, v: int) -> None:
        dev.write32(regs.pe_reg(pe, off), v)

    w(regs.PE_PROG_BASE_LO, prog_at & 0xFFFFFFFF)
    w(regs.PE_PROG_BASE_HI, prog_at >> 32)
    w(regs.PE_PROG_LEN, len(blob) // ISA.WORD_BYTES if prog_len is None else prog_len)
    w(regs.PE_WIN_BASE_LO, base & 0xFFFFFFFF)
    w(regs.PE_WIN_BASE_HI, base >> 32)
    w(regs.PE_WIN_SIZE_LO, size & 0xFFFFFFFF)
    w(regs.PE_WIN_SIZE_HI, size >> 32)
    for i, v in enumerate(args):
        w(regs.PE_ARG_LO + 8 * i, v & 0xFFFFFFFF)
        w(regs.PE_ARG_HI + 8 * i, v >> 32)
    w(regs.PE_CTRL, regs.PE_CTRL_START)


def pe_reg(dev: Device, pe: int, off: int) -> int:
    return dev.read32(dev.regs.pe_reg(pe, off))


def error_of(dev: Device, pe: int = 0) -> tuple[int, int]:
    return pe_reg(dev, pe, REGS.PE_ERROR_CODE), pe_reg(dev, pe, REGS.PE_ERROR_PC)


def run_ops(ops: Sequence[object], sram: dict[int, bytes] | None = None,
            dram: dict[int, bytes] | None = None, *, exact: bool = False, spec=SPEC,
            args: Sequence[int] = (), win: tuple[int, int] | None = None,
            end: bool = True) -> Device:
    """Run `ops` (+ END) on PE 0 of a fresh device with the given memory contents."""
    dev = Device(spec, exact=exact)
    for addr, data in (sram or {}).items():
        dev.write_sram(0, addr, data)
    for addr, data in (dram or {}).items():
        dev.write_dram(addr, data)
    start(dev, 0, list(ops) + ([ISA.End()] if end else []), args=args, win=win)
    dev.run_until_idle()
    return dev


def sram_array(dev: Device, addr: int, shape: tuple[int, int], stride: int,
               dtype: np.dtype, pe: int = 0) -> np.ndarray:
    """Read a strided [rows, cols] tile out of SRAM (reference-side, byte by byte)."""
    rows, cols = shape
    es = np.dtype(dtype).itemsize
    out = np.empty(shape, dtype=dtype)
    for r in range(rows):
        raw = dev.read_sram(pe, addr + r * stride, cols * es)
        out[r] = np.frombuffer(raw, dtype=dtype)
    return out


def place(tile: np.ndarray, stride: int) -> bytes:
    """Lay out a [rows, cols] tile with a row stride in bytes (gaps filled with 0x5a)."""
    rows, cols = tile.shape
    row_bytes = cols * tile.dtype.itemsize
    buf = bytearray(b"\x5a" * ((rows - 1) * stride + row_bytes))
    for r in range(rows):
        buf[r * stride : r * stride + row_bytes] = tile[r].tobytes()
    return bytes(buf)
