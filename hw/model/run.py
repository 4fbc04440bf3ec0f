"""Conveniences over the model: run programs on a fresh device, or estimate them.

`run_program` is what tests and the compiler use before the driver exists: it places the
programs at the top of DRAM, opens every PE's window over the whole DRAM, starts the PEs
together and runs them until idle. `estimate` schedules programs with no memory at all,
so a large model on the `datacenter` spec is timed without allocating its DRAM.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from hw.model import program as progmod
from hw.model.device import Device
from hw.model.schedule import Machine
from hw.model.timeline import Timeline, build
from hw.spec import Spec

log = logging.getLogger(__name__)

Program = bytes | bytearray | Sequence[object]


def _as_bytes(spec: Spec, prog: Program) -> bytes:
    if isinstance(prog, (bytes, bytearray, memoryview)):
        return bytes(prog)
    return progmod.limits(spec).gen.isa.encode_program(list(prog))


def run_program(
    spec: Spec,
    programs: Mapping[int, Program],
    dram_init: Mapping[int, bytes] | None = None,
    args: Mapping[int, Sequence[int]] | None = None,
    exact: bool = False,
    *,
    trace: bool = False,
) -> tuple[Device, Timeline]:
    """Run `programs` ({pe: program bytes or instructions}) on a fresh device until idle.

    `dram_init` ({address: bytes}) is written first; `args` gives each PE's ARG registers
    (at most 8 values of 64 bits). Returns the device (for memories and registers) and
    the run's `Timeline`.
    """
    dev = Device(spec, exact=exact, trace=trace)
    regs = dev.regs
    wb = dev.lim.gen.isa.WORD_BYTES
    blobs = {pe: _as_bytes(spec, prog) for pe, prog in programs.items()}
    for pe in blobs:
        if not 0 <= pe < spec.npu.num_pes:
            raise ValueError(f"PE index must be in [0, {spec.npu.num_pes - 1}], got {pe}")
    total = sum(len(b) for b in blobs.values())
    base = (spec.dram_bytes - total) & ~0xFFF
    for addr, data in (dram_init or {}).items():
        if addr < spec.dram_bytes and addr + len(data) > base:
            raise ValueError(
                f"dram_init at 0x{addr:x} (+{len(data)} bytes) overlaps the programs placed "
                f"at 0x{base:x}; keep data below 0x{base:x}"
            )
        dev.write_dram(addr, data)
    nargs = regs.PE["ARG_LO"].count
    addr = base
    for pe, blob in sorted(blobs.items()):
        dev.write_dram(addr, blob)
        w = lambda off, v, pe=pe: dev.write32(regs.pe_reg(pe, off), v)  # noqa: E731
        w(regs.PE_PROG_BASE_LO, addr & 0xFFFF_FFFF)
        w(regs.PE_PROG_BASE_HI, addr >> 32)
        w(regs.PE_PROG_LEN, len(blob) // wb)
        w(regs.PE_WIN_BASE_LO, 0)
        w(regs.PE_WIN_BASE_HI, 0)
        w(regs.PE_WIN_SIZE_LO, spec.dram_bytes & 0xFFFF_FFFF)
        w(regs.PE_WIN_SIZE_HI, spec.dram_bytes >> 32)
        values = list((args or {}).get(pe, ()))
        if len(values) > nargs:
            raise ValueError(f"PE {pe} takes at most {nargs} arguments, got {len(values)}")
        for i, v in enumerate(values):
            stride = regs.PE["ARG_LO"].stride
            w(regs.PE_ARG_LO + i * stride, v & 0xFFFF_FFFF)
            w(regs.PE_ARG_HI + i * stride, v >> 32 & 0xFFFF_FFFF)
        addr += len(blob)
    for pe in sorted(blobs):
        dev.write32(regs.pe_reg(pe, regs.PE_CTRL), regs.PE_CTRL_START)
    dev.run_until_idle()
    return dev, dev.timeline()


def estimate(spec: Spec, programs: Mapping[int, Program], *, trace: bool = False) -> Timeline:
    """Schedule `programs` with no memory: the cycle model alone, for any DRAM size.

    Data-dependent parts are not evaluated: DRAM windows are not checked and gather tables
    are not read (their cost does not depend on them).
    """
    lim = progmod.limits(spec)
    machine = Machine(lim, None, None, trace)
    for pe, prog in sorted(programs.items()):
        if not 0 <= pe < spec.npu.num_pes:
            raise ValueError(f"PE index must be in [0, {spec.npu.num_pes - 1}], got {pe}")
        ops = progmod.program_ops(spec, prog)
        machine.start(pe, ops, len(ops), len(ops), None, 0)
    while machine.busy():
        machine.run(1 << 62)
        if machine.busy():
            machine.settle(machine.now)
    return build(lim, machine.pes, machine.channel_busy, machine.slices, machine.transfers,
                 trace)
