"""Run a cocotb bench module of tests/firmware or tests/driver on the NPU RTL of a spec.

The benches get their inputs and write their findings through pickle files named by
$NPU_BENCH_IN / $NPU_BENCH_OUT. Builds share hw.sim.npu's cache key and its Verilator make
flags: a build of that key with other flags leaves precompiled headers the next build
cannot use ("one or more PCH files were found, but they were invalid").
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run_bench(module: str, inputs: Any, tmp_path: Path, *, spec_name: str = "small",
              simulator: str = "verilator") -> Any:
    """Run every cocotb test of `module` on the RTL of `spec_name`; returns its output."""
    from hw import spec as hwspec
    from hw.sim.npu import TOP, VERILATOR_MAKEFLAGS, npu_verilog
    from hw.sim.runner import run_cocotb

    spec = hwspec.load(spec_name)
    (tmp_path / "in.pkl").write_bytes(pickle.dumps(inputs))
    env = {"NPU_BENCH_IN": str(tmp_path / "in.pkl"), "NPU_BENCH_OUT": str(tmp_path / "out.pkl"),
           "NPU_BENCH_SPEC": spec_name}
    if simulator == "verilator":
        env["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {VERILATOR_MAKEFLAGS}".strip()
    path, key = npu_verilog(spec)
    run_cocotb(path, TOP, module, cache_key=key, simulator=simulator,
               python_paths=[HERE, HERE.parent / "firmware"], extra_env=env)
    return pickle.loads((tmp_path / "out.pkl").read_bytes())


def bench_io() -> tuple[Any, Path]:
    """In a bench: (its inputs, the path to write its output to)."""
    with open(os.environ["NPU_BENCH_IN"], "rb") as fh:
        return pickle.load(fh), Path(os.environ["NPU_BENCH_OUT"])
