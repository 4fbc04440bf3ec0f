"""The profiler: one Chrome/Perfetto trace of a compile and a run.

Tracks: a `compiler` process with one slice per compiler pass (wall time, in the order
the passes ran), a `host` process with the CPU steps of a bundle (graph breaks), and one
process per PE with its load, compute and store queues. The driver reports cycles but no
engine activity, so the PE tracks come from the functional model's cycle model scheduling
the very programs that ran (`hw.model.estimate(..., trace=True)`); device time starts
where compilation ends and successive NPU partitions follow each other. Open the file in
https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["build_trace", "write_trace", "COMPILER_PID", "HOST_PID"]

log = logging.getLogger(__name__)

COMPILER_PID = 1000
HOST_PID = 1001


def _meta(pid: int, name: str, tid: int = 0, thread: str | None = None) -> list[dict]:
    ev = [{"ph": "M", "name": "process_name", "pid": pid, "tid": tid, "args": {"name": name}}]
    if thread is not None:
        ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                   "args": {"name": thread}})
    return ev


def build_trace(timings: dict[str, float], parts: list[Any], spec: Any,
                host_steps: list[tuple] | None = None
                ) -> dict[str, Any]:
    """Trace JSON: compiler pass `timings` (seconds, in order), the NPU executables
    `parts` that ran (in order) and `host_steps` ((kind, name, start_s, duration_s, ...))."""
    import hw.model

    ev = _meta(COMPILER_PID, "compiler", 0, "passes")
    t = 0.0
    for name, sec in timings.items():
        dur = sec * 1e6
        ev.append({"ph": "X", "name": name, "cat": "compiler", "pid": COMPILER_PID, "tid": 0,
                   "ts": t, "dur": dur})
        t += dur
    start = t
    seen: set[tuple] = set()
    for exe in parts:
        tl = hw.model.estimate(spec, exe.programs, trace=True)
        end = start
        for e in tl.trace_events:
            e = dict(e)
            if e["ph"] == "M":
                key = (e["pid"], e["tid"], e["name"])
                if key in seen:
                    continue
                seen.add(key)
            else:
                e["ts"] = e["ts"] + start
                end = max(end, e["ts"] + e.get("dur", 0))
            ev.append(e)
        start = end
    if host_steps:
        ev += _meta(HOST_PID, "host", 0, "cpu fallback")
        t0 = min(s[2] for s in host_steps)
        for kind, name, begin, dur, *_ in host_steps:
            if kind == "cpu":
                ev.append({"ph": "X", "name": name, "cat": "cpu", "pid": HOST_PID, "tid": 0,
                           "ts": t + (begin - t0) * 1e6, "dur": dur * 1e6})
    return {"traceEvents": ev, "displayTimeUnit": "ns"}


def write_trace(path: str | Path, trace: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(trace))
    log.info("wrote trace %s (%d events)", path, len(trace["traceEvents"]))
    return path
