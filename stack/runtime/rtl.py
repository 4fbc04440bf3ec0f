"""Run an executable through driver and firmware on the NPU's RTL (`backend="rtl"`).

`run_on_rtl` launches one cocotb simulation of the RTL of the executable's spec (the
Verilator build is cached per design), runs the driver, the kernel and the firmware
in-process over the simulated register bus (`stack.runtime.rtl_bench`) and returns the
outputs and the device's cycle counts to the caller. The RTL implements integer
instructions only (int8 MATMUL, integer VECTOR), so float executables fail there with
BAD_FIELD; compile with `dtype="int8"`. Each call is a fresh simulation: nothing stays
resident between calls, and a launch costs seconds even with the build cached.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from stack.compiler import Executable, bind_inputs, unpack_outputs
from stack.runtime.session import Result

__all__ = ["run_on_rtl", "RtlRunError"]

log = logging.getLogger(__name__)

BENCH = "stack.runtime.rtl_bench"


class RtlRunError(RuntimeError):
    """The simulation did not produce a result (its log says why)."""


def run_on_rtl(exe: Executable, inputs: tuple, *, repeat: int = 1, simulator: str = "verilator",
               timeout: float = 600.0) -> list[Result]:
    """Run `exe` on `inputs` `repeat` times in one simulation; a `Result` per run."""
    import hw.spec
    from hw.sim.npu import TOP, VERILATOR_MAKEFLAGS, npu_verilog
    from hw.sim.runner import run_cocotb

    if not isinstance(exe, Executable):
        raise TypeError(f"backend='rtl' runs one Executable, got {type(exe).__name__}")
    spec = hw.spec.load(exe.spec_name)
    bound = bind_inputs(exe, tuple(inputs))  # checks shapes; quantises an int8 exe's floats
    arrays = [np.frombuffer(raw, np.float32 if i["dtype"] == "f32" else np.int32)
              .reshape(i["shape"]).copy() for raw, i in zip(bound, exe.inputs, strict=True)]
    if any(i["dtype"] == "bf16" for i in exe.inputs):
        raise ValueError("backend='rtl' runs integer executables; compile with dtype='int8'")
    with tempfile.TemporaryDirectory(prefix="npu-stack-rtl-") as tmp:
        out = Path(tmp) / "out.pkl"
        job = Path(tmp) / "job.pkl"
        job.write_bytes(pickle.dumps({"exe": exe.to_bytes(), "inputs": arrays,
                                      "spec": spec.name, "repeat": repeat,
                                      "timeout": timeout, "out": str(out)}))
        env = {"NPU_STACK_JOB": str(job)}
        if simulator == "verilator":
            env["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {VERILATOR_MAKEFLAGS}".strip()
        path, key = npu_verilog(spec, simulator)
        sim = run_cocotb(path, TOP, BENCH, cache_key=key, simulator=simulator, extra_env=env)
        if sim.failed or not out.is_file():
            raise RtlRunError(f"the RTL run failed: {sim.failed or 'no result'}; see {sim.log}")
        result = pickle.loads(out.read_bytes())
    st = exe.meta.get("static", {})
    peak = spec.pe.mac.rows * spec.pe.mac.cols * exe.num_pes
    results = []
    for run in result["runs"]:
        cyc = run["cycles"]
        stats = {"cycles": cyc, "macs": st.get("macs", 0), "dram_bytes": st.get("dram_bytes", 0),
                 "mac_utilization": st.get("macs", 0) / (cyc * peak) if cyc else 0.0,
                 "backend": "rtl"}
        results.append(Result(unpack_outputs(exe, run["raw"]), stats))
    log.info("ran %s on the RTL of %s: %s cycles", exe.meta.get("kernels"), spec.name,
             [r.stats["cycles"] for r in results])
    return results

