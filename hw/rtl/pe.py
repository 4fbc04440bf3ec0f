"""One processing element: its register block, its SRAM and its execution core.

The registers follow the generated map (``gen.build(spec).regs.PE``): rw registers hold
what the firmware writes, ro registers show the PE's state and perf counters, CTRL's bits
are pulses. START clears STATUS, ERROR_CODE, ERROR_PC, PC, the semaphores and the perf
counters, sets BUSY and starts the core; STOP stops the core and clears BUSY but keeps the
rest; RESET stops the core and clears everything but the rw registers and SRAM. The core
sits in a reset domain of its own, so stopping it drops its queues (``flush`` tells the
DRAM arbiter to drop the replies of reads still in flight).

SRAM is one ``lib.memory.Memory`` of 64-bit words with byte enables, with a read port per
reader and a write port per writer (the spec's banks are not modelled: no conflicts).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.common import DATA_BITS, dram_port
from hw.rtl.core import SRAM_READS, SRAM_WRITES, PeCore
from hw.spec import Spec


class Pe(wiring.Component):
    """Ports: the PE's slice of the register bus (``reg_*``, ``rdata`` combinational),
    the three DRAM requesters with ``flush``, barrier wires, ``busy`` and event pulses."""

    def __init__(self, spec: Spec, index: int):
        self.spec = spec
        self.index = index
        super().__init__({
            "reg_addr": In(8),
            "reg_we": In(1),
            "reg_wdata": In(32),
            "reg_rdata": Out(32),
            "fetch": Out(dram_port()),
            "load": Out(dram_port()),
            "store": Out(dram_port()),
            "flush": Out(1),
            "busy": Out(1),
            "ev_done": Out(1),
            "ev_error": Out(1),
            "barrier_wait": Out(1),
            "barrier_mask": Out(16),
            "barrier_release": In(1),
            "pes_running": In(16),
            "reset_all": In(1),
            # Test access to SRAM, for benches (a real chip would reach it by DMA).
            "dbg_addr": In(range(spec.sram_bytes_per_pe // 8)),
            "dbg_we": In(1),
            "dbg_wdata": In(DATA_BITS),
            "dbg_rdata": Out(DATA_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        regs = gen.build(spec).regs
        core = PeCore(spec, self.index)
        core_rst = Signal()
        m.submodules.core = ResetInserter(core_rst)(core)
        m.d.comb += self.flush.eq(core_rst)
        for name in ("fetch", "load", "store"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(core, name))

        # ---- SRAM ----
        words = spec.sram_bytes_per_pe // 8
        m.submodules.sram = sram = Memory(shape=DATA_BITS, depth=words, init=[])
        for name in SRAM_READS:
            port = sram.read_port()
            m.d.comb += [port.addr.eq(getattr(core, f"rd_{name}_addr")),
                         port.en.eq(getattr(core, f"rd_{name}_en")),
                         getattr(core, f"rd_{name}_data").eq(port.data)]
        for name in SRAM_WRITES:
            port = sram.write_port(granularity=8)
            m.d.comb += [port.addr.eq(getattr(core, f"wr_{name}_addr")),
                         port.data.eq(getattr(core, f"wr_{name}_data")),
                         port.en.eq(getattr(core, f"wr_{name}_en"))]

        dbg_rd = sram.read_port()
        dbg_wr = sram.write_port(granularity=8)
        m.d.comb += [dbg_rd.addr.eq(self.dbg_addr), self.dbg_rdata.eq(dbg_rd.data),
                     dbg_wr.addr.eq(self.dbg_addr), dbg_wr.data.eq(self.dbg_wdata),
                     dbg_wr.en.eq(self.dbg_we.replicate(8))]

        # ---- registers ----
        rw = {}
        for name, reg in regs.PE.items():
            if reg.access == "rw":
                for i in range(reg.count):
                    rw[reg.offset + i * reg.stride] = Signal(32, init=reg.reset,
                                                             name=f"r_{name}_{i}".lower())

        def rw_reg(name, i=0):
            r = regs.PE[name]
            return rw[r.offset + i * r.stride]

        def wide(lo, hi, i=0):
            return rw_reg(hi, i).as_unsigned() << 32 | rw_reg(lo, i)

        m.d.comb += [
            core.prog_base.eq(wide("PROG_BASE_LO", "PROG_BASE_HI")),
            core.prog_len.eq(rw_reg("PROG_LEN")),
            core.win_base.eq(wide("WIN_BASE_LO", "WIN_BASE_HI")),
            core.win_size.eq(wide("WIN_SIZE_LO", "WIN_SIZE_HI")),
            core.barrier_release.eq(self.barrier_release),
            core.pes_running.eq(self.pes_running),
            self.barrier_wait.eq(core.barrier_wait),
            self.barrier_mask.eq(core.barrier_mask),
        ]
        for i in range(8):
            m.d.comb += getattr(core, f"arg{i}").eq(wide("ARG_LO", "ARG_HI", i))

        busy, done, error = Signal(), Signal(), Signal()
        err_code, err_pc, pc = Signal(32), Signal(32), Signal(32)
        perf = {n: Signal(32, name=n.lower()) for n in (
            "PERF_CYCLES", "PERF_INSTRS", "PERF_MAC_BUSY", "PERF_LOAD_BUSY",
            "PERF_STORE_BUSY", "PERF_VECTOR_BUSY", "PERF_DRAM_BYTES")}
        macs = Signal(64)
        m.d.comb += self.busy.eq(busy)
        go = Signal()
        m.d.sync += go.eq(0)
        m.d.comb += core.go.eq(go)

        with m.If(busy):
            m.d.sync += [
                pc.eq(core.pc),
                perf["PERF_CYCLES"].eq(perf["PERF_CYCLES"] + 1),
                perf["PERF_INSTRS"].eq(perf["PERF_INSTRS"] + core.ev_instr),
                perf["PERF_MAC_BUSY"].eq(perf["PERF_MAC_BUSY"] + core.ev_mac_busy),
                perf["PERF_VECTOR_BUSY"].eq(perf["PERF_VECTOR_BUSY"] + core.ev_vec_busy),
                perf["PERF_LOAD_BUSY"].eq(perf["PERF_LOAD_BUSY"] + core.ev_load_busy),
                perf["PERF_STORE_BUSY"].eq(perf["PERF_STORE_BUSY"] + core.ev_store_busy),
                perf["PERF_DRAM_BYTES"].eq(perf["PERF_DRAM_BYTES"] + core.ev_bytes),
                macs.eq(macs + core.ev_macs),
            ]
            with m.If(core.fault):
                m.d.comb += [core_rst.eq(1), self.ev_done.eq(1), self.ev_error.eq(1)]
                m.d.sync += [busy.eq(0), done.eq(1), error.eq(1), err_code.eq(core.fault_code),
                             err_pc.eq(core.fault_pc),
                             pc.eq(Mux(core.fault_counted, core.fault_pc + 1, core.pc))]
            with m.Elif(core.finished):
                m.d.comb += [core_rst.eq(1), self.ev_done.eq(1)]
                m.d.sync += [busy.eq(0), done.eq(1), pc.eq(core.pc)]

        def clear_state():
            m.d.sync += [done.eq(0), error.eq(0), err_code.eq(0), err_pc.eq(0), pc.eq(0),
                         macs.eq(0)]
            m.d.sync += [p.eq(0) for p in perf.values()]

        ctrl = regs.PE["CTRL"].fields
        wr_ctrl = self.reg_we & (self.reg_addr == regs.PE_CTRL)
        with m.If(self.reset_all | (wr_ctrl & self.reg_wdata[ctrl["RESET"][0]])):
            m.d.comb += core_rst.eq(1)
            m.d.sync += busy.eq(0)
            clear_state()
        with m.Elif(wr_ctrl & self.reg_wdata[ctrl["STOP"][0]]):
            m.d.comb += core_rst.eq(1)
            m.d.sync += busy.eq(0)
        with m.Elif(wr_ctrl & self.reg_wdata[ctrl["START"][0]]):
            m.d.comb += core_rst.eq(1)
            m.d.sync += [busy.eq(1), go.eq(1)]
            clear_state()

        with m.If(self.reg_we):
            with m.Switch(self.reg_addr):
                for off, sig in rw.items():
                    with m.Case(off):
                        m.d.sync += sig.eq(self.reg_wdata)

        status = regs.PE["STATUS"].fields
        ro = {
            regs.PE_STATUS: (busy << status["BUSY"][0]) | (done << status["DONE"][0])
            | (error << status["ERROR"][0]) | (core.barrier_wait << status["BARRIER"][0]),
            regs.PE_ERROR_CODE: err_code,
            regs.PE_ERROR_PC: err_pc,
            regs.PE_PC: pc,
            regs.PE["PERF_MACS_LO"].offset: macs[0:32],
            regs.PE["PERF_MACS_HI"].offset: macs[32:64],
        }
        for name, sig in perf.items():
            ro[regs.PE[name].offset] = sig
        with m.Switch(self.reg_addr):
            for off, sig in rw.items():
                with m.Case(off):
                    m.d.comb += self.reg_rdata.eq(sig)
            for off, val in ro.items():
                with m.Case(off):
                    m.d.comb += self.reg_rdata.eq(val)
        return m
