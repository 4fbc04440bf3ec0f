"""RTL simulation speed and MAC utilisation on the `small` NPU.

Runs a tiled int8 GEMM (DMA overlapped with compute through double buffers) on the RTL:
256x256x256 under Verilator for the utilisation and Verilator's speed, a 64x64x64 one
under Icarus for Icarus' speed, checks both results against numpy, runs the calibration
table of `hw.sim.calibrate` (RTL cycles against the model's estimates) under Verilator,
and prints `name=value` pairs on its last line, `max_calib_err` being the largest relative
error of the model there. `--quick` uses 128x128x128 under Verilator.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.sim import programs  # noqa: E402
from hw.sim.calibrate import calibrate  # noqa: E402
from hw.sim.diff import encode, program_base  # noqa: E402
from hw.sim.npu import npu_verilog, run_cases  # noqa: E402
from hw.spec import load  # noqa: E402

A_AT, B_AT, C_AT = 0x100000, 0x200000, 0x300000


def gemm_case(spec, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (size, size), dtype=np.int8)
    b = rng.integers(-128, 128, (size, size), dtype=np.int8)
    progs = programs.gemm(spec, size, size, size, tm=min(64, size // spec.npu.num_pes))
    blobs = {pe: encode(spec, p) for pe, p in progs.items()}
    bases = program_base(spec, blobs)
    case = {
        "programs": blobs,
        "dram": [(A_AT, a.tobytes()), (B_AT, b.tobytes())],
        "config": {pe: {"prog_base": bases[pe], "win_base": 0, "win_size": spec.dram_bytes,
                        "args": [A_AT, B_AT, C_AT, 0, 0, 0, 0, 0]} for pe in blobs},
        "sram_words": 0,
        "read_dram": [(C_AT, size * size * 4)],
        "timeout": 50 * size ** 3 // 64,
    }
    want = a.astype(np.int32) @ b.astype(np.int32)
    return case, want


def measure(spec, size: int, simulator: str) -> tuple[dict, float]:
    case, want = gemm_case(spec, size)
    res, sim = run_cases(spec, [case], simulator=simulator)
    r = res[0]
    if r["timed_out"]:
        raise RuntimeError(f"{size}^3 GEMM timed out under {simulator}")
    got = np.frombuffer(r["dram"][0], np.int32).reshape(size, size)
    if not np.array_equal(got, want):
        raise RuntimeError(f"{size}^3 GEMM result differs from numpy under {simulator}")
    return r, sim.test_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = load("small")
    t = time.monotonic()
    npu_verilog(spec)
    size = 128 if ns.quick else 256
    r, wall = measure(spec, size, "verilator")
    macs = size ** 3
    cells = spec.pe.mac.rows * spec.pe.mac.cols * spec.npu.num_pes
    util = macs / (r["cycles"] * cells)
    out = {
        "gemm": f"{size}x{size}x{size}",
        "rtl_cycles": r["cycles"],
        "mac_utilization": round(util, 4),
        "verilator_cycles_per_s": round(r["cycles"] / wall),
    }
    if shutil.which("iverilog"):
        r2, wall2 = measure(spec, 64, "icarus")
        out["icarus_cycles_per_s"] = round(r2["cycles"] / wall2)
    out["max_calib_err"] = round(max(abs(row[3]) for row in calibrate(spec, "verilator")), 4)
    out["total_s"] = round(time.monotonic() - t, 1)
    print(" ".join(f"{k}={v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
