"""The NPU as a device: BAR registers, DRAM, per-PE SRAM and the cycle model behind them.

`Device` is what the firmware and the driver talk to. Registers follow the spec's register
map (`gen.build(spec).regs`) with the behaviour of the RTL: capability registers publish
the spec's figures, read-only registers ignore writes, IRQ_STATUS is write-one-to-clear,
DOORBELL and RESET are write-only and read 0, and PE CTRL starts, stops or resets a PE as
docs/isa.md says. Time moves only in `advance`, which runs the PEs' schedule
(`hw.model.schedule`) and applies instruction effects (`hw.model.execute`).

Not modelled: the command processor (the firmware runs outside and uses `raise_irq`,
`count_command` and `fault_pe` for the on-device state a host cannot write), instruction
fetch after START (the program is read from DRAM when the PE starts), and bus timing
(register and memory accesses take no device time).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hw.model import program as progmod
from hw.model.execute import Context, Executor
from hw.model.schedule import Machine, PEState
from hw.model.timeline import Timeline, build
from hw.spec import Spec

log = logging.getLogger(__name__)

MASK32 = 0xFFFF_FFFF
BAR_BYTES = 0x10000
# Program words are scanned for the first END or illegal opcode this many at a time, so a
# huge PROG_LEN costs only as much decoding as the program the dispatcher can reach.
_SCAN_WORDS = 4096


class Device:
    """One emulated NPU.

    `exact` selects exact-mode MATMUL accumulation; `dram` is an optional external buffer
    of at least `spec.dram_bytes` bytes (shared memory in the daemon), otherwise DRAM is
    a zeroed numpy array whose pages the OS maps only when written; `trace` records the
    slices `trace_json` returns.
    """

    def __init__(self, spec: Spec, *, exact: bool = False,
                 dram: memoryview | bytearray | None = None, trace: bool = False):
        self.spec = spec
        self.exact = exact
        self.lim = progmod.limits(spec)
        self.regs = self.lim.gen.regs
        size = spec.dram_bytes
        if dram is None:
            self.dram = np.zeros(size, dtype=np.uint8)
        else:
            buf = np.frombuffer(dram, dtype=np.uint8)
            if buf.size < size:
                raise ValueError(f"dram buffer must hold {size} bytes, got {buf.size}")
            if not buf.flags.writeable:
                raise ValueError("dram buffer must be writable")
            self.dram = buf[:size]
        self.sram = [np.zeros(spec.sram_bytes_per_pe, dtype=np.uint8)
                     for _ in range(spec.npu.num_pes)]
        self.executor = Executor(self.lim, self.dram, exact)
        self.machine = Machine(self.lim, self.executor.execute, self._on_stop, trace,
                               self.executor.bind)
        self.cycle = 0
        self._pe_base = self.regs.PE_BASE
        self._pe_stride = self.regs.PE_STRIDE
        self._global = _register_table(self.regs.GLOBAL)
        self._pe = _register_table(self.regs.PE)
        self._reset_registers()

    # registers

    def _reset_registers(self) -> None:
        self._gvals = {name: reg.reset for name, reg in self.regs.GLOBAL.items()}
        self._pvals = [
            {(name, i): reg.reset for name, reg in self.regs.PE.items() for i in range(reg.count)}
            for _ in range(self.spec.npu.num_pes)
        ]
        self.irq_status = 0
        self._doorbell = False
        self.perf_commands = 0
        self.perf_errors = 0

    def _locate(self, addr: int) -> tuple[int | None, tuple[str, str, int] | None]:
        if not isinstance(addr, int) or addr < 0 or addr >= BAR_BYTES or addr % 4:
            raise ValueError(f"BAR address must be a 4-byte aligned offset in [0, 0x{BAR_BYTES:x}),"
                             f" got {addr!r}")
        if addr < self._pe_base:
            return None, self._global.get(addr)
        pe, off = divmod(addr - self._pe_base, self._pe_stride)
        if pe >= self.spec.npu.num_pes:
            return None, None
        return pe, self._pe.get(off)

    def read32(self, addr: int) -> int:
        """Read the 32-bit register at BAR byte offset `addr` (unmapped offsets read 0)."""
        pe, reg = self._locate(addr)
        if reg is None:
            return 0
        name, access, i = reg
        if access == "wo":
            return 0
        if pe is None:
            return self._read_global(name) & MASK32
        return self._read_pe(pe, name, i) & MASK32

    def _read_global(self, name: str) -> int:
        if name == "IRQ_STATUS":
            return self.irq_status
        if name == "PERF_CYCLES_LO":
            return self.cycle
        if name == "PERF_CYCLES_HI":
            return self.cycle >> 32
        if name == "PERF_COMMANDS":
            return self.perf_commands
        if name == "PERF_ERRORS":
            return self.perf_errors
        return self._gvals[name]

    def _read_pe(self, p: int, name: str, i: int) -> int:
        st = self.machine.pes[p]
        r = self.regs
        if name == "STATUS":
            return (
                (r.PE_STATUS_BUSY if st.running else 0)
                | (r.PE_STATUS_DONE if st.done else 0)
                | (r.PE_STATUS_ERROR if st.error else 0)
                | (r.PE_STATUS_BARRIER if st.at_barrier else 0)
            )
        counters = {
            "ERROR_CODE": st.error,
            "ERROR_PC": st.error_pc,
            "PC": st.pc,
            "PERF_INSTRS": st.instrs,
            "PERF_MAC_BUSY": st.busy[1],
            "PERF_LOAD_BUSY": st.busy[0],
            "PERF_VECTOR_BUSY": st.busy[2],
            "PERF_STORE_BUSY": st.busy[3],
            "PERF_DRAM_BYTES": st.dram_bytes,
            "PERF_MACS_LO": st.macs,
            "PERF_MACS_HI": st.macs >> 32,
        }
        if name == "PERF_CYCLES":
            return ((self.cycle if st.running else st.end_t) - st.start_t) if st.started else 0
        if name in counters:
            return counters[name]
        return self._pvals[p][(name, i)]

    def write32(self, addr: int, value: int) -> None:
        """Write the 32-bit register at BAR byte offset `addr`; read-only ones ignore it."""
        pe, reg = self._locate(addr)
        value = int(value) & MASK32
        if reg is None:
            log.debug("write to unmapped BAR offset 0x%x ignored", addr)
            return
        name, access, i = reg
        if access == "ro":
            return
        if pe is None:
            self._write_global(name, access, value)
        elif name == "CTRL":
            self._control(pe, value)
        else:
            self._pvals[pe][(name, i)] = value

    def _write_global(self, name: str, access: str, value: int) -> None:
        if name == "IRQ_STATUS":
            self.irq_status &= ~value
        elif name == "DOORBELL":
            self._doorbell = True
        elif name == "RESET":
            if value & 1:
                self.reset()
        elif access == "rw":
            self._gvals[name] = value

    def _control(self, p: int, value: int) -> None:
        r = self.regs
        if value & r.PE_CTRL_RESET:
            self.machine.stop(p, self.cycle, clear=True)
        elif value & r.PE_CTRL_STOP:
            self.machine.stop(p, self.cycle, clear=False)
        if value & r.PE_CTRL_START:
            if self.machine.pes[p].running:
                log.warning("CTRL.START on PE %d, which is running, ignored", p)
                return
            self._start(p)

    def reset(self) -> None:
        """Global RESET: stop and clear every PE, reset the rings and interrupts."""
        for p in range(self.spec.npu.num_pes):
            self.machine.stop(p, self.cycle, clear=True)
        self._reset_registers()

    def _pe64(self, p: int, lo: str, hi: str, i: int = 0) -> int:
        v = self._pvals[p]
        return v[(lo, i)] | v[(hi, i)] << 32

    def _start(self, p: int) -> None:
        prog_base = self._pe64(p, "PROG_BASE_LO", "PROG_BASE_HI")
        prog_len = self._pvals[p][("PROG_LEN", 0)]
        win_base = self._pe64(p, "WIN_BASE_LO", "WIN_BASE_HI")
        win_size = self._pe64(p, "WIN_SIZE_LO", "WIN_SIZE_HI")
        nargs = self.regs.PE["ARG_LO"].count
        args = [self._pe64(p, "ARG_LO", "ARG_HI", i) for i in range(nargs)]
        ctx = Context(args, win_base, win_size, self.spec.dram_bytes, self.sram[p])
        wb = self.lim.gen.isa.WORD_BYTES
        if win_base <= prog_base < ctx.win_hi:
            fetch_limit = min(prog_len, (ctx.win_hi - prog_base) // wb)
        else:
            fetch_limit = 0
        words = self._reachable_words(prog_base, fetch_limit)
        prog = progmod.predecode(self.spec, self.dram[prog_base : prog_base + words * wb].tobytes())
        log.debug("PE %d start: %d words at 0x%x, cycle %d", p, prog_len, prog_base, self.cycle)
        self.machine.start(p, prog, prog_len, fetch_limit, ctx, self.cycle)

    def _reachable_words(self, base: int, limit: int) -> int:
        """Words up to and including the first END or illegal opcode (at most `limit`)."""
        isa = self.lim.gen.isa
        wb = isa.WORD_BYTES
        legal = np.zeros(256, dtype=bool)
        legal[list(isa.OPCODES.values())] = True
        end = isa.OPCODES["END"]
        done = 0
        while done < limit:
            n = min(_SCAN_WORDS, limit - done)
            ops = self.dram[base + done * wb : base + (done + n) * wb : wb]
            stop = np.flatnonzero((ops == end) | ~legal[ops])
            if stop.size:
                return done + int(stop[0]) + 1
            done += n
        return limit

    def _on_stop(self, pe: PEState, t: int) -> None:
        self.irq_status |= 1 << (self.regs.IRQ_STATUS_PE_DONE_SHIFT + pe.index)
        if pe.error:
            self.irq_status |= self.regs.IRQ_STATUS_ERROR
            self.perf_errors += 1

    # firmware-side hooks: on-device state the host registers cannot write

    def take_doorbell(self) -> bool:
        """True if DOORBELL was written since the last call (writes coalesce)."""
        rang, self._doorbell = self._doorbell, False
        return rang

    def irq_pending(self) -> bool:
        return bool(self.irq_status & self._gvals["IRQ_MASK"])

    def raise_irq(self, bits: int) -> None:
        """Set IRQ_STATUS bits, as the command processor does (e.g. IRQ_STATUS_CPL)."""
        self.irq_status |= bits & MASK32

    def count_command(self) -> None:
        """Count one processed command in PERF_COMMANDS."""
        self.perf_commands = (self.perf_commands + 1) & MASK32

    def fault_pe(self, pe: int, code: int) -> None:
        """Stop a running PE with `code` (the firmware's WATCHDOG), like any PE error."""
        self.machine.fault(pe, code, self.cycle)

    # memories

    def _range(self, what: str, addr: int, n: int, size: int) -> None:
        if addr < 0 or n < 0 or addr + n > size:
            raise ValueError(f"{what} access [{addr}, {addr + n}) must lie in [0, {size})")

    def read_dram(self, addr: int, n: int) -> bytes:
        self._range("DRAM", addr, n, self.dram.size)
        return self.dram[addr : addr + n].tobytes()

    def write_dram(self, addr: int, data: bytes) -> None:
        self._range("DRAM", addr, len(data), self.dram.size)
        self.dram[addr : addr + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def read_sram(self, pe: int, addr: int, n: int) -> bytes:
        self._range(f"PE {pe} SRAM", addr, n, self.spec.sram_bytes_per_pe)
        return self.sram[pe][addr : addr + n].tobytes()

    def write_sram(self, pe: int, addr: int, data: bytes) -> None:
        self._range(f"PE {pe} SRAM", addr, len(data), self.spec.sram_bytes_per_pe)
        self.sram[pe][addr : addr + len(data)] = np.frombuffer(data, dtype=np.uint8)

    # time

    def busy(self) -> bool:
        """True while any PE runs."""
        return self.machine.busy()

    def advance(self, max_cycles: int) -> int:
        """Run the PEs for up to `max_cycles` cycles; stops early once none is busy.

        Returns the cycles advanced. Idle time is not counted: with no PE running,
        nothing happens and 0 is returned.
        """
        m = self.machine
        if max_cycles <= 0 or not m.busy():
            return 0
        start = self.cycle
        limit = start + max_cycles
        m.run(limit)
        if m.busy():
            if m.next_event() is None:
                m.settle(max(self.cycle, m.now))
            else:
                self.cycle = limit
        if not m.busy():
            ends = [pe.end_t for pe in m.pes if pe.started]
            self.cycle = max(start, min(limit, max(ends, default=start)))
        return self.cycle - start

    def run_until_idle(self, chunk: int = 1 << 40) -> int:
        """Advance until no PE is busy; returns the cycles advanced."""
        total = 0
        while self.busy():
            total += self.advance(chunk)
        return total

    # statistics

    def timeline(self) -> Timeline:
        """Figures of the latest run of each PE that has run (and its trace when tracing)."""
        m = self.machine
        return build(self.lim, m.pes, m.channel_busy, m.slices, m.transfers, m.trace)

    @property
    def stats(self) -> Timeline:
        return self.timeline()

    def trace_json(self) -> dict[str, Any]:
        """Chrome/Perfetto trace of everything run since construction or `clear_trace`."""
        return self.timeline().trace_json()

    def clear_trace(self) -> None:
        self.machine.slices.clear()
        self.machine.transfers.clear()


def _register_table(block: dict) -> dict[int, tuple[str, str, int]]:
    """offset -> (name, access, index) for every word of a register block."""
    out = {}
    for name, reg in block.items():
        for i in range(reg.count):
            out[reg.offset + i * reg.stride] = (name, reg.access, i)
    return out
