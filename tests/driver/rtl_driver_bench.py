"""cocotb bench: the userspace driver on the RTL, driver -> kernel -> firmware -> gates.

A `KernelDevice` without a service thread runs over `firmware.rtl_bus.RtlBus` in the
thread `cocotb.task.bridge` starts, so every register access and every cycle the firmware
lets pass is the simulated hardware's. Runs under `test_driver_rtl.py`, which compares what
it writes (device bytes, completions) with the functional model and numpy.
"""

import os
import pickle

import cocotb
from npu_programs import TILE, add_int32, barrier_consumer, barrier_producer
from rtl_run import bench_io

import driver
from firmware.rtl_bus import RtlBus
from hw import spec as hwspec
from hw.sim.bus import run_blocking
from hw.sim.npu_bench import bring_up

QUANTUM = 64  # cycles per service pass: small, since a register poll costs only a few


def _host(sync, mem, spec, inputs):
    from driver.kernel import KernelDevice

    kernel = KernelDevice(spec, bus=RtlBus(sync, mem), dram=mem, threaded=False,
                          quantum=QUANTUM)
    out = {}
    with driver.attach(kernel) as dev, dev.context(memory=1 << 20) as ctx:
        out["num_pes"] = dev.caps.num_pes
        x, y = inputs
        bx, by, bout, t = ctx.upload(x), ctx.upload(y), ctx.alloc(TILE), ctx.alloc(TILE)
        cpl = ctx.run(ctx.load_program(add_int32()), [bx, by, bout], timeout=600)
        out["add"] = (bout.read(), cpl.status)
        producer = ctx.load_program(barrier_producer())
        consumer = ctx.load_program(barrier_consumer())
        cpl = ctx.run_multi({1: (producer, [bx, t]), 0: (consumer, [t, by, bout])},
                            timeout=600)
        out["multi"] = (bout.read(), cpl.status)
    kernel.close()
    return out


@cocotb.test()
async def driver_on_rtl(dut):
    inputs, out_path = bench_io()
    spec = hwspec.load(os.environ["NPU_BENCH_SPEC"])
    bus, dram = await bring_up(dut, spec)
    result = await run_blocking(_host, bus.sync(), dram.mem, spec, inputs)
    out_path.write_bytes(pickle.dumps(result))
