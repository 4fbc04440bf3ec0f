"""Replay of a repeated run: the recorded effects in their recorded order, the recorded timing.

The cycle model's timing is a function of the instructions, the start cycle and the DRAM
channel's state; it reads no data. Only a fault (a DMA outside its window, a gather entry
out of range) depends on data, and until the first one the schedule is fixed. So when the
programs that ran before start again on the same PEs at one cycle, with the same ARG
registers and windows and no other PE running, the machine applies the effects the first
run applied, in the order it applied them, and stops each PE at its recorded cycle with its
recorded counters: one event per PE instead of several per instruction. An engine step of
an LLM, the same program on new inputs every time, is that case.

Exactness is kept where it can be observed:
- a replayed effect that faults hands the run back to the scheduler from its start, with the
  effects before the fault (already applied) skipped, so it stops where it would have;
- a start, stop or fault of any PE during a replayed run (another job, the watchdog, a
  reset) first re-simulates the run from its start up to that cycle, again skipping the
  applied effects, so that what follows contends for the DRAM channel as it would have.

Where a replay differs: all its effects are in DRAM and SRAM from its start cycle on, so a
run stopped midway (CTRL.STOP, the watchdog) has written more than the scheduled run would
have, and DRAM read while it runs shows its results early; the PC and perf counters keep
their start values until the PE stops. Recording needs no trace
(`Machine(trace=True)` never replays) and a run that ends with no error and no interruption.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Recordings kept, least recently used first out: an LLM engine uses one per step bucket.
_RECORDINGS = 64


@dataclass
class _Start:
    prog: tuple
    prog_len: int
    fetch_limit: int
    ctx: object


@dataclass
class _Recording:
    starts: dict  # PE -> _Start, which keeps the programs (whose ids the key holds) alive
    ops: list  # (PE, Op) in the order the first run executed them
    ends: dict  # PE -> (cycles from start to stop, pc, instrs, busy, dram_bytes, macs,
    #                mac_slots)
    channel_busy: int
    channel_free: int  # relative to the start cycle
    effects: list | None = None  # (PE, bound effect) per op, made on the first replay


class Replayer:
    """Groups PE starts into runs, records clean runs and replays repeated ones."""

    def __init__(self, machine):
        self.m = machine
        self.recordings: OrderedDict[tuple, _Recording] = OrderedDict()
        self.group: dict[int, _Start] | None = None  # started, not yet begun
        self.t0 = 0
        self.channel_free0 = 0
        self.pending = False
        self.recording: list | None = None  # executes of the run being recorded
        self.key: tuple | None = None
        self.active: _Recording | None = None  # the run being replayed
        self.done: set[int] = set()  # PEs of the group that have stopped
        self.silent: set[int] = set()  # PEs whose stop a re-simulation must not report
        self.channel_busy0 = 0
        self.replays = 0

    # grouping

    def on_start(self, p: int, prog, prog_len: int, fetch_limit: int, ctx, t: int) -> None:
        if self.active is not None or self.recording is not None:
            self.interrupt(t)
        if self.pending and self.t0 == t:
            self.group[p] = _Start(prog, prog_len, fetch_limit, ctx)
            return
        self._forget()
        if any(pe.running for pe in self.m.pes):
            return  # shares the DRAM channel with a run in flight: schedule it
        self.group = {p: _Start(prog, prog_len, fetch_limit, ctx)}
        self.t0, self.pending = t, True

    def _forget(self) -> None:
        self.group, self.pending, self.key = None, False, None
        self.recording, self.active = None, None
        self.done.clear()

    def _key(self) -> tuple:
        parts = tuple(
            (p, id(s.prog), s.prog_len, s.fetch_limit, tuple(s.ctx.args), s.ctx.win_lo,
             s.ctx.win_hi, id(s.ctx.sram))
            for p, s in sorted(self.group.items())
        )
        return parts, max(0, self.m.channel_free - self.t0)

    # the run's first event

    def begin(self) -> None:
        """Called before the first event of a grouped run: replay it or record it."""
        self.pending = False
        self.channel_free0 = self.m.channel_free
        self.channel_busy0 = self.m.channel_busy
        self.key = self._key()
        rec = self.recordings.get(self.key)
        if rec is None:
            self.recording = []
            return
        self.recordings.move_to_end(self.key)
        if rec.effects is None:
            # the key holds the ARG registers, windows and SRAMs the bound views depend on
            bind = self.m.bind
            ctxs = {p: s.ctx for p, s in self.group.items()}
            rec.effects = [(p, bind(ctxs[p], op)) for p, op in rec.ops]
        for i, (p, effect) in enumerate(rec.effects):
            err = effect()
            if err:
                self._hand_back(rec.ops[:i], p, err)
                return
        from hw.model.schedule import DISPATCH

        m = self.m
        for p in self.group:
            pe = m.pes[p]
            m._drop(pe)
            pe.replay = rec.ends[p]
            m._schedule(pe, DISPATCH, self.t0 + rec.ends[p][0])
        m.channel_free = max(m.channel_free, self.t0 + rec.channel_free)
        m.channel_busy += rec.channel_busy
        self.active = rec
        self.replays += 1

    def _hand_back(self, applied: list, p_fault: int, err: int) -> None:
        """A replayed effect faulted: let the scheduler run from the start, skipping effects."""
        log.debug("replay met error %d on PE %d; rescheduling the run", err, p_fault)
        for p, _ in applied:
            self.m.pes[p].skip += 1
        self.m.pes[p_fault].skip_err = err
        self.group = None
        self.key = None

    # the end of each PE's replayed run

    def end(self, pe, t: int) -> None:
        _, pc, instrs, busy, dram_bytes, macs, mac_slots = pe.replay
        pe.replay = None
        pe.pc, pe.instrs, pe.busy = pc, instrs, list(busy)
        pe.dram_bytes, pe.macs, pe.mac_slots = dram_bytes, macs, mac_slots
        self.m._finish(pe, t)

    def on_finish(self, pe, t: int) -> None:
        """A PE stopped: complete the recording or the replay once the whole group has."""
        if self.group is None or pe.index not in self.group or self.pending:
            return
        if pe.error and self.recording is not None:
            self.recording = None  # only clean runs are recorded
        self.done.add(pe.index)
        if len(self.done) < len(self.group):
            return
        if self.recording is not None:
            self._save(t)
        self._forget()

    def _save(self, t: int) -> None:
        m = self.m
        ends = {p: (m.pes[p].end_t - self.t0, m.pes[p].pc, m.pes[p].instrs, tuple(m.pes[p].busy),
                    m.pes[p].dram_bytes, m.pes[p].macs, m.pes[p].mac_slots)
                for p in self.group}
        rec = _Recording(dict(self.group), self.recording, ends,
                         m.channel_busy - self.channel_busy0, m.channel_free - self.t0)
        self.recordings[self.key] = rec
        if len(self.recordings) > _RECORDINGS:
            self.recordings.popitem(last=False)
        log.debug("recorded a run of %d effects on PEs %s", len(rec.ops), sorted(self.group))

    # interruptions

    def quiet(self, pe) -> bool:
        """True for a PE whose stop a re-simulation repeats: it was reported already."""
        return pe.index in self.silent

    def interrupt(self, t: int) -> None:
        """Another start, a stop or a fault at cycle `t` while a run is recorded or replayed."""
        if self.pending:
            self._forget()  # stopped before its first event: nothing to replay or record
            return
        if self.recording is not None:
            self.recording = None  # the timing is no longer the run's own
            self.group, self.key = None, None
            self.done.clear()
            return
        rec = self.active
        if rec is None:
            return
        self._forget()
        m = self.m
        self.silent = {p for p in rec.starts if not m.pes[p].running}
        m.channel_free = self.channel_free0
        m.channel_busy -= rec.channel_busy
        counts: dict[int, int] = {}
        for p, _ in rec.ops:
            counts[p] = counts.get(p, 0) + 1
        for p, s in rec.starts.items():
            m._start(p, s.prog, s.prog_len, s.fetch_limit, s.ctx, self.t0)
            m.pes[p].skip = counts.get(p, 0)
        try:
            m.run(t)
        finally:
            self.silent = set()
