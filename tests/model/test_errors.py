"""Every error state docs/isa.md defines, and that no program escapes its DRAM window."""

from __future__ import annotations

import numpy as np
import pytest
from model_kit import DT, ISA, REGS, SPEC, E, error_of, pe_reg, run_ops, start

from hw.model import Device
from hw.spec import load

FUNCS = ISA.VECTOR_FUNCS


def status(dev, pe=0):
    return pe_reg(dev, pe, REGS.PE_STATUS)


def assert_fault(dev, code, pc, pe=0):
    assert error_of(dev, pe) == (code, pc)
    assert status(dev, pe) == REGS.PE_STATUS_DONE | REGS.PE_STATUS_ERROR
    irq = dev.read32(REGS.IRQ_STATUS)
    assert irq & REGS.IRQ_STATUS_ERROR
    assert irq >> REGS.IRQ_STATUS_PE_DONE_SHIFT & (1 << pe)


def load_ins(**kw):
    base = dict(n0=16, n1=1, n2=1, dram_offset=0, sram_addr=0)
    base.update(kw)
    return ISA.Load(**base)


def test_illegal_opcode_after_earlier_work_drains():
    words = ISA.encode_program([load_ins(sram_addr=64), ISA.End()])
    bad = bytes([0x77]) + bytes(31)
    dram = {0: bytes(range(16))}
    dev = Device(SPEC)
    dev.write_dram(0, bytes(range(16)))
    start(dev, 0, words[:32] + bad + words[32:])
    dev.run_until_idle()
    assert_fault(dev, E["ILLEGAL_OPCODE"], 1)
    assert dev.read_sram(0, 64, 16) == dram[0]  # the LOAD before the fault completed


def test_pc_overrun():
    dev = run_ops([load_ins(), ISA.SemSignal(queue=0, sem=1)], end=False)
    assert_fault(dev, E["PC_OVERRUN"], 2)


def test_empty_program_overruns_at_zero():
    dev = run_ops([], end=False)
    assert_fault(dev, E["PC_OVERRUN"], 0)


@pytest.mark.parametrize(
    "ins",
    [
        ISA.SemWait(queue=3, sem=0),
        ISA.SemSignal(queue=0, sem=SPEC.pe.queues.num_semaphores),
        ISA.Barrier(pe_mask=0b10),  # without the PE itself
        ISA.Barrier(pe_mask=0b101),  # a PE the small NPU lacks
        ISA.Matmul(dtype=DT["int32"], m=1, n=1, k=1),
        ISA.Matmul(dtype=7, m=1, n=1, k=1),
        ISA.Vector(func=FUNCS["recip"], in_dtype=DT["int16"], out_dtype=DT["int16"], rows=1,
                   cols=1),
        ISA.Vector(func=63, rows=1, cols=1),
        ISA.Vector(func=0, in_dtype=7, rows=1, cols=1),
        # BAD_FIELD comes before MISALIGNED and survives zero counts
        ISA.Matmul(dtype=DT["int32"], m=0, n=1, k=1, a_addr=3),
    ],
)
def test_bad_field(ins):
    dev = run_ops([load_ins(), ins])
    assert_fault(dev, E["BAD_FIELD"], 1)


def test_vector_func_missing_from_spec_is_bad_field():
    spec = load("small", **{"pe.vector.ops": ["copy", "add"]})
    ins = ISA.Vector(func=FUNCS["relu"], in_dtype=DT["int8"], out_dtype=DT["int8"], rows=1,
                     cols=1)
    dev = run_ops([ins], spec=spec)
    assert error_of(dev) == (E["BAD_FIELD"], 0)


def test_gather_above_max_entries_is_bad_field():
    spec = load("small", **{"dma.gather_max_entries": 4})
    dev = run_ops([load_ins(gather=1, n2=5)], spec=spec)
    assert error_of(dev) == (E["BAD_FIELD"], 0)


SRAM_END = SPEC.sram_bytes_per_pe


@pytest.mark.parametrize(
    "ins,code",
    [
        (load_ins(n0=3), "MISALIGNED"),
        (load_ins(sram_addr=2), "MISALIGNED"),
        (load_ins(n1=2, dram_s1=6, sram_s1=16), "MISALIGNED"),
        (load_ins(gather=1, gather_addr=2), "MISALIGNED"),
        (load_ins(dram_offset=2), "MISALIGNED"),
        (ISA.Matmul(dtype=DT["bf16"], m=1, n=1, k=1, a_addr=1), "MISALIGNED"),
        (ISA.Matmul(dtype=DT["int8"], m=2, n=1, k=1, c_addr=4, c_stride=2), "MISALIGNED"),
        (ISA.Vector(func=0, in_dtype=DT["int32"], out_dtype=DT["int32"], rows=1, cols=1,
                    dst_addr=2), "MISALIGNED"),
        # MISALIGNED is checked before SRAM_RANGE
        (load_ins(n0=3, sram_addr=SRAM_END), "MISALIGNED"),
        (load_ins(sram_addr=SRAM_END - 12), "SRAM_RANGE"),
        (load_ins(n1=3, sram_s1=SRAM_END // 2), "SRAM_RANGE"),
        (load_ins(gather=1, gather_addr=SRAM_END - 4, n2=2), "SRAM_RANGE"),
        (ISA.Matmul(dtype=DT["int8"], m=2, n=2, k=2, c_addr=SRAM_END - 8, c_stride=8),
         "SRAM_RANGE"),
        (ISA.Vector(func=FUNCS["add"], in_dtype=DT["int8"], out_dtype=DT["int8"], rows=2,
                    cols=4, src2_addr=SRAM_END - 4, src2_stride=4), "SRAM_RANGE"),
        # SRAM_RANGE is checked before DRAM_RANGE
        (load_ins(sram_addr=SRAM_END, dram_offset=1 << 30), "SRAM_RANGE"),
        (load_ins(dram_offset=SPEC.dram_bytes - 8), "DRAM_RANGE"),
        (ISA.Store(n0=16, n1=1, n2=1, dram_offset=0xFFFFFFF0), "DRAM_RANGE"),
    ],
)
def test_unit_errors_and_their_order(ins, code):
    dev = run_ops([ISA.SemSignal(queue=0, sem=0), ins])
    assert_fault(dev, E[code], 1)


def test_dram_window_is_enforced_and_memory_outside_untouched():
    rng = np.random.default_rng(1)
    init = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    win = (1 << 20, 1 << 16)
    prog_at = win[0] + 0x8000
    dev = Device(SPEC)
    dev.write_dram(0, init)
    dev.write_sram(0, 0, bytes(range(256)) * 4)
    store_ok = ISA.Store(base=0, dram_offset=0, n0=64, n1=1, n2=1)
    store_bad = ISA.Store(base=0, dram_offset=win[1] - 32, n0=64, n1=1, n2=1)
    start(dev, 0, [store_ok, store_bad, ISA.End()], args=[win[0]], win=win, prog_at=prog_at)
    dev.run_until_idle()
    assert_fault(dev, E["DRAM_RANGE"], 1)
    assert dev.read_dram(win[0], 64) == bytes(range(64))
    assert dev.read_dram(win[0] + win[1] - 32, 32) == bytes(32)  # nothing partial
    assert dev.read_dram(0, 1 << 16) == init
    assert dev.read_dram(win[0] + win[1], 64) == bytes(64)


def test_program_outside_window_is_dram_range():
    dev = Device(SPEC)
    start(dev, 0, [ISA.End()], win=(0, 4096))
    dev.run_until_idle()
    assert_fault(dev, E["DRAM_RANGE"], 0)


def test_gather_moves_planes_before_the_faulting_one():
    dram = bytes(range(256)) * 16
    table = np.array([0, 2, 1 << 20, 1], "<u4").tobytes()
    ins = load_ins(gather=1, n0=8, n2=4, dram_s2=64, sram_s2=8, sram_addr=128, gather_addr=0)
    dev = run_ops([ins], sram={0: table}, dram={0: dram})
    assert_fault(dev, E["DRAM_RANGE"], 0)
    assert dev.read_sram(0, 128, 16) == dram[0:8] + dram[128:136]
    assert dev.read_sram(0, 144, 16) == bytes(16)


def test_deadlock_on_semaphore_never_signalled():
    dev = run_ops([load_ins(), ISA.SemWait(queue=1, sem=2), load_ins(sram_addr=64)])
    assert_fault(dev, E["DEADLOCK"], 1)


def test_deadlock_when_queue_full_of_waits():
    # The dispatcher stalls behind the full compute queue; nothing can ever signal sem 0.
    waits = [ISA.SemWait(queue=1, sem=0)] * (SPEC.pe.queues.depth + 2)
    dev = run_ops(waits + [ISA.SemSignal(queue=0, sem=0)])
    assert_fault(dev, E["DEADLOCK"], 0)


def test_barrier_waiting_on_a_pe_not_running():
    dev = run_ops([ISA.Barrier(pe_mask=0b11)])
    assert_fault(dev, E["DEADLOCK"], 0)


def test_barrier_deadlock_when_partner_stops():
    dev = Device(SPEC)
    start(dev, 0, [ISA.Barrier(pe_mask=0b11), ISA.End()])
    start(dev, 1, [ISA.End()], prog_at=(8 << 20) + 4096)
    dev.run_until_idle()
    assert error_of(dev, 1) == (0, 0)
    assert_fault(dev, E["DEADLOCK"], 0, pe=0)


def test_random_bad_programs_stay_in_window():
    """Random instruction words never raise and never write DRAM outside the window."""
    rng = np.random.default_rng(1234)
    win = (1 << 20, 1 << 18)
    fields = {name: ISA.FIELDS[name] for name in ISA.CLASSES}
    outside = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for trial in range(150):
        dev = Device(SPEC)
        dev.write_dram(win[0] - 4096, outside)
        dev.write_dram(win[0] + win[1], outside)
        dev.write_sram(0, 0, rng.integers(0, 4, 4096, dtype=np.uint8).tobytes())
        prog = []
        for _ in range(int(rng.integers(1, 8))):
            name = str(rng.choice(list(fields)))
            vals = {}
            for f, _lsb, width in fields[name]:
                small = int(rng.integers(0, 64)) * int(rng.choice([1, 4, 16]))
                vals[f] = small if rng.random() < 0.8 else int(rng.integers(0, 1 << width))
                vals[f] = min(vals[f], (1 << width) - 1)
            prog.append(ISA.CLASSES[name](**vals))
        blob = ISA.encode_program(prog)
        if rng.random() < 0.3:
            blob += bytes([int(rng.integers(0, 256))]) + rng.bytes(31)
        args = [win[0] + int(rng.integers(0, 4)) * 1024 for _ in range(8)]
        start(dev, 0, blob, args=args, win=win, prog_at=win[0] + win[1] - len(blob) - 32 * 8)
        dev.run_until_idle()
        assert not dev.busy()
        assert status(dev) & REGS.PE_STATUS_DONE
        assert dev.read_dram(win[0] - 4096, 4096) == outside, trial
        assert dev.read_dram(win[0] + win[1], 4096) == outside, trial
