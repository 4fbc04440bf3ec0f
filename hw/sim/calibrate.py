"""Compare the model's cycle estimates with RTL cycles on a table of programs.

    python -m hw.sim.calibrate [--simulator icarus]

Runs GEMMs of several shapes, DMA-bound copies, vector chains and mixed programs (an
overlapped two-PE GEMM, a copy on one PE beside vector work on the other, and loads,
vector work and stores overlapped on one PE) on the RTL (one launch) and through
`hw.model.estimate`, and prints a markdown table of RTL cycles, model cycles and the
model's relative error, then `max_error=...` on the last line. `calibrate(spec)` returns
the rows for other scripts.
"""

from __future__ import annotations

import argparse
import logging
import sys

import gen
from hw.model import estimate
from hw.sim import programs
from hw.sim.diff import encode, program_base
from hw.spec import Spec, load

log = logging.getLogger(__name__)

SRC, DST = 0x100000, 0x200000


def overlapped(spec: Spec, nbytes: int, vectors: int) -> dict[int, list]:
    """PE 0: LOAD a block, `vectors` int8 VECTOR adds on another SRAM region, STORE the block.

    The three queues run at once: the store waits only for the load (a semaphore), the
    vector work is independent of both.
    """
    isa = gen.build(spec).isa
    q = isa.QUEUES
    row = 1024
    rows = nbytes // row
    v = isa.Vector(func=isa.VECTOR_FUNCS["add"], in_dtype=isa.DTYPES["int8"],
                   out_dtype=isa.DTYPES["int8"], src2_mode=isa.SRC2_MODES["imm"], rows=8,
                   cols=128, src1_addr=0x20000, src2_addr=0, dst_addr=0x20000,
                   src1_stride=128, src2_stride=0, dst_stride=128, shift=0, imm=1)
    return {0: [
        isa.Load(base=0, gather=0, dram_offset=0, sram_addr=0, n0=row, n1=rows, n2=1,
                 dram_s1=row, dram_s2=0, sram_s1=row, sram_s2=0, gather_addr=0),
        isa.SemSignal(queue=q["load"], sem=0),
        *[v] * vectors,
        isa.SemWait(queue=q["store"], sem=0),
        isa.Store(base=1, gather=0, dram_offset=0, sram_addr=0, n0=row, n1=rows, n2=1,
                  dram_s1=row, dram_s2=0, sram_s1=row, sram_s2=0, gather_addr=0),
        isa.End(),
    ]}


def table(spec: Spec) -> list[tuple[str, dict[int, list]]]:
    copy_then_vector = {0: programs.copy(spec, 16 << 10)[0],
                        1: programs.vector_chain(spec, 16, 64, 4)[0]}
    return [
        ("gemm 64x64x64, 1 PE", programs.gemm(spec, 64, 64, 64, pes=1)),
        ("gemm 128x64x256, 1 PE", programs.gemm(spec, 128, 64, 256, pes=1)),
        ("gemm 64x128x32, 1 PE", programs.gemm(spec, 64, 128, 32, pes=1)),
        ("gemm 128x128x128, 2 PEs", programs.gemm(spec, 128, 128, 128)),
        ("copy 16 KiB", programs.copy(spec, 16 << 10)),
        ("copy 64 KiB", programs.copy(spec, 64 << 10)),
        ("vector 16x64 int32 x8", programs.vector_chain(spec, 16, 64, 8)),
        ("vector 4x256 int32 x4", programs.vector_chain(spec, 4, 256, 4)),
        ("copy 16 KiB on PE 0 + vector 16x64 x4 on PE 1", copy_then_vector),
        ("load/vector x6/store 8 KiB overlapped, 1 PE", overlapped(spec, 8 << 10, 6)),
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


def calibrate(spec: Spec, simulator: str | None = None) -> list[tuple[str, int, int, float]]:
    """(program, RTL cycles, model cycles, relative error of the model) per table row."""
    rows = table(spec)
    rtl = rtl_cycles(spec, rows, simulator)
    out = []
    for (name, progs), cycles in zip(rows, rtl, strict=True):
        model = estimate(spec, progs).cycles
        out.append((name, cycles, model, (model - cycles) / cycles))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="small")
    ap.add_argument("--simulator", default=None, choices=("verilator", "icarus"))
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    spec = load(ns.spec)
    print("| program | RTL cycles | model cycles | error |")
    print("| --- | ---: | ---: | ---: |")
    worst = 0.0
    for name, cycles, model, err in calibrate(spec, ns.simulator):
        worst = max(worst, abs(err))
        print(f"| {name} | {cycles} | {model} | {err:+.1%} |")
    print(f"max_error={worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
