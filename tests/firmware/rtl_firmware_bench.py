"""cocotb bench: the command processor on the RTL, fed through the rings by a test host.

Runs under `test_firmware_rtl.py`; writes its findings (completions, output bytes) to the
pickle file named by $NPU_BENCH_OUT for the pytest side to check against numpy.
"""

import os
import pickle
import struct

import cocotb
from npu_programs import TILE, add_int32, slow
from rtl_run import bench_io

from firmware import COMMAND_BYTES, COMPLETION_BYTES, Command, CommandProcessor, Completion, Opcode
from firmware.rtl_bus import RtlBus
from hw import spec as hwspec
from hw.generated import isa, regs
from hw.sim.bus import run_blocking
from hw.sim.npu_bench import bring_up

CMD, CPL, ENTRIES = 0, 4096, 16
A, B = 0x10000, 0x20000  # two contexts' windows of 64 KiB


def _host(sync, mem, inputs):
    bus = RtlBus(sync, mem)
    fw = CommandProcessor(bus, default_budget=1 << 30)
    for reg, value in ((regs.CMD_RING_BASE_LO, CMD), (regs.CMD_RING_SIZE, ENTRIES),
                       (regs.CPL_RING_BASE_LO, CPL), (regs.CPL_RING_SIZE, ENTRIES)):
        bus.write32(reg, value)
    tail, head, done = 0, 0, {}

    def submit(ctx, op, args=(), flags=0):
        nonlocal tail
        tag = len(done) + tail + 1000 * (len(done) + 1)
        bus.write_mem(CMD + tail * COMMAND_BYTES, Command(op, ctx, tag, args, flags).pack())
        tail = (tail + 1) % ENTRIES
        bus.write32(regs.CMD_RING_TAIL, tail)
        bus.write32(regs.DOORBELL, 1)
        return tag

    def serve(tags, limit=100_000):
        nonlocal head
        spent = 0
        while not all(t in done for t in tags) and spent < limit:
            fw.poll()
            if bus.read32(regs.IRQ_STATUS) & regs.IRQ_STATUS_CPL:
                bus.write32(regs.IRQ_STATUS, regs.IRQ_STATUS_CPL)
                end = bus.read32(regs.CPL_RING_TAIL)
                while head != end:
                    c = Completion.unpack(bus.read_mem(CPL + head * COMPLETION_BYTES,
                                                       COMPLETION_BYTES))
                    done[c.tag] = tuple(c)
                    head = (head + 1) % ENTRIES
                bus.write32(regs.CPL_RING_HEAD, head)
            spent += fw.run(200)

    for ctx, base in ((1, A), (2, B)):
        serve([submit(ctx, Opcode.CREATE_CONTEXT, (base, 0x10000))])
    x, y = inputs
    bus.write_mem(A + 0x1000, x)
    bus.write_mem(A + 0x2000, y)
    prog = isa.encode_program(add_int32())
    bus.write_mem(A, prog)
    bus.write_mem(A + 0x800, struct.pack("<8Q", A + 0x1000, A + 0x2000, A + 0x3000, *[0] * 5))
    bus.write_mem(B, isa.encode_program(slow()))
    bus.write_mem(B + 0x800, struct.pack("<8Q", B + 0x1000, *[0] * 7))
    hung = submit(2, Opcode.RUN, (B, len(slow()), 0b10, B + 0x800, 3000))
    bad = submit(1, Opcode.RUN, (B, 2, 0, A + 0x800, 0))  # b's program from context 1
    good = submit(1, Opcode.RUN, (A, len(prog) // 32, 0b01, A + 0x800, 0))
    serve([hung, bad, good])
    return {"hung": done.get(hung), "bad": done.get(bad), "good": done.get(good),
            "out": bytes(mem[A + 0x3000 : A + 0x3000 + TILE])}


@cocotb.test()
async def firmware_on_rtl(dut):
    inputs, out_path = bench_io()
    spec = hwspec.load(os.environ["NPU_BENCH_SPEC"])
    bus, dram = await bring_up(dut, spec)
    result = await run_blocking(_host, bus.sync(), dram.mem, inputs)
    out_path.write_bytes(pickle.dumps(result))
