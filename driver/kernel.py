"""The kernel side of one device: what a kernel driver would do, in a thread of this process.

`KernelDevice` hosts a functional model (`hw.model.Device`) and its firmware
(`firmware.CommandProcessor`) and runs them in a service thread. It owns the command and
completion rings, hands out DRAM windows to contexts, tags each command, and resolves the
future of a command when its completion arrives. Every context has an owner (a client);
`drop_owner` destroys all of an owner's contexts, which is how a dead client's memory
comes back.

The service thread lets the device run in quanta of cycles sized to take a few
milliseconds of wall time each, so submissions and register reads wait at most about one
quantum for the device lock. The same kernel runs over any `firmware.Bus` (the RTL
simulation's, `firmware.rtl_bus.RtlBus`), optionally without a thread of its own: then the
thread that waits for a command serves the device (`KernelDevice.pump`).

Not modelled: DMA between host memory and device memory (host copies go straight into the
DRAM buffer, which the daemon shares with clients), and interrupt masking.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from driver.alloc import RangeAllocator
from driver.errors import CommandError, DeviceLost, error_for
from firmware import (
    COMMAND_BYTES,
    COMPLETION_BYTES,
    Bus,
    Command,
    CommandProcessor,
    Completion,
    ModelBus,
    Opcode,
    Status,
)
from hw import spec as hwspec
from hw.generated import regs

log = logging.getLogger(__name__)

__all__ = ["KernelDevice", "RESERVED_BYTES", "WINDOW_ALIGN"]

RESERVED_BYTES = 64 << 10  # DRAM the kernel keeps for the rings, below every window
WINDOW_ALIGN = 4096
MAX_CONTEXTS = 0xFFFF
_MIN_QUANTUM, _MAX_QUANTUM = 16, 1 << 22
_CREATE_TIMEOUT = 30.0
_MIRRORED = [r.offset for r in regs.GLOBAL.values() if r.access != "wo"]
_MIRRORED_PE = [
    r.offset + i * r.stride for r in regs.PE.values() if r.access != "wo" for i in range(r.count)
]


@dataclass
class ContextRecord:
    id: int
    owner: str
    base: int
    size: int
    commands: int = 0
    errors: int = 0


class _PumpedFuture(Future):
    """A command's future on a device without a service thread: waiting serves it."""

    def __init__(self, kernel: KernelDevice):
        super().__init__()
        self._kernel = kernel

    def result(self, timeout: float | None = None):
        self._kernel.pump(self.done, timeout)
        return super().result(0)  # TimeoutError at once if the pump ran out of time


class KernelDevice:
    """One emulated device: model, firmware, rings, windows, contexts and owners.

    `dram` is the buffer that backs device memory (an mmap shared with clients, or None for
    an anonymous mapping); `bar_mirror`, when given, is a 64 KiB buffer the service thread
    refreshes with the readable registers, for clients that map it.

    With `bus` given, the firmware drives that `firmware.Bus` instead of a functional
    model, and `dram` must be the memory behind it (e.g. `firmware.rtl_bus.RtlBus` and the
    cocotb bench's DRAM). With `threaded=False` no service thread runs: whoever waits for a
    command's future serves the device (`pump`) in its own thread, which is what a bus that
    may only be used from one thread (the cocotb bridge's) needs; `quantum` then fixes the
    cycles the device runs per service pass.
    """

    def __init__(
        self,
        spec: str | hwspec.Spec = hwspec.DEFAULT,
        *,
        index: int = 0,
        dram: mmap.mmap | bytearray | None = None,
        bar_mirror: memoryview | None = None,
        exact: bool = False,
        bus: Bus | None = None,
        threaded: bool = True,
        quantum: int | None = None,
    ):
        self.spec = spec if isinstance(spec, hwspec.Spec) else hwspec.load(spec)
        self.index = index
        size = self.spec.dram_bytes
        if bus is not None and dram is None:
            raise ValueError("a KernelDevice over a given bus needs the memory behind it (dram)")
        self._mmap = dram if dram is not None else mmap.mmap(-1, size)
        self.dram = memoryview(self._mmap)[:size]
        if bus is None:
            from hw.model import Device  # imported late: the model is the heaviest import

            self.model = Device(self.spec, exact=exact, dram=self.dram)
            bus = ModelBus(self.model)
        self.bus = bus
        self.threaded = threaded
        self._bar_mirror = bar_mirror
        self._cond = threading.Condition(threading.RLock())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.firmware = CommandProcessor(
            self.bus, default_budget=self.spec.command.watchdog_cycles
        )
        self.num_pes = self.bus.read32(regs.CAP_NUM_PES)
        self.dram_bytes = self.bus.read32(regs.CAP_DRAM_MIB) << 20
        self.windows = RangeAllocator(
            RESERVED_BYTES, self.dram_bytes - RESERVED_BYTES, where=f"npu{index} device"
        )
        self.contexts: dict[int, ContextRecord] = {}
        self._futures: dict[int, tuple[Future, int]] = {}  # tag -> (future, context)
        self._tags = itertools.count(1)
        self._fixed_quantum = quantum
        self._quantum = quantum or 256
        self.started = time.monotonic()
        self.busy_seconds = 0.0
        self.commands = 0
        self.errors = 0
        self._init_rings()
        self._mirror()
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._serve, name=f"npu{index}", daemon=True)
            self._thread.start()
        log.info("npu%d: %s, %d PEs, %d MiB DRAM", index, self.spec.name, self.num_pes,
                 self.dram_bytes >> 20)

    # rings

    def _init_rings(self) -> None:
        self._cmd_entries = int(self.spec.command.ring_entries)
        self._cpl_entries = 4 * self._cmd_entries
        self._cmd_base = 0
        self._cpl_base = self._cmd_entries * COMMAND_BYTES
        assert self._cpl_base + self._cpl_entries * COMPLETION_BYTES <= RESERVED_BYTES
        w = self.bus.write32
        w(regs.CMD_RING_BASE_LO, self._cmd_base)
        w(regs.CMD_RING_BASE_HI, 0)
        w(regs.CMD_RING_SIZE, self._cmd_entries)
        w(regs.CMD_RING_HEAD, 0)
        w(regs.CMD_RING_TAIL, 0)
        w(regs.CPL_RING_BASE_LO, self._cpl_base)
        w(regs.CPL_RING_BASE_HI, 0)
        w(regs.CPL_RING_SIZE, self._cpl_entries)
        w(regs.CPL_RING_HEAD, 0)
        w(regs.CPL_RING_TAIL, 0)
        self._cmd_tail = 0
        self._cpl_head = 0

    def submit(
        self, context: int, opcode: int, args=(), flags: int = 0, *, owner: str | None = None
    ) -> Future:
        """Queue one command; the future's result is its `Completion`.

        With `owner` given, the context must belong to that owner (PermissionError if not).
        Blocks while the command ring is full.
        """
        with self._cond:
            if owner is not None:
                rec = self.contexts.get(context)
                if rec is None or rec.owner != owner:
                    raise PermissionError(f"context {context} does not belong to this client")
            if self._stop.is_set():
                raise DeviceLost(f"npu{self.index} is shut down")
            while (self._cmd_tail + 1) % self._cmd_entries == self.bus.read32(regs.CMD_RING_HEAD):
                if self.threaded:
                    self._wake.set()
                    self._cond.wait(0.1)
                else:
                    self._resolve(self._service_once()[0])
            tag = next(self._tags) & 0xFFFFFFFF
            cmd = Command(opcode, context, tag, tuple(args), flags)
            self.bus.write_mem(self._cmd_base + self._cmd_tail * COMMAND_BYTES, cmd.pack())
            self._cmd_tail = (self._cmd_tail + 1) % self._cmd_entries
            future: Future = Future() if self.threaded else _PumpedFuture(self)
            self._futures[tag] = (future, context)
            if context in self.contexts:
                self.contexts[context].commands += 1
            self.bus.write32(regs.CMD_RING_TAIL, self._cmd_tail)
            self.bus.write32(regs.DOORBELL, 1)
        self._wake.set()
        return future

    def _reap(self, resolved: list) -> None:
        """Read new completions; their futures go to `resolved`, to be set unlocked."""
        if not self.bus.read32(regs.IRQ_STATUS) & regs.IRQ_STATUS_CPL:
            return
        self.bus.write32(regs.IRQ_STATUS, regs.IRQ_STATUS_CPL)
        tail = self.bus.read32(regs.CPL_RING_TAIL)
        done = []
        while self._cpl_head != tail:
            raw = self.bus.read_mem(self._cpl_base + self._cpl_head * COMPLETION_BYTES,
                                    COMPLETION_BYTES)
            self._cpl_head = (self._cpl_head + 1) % self._cpl_entries
            done.append(Completion.unpack(raw))
        self.bus.write32(regs.CPL_RING_HEAD, self._cpl_head)
        for cpl in done:
            self.commands += 1
            entry = self._futures.pop(cpl.tag, None)
            if cpl.status != Status.OK:
                self.errors += 1
                rec = self.contexts.get(cpl.context)
                if rec is not None:
                    rec.errors += 1
            if entry is None:
                log.warning("npu%d: completion for unknown tag %d", self.index, cpl.tag)
                continue
            resolved.append((entry[0], cpl))

    # the service thread

    def _serve(self) -> None:
        from hw.model import host

        host.serve_here()  # the model's kernels here take one host thread (hw/model/host.py)
        last_mirror = 0.0
        while not self._stop.is_set():
            with self._cond:
                resolved, work, running, moved = self._service_once()
                now = time.monotonic()
                if self._bar_mirror is not None and (not work or now - last_mirror > 0.05):
                    self._mirror()
                    last_mirror = now
            self._resolve(resolved)
            if running and moved == 0:
                time.sleep(0.001)  # PEs report done on the next poll
            if not work:
                self._wake.wait(0.05)
                self._wake.clear()

    def _service_once(self) -> tuple[list[tuple[Future, Completion]], bool, bool, int]:
        """One pass of firmware and device: (futures to resolve, work left, running, cycles)."""
        resolved: list[tuple[Future, Completion]] = []
        moved = 0
        with self._cond:
            work = self.firmware.poll()
            self._reap(resolved)
            running = bool(self.firmware.runtime.running)
            if running:
                t0 = time.perf_counter()
                moved = self.firmware.run(self._quantum)
                dt = time.perf_counter() - t0
                self.busy_seconds += dt
                self._tune(dt)
                work = self.firmware.poll()
                self._reap(resolved)
            self._cond.notify_all()
        return resolved, work, running, moved

    @staticmethod
    def _resolve(resolved: list[tuple[Future, Completion]]) -> None:
        for fut, cpl in resolved:
            if not fut.done():
                fut.set_result(cpl)

    def pump(self, until, timeout: float | None = None) -> None:
        """Serve the device in this thread until `until()` is true or `timeout` s pass.

        For a device built with `threaded=False`; a threaded one serves itself, so this
        only waits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not until():
            if deadline is not None and time.monotonic() > deadline:
                return
            if self.threaded:
                time.sleep(0.001)
                continue
            self._resolve(self._service_once()[0])

    def _tune(self, seconds: float) -> None:
        if self._fixed_quantum:
            return
        if seconds < 0.002:
            self._quantum = min(self._quantum * 2, _MAX_QUANTUM)
        elif seconds > 0.02:
            self._quantum = max(self._quantum // 2, _MIN_QUANTUM)

    def _mirror(self) -> None:
        bar = self._bar_mirror
        if bar is None:
            return
        for off in _MIRRORED:
            bar[off : off + 4] = self.bus.read32(off).to_bytes(4, "little")
        for pe in range(self.num_pes):
            for off in _MIRRORED_PE:
                addr = regs.pe_reg(pe, off)
                bar[addr : addr + 4] = self.bus.read32(addr).to_bytes(4, "little")

    # registers and memory for the host

    def read32(self, addr: int) -> int:
        with self._cond:
            return self.bus.read32(addr)

    # contexts

    def create_context(self, owner: str, size: int) -> ContextRecord:
        """A new context owning a fresh, zeroed window of `size` bytes (rounded up)."""
        size = -(-size // WINDOW_ALIGN) * WINDOW_ALIGN
        with self._cond:
            ids = set(self.contexts)
            ctx = next((i for i in range(1, MAX_CONTEXTS + 1) if i not in ids), None)
            if ctx is None:
                raise CommandError(Status.BAD_CONTEXT, f"all {MAX_CONTEXTS} contexts are in use")
            base = self.windows.alloc(size, WINDOW_ALIGN)
            self._scrub(base, size)
            rec = ContextRecord(ctx, owner, base, size)
            self.contexts[ctx] = rec
        cpl = self.submit(ctx, Opcode.CREATE_CONTEXT, (base, size)).result(_CREATE_TIMEOUT)
        if cpl.status != Status.OK:
            with self._cond:
                del self.contexts[ctx]
                self.windows.free(base)
            raise error_for(cpl)
        log.info("npu%d: context %d for %s: window 0x%x + %d", self.index, ctx, owner, base, size)
        return rec

    def destroy_context(self, ctx: int, *, owner: str | None = None, timeout: float = 30.0):
        with self._cond:
            rec = self.contexts.get(ctx)
            if rec is None or (owner is not None and rec.owner != owner):
                raise PermissionError(f"context {ctx} does not belong to this client")
        self.submit(ctx, Opcode.DESTROY_CONTEXT).result(timeout)
        with self._cond:
            self.contexts.pop(ctx, None)
            self.windows.free(rec.base)
            self._scrub(rec.base, rec.size)
            # Commands of the context that never completed (cancelled ones did) fail now.
            for tag, (fut, c) in list(self._futures.items()):
                if c == ctx:
                    del self._futures[tag]
                    fut.set_exception(DeviceLost(f"context {ctx} was destroyed"))
        log.info("npu%d: context %d destroyed", self.index, ctx)

    def drop_owner(self, owner: str) -> int:
        """Destroy every context of `owner` (a client that went away); returns how many."""
        with self._cond:
            mine = [c for c, r in self.contexts.items() if r.owner == owner]
        for ctx in mine:
            try:
                self.destroy_context(ctx)
            except Exception:
                log.exception("npu%d: destroying context %d of %s", self.index, ctx, owner)
        if mine:
            log.info("npu%d: reclaimed %d context(s) of %s", self.index, len(mine), owner)
        return len(mine)

    def _scrub(self, base: int, size: int) -> None:
        """Zero a window so that a new owner never sees an old owner's data."""
        try:
            self._mmap.madvise(mmap.MADV_REMOVE, base, size)
        except (AttributeError, OSError, ValueError):
            self.dram[base : base + size] = bytes(size)

    # whole device

    def reset(self) -> None:
        """Reset PEs and rings; commands in flight fail with DeviceLost; contexts survive."""
        with self._cond:
            self.bus.write32(regs.RESET, 1)
            self.bus.write32(regs.IRQ_STATUS, 0xFFFFFFFF)
            self.firmware.reset()
            self._init_rings()
            for fut, _ in self._futures.values():
                fut.set_exception(DeviceLost(f"npu{self.index} was reset"))
            self._futures.clear()
            for rec in self.contexts.values():
                self.submit(rec.id, Opcode.CREATE_CONTEXT, (rec.base, rec.size))
        log.warning("npu%d: device reset", self.index)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            mem = self.windows.stats()
            return {
                "index": self.index,
                "spec": self.spec.name,
                "num_pes": self.num_pes,
                "dram_total": self.dram_bytes,
                "dram_used": mem.used + RESERVED_BYTES,
                "uptime_s": time.monotonic() - self.started,
                "busy_s": self.busy_seconds,
                "busy_pes": self.firmware.runtime.busy_mask(),
                "queued_jobs": self.firmware.runtime.queued(),
                "contexts": [
                    {"id": r.id, "owner": r.owner, "base": r.base, "size": r.size,
                     "commands": r.commands, "errors": r.errors}
                    for r in self.contexts.values()
                ],
                "commands": self.commands,
                "errors": self.errors,
                "cycles": self.firmware.runtime.now,
            }

    def close(self) -> None:
        """Stop the service thread; commands in flight fail with DeviceLost."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._cond:
            for fut, _ in self._futures.values():
                if not fut.done():
                    fut.set_exception(DeviceLost(f"npu{self.index} was shut down"))
            self._futures.clear()
