"""A PE's execution core: instruction fetch, dispatch, the three queues and their units.

The dispatcher fetches the 32-byte word at ``PROG_BASE + 32 * pc`` (four 8-byte DRAM
reads, no prefetch), runs the static checks of ``checks.py``, and pushes the instruction
with its pc into the load, compute or store queue (``pe.queues.depth`` entries each),
stalling while that queue is full. BARRIER and END wait until every queue is empty and
idle. Each queue's executor takes its head, runs it on its unit (DMA load, MAC array or
vector unit, DMA store) or on the semaphores, and takes the next one when it finishes.

The core is held in reset by its PE between runs (START, STOP, RESET, and after an error),
which drops the queues; the PE keeps the registers. ``fault`` pulses with ``fault_code``
and ``fault_pc`` on the first error; ``finished`` pulses at END.

DEADLOCK is detected when the dispatcher cannot move (a full queue, or END/BARRIER waiting
for the queues) and every queue is either empty or waits on a zero semaphore with nothing
running, or when a barrier waits on a PE that is not running; its ERROR_PC is the pc of the
instruction the dispatcher holds. Not modelled: instruction prefetch, bank conflicts.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

import gen
from hw.rtl.checks import Checker
from hw.rtl.common import DATA_BITS, dram_port, sram_word_bits
from hw.rtl.dma import Dma
from hw.rtl.mac import MacArray
from hw.rtl.vector import VectorUnit
from hw.spec import Spec

PC_BITS = 32
ENTRY_BITS = 256 + PC_BITS
SEM_BITS = 16

# SRAM ports the core needs: (name, kind) in the order the PE creates them.
SRAM_READS = ("gather", "store", "a_lo", "a_hi", "b_lo", "b_hi", "c", "s1", "s2")
SRAM_WRITES = ("load", "mac", "vec")


class PeCore(wiring.Component):
    def __init__(self, spec: Spec, pe_index: int):
        self.spec = spec
        self.pe_index = pe_index
        wbits = sram_word_bits(spec)
        ports = {
            "go": In(1),
            "prog_base": In(64),
            "prog_len": In(32),
            "win_base": In(64),
            "win_size": In(64),
            "pc": Out(PC_BITS),
            "fault": Out(1),
            "fault_code": Out(4),
            "fault_pc": Out(PC_BITS),
            "fault_counted": Out(1),  # the faulting instruction counts as dispatched
            "finished": Out(1),
            "barrier_wait": Out(1),
            "barrier_mask": Out(16),
            "barrier_release": In(1),
            "pes_running": In(16),
            # perf events
            "ev_instr": Out(1),
            "ev_mac_busy": Out(1),
            "ev_vec_busy": Out(1),
            "ev_load_busy": Out(1),
            "ev_store_busy": Out(1),
            "ev_bytes": Out(5),
            "ev_macs": Out(48),
            "fetch": Out(dram_port()),
            "load": Out(dram_port()),
            "store": Out(dram_port()),
        }
        for i in range(8):
            ports[f"arg{i}"] = In(64)
        for name in SRAM_READS:
            ports[f"rd_{name}_addr"] = Out(wbits)
            ports[f"rd_{name}_en"] = Out(1, init=1)
            ports[f"rd_{name}_data"] = In(DATA_BITS)
        for name in SRAM_WRITES:
            ports[f"wr_{name}_addr"] = Out(wbits)
            ports[f"wr_{name}_data"] = Out(DATA_BITS)
            ports[f"wr_{name}_en"] = Out(DATA_BITS // 8)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        g = gen.build(spec)
        isa, lay = g.isa, g.layouts
        ops, err = isa.OPCODES, isa.ERRORS
        args = Array(getattr(self, f"arg{i}") for i in range(8))

        # ---- units ----
        m.submodules.ld = ld = Dma(spec, store=False)
        m.submodules.st = st = Dma(spec, store=True)
        m.submodules.mac = mac = MacArray(spec)
        m.submodules.vec = vec = VectorUnit(spec)
        wiring.connect(m, wiring.flipped(self.load), ld.dram)
        wiring.connect(m, wiring.flipped(self.store), st.dram)
        for dma in (ld, st):
            m.d.comb += [dma.win_base.eq(self.win_base), dma.win_size.eq(self.win_size)]
        m.d.comb += [
            self.rd_gather_addr.eq(ld.rd_addr), self.rd_gather_en.eq(ld.rd_en),
            ld.rd_data.eq(self.rd_gather_data),
            self.wr_load_addr.eq(ld.wr_addr), self.wr_load_data.eq(ld.wr_data),
            self.wr_load_en.eq(ld.wr_en),
            self.rd_store_addr.eq(st.rd_addr), self.rd_store_en.eq(st.rd_en),
            st.rd_data.eq(self.rd_store_data),
            self.wr_mac_addr.eq(mac.w_addr), self.wr_mac_data.eq(mac.w_data),
            self.wr_mac_en.eq(mac.w_en),
            self.wr_vec_addr.eq(vec.w_addr), self.wr_vec_data.eq(vec.w_data),
            self.wr_vec_en.eq(vec.w_en),
            self.rd_s1_addr.eq(vec.s1_addr), vec.s1_data.eq(self.rd_s1_data),
            self.rd_s2_addr.eq(vec.s2_addr), vec.s2_data.eq(self.rd_s2_data),
        ]
        for p in ("a_lo", "a_hi", "b_lo", "b_hi", "c"):
            m.d.comb += [getattr(self, f"rd_{p}_addr").eq(getattr(mac, f"{p}_addr")),
                         getattr(mac, f"{p}_data").eq(getattr(self, f"rd_{p}_data"))]
        m.d.comb += [
            self.ev_mac_busy.eq(mac.busy), self.ev_vec_busy.eq(vec.busy),
            self.ev_load_busy.eq(ld.busy), self.ev_store_busy.eq(st.busy),
            self.ev_bytes.eq(ld.bytes + st.bytes),
        ]

        # ---- queues and semaphores ----
        depth = spec.pe.queues.depth
        fifos = [SyncFIFOBuffered(width=ENTRY_BITS, depth=depth) for _ in range(3)]
        for i, q in enumerate(fifos):
            m.submodules[f"q{i}"] = q
        nsem = spec.pe.queues.num_semaphores
        sems = Array(Signal(SEM_BITS, name=f"sem{i}") for i in range(nsem))
        sem_inc = [Signal(name=f"sem_inc{q}") for q in range(3)]
        sem_dec = [Signal(name=f"sem_dec{q}") for q in range(3)]
        sem_idx = [Signal(4, name=f"sem_idx{q}") for q in range(3)]
        for s in range(nsem):
            delta = sum((sem_inc[q] & (sem_idx[q] == s)).as_unsigned() for q in range(3))
            delta = delta - sum((sem_dec[q] & (sem_idx[q] == s)).as_unsigned() for q in range(3))
            m.d.sync += sems[s].eq(sems[s] + delta)

        exec_fault = Signal()
        exec_fault_pc = Signal(PC_BITS)
        q_idle = [Signal(name=f"q_idle{q}") for q in range(3)]     # nothing queued or running
        q_blocked = [Signal(name=f"q_blocked{q}") for q in range(3)]  # waits on a zero sem
        want = [Signal(name=f"want{q}") for q in range(3)]          # head waits on sem_idx[q]
        granted_before = []
        head_pcs = []
        units = {0: [(ops["LOAD"], ld)], 1: [(ops["MATMUL"], mac), (ops["VECTOR"], vec)],
                 2: [(ops["STORE"], st)]}
        for qi, fifo in enumerate(fifos):
            entry = Signal(ENTRY_BITS, name=f"head{qi}")
            word = entry[0:256]
            epc = entry[256:]
            head_pcs.append(epc)
            op = word[0:8]
            sem_f = lay.SemWait(word)
            m.d.comb += sem_idx[qi].eq(sem_f.sem)
            # One decrement per semaphore per cycle: lower queue numbers go first.
            clash = Const(0, 1)
            for other in granted_before:
                clash = clash | (other[0] & (other[1] == sem_f.sem))
            can = want[qi] & (sems[sem_f.sem] > 0) & ~clash
            granted_before.append((want[qi], sem_f.sem))
            with m.FSM(name=f"exec{qi}"):
                with m.State("IDLE"):
                    # level, not r_rdy: a just-written entry takes cycles to reach r_rdy.
                    m.d.comb += [fifo.r_en.eq(1), q_idle[qi].eq(fifo.level == 0)]
                    with m.If(fifo.r_rdy):
                        m.d.sync += entry.eq(fifo.r_data)
                        m.next = "HEAD"
                with m.State("HEAD"):
                    with m.Switch(op):
                        with m.Case(ops["SEM_WAIT"]):
                            m.d.comb += [want[qi].eq(1), q_blocked[qi].eq(sems[sem_f.sem] == 0)]
                            with m.If(can):
                                m.d.comb += sem_dec[qi].eq(1)
                                m.next = "IDLE"
                        with m.Case(ops["SEM_SIGNAL"]):
                            m.d.comb += sem_inc[qi].eq(1)
                            m.next = "IDLE"
                        for code, unit in units[qi]:
                            with m.Case(code):
                                m.d.comb += [unit.start.eq(1), unit.word.eq(word)]
                                if isinstance(unit, Dma):
                                    m.d.comb += unit.arg_base.eq(args[lay.Load(word).base])
                                if unit is mac:
                                    f = lay.Matmul(word)
                                    m.d.comb += self.ev_macs.eq(f.m * f.n * f.k)
                                m.next = "RUN"
                with m.State("RUN"):
                    done = Signal(name=f"done{qi}")
                    for code, unit in units[qi]:
                        with m.If(op == code):
                            m.d.comb += done.eq(unit.done)
                            if isinstance(unit, Dma):
                                with m.If(unit.done & unit.error):
                                    m.d.comb += [exec_fault.eq(1), exec_fault_pc.eq(epc)]
                    with m.If(done):
                        m.next = "IDLE"

        # ---- dispatcher ----
        pc = Signal(PC_BITS)
        m.d.comb += self.pc.eq(pc)
        word = Signal(256)
        m.submodules.check = chk = Checker(spec, self.pe_index)
        m.d.comb += [
            chk.word.eq(word),
            chk.arg_base.eq(args[lay.Load(word).base]),
            chk.win_base.eq(self.win_base),
            chk.win_size.eq(self.win_size),
        ]
        fault = Signal()
        fault_code = Signal(4)
        nreq = Signal(3)
        nresp = Signal(3)
        fetch_addr = Signal(72)
        m.d.comb += fetch_addr.eq(self.prog_base + pc * 32)
        win_end = self.win_base + self.win_size
        stalled = Signal()
        drained = Signal()
        m.d.comb += drained.eq(q_idle[0] & q_idle[1] & q_idle[2])
        target = Signal(2)
        with m.Switch(word[0:8]):
            with m.Case(ops["LOAD"]):
                m.d.comb += target.eq(0)
            with m.Case(ops["STORE"]):
                m.d.comb += target.eq(2)
            with m.Case(ops["SEM_WAIT"], ops["SEM_SIGNAL"]):
                m.d.comb += target.eq(lay.SemWait(word).queue)
            with m.Default():
                m.d.comb += target.eq(1)
        w_rdy = Array(q.w_rdy for q in fifos)

        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += pc.eq(0)
                    m.next = "FETCH"
            with m.State("FETCH"):
                with m.If(pc >= self.prog_len):
                    # What was dispatched before the overrun finishes first.
                    with m.If(drained):
                        m.d.comb += [fault.eq(1), fault_code.eq(err["PC_OVERRUN"])]
                with m.Elif(self.prog_base[0:3] != 0):
                    m.d.comb += [fault.eq(1), fault_code.eq(err["MISALIGNED"])]
                with m.Elif((fetch_addr < self.win_base) | (fetch_addr + 32 > win_end)
                            | (fetch_addr + 32 > spec.dram_bytes)):
                    m.d.comb += [fault.eq(1), fault_code.eq(err["DRAM_RANGE"])]
                with m.Else():
                    m.d.sync += [nreq.eq(0), nresp.eq(0)]
                    m.next = "WORDS"
            with m.State("WORDS"):
                m.d.comb += [
                    self.fetch.req_valid.eq(nreq < 4),
                    self.fetch.req_addr.eq(fetch_addr + nreq * 8),
                ]
                with m.If(self.fetch.req_valid & self.fetch.req_ready):
                    m.d.sync += nreq.eq(nreq + 1)
                with m.If(self.fetch.resp_valid):
                    m.d.sync += [nresp.eq(nresp + 1),
                                 word.word_select(nresp[0:2], 64).eq(self.fetch.resp_data)]
                    with m.If(nresp == 3):
                        m.next = "DECODE"
            with m.State("DECODE"):
                op = word[0:8]
                with m.If(chk.code != 0):
                    m.d.comb += [fault.eq(1), fault_code.eq(chk.code)]
                    # Like the model, an execution unit's fault (an operand's, or a field its
                    # unit does not take) is raised by a dispatched instruction.
                    unit_op = ((op == ops["LOAD"]) | (op == ops["STORE"]) | (op == ops["MATMUL"])
                               | (op == ops["VECTOR"]))
                    with m.If((chk.code == err["MISALIGNED"]) | (chk.code == err["SRAM_RANGE"])
                              | (chk.code == err["DRAM_RANGE"])
                              | ((chk.code == err["BAD_FIELD"]) & unit_op)):
                        m.d.comb += [self.ev_instr.eq(1), self.fault_counted.eq(1)]
                with m.Elif(chk.nop):
                    m.d.comb += self.ev_instr.eq(1)
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Elif((op == ops["END"]) | (op == ops["BARRIER"])):
                    m.d.comb += stalled.eq(~drained)
                    with m.If(drained):
                        with m.If(op == ops["END"]):
                            m.d.comb += [self.finished.eq(1), self.ev_instr.eq(1)]
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "BARRIER"
                with m.Else():
                    m.d.comb += stalled.eq(~w_rdy[target])
                    with m.If(w_rdy[target]):
                        for qi, fifo in enumerate(fifos):
                            m.d.comb += fifo.w_data.eq(Cat(word, pc))
                            with m.If(target == qi):
                                m.d.comb += fifo.w_en.eq(1)
                        m.d.comb += self.ev_instr.eq(1)
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"
            with m.State("BARRIER"):
                mask = lay.Barrier(word).pe_mask
                m.d.comb += [self.barrier_wait.eq(1), self.barrier_mask.eq(mask)]
                with m.If((mask & ~self.pes_running) != 0):
                    m.d.comb += [fault.eq(1), fault_code.eq(err["DEADLOCK"])]
                with m.Elif(self.barrier_release):
                    m.d.comb += self.ev_instr.eq(1)
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"

        dead = Signal()
        m.d.comb += dead.eq(stalled & (q_blocked[0] | q_blocked[1] | q_blocked[2])
                            & (q_idle[0] | q_blocked[0]) & (q_idle[1] | q_blocked[1])
                            & (q_idle[2] | q_blocked[2]))
        with m.If(exec_fault):
            m.d.comb += [self.fault.eq(1), self.fault_code.eq(err["DRAM_RANGE"]),
                         self.fault_pc.eq(exec_fault_pc)]
        with m.Elif(fault):
            m.d.comb += [self.fault.eq(1), self.fault_code.eq(fault_code),
                         self.fault_pc.eq(pc)]
        with m.Elif(dead):
            m.d.comb += [self.fault.eq(1), self.fault_code.eq(err["DEADLOCK"])]
            # ERROR_PC: the first queue head that waits on a zero semaphore.
            for qi in reversed(range(3)):
                with m.If(q_blocked[qi]):
                    m.d.comb += self.fault_pc.eq(head_pcs[qi])
        return m
