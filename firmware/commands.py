"""Binary formats of the command ring and the completion ring.

Both rings live in device DRAM; their base, size (in entries), head and tail are the
CMD_RING_* and CPL_RING_* global registers. The host writes commands at CMD_RING_TAIL and
rings DOORBELL; the command processor reads them at CMD_RING_HEAD. The command processor
writes completions at CPL_RING_TAIL and raises IRQ_STATUS.CPL; the host reads them at
CPL_RING_HEAD. A ring is full when advancing the tail would make it equal the head.
All fields are little-endian; `docs/system.md` gives the same tables for readers.

Command record, `COMMAND_BYTES` = 64::

    0  u8   opcode      one of Opcode
    1  u8   flags       RUN: bit 0 = ARGS_PER_PE
    2  u16  context     submitting context id
    4  u32  tag         echoed in the completion
    8  u64  a0 .. a6    arguments, by opcode (see ARGUMENTS)

PE table of RUN_PES (one entry of `PE_ENTRY_BYTES` = 32 per PE, entries in any order)::

    0  u64  program     DRAM address of the PE's program (32-byte aligned)
    8  u32  length      program length in instruction words
    12 u8   pe          the PE that runs it
    13 u8   reserved    zero (3 bytes)
    16 u64  arg_table   DRAM address of 8 u64: the PE's ARG0..7
    24 u64  reserved    zero

Completion record, `COMPLETION_BYTES` = 32::

    0  u32  tag
    4  u16  context
    6  u8   status      one of Status
    7  u8   pe          PE that reported the error, NO_PE when none
    8  u32  error_code  ISA error code (hw isa.ERRORS) when status is PE_ERROR
    12 u32  error_pc    instruction index of the fault
    16 u64  cycles      device cycles from the command's start to its completion
    24 u64  value       result of QUERY and LOAD_PROGRAM
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

__all__ = [
    "ARGS_PER_PE",
    "ARGUMENTS",
    "COMMAND_BYTES",
    "COMPLETION_BYTES",
    "NO_PE",
    "NUM_ARGS",
    "PE_ENTRY_BYTES",
    "Command",
    "Completion",
    "Opcode",
    "PeEntry",
    "Query",
    "Status",
]

COMMAND_BYTES = 64
COMPLETION_BYTES = 32
NUM_ARGS = 7
NO_PE = 0xFF
ARGS_PER_PE = 0x01  # RUN flag: the argument table holds 8 u64 per PE of the mask, in PE order
PE_ENTRY_BYTES = 32

_COMMAND = struct.Struct("<BBHI7Q")
_COMPLETION = struct.Struct("<IHBBIIQQ")
_PE_ENTRY = struct.Struct("<QIB3sQQ")
assert _COMMAND.size == COMMAND_BYTES and _COMPLETION.size == COMPLETION_BYTES
assert _PE_ENTRY.size == PE_ENTRY_BYTES


class Opcode(enum.IntEnum):
    CREATE_CONTEXT = 0x01
    DESTROY_CONTEXT = 0x02
    LOAD_PROGRAM = 0x03
    RUN = 0x04
    FENCE = 0x05
    RESET_PE = 0x06
    QUERY = 0x07
    RUN_PES = 0x08  # one job, a program and arguments of its own on each PE, started together


# What a0..a6 mean, per opcode (unnamed arguments must be zero and are ignored).
ARGUMENTS: dict[Opcode, tuple[str, ...]] = {
    Opcode.CREATE_CONTEXT: ("window_base", "window_size"),
    Opcode.DESTROY_CONTEXT: (),
    Opcode.LOAD_PROGRAM: ("program_addr", "program_len"),
    Opcode.RUN: ("program_addr", "program_len", "pe_mask", "arg_table", "cycle_budget"),
    Opcode.FENCE: (),
    Opcode.RESET_PE: ("pe_mask",),
    Opcode.QUERY: ("what",),
    Opcode.RUN_PES: ("pe_table", "entries", "cycle_budget"),
}


class Query(enum.IntEnum):
    """What QUERY returns in the completion's value."""

    BUSY_PES = 0  # bit per PE running a job
    QUEUED_JOBS = 1  # RUN commands waiting for a PE, all contexts
    COMMANDS = 2  # commands completed since the firmware started
    ERRORS = 3  # commands completed with a status other than OK
    CONTEXTS = 4  # live contexts


class Status(enum.IntEnum):
    OK = 0
    PE_ERROR = 1  # a PE stopped with an error (watchdog included); see error_code, pe, pc
    BAD_OPCODE = 2  # the command's opcode is unknown
    BAD_CONTEXT = 3  # unknown context, or CREATE_CONTEXT of an id already live
    BAD_ADDRESS = 4  # a program, argument table or window outside what the context owns
    BAD_PE_MASK = 5  # a PE mask naming PEs the device lacks
    BAD_ARGUMENT = 6  # a malformed argument (zero length, misaligned program, bad query)
    CANCELLED = 7  # the context was destroyed or its PE reset before the command finished


class Command(NamedTuple):
    opcode: int
    context: int
    tag: int
    args: tuple[int, ...] = (0,) * NUM_ARGS
    flags: int = 0

    def pack(self) -> bytes:
        args = tuple(self.args) + (0,) * (NUM_ARGS - len(self.args))
        if len(args) != NUM_ARGS:
            raise ValueError(f"a command takes at most {NUM_ARGS} arguments, got {len(args)}")
        return _COMMAND.pack(self.opcode, self.flags, self.context, self.tag, *args)

    @classmethod
    def unpack(cls, data: bytes) -> Command:
        opcode, flags, context, tag, *args = _COMMAND.unpack(data)
        return cls(opcode, context, tag, tuple(args), flags)

    def arg(self, name: str) -> int:
        """The argument called `name` for this command's opcode."""
        return self.args[ARGUMENTS[Opcode(self.opcode)].index(name)]


class PeEntry(NamedTuple):
    """One PE's part of a RUN_PES job: its program, its PE and its argument table."""

    program: int
    length: int
    pe: int
    arg_table: int
    reserved: int = 0  # the two reserved fields, which must be zero, OR-ed together

    def pack(self) -> bytes:
        return _PE_ENTRY.pack(self.program, self.length, self.pe, bytes(3), self.arg_table, 0)

    @classmethod
    def unpack(cls, data: bytes) -> PeEntry:
        program, length, pe, pad, arg_table, tail = _PE_ENTRY.unpack(data)
        return cls(program, length, pe, arg_table, int.from_bytes(pad, "little") | tail)


class Completion(NamedTuple):
    tag: int
    context: int
    status: int
    pe: int = NO_PE
    error_code: int = 0
    error_pc: int = 0
    cycles: int = 0
    value: int = 0

    def pack(self) -> bytes:
        return _COMPLETION.pack(*self)

    @classmethod
    def unpack(cls, data: bytes) -> Completion:
        return cls(*_COMPLETION.unpack(data))

    @property
    def ok(self) -> bool:
        return self.status == Status.OK
