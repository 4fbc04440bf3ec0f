"""The PE runtime: runs RUN jobs of several contexts on the free PEs, with a watchdog.

Each context has an ordered stream of RUN, RUN_PES and FENCE commands; its next job
starts once its previous one has finished and the PEs it needs are free (any one free PE
for a mask of 0). A job's PEs (one program on all of them, or one program each) are
started in one pass, with no device cycle between their CTRL.START writes on the model, so
BARRIERs across them meet. Contexts take turns round-robin, so one context's long queue
does not starve another. A job whose PEs run past its cycle budget is reset (CTRL.RESET)
and completes with the ISA's WATCHDOG error; other PEs go on.

Not modelled: preemption (a started job runs to completion, error or watchdog) and
priorities between contexts.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass, field

from firmware.bus import Bus
from firmware.commands import NO_PE, Completion, Status
from hw.generated import isa, regs

log = logging.getLogger(__name__)

NUM_ARG_REGS = 8


@dataclass
class Job:
    """One RUN (or FENCE, when `fence`) in a context's stream."""

    context: int
    tag: int
    window: tuple[int, int] = (0, 0)
    # (DRAM address, length in words): one shared by every PE, or one per PE of the mask
    programs: list[tuple[int, int]] = field(default_factory=list)
    pe_mask: int = 0
    args: list[list[int]] = field(default_factory=list)  # one row of 8 per PE, or one shared
    budget: int = 0
    fence: bool = False
    pes: tuple[int, ...] = ()
    started: int = 0
    done: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # pe -> code, pc, cyc


class PeRuntime:
    """Owns the PEs: starts jobs, reaps them, enforces cycle budgets."""

    def __init__(self, bus: Bus, num_pes: int, default_budget: int):
        self.bus = bus
        self.num_pes = num_pes
        self.default_budget = default_budget
        self.streams: dict[int, deque[Job]] = {}
        self.order: deque[int] = deque()  # contexts in round-robin order
        self.running: dict[int, Job] = {}  # pe -> job
        self.active: dict[int, Job] = {}  # context -> its started job
        self.now = 0  # device cycles the firmware has seen pass

    # queueing

    def add_context(self, ctx: int) -> None:
        self.streams[ctx] = deque()
        self.order.append(ctx)

    def enqueue(self, job: Job) -> None:
        self.streams[job.context].append(job)

    def queued(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def busy_mask(self) -> int:
        return sum(1 << pe for pe in self.running)

    def pending(self) -> bool:
        return bool(self.running) or any(self.streams.values())

    def drop_context(self, ctx: int) -> list[Completion]:
        """Cancel everything of `ctx`, resetting its PEs; returns the cancellations."""
        out = []
        job = self.active.pop(ctx, None)
        if job is not None:
            self._reset_pes(job.pes)
            out.append(self._cancelled(job))
        for job in self.streams.pop(ctx, ()):
            out.append(self._cancelled(job))
        if ctx in self.order:
            self.order.remove(ctx)
        return out

    def reset_pes(self, mask: int) -> list[Completion]:
        """CTRL.RESET the PEs in `mask`; jobs running there complete CANCELLED."""
        out = []
        for pe in range(self.num_pes):
            if not mask >> pe & 1:
                continue
            job = self.running.get(pe)
            if job is not None:
                self.active.pop(job.context, None)
                self._reset_pes(job.pes)
                out.append(self._cancelled(job))
            else:
                self._reset_pes((pe,))
        return out

    def owner(self, pe: int) -> int | None:
        job = self.running.get(pe)
        return None if job is None else job.context

    # one service pass

    def service(self) -> list[Completion]:
        """Reap finished PEs, apply the watchdog, start what can start."""
        out = self._reap()
        out += self._watchdog()
        out += self._dispatch()
        return out

    def cycles_to_deadline(self) -> int | None:
        """Cycles until the earliest running job exceeds its budget, or None if none runs."""
        if not self.active:
            return None
        return max(0, min(j.started + j.budget - self.now for j in self.active.values()) + 1)

    def _dispatch(self) -> list[Completion]:
        out = []
        for _ in range(len(self.order)):
            ctx = self.order[0]
            self.order.rotate(-1)
            stream = self.streams[ctx]
            while stream and ctx not in self.active:
                job = stream[0]
                if job.fence:
                    stream.popleft()
                    out.append(Completion(job.tag, ctx, Status.OK))
                    continue
                pes = self._pick(job.pe_mask)
                if pes is None:
                    break
                stream.popleft()
                self._start(job, pes)
        return out

    def _pick(self, mask: int) -> tuple[int, ...] | None:
        if mask == 0:
            free = [pe for pe in range(self.num_pes) if pe not in self.running]
            return (free[0],) if free else None
        pes = tuple(pe for pe in range(self.num_pes) if mask >> pe & 1)
        return None if any(pe in self.running for pe in pes) else pes

    def _start(self, job: Job, pes: tuple[int, ...]) -> None:
        job.pes, job.started = pes, self.now
        w = self.bus.write32
        for i, pe in enumerate(pes):
            base = regs.pe_reg(pe, 0)
            addr, length = job.programs[i] if len(job.programs) > 1 else job.programs[0]
            win_base, win_size = job.window
            w(base + regs.PE_PROG_BASE_LO, addr & 0xFFFFFFFF)
            w(base + regs.PE_PROG_BASE_HI, addr >> 32)
            w(base + regs.PE_PROG_LEN, length)
            w(base + regs.PE_WIN_BASE_LO, win_base & 0xFFFFFFFF)
            w(base + regs.PE_WIN_BASE_HI, win_base >> 32)
            w(base + regs.PE_WIN_SIZE_LO, win_size & 0xFFFFFFFF)
            w(base + regs.PE_WIN_SIZE_HI, win_size >> 32)
            row = job.args[i] if len(job.args) > 1 else job.args[0]
            for n, value in enumerate(row):
                w(base + regs.PE_ARG_LO + 8 * n, value & 0xFFFFFFFF)
                w(base + regs.PE_ARG_HI + 8 * n, value >> 32)
        for pe in pes:
            w(regs.pe_reg(pe, regs.PE_CTRL), regs.PE_CTRL_START)
            self.running[pe] = job
        self.active[job.context] = job
        log.debug("ctx %d tag %d started on PEs %s", job.context, job.tag, pes)

    def _reap(self) -> list[Completion]:
        out = []
        irq_done = 0
        for pe, job in list(self.running.items()):
            status = self.bus.read32(regs.pe_reg(pe, regs.PE_STATUS))
            if not status & regs.PE_STATUS_DONE:
                continue
            irq_done |= 1 << (regs.IRQ_STATUS_PE_DONE_SHIFT + pe)
            code = pc = 0
            if status & regs.PE_STATUS_ERROR:
                code = self.bus.read32(regs.pe_reg(pe, regs.PE_ERROR_CODE))
                pc = self.bus.read32(regs.pe_reg(pe, regs.PE_ERROR_PC))
            cycles = self.bus.read32(regs.pe_reg(pe, regs.PE_PERF_CYCLES))
            job.done[pe] = (code, pc, cycles)
            del self.running[pe]
            if code:
                # A failed PE can leave its partners waiting at a barrier: stop the job.
                others = [p for p in job.pes if p not in job.done]
                self._reset_pes(others)
                for p in others:
                    job.done[p] = (0, 0, 0)
            if len(job.done) == len(job.pes):
                out.append(self._finish(job))
        if irq_done:
            self.bus.write32(regs.IRQ_STATUS, irq_done | regs.IRQ_STATUS_ERROR)
        return out

    def _finish(self, job: Job) -> Completion:
        self.active.pop(job.context, None)
        cycles = max(c for _, _, c in job.done.values())
        for pe in job.pes:
            code, pc, _ = job.done[pe]
            if code:
                return Completion(job.tag, job.context, Status.PE_ERROR, pe, code, pc, cycles)
        return Completion(job.tag, job.context, Status.OK, NO_PE, 0, 0, cycles)

    def _watchdog(self) -> list[Completion]:
        out = []
        for job in list(self.active.values()):
            if self.now - job.started <= job.budget:
                continue
            pe = next(p for p in job.pes if p in self.running)
            pc = self.bus.read32(regs.pe_reg(pe, regs.PE_PC))
            log.warning(
                "watchdog: ctx %d tag %d over its budget of %d cycles on PE %d at pc %d",
                job.context, job.tag, job.budget, pe, pc,
            )
            self.active.pop(job.context)
            self._reset_pes(job.pes)
            out.append(
                Completion(
                    job.tag, job.context, Status.PE_ERROR, pe, isa.ERR_WATCHDOG, pc,
                    self.now - job.started,
                )
            )
        return out

    def _reset_pes(self, pes) -> None:
        for pe in pes:
            self.bus.write32(regs.pe_reg(pe, regs.PE_CTRL), regs.PE_CTRL_RESET)
            self.running.pop(pe, None)
            self.bus.write32(regs.IRQ_STATUS, 1 << (regs.IRQ_STATUS_PE_DONE_SHIFT + pe))

    def _cancelled(self, job: Job) -> Completion:
        return Completion(job.tag, job.context, Status.CANCELLED)


def read_arg_table(bus: Bus, addr: int, rows: int) -> list[list[int]]:
    """`rows` rows of 8 little-endian u64 at DRAM `addr`."""
    raw = bus.read_mem(addr, rows * NUM_ARG_REGS * 8)
    values = struct.unpack(f"<{rows * NUM_ARG_REGS}Q", raw)
    return [list(values[r * NUM_ARG_REGS : (r + 1) * NUM_ARG_REGS]) for r in range(rows)]
