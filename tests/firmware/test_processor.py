"""The command processor on the functional model, driven through the rings by a test host."""

import struct

import numpy as np
import pytest
from npu_programs import (
    TILE,
    add_int32,
    barrier_consumer,
    barrier_producer,
    deadlock,
    load_from,
    no_end,
    slow,
)

from firmware import (
    ARGS_PER_PE,
    COMMAND_BYTES,
    COMPLETION_BYTES,
    KERNEL_CONTEXT,
    Command,
    CommandProcessor,
    Completion,
    ModelBus,
    Opcode,
    PeEntry,
    Query,
    Status,
)
from hw import spec as hwspec
from hw.generated import isa, regs

CMD_BASE, CMD_ENTRIES = 0, 16
CPL_BASE, CPL_ENTRIES = 4096, 8  # small, so that the test also wraps the completion ring


class Host:
    """Plays the kernel driver: fills the command ring, reads the completion ring."""

    def __init__(self):
        from hw.model import Device

        self.spec = hwspec.load("small")
        self.dev = Device(self.spec)
        self.bus = ModelBus(self.dev)
        self.fw = CommandProcessor(self.bus, default_budget=1 << 40)
        w = self.bus.write32
        w(regs.CMD_RING_BASE_LO, CMD_BASE)
        w(regs.CMD_RING_SIZE, CMD_ENTRIES)
        w(regs.CPL_RING_BASE_LO, CPL_BASE)
        w(regs.CPL_RING_SIZE, CPL_ENTRIES)
        self.tail = self.cpl_head = 0
        self.tag = 0
        self.done: dict[int, Completion] = {}

    def submit(self, ctx, opcode, args=(), flags=0) -> int:
        self.tag += 1
        raw = Command(opcode, ctx, self.tag, tuple(args), flags).pack()
        self.bus.write_mem(CMD_BASE + self.tail * COMMAND_BYTES, raw)
        self.tail = (self.tail + 1) % CMD_ENTRIES
        self.bus.write32(regs.CMD_RING_TAIL, self.tail)
        self.bus.write32(regs.DOORBELL, 1)
        return self.tag

    def serve(self, max_cycles=50_000_000) -> None:
        """Run firmware and device until every submitted command has completed."""
        spent = 0
        while True:
            self.fw.poll()
            self._reap()
            if len(self.done) == self.tag or spent > max_cycles:
                break
            spent += max(self.fw.run(100_000), 1)
        assert len(self.done) == self.tag, f"{self.tag - len(self.done)} commands never completed"

    def _reap(self):
        if not self.bus.read32(regs.IRQ_STATUS) & regs.IRQ_STATUS_CPL:
            return
        self.bus.write32(regs.IRQ_STATUS, regs.IRQ_STATUS_CPL)
        tail = self.bus.read32(regs.CPL_RING_TAIL)
        while self.cpl_head != tail:
            raw = self.bus.read_mem(CPL_BASE + self.cpl_head * COMPLETION_BYTES, COMPLETION_BYTES)
            cpl = Completion.unpack(raw)
            assert cpl.tag not in self.done
            self.done[cpl.tag] = cpl
            self.cpl_head = (self.cpl_head + 1) % CPL_ENTRIES
        self.bus.write32(regs.CPL_RING_HEAD, self.cpl_head)

    # a context's memory is laid out by hand: program, argument tables, data

    def put_program(self, addr, program):
        blob = program if isinstance(program, bytes) else isa.encode_program(program)
        self.bus.write_mem(addr, blob)
        return addr, len(blob) // isa.WORD_BYTES

    def put_args(self, addr, *rows):
        flat = [v for row in rows for v in list(row) + [0] * (8 - len(row))]
        self.bus.write_mem(addr, struct.pack(f"<{len(flat)}Q", *flat))
        return addr


@pytest.fixture
def host():
    return Host()


def _add_inputs(host, base, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    y = rng.integers(-(2**20), 2**20, (4, 16), dtype=np.int32)
    host.bus.write_mem(base + 0x1000, x.tobytes())
    host.bus.write_mem(base + 0x2000, y.tobytes())
    return x, y


def test_add_program_runs_and_matches_numpy(host):
    base = 0x10000
    host.submit(1, Opcode.CREATE_CONTEXT, (base, 1 << 20))
    x, y = _add_inputs(host, base, 0)
    prog = host.put_program(base, add_int32())
    table = host.put_args(base + 0x800, [base + 0x1000, base + 0x2000, base + 0x3000])
    checked = host.submit(1, Opcode.LOAD_PROGRAM, prog)
    run = host.submit(1, Opcode.RUN, (*prog, 0, table, 0))
    host.serve()
    assert host.done[checked].status == Status.OK and host.done[checked].value == prog[1]
    cpl = host.done[run]
    assert cpl.status == Status.OK, cpl
    assert cpl.cycles > 0
    out = np.frombuffer(host.bus.read_mem(base + 0x3000, TILE), np.int32).reshape(4, 16)
    np.testing.assert_array_equal(out, x + y)


def test_malformed_commands_complete_with_errors_and_the_device_keeps_serving(host):
    a, b = 0x10000, 0x200000
    host.submit(1, Opcode.CREATE_CONTEXT, (a, 1 << 20))
    host.submit(2, Opcode.CREATE_CONTEXT, (b, 1 << 20))
    overlap = host.submit(3, Opcode.CREATE_CONTEXT, (a + 4096, 4096))
    again = host.submit(1, Opcode.CREATE_CONTEXT, (0x800000, 4096))
    prog_b = host.put_program(b, add_int32())
    table_b = host.put_args(b + 0x800, [b + 0x1000, b + 0x2000, b + 0x3000])
    x, y = _add_inputs(host, b, 1)
    bad = {
        "opcode": host.submit(1, 0x77),
        "unknown context": host.submit(9, Opcode.RUN, (*prog_b, 0, table_b, 0)),
        "program in another window": host.submit(1, Opcode.RUN, (*prog_b, 0, a + 0x800, 0)),
        "args in another window": host.submit(1, Opcode.RUN, (a, 7, 0, table_b, 0)),
        "pe mask": host.submit(1, Opcode.RUN, (a, 7, 1 << host.fw.num_pes, a + 0x800, 0)),
        "empty program": host.submit(1, Opcode.RUN, (a, 0, 0, a + 0x800, 0)),
        "query": host.submit(1, Opcode.QUERY, (99,)),
    }
    good = host.submit(2, Opcode.RUN, (*prog_b, 0, table_b, 0))
    host.serve()
    expect = {
        "opcode": Status.BAD_OPCODE,
        "unknown context": Status.BAD_CONTEXT,
        "program in another window": Status.BAD_ADDRESS,
        "args in another window": Status.BAD_ADDRESS,
        "pe mask": Status.BAD_PE_MASK,
        "empty program": Status.BAD_ARGUMENT,
        "query": Status.BAD_ARGUMENT,
    }
    assert {k: Status(host.done[t].status) for k, t in bad.items()} == expect
    assert host.done[overlap].status == Status.BAD_ADDRESS
    assert host.done[again].status == Status.BAD_CONTEXT
    assert host.done[good].status == Status.OK
    out = np.frombuffer(host.bus.read_mem(b + 0x3000, TILE), np.int32).reshape(4, 16)
    np.testing.assert_array_equal(out, x + y)
    assert host.fw.errors == len(bad) + 2


def test_pe_errors_are_reported_with_code_and_pc(host):
    base = 0x10000
    host.submit(1, Opcode.CREATE_CONTEXT, (base, 1 << 20))
    table = host.put_args(base + 0x800, [base + 0x1000])
    stuck = host.put_program(base, deadlock())
    overrun = host.put_program(base + 0x100, no_end())
    outside = host.put_program(base + 0x200, load_from(1 << 20))  # one window past ARG0
    tags = [host.submit(1, Opcode.RUN, (*p, 0, table, 0)) for p in (stuck, overrun, outside)]
    host.serve()
    got = [(host.done[t].status, host.done[t].error_code, host.done[t].error_pc) for t in tags]
    assert got == [
        (Status.PE_ERROR, isa.ERR_DEADLOCK, 0),
        (Status.PE_ERROR, isa.ERR_PC_OVERRUN, 1),
        (Status.PE_ERROR, isa.ERR_DRAM_RANGE, 0),
    ]


def test_watchdog_resets_a_hung_pe_while_another_context_runs(host):
    a, b = 0x10000, 0x200000
    host.submit(1, Opcode.CREATE_CONTEXT, (a, 1 << 20))
    host.submit(2, Opcode.CREATE_CONTEXT, (b, 1 << 20))
    hung = host.put_program(a, slow())
    t_hung = host.submit(1, Opcode.RUN, (*hung, 0b01, host.put_args(a + 0x800, [a + 0x1000]),
                                         5000))
    prog_b = host.put_program(b, add_int32())
    x, y = _add_inputs(host, b, 2)
    table_b = host.put_args(b + 0x800, [b + 0x1000, b + 0x2000, b + 0x3000])
    t_b = host.submit(2, Opcode.RUN, (*prog_b, 0b10, table_b, 0))
    host.serve()
    w = host.done[t_hung]
    assert (w.status, w.error_code, w.pe) == (Status.PE_ERROR, isa.ERR_WATCHDOG, 0)
    assert 5000 < w.cycles < 200_000
    assert host.done[t_b].status == Status.OK
    out = np.frombuffer(host.bus.read_mem(b + 0x3000, TILE), np.int32).reshape(4, 16)
    np.testing.assert_array_equal(out, x + y)
    # The reset PE serves the next job.
    t_again = host.submit(2, Opcode.RUN, (*prog_b, 0b01, table_b, 0))
    host.serve()
    assert host.done[t_again].status == Status.OK
    assert not host.bus.read32(regs.pe_reg(0, regs.PE_STATUS)) & regs.PE_STATUS_BUSY


def test_runs_on_two_pes_with_per_pe_arguments_and_a_fence(host):
    base = 0x10000
    host.submit(1, Opcode.CREATE_CONTEXT, (base, 1 << 20))
    x, y = _add_inputs(host, base, 3)
    prog = host.put_program(base, add_int32())
    rows = [[base + 0x1000, base + 0x2000, base + 0x3000],
            [base + 0x2000, base + 0x2000, base + 0x4000]]
    table = host.put_args(base + 0x800, *rows)
    run = host.submit(1, Opcode.RUN, (*prog, 0b11, table, 0), flags=ARGS_PER_PE)
    fence = host.submit(1, Opcode.FENCE)
    host.serve()
    assert host.done[run].status == Status.OK and host.done[fence].status == Status.OK
    assert list(host.done).index(run) < list(host.done).index(fence)

    def read(addr):
        return np.frombuffer(host.bus.read_mem(addr, TILE), np.int32).reshape(4, 16)

    np.testing.assert_array_equal(read(base + 0x3000), x + y)
    np.testing.assert_array_equal(read(base + 0x4000), y + y)


def test_destroy_cancels_queued_work_and_load_program_finds_illegal_opcodes(host):
    base = 0x10000
    host.submit(1, Opcode.CREATE_CONTEXT, (base, 1 << 20))
    hung = host.put_program(base, slow(8))
    table = host.put_args(base + 0x800, [base + 0x1000])
    words = bytearray(isa.encode_program(add_int32()))
    words[2 * isa.WORD_BYTES] = 0x7E  # third word: an opcode the ISA lacks
    illegal = host.put_program(base + 0x400, bytes(words))
    check = host.submit(1, Opcode.LOAD_PROGRAM, illegal)
    first = host.submit(1, Opcode.RUN, (*hung, 0, table, 0))
    second = host.submit(1, Opcode.RUN, (*hung, 0, table, 0))
    host.fw.poll()
    host.fw.run(1000)
    busy = host.submit(KERNEL_CONTEXT, Opcode.QUERY, (Query.BUSY_PES,))
    destroy = host.submit(1, Opcode.DESTROY_CONTEXT)
    host.serve()
    c = host.done[check]
    assert (c.status, c.error_code, c.error_pc) == (Status.BAD_ARGUMENT, isa.ERR_ILLEGAL_OPCODE, 2)
    assert host.done[busy].value == 0b01
    assert host.done[first].status == Status.CANCELLED
    assert host.done[second].status == Status.CANCELLED
    assert host.done[destroy].status == Status.OK
    assert not host.bus.read32(regs.pe_reg(0, regs.PE_STATUS)) & regs.PE_STATUS_BUSY


def _pe_table(host, addr, entries):
    """Write RUN_PES entries (PeEntry or raw 32-byte records) at `addr`; returns the args."""
    blob = b"".join(e if isinstance(e, bytes) else e.pack() for e in entries)
    host.bus.write_mem(addr, blob)
    return addr, len(entries)


def _two_pe_job(host, base, seed):
    """PE 1 writes t = 2x to DRAM, BARRIER, PE 0 reads t and writes t - y (the PEs are
    swapped against the programs' order so that the table's PE field is what counts)."""
    x, y = _add_inputs(host, base, seed)
    producer = host.put_program(base, barrier_producer())
    consumer = host.put_program(base + 0x400, barrier_consumer())
    t, out = base + 0x3000, base + 0x4000
    args_p = host.put_args(base + 0x800, [base + 0x1000, t])
    args_c = host.put_args(base + 0x900, [t, base + 0x2000, out])
    table = _pe_table(host, base + 0xA00, [PeEntry(*consumer, 0, args_c),
                                          PeEntry(*producer, 1, args_p)])
    return x, y, table, out


def test_run_pes_starts_a_program_per_pe_and_they_meet_at_a_barrier(host):
    base = 0x10000
    host.submit(1, Opcode.CREATE_CONTEXT, (base, 1 << 20))
    x, y, table, out = _two_pe_job(host, base, 4)
    run = host.submit(1, Opcode.RUN_PES, (*table, 0))
    host.serve()
    cpl = host.done[run]
    assert cpl.status == Status.OK and cpl.cycles > 0, cpl
    got = np.frombuffer(host.bus.read_mem(out, TILE), np.int32).reshape(4, 16)
    np.testing.assert_array_equal(got, 2 * x - y)


def test_the_same_programs_as_separate_runs_cannot_meet(host):
    """Why RUN_PES exists: two RUNs of one context run one after the other."""
    base = 0x10000
    host.submit(1, Opcode.CREATE_CONTEXT, (base, 1 << 20))
    producer = host.put_program(base, barrier_producer())
    args = host.put_args(base + 0x800, [base + 0x1000, base + 0x3000])
    run = host.submit(1, Opcode.RUN, (*producer, 0b10, args, 0))
    host.serve()
    c = host.done[run]
    assert (c.status, c.error_code, c.pe) == (Status.PE_ERROR, isa.ERR_DEADLOCK, 1)


def test_malformed_pe_tables_complete_with_errors_while_another_context_runs(host):
    a, b = 0x10000, 0x200000
    host.submit(1, Opcode.CREATE_CONTEXT, (a, 1 << 20))
    host.submit(2, Opcode.CREATE_CONTEXT, (b, 1 << 20))
    prog = host.put_program(a, load_from())
    args = host.put_args(a + 0x800, [a + 0x1000])
    ok = PeEntry(*prog, 0, args)
    x, y, good_table, out = _two_pe_job(host, b, 5)
    tables = {
        "table outside the window": ((b + 0xA00, 1), Status.BAD_ADDRESS, 0),
        "program outside the window": (
            [ok, PeEntry(b, prog[1], 1, args)], Status.BAD_ADDRESS, 1),
        "args outside the window": ([ok, PeEntry(*prog, 1, b + 0x800)], Status.BAD_ADDRESS, 1),
        "pe out of range": (
            [ok, PeEntry(*prog, host.fw.num_pes, args)], Status.BAD_PE_MASK, 1),
        "same pe twice": ([ok, ok], Status.BAD_ARGUMENT, 1),
        "reserved field set": ([ok.pack()[:28] + b"\1\0\0\0"], Status.BAD_ARGUMENT, 0),
        "no entries": ((a + 0xA00, 0), Status.BAD_ARGUMENT, 0),
        "more entries than PEs": ((a + 0xA00, host.fw.num_pes + 1), Status.BAD_ARGUMENT, 0),
    }
    tags = {}
    for i, (name, (entries, _, _)) in enumerate(tables.items()):
        where = entries if isinstance(entries, tuple) else _pe_table(host, a + 0x4000 + 0x100 * i,
                                                                     entries)
        tags[name] = host.submit(1, Opcode.RUN_PES, (*where, 0))
    good = host.submit(2, Opcode.RUN_PES, (*good_table, 0))
    host.serve()
    got = {k: (Status(host.done[t].status), host.done[t].error_pc) for k, t in tags.items()}
    assert got == {k: (status, entry) for k, (_, status, entry) in tables.items()}
    assert host.done[good].status == Status.OK
    res = np.frombuffer(host.bus.read_mem(out, TILE), np.int32).reshape(4, 16)
    np.testing.assert_array_equal(res, 2 * x - y)
    # The rejected context still runs.
    again = host.submit(1, Opcode.RUN_PES, (*_pe_table(host, a + 0xF00, [ok]), 0))
    host.serve()
    assert host.done[again].status == Status.OK
