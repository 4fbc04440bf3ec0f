"""Replayed runs (`hw.model.replay`) against the same runs scheduled event by event.

A device built with `trace=True` never replays, so it is the reference: after every run,
and at every point a run is interrupted, both devices must show the same registers and
cycle count, and (except where docs say a replay writes early) the same memories. The
plain-loop interpreter of `racefree` checks the data independently.
"""

from __future__ import annotations

import numpy as np
import pytest
from model_kit import DT, ISA, REGS, SPEC, E, error_of, start
from racefree import random_program, reference

from hw.model import Device

PE_REGS = [REGS.PE_STATUS, REGS.PE_ERROR_CODE, REGS.PE_ERROR_PC, REGS.PE_PC,
           REGS.PE_PERF_CYCLES, REGS.PE_PERF_INSTRS, REGS.PE_PERF_MAC_BUSY,
           REGS.PE_PERF_LOAD_BUSY, REGS.PE_PERF_STORE_BUSY, REGS.PE_PERF_VECTOR_BUSY,
           REGS.PE_PERF_DRAM_BYTES, REGS.PE_PERF_MACS_LO]
DRAM = 3 * 8192


def _registers(dev: Device) -> list[int]:
    regs = [dev.read32(dev.regs.pe_reg(pe, r)) for pe in range(2) for r in PE_REGS]
    return regs + [dev.cycle, dev.read32(REGS.IRQ_STATUS)]


def _memories(dev: Device) -> tuple[bytes, ...]:
    return (dev.read_dram(0, DRAM), dev.read_sram(0, 0, 8192), dev.read_sram(1, 0, 8192))


def _start_both(devs, pe, prog, arg):
    for dev in devs:
        start(dev, pe, prog, args=[arg], prog_at=(8 << 20) + pe * 65536)


@pytest.mark.parametrize("seed", range(4))
def test_repeated_runs_replay_with_the_scheduled_result(seed):
    rng = np.random.default_rng(seed)
    progs = {pe: random_program(rng, 30, pe * 8192) for pe in range(2)}
    fast, ref = Device(SPEC), Device(SPEC, trace=True)
    for _ in range(3):
        dram = bytearray(rng.integers(0, 256, DRAM, dtype=np.uint8).tobytes())
        srams = [bytearray(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes())
                 for _ in range(2)]
        for dev in (fast, ref):
            dev.write_dram(0, bytes(dram))
            for pe in range(2):
                dev.write_sram(pe, 0, bytes(srams[pe]))
        for pe in range(2):
            _start_both((fast, ref), pe, progs[pe], pe * 8192)
        fast.run_until_idle()
        ref.run_until_idle()
        for pe in range(2):
            reference(progs[pe], srams[pe], dram, pe * 8192)
        assert _memories(fast) == (bytes(dram), bytes(srams[0]), bytes(srams[1]))
        assert _memories(ref) == _memories(fast)
        assert _registers(fast) == _registers(ref)
    assert fast.machine.replayer.replays == 2
    assert ref.machine.replayer is None


def _gather_program():
    """Load a 4-entry table, gather 4 planes through it, add them up, store the sum."""
    return [
        ISA.Load(dram_offset=0, sram_addr=0, n0=16, n1=1, n2=1),
        ISA.SemSignal(queue=0, sem=0), ISA.SemWait(queue=0, sem=0),
        ISA.Load(gather=1, dram_offset=64, sram_addr=256, n0=8, n1=1, n2=4, dram_s2=8,
                 sram_s2=8, gather_addr=0),
        ISA.SemSignal(queue=0, sem=1), ISA.SemWait(queue=1, sem=1),
        ISA.Vector(func=ISA.VECTOR_FUNCS["add"], in_dtype=DT["int8"], out_dtype=DT["int8"],
                   rows=3, cols=8, src1_addr=256, src2_addr=264, dst_addr=512,
                   src1_stride=8, src2_stride=8, dst_stride=8),
        ISA.SemSignal(queue=1, sem=2), ISA.SemWait(queue=2, sem=2),
        ISA.Store(dram_offset=4096, sram_addr=512, n0=8, n1=3, n2=1, dram_s1=8, sram_s1=8),
        ISA.End(),
    ]


def test_a_fault_met_while_replaying_stops_where_scheduling_stops():
    prog = _gather_program()
    fast, ref = Device(SPEC), Device(SPEC, trace=True)
    rng = np.random.default_rng(7)
    for table in ([0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 1 << 30, 2], [2, 2, 1, 0]):
        data = rng.integers(0, 256, 4096, dtype=np.uint8)
        data[:16] = np.array(table, "<u4").view(np.uint8)
        for dev in (fast, ref):
            dev.write_dram(0, data.tobytes())
            start(dev, 0, prog, args=[0])
            dev.run_until_idle()
        assert _registers(fast) == _registers(ref)
        assert _memories(fast) == _memories(ref)
        if table[2] == 1 << 30:
            assert error_of(fast) == (E["DRAM_RANGE"], 3)
        else:
            planes = data[64:96].view(np.int8).reshape(4, 8)[table].astype(np.int64)
            want = np.clip(planes[:3] + planes[1:4], -128, 127).astype(np.int8)
            got = np.frombuffer(fast.read_dram(4096, 24), np.int8).reshape(3, 8)
            np.testing.assert_array_equal(got, want)
    # the faulting run was handed back, the last one replayed again
    assert fast.machine.replayer.replays == 2


@pytest.mark.parametrize("interrupt", ["start", "stop", "watchdog"])
def test_interrupting_a_replayed_run_keeps_the_scheduled_timing(interrupt):
    rng = np.random.default_rng(11)
    progs = {pe: random_program(rng, 40, pe * 8192) for pe in range(2)}
    fast, ref = Device(SPEC), Device(SPEC, trace=True)
    data = rng.integers(0, 256, DRAM, dtype=np.uint8).tobytes()
    for dev in (fast, ref):
        dev.write_dram(0, data)
    for _ in range(2):  # record, then replay
        _start_both((fast, ref), 0, progs[0], 0)
        total = fast.run_until_idle()
        assert ref.run_until_idle() == total
    assert fast.machine.replayer.replays == 1
    _start_both((fast, ref), 0, progs[0], 0)
    for dev in (fast, ref):
        dev.advance(total // 3)
    assert fast.machine.replayer.replays == 2
    if interrupt == "start":
        _start_both((fast, ref), 1, progs[1], 8192)
    else:
        for dev in (fast, ref):
            if interrupt == "stop":
                dev.write32(dev.regs.pe_reg(0, REGS.PE_CTRL), REGS.PE_CTRL_STOP)
            else:
                dev.fault_pe(0, E["WATCHDOG"])
    assert _registers(fast) == _registers(ref)
    while fast.busy() or ref.busy():
        fast.advance(total // 5)
        ref.advance(total // 5)
        assert _registers(fast) == _registers(ref)
    if interrupt == "start":  # completed runs: the memories agree too
        assert _memories(fast) == _memories(ref)
