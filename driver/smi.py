"""What `npu smi` shows: one row per device served by `npu daemon`.

Busy % is the share of wall time the device spent running PEs: since the daemon started,
or, with `--watch`, since the previous refresh.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from driver.errors import NpuError
from driver.transport import SocketTransport

log = logging.getLogger(__name__)

__all__ = ["collect", "format_table", "to_json"]


def collect(files: list[Path], previous: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    """A row per device file; `previous` (rows of an earlier call) makes busy % a delta."""
    rows = []
    for path in files:
        try:
            t = SocketTransport(path, timeout=10.0)
        except NpuError as e:
            rows.append({"device": path.name, "path": str(path), "error": str(e)})
            continue
        try:
            s = t.stats()
        finally:
            t.close()
        prev = (previous or {}).get(path.name)
        if prev and "uptime_s" in prev:
            span = s["uptime_s"] - prev["uptime_s"]
            busy = s["busy_s"] - prev["busy_s"]
        else:
            span, busy = s["uptime_s"], s["busy_s"]
        rows.append({
            "device": path.name,
            "path": str(path),
            "spec": s["spec"],
            "num_pes": s["num_pes"],
            "memory_used": s["dram_used"],
            "memory_total": s["dram_total"],
            "busy_percent": round(100.0 * busy / span, 1) if span > 0 else 0.0,
            "busy_pes": s["busy_pes"],
            "queued_jobs": s["queued_jobs"],
            "contexts": len(s["contexts"]),
            "context_list": s["contexts"],
            "commands": s["commands"],
            "errors": s["errors"],
            "uptime_s": s["uptime_s"],
            "busy_s": s["busy_s"],
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no NPU devices (start one with `npu daemon`)"
    head = f"{'DEV':<6}{'SPEC':<12}{'PES':>4}{'MEMORY MiB':>18}{'BUSY':>8}{'CTX':>5}" \
           f"{'CMDS':>8}{'ERRORS':>8}"
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['device']:<6}unreachable: {r['error']}")
            continue
        mem = f"{r['memory_used'] / 2**20:.1f}/{r['memory_total'] / 2**20:.0f}"
        lines.append(
            f"{r['device']:<6}{r['spec']:<12}{r['num_pes']:>4}{mem:>18}"
            f"{r['busy_percent']:>7.1f}%{r['contexts']:>5}{r['commands']:>8}{r['errors']:>8}"
        )
    return "\n".join(lines)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"devices": rows}, indent=2)
