"""The event-driven cycle model: dispatcher, queues, semaphores, barriers, DRAM channel.

Each PE has four actors: three in-order queues (load, compute, store; `pe.queues.depth`
entries each, counting the one executing) and a dispatcher that issues one instruction
per cycle in program order. Every actor has at most one pending event in a global heap
keyed by (cycle, PE, actor), so events run in time order with ties broken by PE and then
by queue order load, compute, store, dispatcher. An instruction's data effect applies
when it starts; its finish time is known then (from `hw.model.costs`, and for a DMA from
the shared DRAM channel, which all PEs' transfers serialize on), so the schedule is
decided in one pass.

Errors are hardware states: a unit fault stops the PE at the faulting instruction's start;
a dispatcher fault (illegal opcode, bad SEM/BARRIER field, PC overrun, program fetch out
of the window) waits for the queues to drain first, as END does. A PE with no pending
event that is not waiting at a barrier can never move again and gets DEADLOCK.

A run that repeats one already seen (same programs, PEs, ARG registers and windows, no
other PE running) is replayed rather than rescheduled, see `hw.model.replay`.

Not modelled: instruction fetch bandwidth (the program is fetched at START), contention
for the SRAM port between queues, and DMA transfers of one queue pipelining.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from functools import partial

from hw.model import costs
from hw.model.execute import Context
from hw.model.program import (
    BARRIER,
    END,
    ENGINE_MAC,
    ENGINE_NONE,
    LOAD,
    SEM_SIGNAL,
    SEM_WAIT,
    STORE,
    Limits,
    Op,
)
from hw.model.replay import Replayer

log = logging.getLogger(__name__)

DISPATCH = 3  # actor index of the dispatcher (queues are 0..2)
ACTORS = 4


class PEState:
    """The architectural and bookkeeping state of one PE."""

    def __init__(self, index: int, num_sems: int):
        self.index = index
        self.num_sems = num_sems
        self.prog: tuple[Op, ...] = ()
        self.prog_len = 0
        self.fetch_limit = 0
        self.ctx: Context | None = None
        self.running = False
        self.started = False
        self.done = False
        self.error = 0
        self.error_pc = 0
        self.at_barrier = False
        self.barrier_mask = 0
        self.replay = None  # the recorded figures a replayed run ends with
        self.skip = 0  # executes whose effects a replay already applied
        self.skip_err = 0  # the error the recorded run met after those, if any
        self.clear()

    def clear(self) -> None:
        """START/RESET: clear status, error, PC, semaphores, queues and counters."""
        self.done = False
        self.error = 0
        self.error_pc = 0
        self.at_barrier = False
        self.pc = 0
        self.sems = [0] * self.num_sems
        self.waiters: dict[int, list[int]] = {}
        self.pending: list[deque] = [deque(), deque(), deque()]
        self.q_free = [0, 0, 0]
        self.blocked_sem: list[int | None] = [None, None, None]
        self.disp_t = 0
        self.fault = 0
        self.fault_pc = 0
        self.nlive = 0
        self.start_t = 0
        self.end_t = 0
        self.instrs = 0
        self.busy = [0, 0, 0, 0, 0]  # per engine: load, mac, vector, store, none
        self.dram_bytes = 0
        self.macs = 0
        self.mac_slots = 0
        self.replay = None
        self.skip = 0
        self.skip_err = 0


class Machine:
    """All PEs of one NPU on a common cycle axis.

    `execute(ctx, op) -> error code` applies an op's effect (None: performance only, where
    only the static checks fault); `bind(ctx, op)` returns that effect as a call, for
    replayed runs. `on_stop(pe, cycle)` is called when a PE stops by END or an error, for
    the interrupt logic of the device.
    """

    def __init__(self, lim: Limits, execute: Callable[[Context, Op], int] | None = None,
                 on_stop: Callable[[PEState, int], None] | None = None, trace: bool = False,
                 bind: Callable[[Context, Op], Callable[[], int]] | None = None):
        self.lim = lim
        self.spec = lim.spec
        self.depth = self.spec.pe.queues.depth
        self.dispatch_cycles = lim.costs.dispatch
        self.execute = execute
        self.bind = bind or (lambda ctx, op: partial(execute, ctx, op))
        self.on_stop = on_stop
        self.pes = [PEState(i, lim.num_sems) for i in range(lim.num_pes)]
        self.heap: list[tuple[int, int, int, int]] = []
        self.version = [0] * (ACTORS * lim.num_pes)
        self.live = [False] * (ACTORS * lim.num_pes)
        self.channel_free = 0
        self.channel_busy = 0
        self.now = 0  # cycle of the latest event processed
        self.trace = trace
        # (pe, queue, pc, op, start, finish) and (begin, end, bytes) when tracing
        self.slices: list[tuple[int, int, int, Op, int, int]] = []
        self.transfers: list[tuple[int, int, int]] = []
        e = lim.errors
        self.E_DEADLOCK = e["DEADLOCK"]
        self.E_PC_OVERRUN = e["PC_OVERRUN"]
        self.E_DRAM = e["DRAM_RANGE"]
        self.E_BAD_FIELD = e["BAD_FIELD"]
        self.replayer = Replayer(self) if execute is not None and not trace else None

    # control

    def start(self, p: int, prog: tuple[Op, ...], prog_len: int, fetch_limit: int,
              ctx: Context | None, t: int) -> None:
        """Start PE `p` at cycle `t` on `prog` (`fetch_limit` words lie inside its window)."""
        if self.replayer is not None:
            self.replayer.on_start(p, prog, prog_len, fetch_limit, ctx, t)
        self._start(p, prog, prog_len, fetch_limit, ctx, t)

    def _start(self, p: int, prog: tuple[Op, ...], prog_len: int, fetch_limit: int,
               ctx: Context | None, t: int) -> None:
        pe = self.pes[p]
        self._drop(pe)
        pe.clear()
        pe.prog, pe.prog_len, pe.fetch_limit, pe.ctx = prog, prog_len, fetch_limit, ctx
        pe.running = pe.started = True
        pe.start_t = pe.end_t = pe.disp_t = t
        self._schedule(pe, DISPATCH, t)

    def stop(self, p: int, t: int, clear: bool) -> None:
        """CTRL.STOP (keep status) or CTRL.RESET (`clear`): stop at once, drop the queues."""
        if self.replayer is not None:
            self.replayer.interrupt(t)
        pe = self.pes[p]
        was_running = pe.running
        self._drop(pe)
        pe.running = False
        pe.at_barrier = False
        if was_running:
            pe.end_t = t
        if clear:
            pe.clear()
            pe.started = False
        if was_running:
            self._stranded_barriers(t)

    def fault(self, p: int, code: int, t: int) -> None:
        """Stop running PE `p` with error `code` at cycle `t` (the firmware's watchdog)."""
        if self.replayer is not None:
            self.replayer.interrupt(t)
        pe = self.pes[p]
        if pe.running:
            self._fault(pe, code, pe.pc, t)

    def busy(self) -> bool:
        return any(pe.running for pe in self.pes)

    def settle(self, t: int) -> None:
        """With no event left, a PE still running can never move: fault it at `t`."""
        if not self.heap:
            for pe in self.pes:
                if pe.running:
                    self._stuck(pe, t)

    def next_event(self) -> int | None:
        return self.heap[0][0] if self.heap else None

    def run(self, limit: int) -> int:
        """Process every event before cycle `limit`; returns the last event's cycle."""
        if self.replayer is not None and self.replayer.pending:
            self.replayer.begin()
        heap = self.heap
        version, live, pes = self.version, self.live, self.pes
        last = -1
        while heap and heap[0][0] < limit:
            t, p, a, v = heapq.heappop(heap)
            actor = p * ACTORS + a
            if v != version[actor]:
                continue
            live[actor] = False
            pe = pes[p]
            pe.nlive -= 1
            last = self.now = t
            if a == DISPATCH:
                self._dispatch(pe, t)
            else:
                self._issue(pe, a, t)
            if pe.running and pe.nlive == 0 and not pe.at_barrier:
                self._stuck(pe, t)
        return last

    # events

    def _schedule(self, pe: PEState, a: int, t: int) -> None:
        actor = pe.index * ACTORS + a
        self.version[actor] += 1
        if not self.live[actor]:
            self.live[actor] = True
            pe.nlive += 1
        heapq.heappush(self.heap, (t, pe.index, a, self.version[actor]))

    def _drop(self, pe: PEState) -> None:
        base = pe.index * ACTORS
        for a in range(ACTORS):
            self.version[base + a] += 1
            self.live[base + a] = False
        pe.nlive = 0

    def _dispatch(self, pe: PEState, t: int) -> None:
        if pe.replay is not None:
            self.replayer.end(pe, t)
            return
        if pe.fault:
            self._drain_then(pe, t, None)
            return
        pc = pe.pc
        if pc >= pe.prog_len:
            pe.fault, pe.fault_pc = self.E_PC_OVERRUN, pc
        elif pc >= pe.fetch_limit:
            pe.fault, pe.fault_pc = self.E_DRAM, pc
        else:
            op = pe.prog[pc]
            if op.disp_err:
                pe.fault, pe.fault_pc = op.disp_err, pc
            elif op.queue < 0:
                self._drain_then(pe, t, op)
                return
            else:
                self._enqueue(pe, op, pc, t)
                return
        self._drain_then(pe, t, None)

    def _enqueue(self, pe: PEState, op: Op, pc: int, t: int) -> None:
        q = op.queue
        pend = pe.pending[q]
        running = 1 if pe.q_free[q] > t else 0
        if len(pend) + running >= self.depth:
            if len(pend) < self.depth:
                self._schedule(pe, DISPATCH, pe.q_free[q])
            # else: woken when this queue's head starts
            return
        pend.append((op, pc, t))
        pe.pc = pc + 1
        pe.instrs += 1
        qa = pe.index * ACTORS + q
        if len(pend) == 1 and not self.live[qa] and pe.blocked_sem[q] is None:
            self._schedule(pe, q, max(t + costs.ISSUE_CYCLES, pe.q_free[q]))
        pe.disp_t = t + self.dispatch_cycles
        self._schedule(pe, DISPATCH, pe.disp_t)

    def _drain_then(self, pe: PEState, t: int, op: Op | None) -> None:
        """END, BARRIER and dispatcher faults wait until every queue is empty."""
        if pe.pending[0] or pe.pending[1] or pe.pending[2]:
            return  # woken when a queue head starts
        drained = max(pe.q_free)
        if drained > t:
            self._schedule(pe, DISPATCH, drained)
            return
        if op is None:
            self._fault(pe, pe.fault, pe.fault_pc, t)
        elif op.kind == END:
            pe.instrs += 1
            self._finish(pe, t)
        elif op.kind == BARRIER:
            self._arrive(pe, op, t)

    def _issue(self, pe: PEState, q: int, t: int) -> None:
        pend = pe.pending[q]
        op, pc, _ = pend[0]
        kind = op.kind
        if kind == SEM_WAIT:
            s = op.ins.sem
            if pe.sems[s] <= 0:
                pe.blocked_sem[q] = s
                pe.waiters.setdefault(s, []).append(q)
                return
            pe.blocked_sem[q] = None
            pe.sems[s] -= 1
            finish = t + op.cycles
        elif kind == SEM_SIGNAL:
            s = op.ins.sem
            pe.sems[s] += 1
            for wq in pe.waiters.pop(s, ()):
                pe.blocked_sem[wq] = None
                self._schedule(pe, wq, t)
            finish = t + op.cycles
        else:
            if pe.skip:
                pe.skip -= 1
                err = 0
            elif pe.skip_err:
                err, pe.skip_err = pe.skip_err, 0
            elif self.execute is not None:
                err = self.execute(pe.ctx, op)
                if self.replayer is not None and self.replayer.recording is not None:
                    self.replayer.recording.append((pe.index, op))
            else:
                err = op.err or (op.sram_err and not op.empty and self.lim.errors["SRAM_RANGE"])
            if err:
                self._fault(pe, err, pc, t)
                return
            if (kind == LOAD or kind == STORE) and op.nbytes:
                begin = max(t + op.overhead, self.channel_free)
                finish = begin + op.cycles
                self.channel_free = begin + op.channel
                self.channel_busy += op.channel
                pe.dram_bytes += op.nbytes
                if self.trace:
                    self.transfers.append((begin, finish, op.nbytes))
            else:
                finish = t + op.cycles
            if op.engine != ENGINE_NONE:
                pe.busy[op.engine] += finish - t
                if op.engine == ENGINE_MAC:
                    pe.macs += op.macs
                    pe.mac_slots += op.mac_slots
        pend.popleft()
        pe.q_free[q] = finish
        if self.trace:
            self.slices.append((pe.index, q, pc, op, t, finish))
        if pend:
            self._schedule(pe, q, max(pend[0][2] + costs.ISSUE_CYCLES, finish))
        if not self.live[pe.index * ACTORS + DISPATCH] and not pe.at_barrier:
            self._schedule(pe, DISPATCH, max(t, pe.disp_t))

    # stopping

    def _finish(self, pe: PEState, t: int) -> None:
        self._drop(pe)
        pe.running = False
        pe.done = True
        pe.end_t = t
        if self.on_stop and not (self.replayer and self.replayer.quiet(pe)):
            self.on_stop(pe, t)
        if self.replayer is not None:
            self.replayer.on_finish(pe, t)
        self._stranded_barriers(t)

    def _fault(self, pe: PEState, code: int, pc: int, t: int) -> None:
        log.debug("PE %d fault %d at pc %d, cycle %d", pe.index, code, pc, t)
        for q in range(3):
            pe.pending[q].clear()
        pe.error = code
        pe.error_pc = pc
        pe.at_barrier = False
        self._finish(pe, t)

    def _stuck(self, pe: PEState, t: int) -> None:
        """No event can ever wake this PE: its pending dispatcher fault, or DEADLOCK."""
        if pe.fault:
            self._fault(pe, pe.fault, pe.fault_pc, t)
            return
        heads = [pe.pending[q][0][1] for q in range(3) if pe.blocked_sem[q] is not None]
        self._fault(pe, self.E_DEADLOCK, min(heads) if heads else pe.pc, t)

    # barriers

    def _arrive(self, pe: PEState, op: Op, t: int) -> None:
        mask = op.ins.pe_mask
        if not mask >> pe.index & 1:
            self._fault(pe, self.E_BAD_FIELD, pe.pc, t)
            return
        pe.at_barrier = True
        pe.barrier_mask = mask
        if any(mask >> i & 1 and not other.running for i, other in enumerate(self.pes)):
            self._fault(pe, self.E_DEADLOCK, pe.pc, t)
            return
        waiting = {p.index for p in self.pes if p.at_barrier}
        ready = [
            p for p in self.pes
            if p.at_barrier and all(not p.barrier_mask >> i & 1 or i in waiting
                                    for i in range(len(self.pes)))
        ]
        for p in ready:
            p.at_barrier = False
            p.pc += 1
            p.instrs += 1
            p.disp_t = t + costs.BARRIER_CYCLES
            self._schedule(p, DISPATCH, p.disp_t)

    def _stranded_barriers(self, t: int) -> None:
        """A PE waiting at a barrier for a PE that stopped can never be released."""
        for p in self.pes:
            if p.at_barrier and any(
                p.barrier_mask >> i & 1 and not o.running for i, o in enumerate(self.pes)
            ):
                self._fault(p, self.E_DEADLOCK, p.pc, t)
