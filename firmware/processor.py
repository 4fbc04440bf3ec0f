"""The command processor: the device-side firmware that serves the command ring.

After a doorbell (or on any poll) it reads the commands between CMD_RING_HEAD and
CMD_RING_TAIL, checks each against the submitting context's DRAM window, queues RUN,
RUN_PES and FENCE on the PE runtime (`firmware.scheduler`), handles the other commands at once, and
writes completion records to the completion ring, raising IRQ_STATUS.CPL. A malformed
command completes with an error status; the firmware keeps serving.

Context 0 is the kernel's: it owns no window, may QUERY and RESET_PE any PE, and is the
only context that may CREATE_CONTEXT or DESTROY_CONTEXT another (the command's `context`
field names the context created or destroyed; the kernel driver issues both).

Not modelled: command timestamps, priorities, and a firmware clock separate from the
device cycles the bus reports.
"""

from __future__ import annotations

import logging
from collections import deque

from firmware.bus import Bus
from firmware.commands import (
    ARGS_PER_PE,
    COMMAND_BYTES,
    COMPLETION_BYTES,
    PE_ENTRY_BYTES,
    Command,
    Completion,
    Opcode,
    PeEntry,
    Query,
    Status,
)
from firmware.scheduler import NUM_ARG_REGS, Job, PeRuntime, read_arg_table
from hw.generated import isa, regs

log = logging.getLogger(__name__)

__all__ = ["CommandProcessor", "KERNEL_CONTEXT", "DEFAULT_BUDGET"]

KERNEL_CONTEXT = 0
DEFAULT_BUDGET = 10_000_000
_LEGAL_OPCODES = frozenset(isa.OPCODES.values())


class CommandProcessor:
    """Firmware state for one device; drive it with `poll()` and `run(cycles)`."""

    def __init__(self, bus: Bus, *, default_budget: int = DEFAULT_BUDGET):
        self.bus = bus
        self.num_pes = bus.read32(regs.CAP_NUM_PES)
        self.dram_bytes = bus.read32(regs.CAP_DRAM_MIB) << 20
        self.default_budget = default_budget
        self.commands = 0  # completed since start
        self.errors = 0  # completed with a status other than OK
        self._reset_state()

    def _reset_state(self) -> None:
        self.contexts: dict[int, tuple[int, int]] = {}  # id -> (window base, size)
        self.runtime = PeRuntime(self.bus, self.num_pes, self.default_budget)
        self.pending: deque[Completion] = deque()

    def reset(self) -> None:
        """Forget every context and job (after the host wrote the global RESET register)."""
        self._reset_state()

    # driving

    def poll(self) -> bool:
        """One service pass; True while jobs run or wait, or completions wait for room."""
        self.bus.take_doorbell()
        self._fetch()
        self._complete(self.runtime.service())
        self._flush()
        return self.runtime.pending() or bool(self.pending)

    def run(self, cycles: int) -> int:
        """Let the device run up to `cycles` cycles, stopping at the next watchdog deadline."""
        deadline = self.runtime.cycles_to_deadline()
        if deadline is not None:
            cycles = max(1, min(cycles, deadline))
        moved = self.bus.wait(cycles)
        self.runtime.now += moved
        return moved

    def idle(self) -> bool:
        return not self.runtime.pending() and not self.pending

    # command ring

    def _fetch(self) -> None:
        size = self.bus.read32(regs.CMD_RING_SIZE)
        if size == 0:
            return
        base = self.bus.read32(regs.CMD_RING_BASE_LO) | self.bus.read32(regs.CMD_RING_BASE_HI) << 32
        head = self.bus.read32(regs.CMD_RING_HEAD) % size
        tail = self.bus.read32(regs.CMD_RING_TAIL) % size
        while head != tail:
            raw = self.bus.read_mem(base + head * COMMAND_BYTES, COMMAND_BYTES)
            head = (head + 1) % size
            self.bus.write32(regs.CMD_RING_HEAD, head)
            self._handle(Command.unpack(raw))

    def _handle(self, cmd: Command) -> None:
        try:
            op = Opcode(cmd.opcode)
        except ValueError:
            log.warning("ctx %d tag %d: unknown command opcode 0x%02x", cmd.context, cmd.tag,
                        cmd.opcode)
            self._complete([Completion(cmd.tag, cmd.context, Status.BAD_OPCODE)])
            return
        if op in (Opcode.CREATE_CONTEXT, Opcode.DESTROY_CONTEXT):
            self._complete(self._context_command(op, cmd))
            return
        if cmd.context != KERNEL_CONTEXT and cmd.context not in self.contexts:
            self._complete([Completion(cmd.tag, cmd.context, Status.BAD_CONTEXT)])
            return
        handler = {
            Opcode.LOAD_PROGRAM: self._load_program,
            Opcode.RUN: self._run,
            Opcode.RUN_PES: self._run_pes,
            Opcode.FENCE: self._fence,
            Opcode.RESET_PE: self._reset_pe,
            Opcode.QUERY: self._query,
        }[op]
        self._complete(handler(cmd))

    # commands; each returns the completions it produces now

    def _context_command(self, op: Opcode, cmd: Command) -> list[Completion]:
        ctx = cmd.context
        if op == Opcode.DESTROY_CONTEXT:
            if ctx not in self.contexts:
                return [Completion(cmd.tag, ctx, Status.BAD_CONTEXT)]
            out = self.runtime.drop_context(ctx)
            del self.contexts[ctx]
            return out + [Completion(cmd.tag, ctx, Status.OK)]
        base, size = cmd.args[0], cmd.args[1]
        if ctx == KERNEL_CONTEXT or ctx in self.contexts:
            return [Completion(cmd.tag, ctx, Status.BAD_CONTEXT)]
        if size == 0 or base + size > self.dram_bytes:
            return [Completion(cmd.tag, ctx, Status.BAD_ADDRESS)]
        for other, (b, s) in self.contexts.items():
            if base < b + s and b < base + size:
                log.warning("ctx %d: window overlaps context %d's", ctx, other)
                return [Completion(cmd.tag, ctx, Status.BAD_ADDRESS)]
        self.contexts[ctx] = (base, size)
        self.runtime.add_context(ctx)
        return [Completion(cmd.tag, ctx, Status.OK)]

    def _inside(self, ctx: int, addr: int, n: int) -> bool:
        if ctx == KERNEL_CONTEXT:
            return False
        base, size = self.contexts[ctx]
        return base <= addr and addr + n <= base + size

    def _check_program(self, cmd: Command, addr: int, length: int) -> Completion | None:
        if length == 0 or addr % isa.WORD_BYTES:
            return Completion(cmd.tag, cmd.context, Status.BAD_ARGUMENT)
        if not self._inside(cmd.context, addr, length * isa.WORD_BYTES):
            return Completion(cmd.tag, cmd.context, Status.BAD_ADDRESS)
        return None

    def _load_program(self, cmd: Command) -> list[Completion]:
        """Check a program in place: range, alignment and that every opcode is legal.

        The value of the completion is the index of the first END (the program's length
        up to it); an illegal opcode completes BAD_ARGUMENT with ILLEGAL_OPCODE at its pc.
        """
        addr, length = cmd.args[0], cmd.args[1]
        bad = self._check_program(cmd, addr, length)
        if bad:
            return [bad]
        blob = self.bus.read_mem(addr, length * isa.WORD_BYTES)
        end = None
        for pc in range(length):
            opcode = blob[pc * isa.WORD_BYTES]
            if opcode not in _LEGAL_OPCODES:
                return [Completion(cmd.tag, cmd.context, Status.BAD_ARGUMENT,
                                   error_code=isa.ERR_ILLEGAL_OPCODE, error_pc=pc)]
            if end is None and opcode == isa.OPCODES["END"]:
                end = pc
        if end is None:
            return [Completion(cmd.tag, cmd.context, Status.BAD_ARGUMENT,
                               error_code=isa.ERR_PC_OVERRUN, error_pc=length)]
        return [Completion(cmd.tag, cmd.context, Status.OK, value=end + 1)]

    def _run(self, cmd: Command) -> list[Completion]:
        addr, length, mask, table, budget = cmd.args[:5]
        if cmd.context == KERNEL_CONTEXT:
            return [Completion(cmd.tag, cmd.context, Status.BAD_CONTEXT)]
        bad = self._check_program(cmd, addr, length)
        if bad:
            return [bad]
        if mask >> self.num_pes:
            return [Completion(cmd.tag, cmd.context, Status.BAD_PE_MASK)]
        rows = bin(mask).count("1") if cmd.flags & ARGS_PER_PE else 1
        if cmd.flags & ARGS_PER_PE and mask == 0:
            return [Completion(cmd.tag, cmd.context, Status.BAD_ARGUMENT)]
        if table % 8:
            return [Completion(cmd.tag, cmd.context, Status.BAD_ARGUMENT)]
        if not self._inside(cmd.context, table, rows * NUM_ARG_REGS * 8):
            return [Completion(cmd.tag, cmd.context, Status.BAD_ADDRESS)]
        job = Job(
            context=cmd.context,
            tag=cmd.tag,
            window=self.contexts[cmd.context],
            programs=[(addr, length)],
            pe_mask=mask,
            args=read_arg_table(self.bus, table, rows),
            budget=budget or self.default_budget,
        )
        self.runtime.enqueue(job)
        return []

    def _run_pes(self, cmd: Command) -> list[Completion]:
        """One job with a program and an argument table of its own on each PE.

        The PE table holds `entries` records (`PeEntry`); every program and argument table
        must lie in the context's window. A table error completes with `error_pc` set to
        the index of the offending entry.
        """
        table, entries, budget = cmd.args[:3]

        def fail(status: Status, entry: int = 0) -> list[Completion]:
            log.warning("ctx %d tag %d: RUN_PES entry %d: %s", cmd.context, cmd.tag, entry,
                        status.name)
            return [Completion(cmd.tag, cmd.context, status, error_pc=entry)]

        if cmd.context == KERNEL_CONTEXT:
            return fail(Status.BAD_CONTEXT)
        if not 1 <= entries <= self.num_pes or table % 8:
            return fail(Status.BAD_ARGUMENT)
        if not self._inside(cmd.context, table, entries * PE_ENTRY_BYTES):
            return fail(Status.BAD_ADDRESS)
        raw = self.bus.read_mem(table, entries * PE_ENTRY_BYTES)
        parts: dict[int, tuple[tuple[int, int], int]] = {}  # pe -> (program, arg table)
        for i in range(entries):
            e = PeEntry.unpack(raw[i * PE_ENTRY_BYTES : (i + 1) * PE_ENTRY_BYTES])
            if e.pe >= self.num_pes:
                return fail(Status.BAD_PE_MASK, i)
            if e.pe in parts or e.reserved or e.arg_table % 8:
                return fail(Status.BAD_ARGUMENT, i)
            bad = self._check_program(cmd, e.program, e.length)
            if bad:
                return fail(Status(bad.status), i)
            if not self._inside(cmd.context, e.arg_table, NUM_ARG_REGS * 8):
                return fail(Status.BAD_ADDRESS, i)
            parts[e.pe] = ((e.program, e.length), e.arg_table)
        pes = sorted(parts)
        job = Job(
            context=cmd.context,
            tag=cmd.tag,
            window=self.contexts[cmd.context],
            programs=[parts[pe][0] for pe in pes],
            pe_mask=sum(1 << pe for pe in pes),
            args=[read_arg_table(self.bus, parts[pe][1], 1)[0] for pe in pes],
            budget=budget or self.default_budget,
        )
        self.runtime.enqueue(job)
        return []

    def _fence(self, cmd: Command) -> list[Completion]:
        if cmd.context == KERNEL_CONTEXT:
            return [Completion(cmd.tag, cmd.context, Status.OK)]
        self.runtime.enqueue(Job(context=cmd.context, tag=cmd.tag, fence=True))
        return []

    def _reset_pe(self, cmd: Command) -> list[Completion]:
        mask = cmd.args[0]
        if mask >> self.num_pes:
            return [Completion(cmd.tag, cmd.context, Status.BAD_PE_MASK)]
        if cmd.context != KERNEL_CONTEXT:
            for pe in range(self.num_pes):
                owner = self.runtime.owner(pe)
                if mask >> pe & 1 and owner not in (None, cmd.context):
                    return [Completion(cmd.tag, cmd.context, Status.BAD_PE_MASK)]
        out = self.runtime.reset_pes(mask)
        return out + [Completion(cmd.tag, cmd.context, Status.OK)]

    def _query(self, cmd: Command) -> list[Completion]:
        what = cmd.args[0]
        values = {
            Query.BUSY_PES: self.runtime.busy_mask,
            Query.QUEUED_JOBS: self.runtime.queued,
            Query.COMMANDS: lambda: self.commands,
            Query.ERRORS: lambda: self.errors,
            Query.CONTEXTS: lambda: len(self.contexts),
        }
        if what not in values:
            return [Completion(cmd.tag, cmd.context, Status.BAD_ARGUMENT)]
        return [Completion(cmd.tag, cmd.context, Status.OK, value=values[Query(what)]())]

    # completion ring

    def _complete(self, completions: list[Completion]) -> None:
        for c in completions:
            self.commands += 1
            self.bus.count_command()
            if c.status != Status.OK:
                self.errors += 1
                log.info("ctx %d tag %d completes %s", c.context, c.tag, Status(c.status).name)
            self.pending.append(c)

    def _flush(self) -> None:
        size = self.bus.read32(regs.CPL_RING_SIZE)
        if size == 0 or not self.pending:
            return
        base = self.bus.read32(regs.CPL_RING_BASE_LO) | self.bus.read32(regs.CPL_RING_BASE_HI) << 32
        head = self.bus.read32(regs.CPL_RING_HEAD) % size
        tail = self.bus.read32(regs.CPL_RING_TAIL) % size
        wrote = False
        while self.pending and (tail + 1) % size != head:
            self.bus.write_mem(base + tail * COMPLETION_BYTES, self.pending.popleft().pack())
            tail = (tail + 1) % size
            wrote = True
        if wrote:
            self.bus.write32(regs.CPL_RING_TAIL, tail)
            self.bus.raise_irq(regs.IRQ_STATUS_CPL)
