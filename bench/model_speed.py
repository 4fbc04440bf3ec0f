"""Speed of the functional model: big MATMULs against bare matmuls, and dispatch overhead.

Run: `.venv/bin/python bench/model_speed.py`. The last line holds the headline figures as
`name=value` pairs:

- `int8_gemm_ratio`, `bf16_gemm_ratio`: wall time of a one-MATMUL 1024x1024x1024 program
  on the model (register writes to idle) over the fastest bare host matmul of the same
  operands (numpy fp32 BLAS on the widened values, or torch's int8/bf16 matmul).
- `us_per_instr`: wall time per instruction of a 10,000-instruction program of small
  LOAD/VECTOR/STORE instructions, predecoded already (a repeated run).
- `us_per_instr_first`: the same including the one-time predecode.
- `estimate_us_per_instr`: perf-only scheduling of a 15,000-instruction GEMM on
  `datacenter`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gen  # noqa: E402
from hw.model import Device, estimate  # noqa: E402
from hw.spec import load  # noqa: E402

N = 1024
REPEAT = 3


def best(fn, repeat=REPEAT) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def start_and_run(dev: Device, prog_at: int, words: int) -> None:
    regs = dev.regs
    dev.write32(regs.pe_reg(0, regs.PE_PROG_BASE_LO), prog_at)
    dev.write32(regs.pe_reg(0, regs.PE_PROG_LEN), words)
    dev.write32(regs.pe_reg(0, regs.PE_WIN_SIZE_LO), dev.spec.dram_bytes)
    dev.write32(regs.pe_reg(0, regs.PE_CTRL), regs.PE_CTRL_START)
    dev.run_until_idle()


def gemm(spec, isa, dtype: str) -> tuple[float, float, float]:
    """(model seconds, numpy fp32 seconds, torch seconds) for one N^3 MATMUL."""
    rng = np.random.default_rng(0)
    if dtype == "int8":
        a = rng.integers(-128, 128, (N, N), dtype=np.int8)
        b = rng.integers(-128, 128, (N, N), dtype=np.int8)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    else:
        a = rng.standard_normal((N, N)).astype(ml_dtypes.bfloat16)
        b = rng.standard_normal((N, N)).astype(ml_dtypes.bfloat16)
        ta = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        tb = torch.from_numpy(b.view(np.int16)).view(torch.bfloat16)
    es = a.itemsize
    dev = Device(spec)
    dev.write_sram(0, 0, a.tobytes())
    dev.write_sram(0, 4 << 20, b.tobytes())
    prog = isa.encode_program([
        isa.Matmul(dtype=isa.DTYPES[dtype], m=N, n=N, k=N, a_addr=0, b_addr=4 << 20,
                   c_addr=8 << 20, a_stride=N * es, b_stride=N * es, c_stride=4 * N),
        isa.End(),
    ])
    dev.write_dram(0, prog)
    model = best(lambda: start_and_run(dev, 0, 2))
    c = np.frombuffer(dev.read_sram(0, 8 << 20, 4 * N * N),
                      np.int32 if dtype == "int8" else np.float32).reshape(N, N)
    ref = a.astype(np.float32) @ b.astype(np.float32)
    if dtype == "int8":
        assert np.array_equal(c, ref.astype(np.int32))
    else:
        assert np.allclose(c, ref, rtol=1e-4, atol=1e-2)
    bare_np = best(lambda: a.astype(np.float32) @ b.astype(np.float32))
    bare_torch = best(lambda: ta @ tb, repeat=1 if dtype == "bf16" else REPEAT)
    return model, bare_np, bare_torch


def small_instructions(spec, isa, n=10_000) -> tuple[float, float]:
    """Seconds per instruction for the first (predecoding) and a repeated run."""
    prog = []
    for i in range(n // 3):
        off = (i % 64) * 256
        prog.append(isa.Load(n0=64, n1=1, n2=1, dram_offset=off, sram_addr=off))
        prog.append(isa.Vector(func=isa.VECTOR_FUNCS["add"], in_dtype=isa.DTYPES["int8"],
                               out_dtype=isa.DTYPES["int8"], rows=8, cols=8,
                               src1_addr=16384 + off, src2_addr=16384 + off + 64,
                               dst_addr=16384 + off + 128, src1_stride=8, src2_stride=8,
                               dst_stride=8))
        prog.append(isa.Store(n0=64, n1=1, n2=1, dram_offset=65536 + off, sram_addr=off))
    prog.append(isa.End())
    blob = isa.encode_program(prog)
    dev = Device(spec)
    at = 1 << 20
    dev.write_dram(at, blob)
    t0 = time.perf_counter()
    start_and_run(dev, at, len(prog))
    first = time.perf_counter() - t0
    again = best(lambda: start_and_run(dev, at, len(prog)))
    return first / len(prog), again / len(prog)


def estimate_speed() -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "model"))
    from test_trace_estimate import big_gemm_programs

    spec = load("datacenter")
    progs = big_gemm_programs(spec)
    n = sum(len(p) for p in progs.values())
    t = best(lambda: estimate(spec, progs), repeat=2)
    return t / n


def main() -> None:
    spec = load("small", **{"pe.sram.size_kib": 16384})
    isa = gen.build(spec).isa
    figures = {}
    for dtype in ("int8", "bf16"):
        model, bare_np, bare_torch = gemm(spec, isa, dtype)
        bare = min(bare_np, bare_torch)
        print(f"{dtype} 1024^3 MATMUL: model {model * 1e3:.1f} ms, numpy fp32 "
              f"{bare_np * 1e3:.1f} ms, torch {dtype} {bare_torch * 1e3:.1f} ms")
        figures[f"{dtype}_gemm_ms"] = round(model * 1e3, 1)
        figures[f"{dtype}_gemm_ratio"] = round(model / bare, 2)
    first, again = small_instructions(spec, isa)
    print(f"10k small instructions: {again * 1e6:.1f} us/instr ({first * 1e6:.1f} first run)")
    figures["us_per_instr"] = round(again * 1e6, 2)
    figures["us_per_instr_first"] = round(first * 1e6, 2)
    est = estimate_speed()
    print(f"datacenter GEMM estimate: {est * 1e6:.1f} us/instr")
    figures["estimate_us_per_instr"] = round(est * 1e6, 2)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
