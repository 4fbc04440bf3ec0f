"""The NPU top level: register bus, global registers, the PEs, barrier and DRAM arbiter.

Ports (all on the ``sync`` domain, ``clk``/``rst``):

* register bus (``valid we addr wdata`` in, ``ready rdata`` out), the protocol of
  ``hw.sim.bus``: one wait state, ``ready`` registered;
* one DRAM port shared by every requester (each PE's fetch, load and store), the protocol
  of ``hw.rtl.common`` plus ``dram_req_tag``/``dram_resp_tag``: the memory must echo a
  read's tag with its reply. A round-robin arbiter grants one request per cycle;
* ``irq`` (``IRQ_STATUS & IRQ_MASK`` non-zero), ``pe_busy``/``pe_done`` per PE, and
  ``doorbell`` (a pulse on any DOORBELL write).

Global registers follow the generated map. The capability registers read their reset
values; PERF_CYCLES counts every cycle since reset; PERF_ERRORS counts PE errors. There is
no command processor in the RTL (the firmware runs on the host side), so nothing here
reads the rings, PERF_COMMANDS stays 0 and IRQ_STATUS.CPL is never set by the hardware.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.common import DATA_BITS, DRAM_ADDR_BITS, check_rtl_spec
from hw.rtl.pe import Pe
from hw.spec import Spec

REQUESTERS = ("fetch", "load", "store")


def tag_bits(spec: Spec) -> int:
    return max(1, (len(REQUESTERS) * spec.npu.num_pes - 1).bit_length())


class Npu(wiring.Component):
    def __init__(self, spec: Spec):
        check_rtl_spec(spec)
        self.spec = spec
        n = spec.npu.num_pes
        tb = tag_bits(spec)
        super().__init__({
            "valid": In(1),
            "we": In(1),
            "addr": In(16),
            "wdata": In(32),
            "ready": Out(1),
            "rdata": Out(32),
            "dram_req_valid": Out(1),
            "dram_req_ready": In(1),
            "dram_req_we": Out(1),
            "dram_req_addr": Out(DRAM_ADDR_BITS),
            "dram_req_wdata": Out(DATA_BITS),
            "dram_req_wstrb": Out(DATA_BITS // 8),
            "dram_req_tag": Out(tb),
            "dram_resp_valid": In(1),
            "dram_resp_data": In(DATA_BITS),
            "dram_resp_tag": In(tb),
            "irq": Out(1),
            "pe_busy": Out(n),
            "pe_done": Out(n),
            "doorbell": Out(1),
            # Test access to the PEs' SRAM: word dbg_addr of PE dbg_pe; read data a cycle
            # later, writes at the edge.
            "dbg_pe": In(range(max(2, n))),
            "dbg_addr": In(range(spec.sram_bytes_per_pe // 8)),
            "dbg_we": In(1),
            "dbg_wdata": In(DATA_BITS),
            "dbg_rdata": Out(DATA_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        regs = gen.build(spec).regs
        n = spec.npu.num_pes
        pes = []
        for i in range(n):
            pe = Pe(spec, i)
            m.submodules[f"pe{i}"] = pe
            pes.append(pe)

        dbg_sel = Signal.like(self.dbg_pe)
        m.d.sync += dbg_sel.eq(self.dbg_pe)
        for i, pe in enumerate(pes):
            m.d.comb += [pe.dbg_addr.eq(self.dbg_addr), pe.dbg_wdata.eq(self.dbg_wdata),
                         pe.dbg_we.eq(self.dbg_we & (self.dbg_pe == i))]
            with m.If(dbg_sel == i):
                m.d.comb += self.dbg_rdata.eq(pe.dbg_rdata)

        # ---- register bus ----
        take = Signal()
        m.d.comb += take.eq(self.valid & self.ready)
        m.d.sync += self.ready.eq(self.valid & ~self.ready)
        stride_bits = (regs.PE_STRIDE - 1).bit_length()
        if regs.PE_STRIDE != 1 << stride_bits or regs.PE_BASE % regs.PE_STRIDE:
            raise ValueError("registers.pe_stride must be a power of two dividing pe_base")
        pe_sel = Signal(16)
        m.d.comb += pe_sel.eq((self.addr - regs.PE_BASE) >> stride_bits)
        in_pe = self.addr >= regs.PE_BASE
        rdata = Signal(32)
        for i, pe in enumerate(pes):
            hit = in_pe & (pe_sel == i)
            m.d.comb += [pe.reg_addr.eq(self.addr[0:stride_bits]),
                         pe.reg_wdata.eq(self.wdata),
                         pe.reg_we.eq(take & self.we & hit)]
            with m.If(hit):
                m.d.comb += rdata.eq(pe.reg_rdata)

        irq_status = Signal(32)
        irq_mask = Signal(32)
        cycles = Signal(64)
        errors = Signal(32)
        m.d.sync += cycles.eq(cycles + 1)
        storage = {}
        for name, reg in regs.GLOBAL.items():
            if reg.access == "rw" and name != "IRQ_MASK":
                storage[reg.offset] = Signal(32, init=reg.reset, name=name.lower())
        storage[regs.IRQ_MASK] = irq_mask
        reset_all = Signal()
        m.d.comb += [p.reset_all.eq(reset_all) for p in pes]

        with m.If(~in_pe):
            with m.Switch(self.addr):
                for name, reg in regs.GLOBAL.items():
                    with m.Case(reg.offset):
                        if reg.offset in storage:
                            m.d.comb += rdata.eq(storage[reg.offset])
                        elif name == "IRQ_STATUS":
                            m.d.comb += rdata.eq(irq_status)
                        elif name == "PERF_CYCLES_LO":
                            m.d.comb += rdata.eq(cycles[0:32])
                        elif name == "PERF_CYCLES_HI":
                            m.d.comb += rdata.eq(cycles[32:64])
                        elif name == "PERF_ERRORS":
                            m.d.comb += rdata.eq(errors)
                        elif reg.access == "ro":
                            m.d.comb += rdata.eq(reg.reset)
        m.d.sync += self.rdata.eq(rdata)

        done_bits = Cat(p.ev_done for p in pes)
        any_error = Signal()
        m.d.comb += any_error.eq(Cat(p.ev_error for p in pes).any())
        irq_f = regs.GLOBAL["IRQ_STATUS"].fields
        set_bits = Signal(32)
        m.d.comb += set_bits.eq((done_bits << irq_f["PE_DONE"][0])
                                | (any_error << irq_f["ERROR"][0]))
        clear_bits = Signal(32)
        wr = take & self.we & ~in_pe
        with m.If(wr & (self.addr == regs.IRQ_STATUS)):
            m.d.comb += clear_bits.eq(self.wdata)
        m.d.sync += irq_status.eq((irq_status & ~clear_bits) | set_bits)
        m.d.sync += errors.eq(errors + sum(p.ev_error.as_unsigned() for p in pes))
        m.d.comb += self.irq.eq((irq_status & irq_mask) != 0)
        with m.If(wr):
            with m.Switch(self.addr):
                for off, sig in storage.items():
                    with m.Case(off):
                        m.d.sync += sig.eq(self.wdata)
                with m.Case(regs.DOORBELL):
                    m.d.comb += self.doorbell.eq(1)
                with m.Case(regs.RESET):
                    with m.If(self.wdata[0]):
                        m.d.comb += reset_all.eq(1)
                        m.d.sync += [s.eq(0) for off, s in storage.items()
                                     if off != regs.IRQ_MASK]

        # ---- PE status, barrier ----
        running = Cat(p.busy for p in pes)
        m.d.comb += self.pe_busy.eq(running)
        pe_done = [Signal(name=f"pe_done{i}") for i in range(n)]
        for i, p in enumerate(pes):
            with m.If(p.ev_done):
                m.d.sync += pe_done[i].eq(1)
            with m.If(p.flush & ~p.ev_done):
                m.d.sync += pe_done[i].eq(0)
        m.d.comb += self.pe_done.eq(Cat(pe_done))
        waiting = Cat(p.barrier_wait for p in pes)
        for p in pes:
            m.d.comb += [
                p.pes_running.eq(running),
                p.barrier_release.eq(p.barrier_wait & ((p.barrier_mask[0:n] & ~waiting) == 0)),
            ]

        # ---- DRAM arbiter ----
        ports = [(p, getattr(p, r)) for p in pes for r in REQUESTERS]
        nports = len(ports)
        last = Signal(range(nports), init=nports - 1)
        grant = Signal(range(nports + 1), init=nports)
        # Round robin: the first requester after the last one granted.
        for k in reversed(range(1, nports + 1)):
            for i in range(nports):
                idx = (i + k) % nports
                with m.If((last == i) & ports[idx][1].req_valid & ~ports[idx][0].flush):
                    m.d.comb += grant.eq(idx)
        m.d.comb += self.dram_req_valid.eq(grant != nports)
        for idx, (pe, port) in enumerate(ports):
            with m.If(grant == idx):
                m.d.comb += [
                    self.dram_req_we.eq(port.req_we),
                    self.dram_req_addr.eq(port.req_addr),
                    self.dram_req_wdata.eq(port.req_wdata),
                    self.dram_req_wstrb.eq(port.req_wstrb),
                    self.dram_req_tag.eq(idx),
                    port.req_ready.eq(self.dram_req_ready),
                ]
                with m.If(self.dram_req_ready):
                    m.d.sync += last.eq(idx)
            # Reads in flight when the PE's core was reset: their replies are dropped.
            accepted = Signal(name=f"acc{idx}")
            replied = Signal(name=f"rep{idx}")
            m.d.comb += [
                accepted.eq((grant == idx) & self.dram_req_ready & ~port.req_we),
                replied.eq(self.dram_resp_valid & (self.dram_resp_tag == idx)),
            ]
            inflight = Signal(8, name=f"inflight{idx}")
            drop = Signal(8, name=f"drop{idx}")
            m.d.sync += inflight.eq(inflight + accepted - replied)
            m.d.comb += port.resp_data.eq(self.dram_resp_data)
            with m.If(pe.flush):
                m.d.sync += drop.eq(inflight + accepted - replied)
            with m.Elif(replied & (drop != 0)):
                m.d.sync += drop.eq(drop - 1)
            m.d.comb += port.resp_valid.eq(replied & (drop == 0))
        return m
