"""The register file: reset values, access types, PE control and perf counters."""

from __future__ import annotations

import pytest
from model_kit import DT, ISA, REGS, SPEC, pe_reg, start

from hw.model import Device, run_program
from hw.spec import load


@pytest.mark.parametrize("name", ["small", "board"])
def test_capability_registers_publish_the_spec(name):
    spec = load(name)
    dev = Device(spec)
    dtypes = sum(1 << spec.isa.dtypes[d] for d in spec.pe.mac.dtypes)
    want = {
        REGS.ID: 0x4E505530,
        REGS.VERSION: spec.npu.version[0] << 16 | spec.npu.version[1],
        REGS.CAP_NUM_PES: spec.npu.num_pes,
        REGS.CAP_MAC_ROWS: spec.pe.mac.rows,
        REGS.CAP_MAC_COLS: spec.pe.mac.cols,
        REGS.CAP_DTYPES: dtypes,
        REGS.CAP_SRAM_KIB: spec.pe.sram.size_kib,
        REGS.CAP_DRAM_MIB: spec.dram.size_mib,
        REGS.CAP_CLOCK_MHZ: spec.npu.clock_mhz,
        REGS.CAP_VECTOR_LANES: spec.pe.vector.lanes,
        REGS.CAP_DRAM_BW: spec.dram.bytes_per_cycle,
        REGS.CAP_SPEC_HASH: int(spec.hash[:8], 16),
    }
    for addr, value in want.items():
        assert dev.read32(addr) == value, hex(addr)
        dev.write32(addr, value ^ 0xFFFF)  # read-only: ignored
        assert dev.read32(addr) == value, hex(addr)


def test_rw_wo_and_w1c():
    dev = Device(SPEC)
    dev.write32(REGS.CMD_RING_BASE_LO, 0xDEADBEEF)
    assert dev.read32(REGS.CMD_RING_BASE_LO) == 0xDEADBEEF
    dev.write32(REGS.pe_reg(1, REGS.PE_ARG_LO + 8 * 7), 0x12345678)
    assert dev.read32(REGS.pe_reg(1, REGS.PE_ARG_LO + 8 * 7)) == 0x12345678
    assert dev.read32(REGS.pe_reg(0, REGS.PE_ARG_LO + 8 * 7)) == 0
    assert not dev.take_doorbell()
    dev.write32(REGS.DOORBELL, 5)
    assert dev.read32(REGS.DOORBELL) == 0
    assert dev.take_doorbell() and not dev.take_doorbell()
    # IRQ_STATUS: PE_DONE bits from two PEs, cleared one bit at a time
    start(dev, 0, [ISA.End()])
    start(dev, 1, [ISA.End()], prog_at=(8 << 20) + 4096)
    dev.run_until_idle()
    done = 0b11 << REGS.IRQ_STATUS_PE_DONE_SHIFT
    assert dev.read32(REGS.IRQ_STATUS) == done
    assert not dev.irq_pending()
    dev.write32(REGS.IRQ_MASK, REGS.IRQ_STATUS_PE_DONE)
    assert dev.irq_pending()
    dev.write32(REGS.IRQ_STATUS, 1 << REGS.IRQ_STATUS_PE_DONE_SHIFT)
    assert dev.read32(REGS.IRQ_STATUS) == 0b10 << REGS.IRQ_STATUS_PE_DONE_SHIFT
    dev.write32(REGS.IRQ_STATUS, 0xFFFFFFFF)
    assert dev.read32(REGS.IRQ_STATUS) == 0 and not dev.irq_pending()
    dev.raise_irq(REGS.IRQ_STATUS_CPL)
    assert dev.read32(REGS.IRQ_STATUS) == REGS.IRQ_STATUS_CPL


def test_global_reset():
    dev = Device(SPEC)
    dev.write32(REGS.CMD_RING_TAIL, 9)
    dev.write32(REGS.DOORBELL, 1)
    start(dev, 0, [ISA.SemWait(queue=0, sem=0), ISA.End()])
    dev.write32(REGS.RESET, 1)
    assert not dev.busy()
    assert dev.read32(REGS.CMD_RING_TAIL) == 0
    assert not dev.take_doorbell()
    assert pe_reg(dev, 0, REGS.PE_STATUS) == 0


def test_ctrl_stop_keeps_status_reset_clears_it():
    dev = Device(SPEC)
    prog = [ISA.Matmul(dtype=DT["int8"], m=64, n=64, k=512, a_addr=0, b_addr=0, c_addr=65536,
                       a_stride=512, b_stride=64, c_stride=256), ISA.End()]
    start(dev, 0, prog)
    assert pe_reg(dev, 0, REGS.PE_STATUS) == REGS.PE_STATUS_BUSY
    assert dev.advance(100) == 100 and dev.busy()
    assert pe_reg(dev, 0, REGS.PE_PERF_CYCLES) == 100
    dev.write32(REGS.pe_reg(0, REGS.PE_CTRL), REGS.PE_CTRL_STOP)
    assert not dev.busy()
    assert pe_reg(dev, 0, REGS.PE_STATUS) == 0
    assert pe_reg(dev, 0, REGS.PE_PC) == 1  # dispatched the MATMUL, waits at END
    assert pe_reg(dev, 0, REGS.PE_PERF_INSTRS) == 1
    dev.write32(REGS.pe_reg(0, REGS.PE_CTRL), REGS.PE_CTRL_RESET)
    assert pe_reg(dev, 0, REGS.PE_PC) == 0
    assert pe_reg(dev, 0, REGS.PE_PERF_INSTRS) == 0
    assert dev.read32(REGS.IRQ_STATUS) == 0  # stopping by hand raises no interrupt
    # a restart runs to completion and raises PE_DONE
    dev.write32(REGS.pe_reg(0, REGS.PE_CTRL), REGS.PE_CTRL_START)
    dev.run_until_idle()
    assert pe_reg(dev, 0, REGS.PE_STATUS) == REGS.PE_STATUS_DONE


def test_fault_pe_is_the_watchdog_path():
    dev = Device(SPEC)
    start(dev, 0, [ISA.SemWait(queue=0, sem=0)] + [ISA.End()])
    dev.fault_pe(0, ISA.ERR_WATCHDOG)
    assert pe_reg(dev, 0, REGS.PE_ERROR_CODE) == ISA.ERR_WATCHDOG
    assert dev.read32(REGS.PERF_ERRORS) == 1


def test_perf_counters_after_a_run():
    m, n, k = 16, 8, 32
    prog = [
        ISA.Load(n0=m * k, n1=1, n2=1, sram_addr=0),
        ISA.Load(n0=k * n, n1=1, n2=1, dram_offset=4096, sram_addr=4096),
        ISA.SemSignal(queue=0, sem=0),
        ISA.SemWait(queue=1, sem=0),
        ISA.Matmul(dtype=DT["int8"], m=m, n=n, k=k, a_addr=0, b_addr=4096, c_addr=8192,
                   a_stride=k, b_stride=n, c_stride=4 * n),
        ISA.SemSignal(queue=1, sem=1),
        ISA.SemWait(queue=2, sem=1),
        ISA.Store(n0=4 * n * m, n1=1, n2=1, dram_offset=65536, sram_addr=8192),
        ISA.End(),
    ]
    dev, tl = run_program(SPEC, {0: prog}, {})
    stats = tl.pes[0]
    assert pe_reg(dev, 0, REGS.PE_PERF_INSTRS) == len(prog)
    assert pe_reg(dev, 0, REGS.PE_PERF_MACS_LO) == m * n * k
    assert pe_reg(dev, 0, REGS.PE_PERF_DRAM_BYTES) == m * k + k * n + 4 * m * n
    assert pe_reg(dev, 0, REGS.PE_PERF_CYCLES) == stats.cycles == tl.cycles > 0
    rows, cols, depth = SPEC.pe.mac.rows, SPEC.pe.mac.cols, SPEC.pe.mac.pipeline_depth
    assert pe_reg(dev, 0, REGS.PE_PERF_MAC_BUSY) == (m // rows) * (n // cols) * (k + depth)
    assert pe_reg(dev, 0, REGS.PE_PERF_LOAD_BUSY) == stats.load_busy > 0
    assert pe_reg(dev, 0, REGS.PE_PERF_STORE_BUSY) == stats.store_busy > 0
    assert pe_reg(dev, 0, REGS.PE_PERF_VECTOR_BUSY) == 0
    assert dev.read32(REGS.PERF_CYCLES_LO) == dev.cycle == tl.cycles


def test_external_dram_buffer_is_shared():
    buf = bytearray(SPEC.dram_bytes)
    dev = Device(SPEC, dram=buf)
    dev.write_dram(100, b"abc")
    assert buf[100:103] == b"abc"
    buf[200:202] = b"xy"
    assert dev.read_dram(200, 2) == b"xy"
    with pytest.raises(ValueError, match="must hold"):
        Device(SPEC, dram=bytearray(16))


def test_host_access_errors_are_clear():
    dev = Device(SPEC)
    with pytest.raises(ValueError, match="aligned"):
        dev.read32(3)
    with pytest.raises(ValueError, match="DRAM"):
        dev.read_dram(SPEC.dram_bytes - 1, 2)
    assert dev.read32(0xFFFC) == 0  # unmapped but inside the BAR


def test_programs_are_predecoded_once():
    from hw.model import program

    blob = ISA.encode_program([ISA.SemSignal(queue=0, sem=0), ISA.End()])
    first = program.predecode(SPEC, blob)
    assert program.predecode(SPEC, bytes(blob)) is first
    assert [op.name for op in first] == ["SEM_SIGNAL", "END"]
