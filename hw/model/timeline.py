"""Run statistics of the cycle model and their Chrome/Perfetto trace.

`Timeline` summarises the latest run of each PE: cycles, busy cycles per engine, DRAM
bytes, MACs and MAC utilisation. `trace_json` turns the scheduler's slices into the
Chrome trace-event format: one process per PE, one thread per queue, an "X" slice per
instruction, and a DRAM process whose counter track gives the channel's bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hw.model.program import (
    ENGINE_LOAD,
    ENGINE_MAC,
    ENGINE_STORE,
    ENGINE_VECTOR,
    MATMUL,
    QUEUE_NAMES,
    VECTOR,
    Limits,
    Op,
)
from hw.spec import Spec


@dataclass(frozen=True)
class PEStats:
    """The latest run of one PE. Busy figures are cycles; `error` is an ERROR_CODE."""

    pe: int
    start: int
    end: int
    instrs: int
    load_busy: int
    mac_busy: int
    vector_busy: int
    store_busy: int
    dram_bytes: int
    macs: int
    mac_slots: int
    done: bool
    error: int
    error_pc: int

    @property
    def cycles(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    """Whole-run figures over the PEs that ran.

    `mac_utilization` is the MAC-array cell-cycles the MATMULs filled (m * n * ceil(k /
    rate)) over `cycles` times the array size times the number of PEs that ran.
    """

    spec: Spec
    pes: dict[int, PEStats]
    cycles: int
    dram_bytes: int
    dram_busy: int
    macs: int
    mac_utilization: float
    trace_events: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def seconds(self) -> float:
        return self.cycles / (self.spec.npu.clock_mhz * 1e6)

    @property
    def errors(self) -> dict[int, int]:
        return {p: s.error for p, s in self.pes.items() if s.error}

    def trace_json(self) -> dict[str, Any]:
        return {"traceEvents": list(self.trace_events), "displayTimeUnit": "ns"}


def build(lim: Limits, pes: list, channel_busy: int, slices: list, transfers: list,
          trace: bool) -> Timeline:
    """Summarise the PEs that have started (`pes` are `schedule.PEState`)."""
    spec = lim.spec
    stats = {}
    for pe in pes:
        if not pe.started:
            continue
        b = pe.busy
        stats[pe.index] = PEStats(
            pe.index, pe.start_t, pe.end_t, pe.instrs, b[ENGINE_LOAD], b[ENGINE_MAC],
            b[ENGINE_VECTOR], b[ENGINE_STORE], pe.dram_bytes, pe.macs, pe.mac_slots,
            pe.done, pe.error, pe.error_pc,
        )
    if stats:
        cycles = max(s.end for s in stats.values()) - min(s.start for s in stats.values())
    else:
        cycles = 0
    cells = spec.pe.mac.rows * spec.pe.mac.cols * max(1, len(stats))
    slots = sum(s.mac_slots for s in stats.values())
    util = slots / (cycles * cells) if cycles else 0.0
    events = trace_events(spec, slices, transfers, sorted(stats)) if trace else []
    return Timeline(
        spec, stats, cycles, sum(s.dram_bytes for s in stats.values()), channel_busy,
        sum(s.macs for s in stats.values()), util, events,
    )


def _args(lim: Limits, op: Op, pc: int) -> dict[str, Any]:
    ins = op.ins
    out: dict[str, Any] = {"pc": pc}
    if op.kind == MATMUL:
        out.update(m=ins.m, n=ins.n, k=ins.k, dtype=lim.dtype_names.get(ins.dtype, ins.dtype),
                   accumulate=ins.accumulate)
    elif op.kind == VECTOR:
        out.update(func=lim.func_names.get(ins.func, ins.func), rows=ins.rows, cols=ins.cols,
                   in_dtype=lim.dtype_names.get(ins.in_dtype, ins.in_dtype),
                   out_dtype=lim.dtype_names.get(ins.out_dtype, ins.out_dtype))
    elif ins is not None:
        out.update({k: v for k, v in ins._asdict().items() if k in _DMA_KEYS})
    if op.nbytes:
        out["bytes"] = op.nbytes
    return out


_DMA_KEYS = frozenset("base gather dram_offset sram_addr n0 n1 n2 sem queue".split())


def trace_events(spec: Spec, slices: list, transfers: list, pes: list[int]) -> list[dict]:
    """Chrome trace events; timestamps in microseconds of the spec's clock."""
    from hw.model.program import limits

    lim = limits(spec)
    us = 1.0 / spec.npu.clock_mhz
    ev: list[dict[str, Any]] = []
    dram_pid = spec.npu.num_pes
    for p in pes:
        ev.append({"ph": "M", "name": "process_name", "pid": p, "tid": 0,
                   "args": {"name": f"PE {p}"}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": p, "tid": 0,
                   "args": {"sort_index": p}})
        for q, qname in enumerate(QUEUE_NAMES):
            ev.append({"ph": "M", "name": "thread_name", "pid": p, "tid": q,
                       "args": {"name": qname}})
            ev.append({"ph": "M", "name": "thread_sort_index", "pid": p, "tid": q,
                       "args": {"sort_index": q}})
    ev.append({"ph": "M", "name": "process_name", "pid": dram_pid, "tid": 0,
               "args": {"name": "DRAM"}})
    # A queue runs one instruction at a time, so its slices never overlap; sorting by
    # start keeps ts ascending per track.
    for p, q, pc, op, start, finish in sorted(slices, key=lambda s: (s[0], s[1], s[4])):
        ev.append({"ph": "X", "name": op.name, "cat": QUEUE_NAMES[q], "pid": p, "tid": q,
                   "ts": start * us, "dur": (finish - start) * us, "args": _args(lim, op, pc)})
    gbps = spec.npu.clock_mhz * 1e6 / 1e9
    last = None
    for begin, end, nbytes in sorted(transfers):
        if last is not None and begin > last:
            ev.append({"ph": "C", "name": "DRAM bandwidth", "pid": dram_pid, "tid": 0,
                       "ts": last * us, "args": {"GB/s": 0.0}})
        rate = nbytes / max(1, end - begin) * gbps
        ev.append({"ph": "C", "name": "DRAM bandwidth", "pid": dram_pid, "tid": 0,
                   "ts": begin * us, "args": {"GB/s": round(rate, 3)}})
        last = end
    if last is not None:
        ev.append({"ph": "C", "name": "DRAM bandwidth", "pid": dram_pid, "tid": 0,
                   "ts": last * us, "args": {"GB/s": 0.0}})
    return ev
