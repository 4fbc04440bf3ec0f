"""cocotb bench: an executable through driver, kernel and firmware on the NPU RTL.

Started by `stack.runtime.rtl.run_on_rtl` (never imported by the stack itself). A
`KernelDevice` without a service thread runs over `firmware.rtl_bus.RtlBus` in the thread
`cocotb.task.bridge` starts, so every register access and every cycle is the simulated
hardware's; `driver.attach` puts a `Device` on it and a `Session` runs the executable.
"""

import os
import pickle

import cocotb

from hw import spec as hwspec
from hw.sim.bus import run_blocking
from hw.sim.npu_bench import bring_up

QUANTUM = 64  # cycles per service pass: small, since a register poll costs only a few


def _host(sync, mem, spec, job):
    import torch

    import driver
    from driver.kernel import KernelDevice
    from firmware.rtl_bus import RtlBus
    from stack.compiler import Executable
    from stack.runtime import Session

    exe = Executable.from_bytes(job["exe"], spec)
    inputs = [torch.from_numpy(a) for a in job["inputs"]]
    kernel = KernelDevice(spec, bus=RtlBus(sync, mem), dram=mem, threaded=False,
                          quantum=QUANTUM)
    runs = []
    try:
        with driver.attach(kernel) as dev, Session(exe, dev) as sess:
            for _ in range(job["repeat"]):
                cpl, raw = sess.submit(*inputs).wait_raw(timeout=job["timeout"])
                runs.append({"raw": raw, "cycles": int(cpl.cycles), "status": int(cpl.status)})
    finally:
        kernel.close()
    return {"runs": runs}


@cocotb.test()
async def executable_on_rtl(dut):
    with open(os.environ["NPU_STACK_JOB"], "rb") as fh:
        job = pickle.load(fh)
    spec = hwspec.load(job["spec"])
    bus, dram = await bring_up(dut, spec)
    result = await run_blocking(_host, bus.sync(), dram.mem, spec, job)
    with open(job["out"], "wb") as fh:
        pickle.dump(result, fh)
