"""The userspace driver: devices, contexts, device memory, programs and runs.

A `Device` learns what the hardware is from its capability registers (`Capabilities`),
never from a spec file. A `Context` owns one window of device DRAM, hands out `Buffer`s
from it, and submits commands that the firmware checks against that window: a context's
programs cannot touch another context's memory, and neither can its host copies.

Commands of one context run in submission order; contexts run side by side on free PEs.
A job runs one program on one PE or on every PE of a mask (`submit`), or a program of its
own on each of several PEs, started together (`submit_multi`, for multi-PE executables
whose PEs meet at BARRIERs).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driver.alloc import MemoryStats, RangeAllocator
from driver.errors import DeviceTimeout, error_for
from firmware import ARGS_PER_PE, PE_ENTRY_BYTES, Completion, Opcode, PeEntry, Query
from hw.generated import isa, regs

log = logging.getLogger(__name__)

__all__ = ["Buffer", "Capabilities", "Context", "Device", "Job", "Program"]

DEFAULT_TIMEOUT = 60.0
NUM_ARGS = 8
_DTYPE_NAMES = {code: name for name, code in isa.DTYPES.items()}


@dataclass(frozen=True)
class Capabilities:
    """What the device says it is, read from its CAP_* registers."""

    version: tuple[int, int]
    num_pes: int
    mac_rows: int
    mac_cols: int
    dtypes: tuple[str, ...]
    sram_bytes: int
    dram_bytes: int
    clock_mhz: int
    vector_lanes: int
    dram_bytes_per_cycle: int
    spec_hash32: int

    @classmethod
    def read(cls, read32) -> Capabilities:
        ident = read32(regs.ID)
        if ident != regs.GLOBAL["ID"].reset:
            raise ValueError(f"not an NPU: ID register reads 0x{ident:08x}")
        version = read32(regs.VERSION)
        mask = read32(regs.CAP_DTYPES)
        return cls(
            version=(version >> 16, version & 0xFFFF),
            num_pes=read32(regs.CAP_NUM_PES),
            mac_rows=read32(regs.CAP_MAC_ROWS),
            mac_cols=read32(regs.CAP_MAC_COLS),
            dtypes=tuple(n for c, n in sorted(_DTYPE_NAMES.items()) if mask >> c & 1),
            sram_bytes=read32(regs.CAP_SRAM_KIB) << 10,
            dram_bytes=read32(regs.CAP_DRAM_MIB) << 20,
            clock_mhz=read32(regs.CAP_CLOCK_MHZ),
            vector_lanes=read32(regs.CAP_VECTOR_LANES),
            dram_bytes_per_cycle=read32(regs.CAP_DRAM_BW),
            spec_hash32=read32(regs.CAP_SPEC_HASH),
        )


class Device:
    """An open device. Use `driver.open()` to get one; close it (or use `with`)."""

    def __init__(self, transport):
        self._t = transport
        self.index: int = transport.index
        self.spec_name: str = transport.spec_name
        self.path: Path | None = transport.path
        self.caps = Capabilities.read(transport.read32)
        self._contexts: list[Context] = []

    def read32(self, addr: int) -> int:
        """A BAR register (in daemon mode, from the daemon's mirror, refreshed every 50 ms)."""
        return self._t.read32(addr)

    def context(self, memory: int | None = None) -> Context:
        """A new context owning `memory` bytes of DRAM (default a quarter of the device's)."""
        size = memory if memory is not None else self.caps.dram_bytes // 4
        if size <= 0:
            raise ValueError(f"context memory must be positive, got {size}")
        ctx_id, base, size = self._t.create_context(size)
        ctx = Context(self, ctx_id, base, size)
        self._contexts.append(ctx)
        return ctx

    def reset(self) -> None:
        """Reset every PE and the rings; commands in flight fail with DeviceLost."""
        self._t.reset()

    def stats(self) -> dict[str, Any]:
        """Device figures as `npu smi` shows them."""
        return self._t.stats()

    def close(self) -> None:
        for ctx in list(self._contexts):
            ctx.close()
        self._t.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path or "in-process"
        return f"<npu{self.index} {self.spec_name} {self.caps.num_pes} PEs at {where}>"


class Buffer:
    """A range of a context's device memory; `int(buf)` is its DRAM address."""

    def __init__(self, ctx: Context, addr: int, size: int):
        self.ctx, self.addr, self.size = ctx, addr, size

    def __int__(self) -> int:
        return self.addr

    def __index__(self) -> int:
        return self.addr

    def write(self, data: bytes | bytearray | memoryview | np.ndarray, offset: int = 0) -> None:
        """Copy host data into the buffer at `offset` bytes."""
        raw = _bytes_of(data)
        if offset < 0 or offset + len(raw) > self.size:
            raise ValueError(
                f"{len(raw)} bytes at offset {offset} do not fit a buffer of {self.size} bytes"
            )
        self.ctx.write(self.addr + offset, raw)

    def read(self, n: int | None = None, offset: int = 0) -> bytes:
        """`n` bytes (default: to the end) from `offset`."""
        n = self.size - offset if n is None else n
        return self.ctx.read(self.addr + offset, n)

    def numpy(self, dtype: Any, shape: Sequence[int] | int, offset: int = 0) -> np.ndarray:
        """A host copy of the buffer's contents as an array."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        return np.frombuffer(self.read(count * dtype.itemsize, offset), dtype).reshape(shape)

    def free(self) -> None:
        self.ctx.free(self)

    def __repr__(self) -> str:
        return f"<Buffer 0x{self.addr:x} {self.size} B of context {self.ctx.id}>"


@dataclass(frozen=True)
class Program:
    """Instruction words in device memory, checked by the firmware's LOAD_PROGRAM."""

    buffer: Buffer
    length: int  # words

    @property
    def addr(self) -> int:
        return self.buffer.addr


class Job:
    """A submitted command; `wait()` returns its `Completion` or raises its error."""

    def __init__(self, future: Future, what: str, on_done=None):
        self.future, self.what = future, what
        if on_done is not None:
            future.add_done_callback(lambda _: on_done())

    def done(self) -> bool:
        return self.future.done()

    def wait(self, timeout: float | None = DEFAULT_TIMEOUT) -> Completion:
        try:
            cpl = self.future.result(timeout)
        except TimeoutError:
            raise DeviceTimeout(f"{self.what} did not complete in {timeout} s") from None
        err = error_for(cpl)
        if err is not None:
            raise err
        return cpl


class Context:
    """A device context: a DRAM window, its buffers and the commands that use them."""

    def __init__(self, device: Device, ctx_id: int, base: int, size: int):
        self.device, self.id, self.base, self.size = device, ctx_id, base, size
        self._t = device._t
        self._heap = RangeAllocator(base, size, where=f"context {ctx_id}")
        self._lock = threading.Lock()
        self._closed = False

    # memory

    def alloc(self, nbytes: int, align: int = 64) -> Buffer:
        """A buffer of `nbytes` in this context's window; raises OutOfDeviceMemory."""
        self._check_open()
        with self._lock:
            return Buffer(self, self._heap.alloc(nbytes, align), nbytes)

    def free(self, buf: Buffer) -> None:
        if buf.ctx is not self:
            raise ValueError(f"{buf!r} belongs to another context")
        with self._lock:
            self._heap.free(buf.addr)

    def upload(self, data: bytes | np.ndarray, align: int = 64) -> Buffer:
        """A new buffer holding `data`."""
        raw = _bytes_of(data)
        buf = self.alloc(max(1, len(raw)), align)
        buf.write(raw)
        return buf

    def memory_stats(self) -> MemoryStats:
        with self._lock:
            return self._heap.stats()

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Copy `data` to device address `addr`, which must be this context's memory."""
        self._check_access(addr, len(data))
        self._t.dram[addr : addr + len(data)] = data

    def read(self, addr: int, n: int) -> bytes:
        """`n` bytes at device address `addr`, which must be this context's memory."""
        self._check_access(addr, n)
        return bytes(self._t.dram[addr : addr + n])

    def _check_access(self, addr: int, n: int) -> None:
        self._check_open()
        with self._lock:
            ok = self._heap.owns(addr, n)
        if not ok:
            raise PermissionError(
                f"[0x{addr:x}, 0x{addr + n:x}) is not inside a buffer of context {self.id}"
            )

    # commands

    def load_program(self, program: Iterable[Any] | bytes) -> Program:
        """Copy a program (instructions or encoded bytes) to device memory and check it."""
        blob = program if isinstance(program, bytes) else isa.encode_program(list(program))
        if not blob or len(blob) % isa.WORD_BYTES:
            raise ValueError(
                f"a program is a non-empty whole number of {isa.WORD_BYTES}-byte words, "
                f"got {len(blob)} bytes"
            )
        buf = self.upload(blob, align=isa.WORD_BYTES)
        length = len(blob) // isa.WORD_BYTES
        try:
            self._submit(Opcode.LOAD_PROGRAM, (buf.addr, length), what="LOAD_PROGRAM").wait()
        except Exception:
            buf.free()
            raise
        return Program(buf, length)

    def submit(
        self,
        program: Program,
        args: Sequence[int | Buffer] = (),
        *,
        pe_mask: int = 0,
        budget: int = 0,
        per_pe_args: Sequence[Sequence[int | Buffer]] | None = None,
    ) -> Job:
        """Queue a RUN of `program`; returns at once.

        `args` fill ARG[0..7] (buffers give their address); `per_pe_args` gives one such
        list per PE of `pe_mask`, in increasing PE order, instead. `pe_mask` 0 runs on any
        one free PE. `budget` is the cycle budget (0: the firmware's default); a run past
        it fails with DeviceError WATCHDOG.
        """
        rows = [args] if per_pe_args is None else list(per_pe_args)
        if per_pe_args is not None and len(rows) != bin(pe_mask).count("1"):
            raise ValueError(
                f"per_pe_args has {len(rows)} rows for {bin(pe_mask).count('1')} PEs in the mask"
            )
        values = [v for row in rows for v in _arg_row(row)]
        table = self.upload(struct.pack(f"<{len(values)}Q", *values), align=64)
        flags = ARGS_PER_PE if per_pe_args is not None else 0
        args7 = (program.addr, program.length, pe_mask, table.addr, budget)
        return self._submit(Opcode.RUN, args7, flags, what="RUN", on_done=table.free)

    def submit_multi(
        self,
        parts: Mapping[int, tuple[Program, Sequence[int | Buffer]]],
        *,
        budget: int = 0,
    ) -> Job:
        """Queue one job running a program of its own on each PE: `{pe: (program, args)}`.

        The PEs start together (so BARRIERs across them meet) once all of them are free;
        `args` fill that PE's ARG[0..7]. The completion's `cycles` is the longest PE's.
        A PE error fails the whole job (its partners are reset) with that PE's DeviceError.
        """
        if not parts:
            raise ValueError("submit_multi needs at least one PE")
        entries, rows = [], []
        for pe, (program, args) in sorted(parts.items()):
            if not 0 <= pe < self.device.caps.num_pes:
                raise ValueError(f"PE must be in [0, {self.device.caps.num_pes - 1}], got {pe}")
            entries.append((pe, program))
            rows.append(_arg_row(args))
        table_bytes = len(entries) * PE_ENTRY_BYTES
        table = self.alloc(table_bytes + len(rows) * NUM_ARGS * 8, align=64)
        blob = bytearray()
        for i, (pe, program) in enumerate(entries):
            arg_table = table.addr + table_bytes + i * NUM_ARGS * 8
            blob += PeEntry(program.addr, program.length, pe, arg_table).pack()
        for row in rows:
            blob += struct.pack(f"<{NUM_ARGS}Q", *row)
        table.write(bytes(blob))
        try:
            return self._submit(Opcode.RUN_PES, (table.addr, len(entries), budget),
                                what="RUN_PES", on_done=table.free)
        except Exception:
            table.free()
            raise

    def run_multi(self, parts: Mapping[int, tuple[Program, Sequence[int | Buffer]]], *,
                  timeout: float | None = DEFAULT_TIMEOUT, budget: int = 0) -> Completion:
        """`submit_multi` and wait; returns the completion or raises."""
        return self.submit_multi(parts, budget=budget).wait(timeout)

    def run(self, program: Program, args: Sequence[int | Buffer] = (), *,
            timeout: float | None = DEFAULT_TIMEOUT, **kw: Any) -> Completion:
        """Run `program` and wait; returns the completion (cycles, ...) or raises."""
        return self.submit(program, args, **kw).wait(timeout)

    def fence(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Wait until every command submitted before it has completed."""
        self._submit(Opcode.FENCE, what="FENCE").wait(timeout)

    def reset_pes(self, mask: int) -> None:
        """Reset PEs of `mask` that are idle or run this context's jobs (those are cancelled)."""
        self._submit(Opcode.RESET_PE, (mask,), what="RESET_PE").wait()

    def query(self, what: Query) -> int:
        return self._submit(Opcode.QUERY, (int(what),), what="QUERY").wait().value

    def command(self, opcode: int, args: Sequence[int] = (), flags: int = 0) -> Job:
        """Submit a raw command record (`firmware.Opcode`, up to 7 arguments): for tools."""
        return self._submit(opcode, tuple(args), flags, what=f"command 0x{opcode:02x}")

    def _submit(self, opcode: int, args=(), flags: int = 0, *, what: str, on_done=None) -> Job:
        self._check_open()
        return Job(self._t.submit(self.id, opcode, args, flags), what, on_done)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"context {self.id} is closed")

    def close(self) -> None:
        """Destroy the context: its queued and running commands are cancelled."""
        if self._closed:
            return
        self._closed = True
        try:
            self._t.destroy_context(self.id)
        finally:
            if self in self.device._contexts:
                self.device._contexts.remove(self)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Context {self.id} window 0x{self.base:x} + {self.size}>"


def _arg_row(args: Sequence[int | Buffer]) -> list[int]:
    """ARG0..7 from up to 8 ints or buffers (their addresses), zero-padded."""
    if len(args) > NUM_ARGS:
        raise ValueError(f"at most {NUM_ARGS} arguments, got {len(args)}")
    return [int(a) for a in args] + [0] * (NUM_ARGS - len(args))


def _bytes_of(data: Any) -> bytes | memoryview:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1).data
    return data
