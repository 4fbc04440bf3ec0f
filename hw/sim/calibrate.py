"""Compare the model's cycle estimates with RTL cycles on a table of programs.

    python -m hw.sim.calibrate [--simulator icarus]

Runs GEMMs of several shapes, DMA-bound copies, vector chains and an overlapped two-PE
GEMM on the RTL (one launch) and through `hw.model.estimate`, and prints a markdown
table of RTL cycles, model cycles and the model's relative error, then
`max_error=...` on the last line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from hw.model import estimate
from hw.sim import programs
from hw.sim.diff import encode, program_base
from hw.spec import Spec, load

log = logging.getLogger(__name__)

SRC, DST = 0x100000, 0x200000


def table(spec: Spec) -> list[tuple[str, dict[int, list]]]:
    return [
        ("gemm 64x64x64, 1 PE", programs.gemm(spec, 64, 64, 64, pes=1)),
        ("gemm 128x64x256, 1 PE", programs.gemm(spec, 128, 64, 256, pes=1)),
        ("gemm 64x128x32, 1 PE", programs.gemm(spec, 64, 128, 32, pes=1)),
        ("gemm 128x128x128, 2 PEs", programs.gemm(spec, 128, 128, 128)),
        ("copy 16 KiB", programs.copy(spec, 16 << 10)),
        ("copy 64 KiB", programs.copy(spec, 64 << 10)),
        ("vector 16x64 int32 x8", programs.vector_chain(spec, 16, 64, 8)),
        ("vector 4x256 int32 x4", programs.vector_chain(spec, 4, 256, 4)),
    ]


def rtl_cycles(spec: Spec, rows, simulator: str | None) -> list[int]:
    from hw.sim.npu import run_cases

    cases = []
    for _, progs in rows:
        blobs = {pe: encode(spec, p) for pe, p in progs.items()}
        bases = program_base(spec, blobs)
        cases.append({
            "programs": blobs,
            "config": {pe: {"prog_base": bases[pe], "win_base": 0, "win_size": spec.dram_bytes,
                            "args": [SRC, DST, DST + 0x100000, 0, 0, 0, 0, 0]}
                       for pe in blobs},
            "timeout": 2_000_000,
        })
    results, _ = run_cases(spec, cases, simulator=simulator)
    for (name, _), r in zip(rows, results, strict=True):
        if r["timed_out"] or any(v["STATUS"] & 4 for v in r["regs"].values()):
            raise RuntimeError(f"{name}: the RTL run failed: {r['regs']}")
    return [r["cycles"] for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="small")
    ap.add_argument("--simulator", default=None, choices=("verilator", "icarus"))
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    spec = load(ns.spec)
    rows = table(spec)
    rtl = rtl_cycles(spec, rows, ns.simulator)
    print("| program | RTL cycles | model cycles | error |")
    print("| --- | ---: | ---: | ---: |")
    worst = 0.0
    for (name, progs), cycles in zip(rows, rtl, strict=True):
        model = estimate(spec, progs).cycles
        err = (model - cycles) / cycles
        worst = max(worst, abs(err))
        print(f"| {name} | {cycles} | {model} | {err:+.1%} |")
    print(f"max_error={worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
