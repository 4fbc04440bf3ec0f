"""Command and completion records against the byte layout docs/system.md documents."""

import struct

import pytest

from firmware.commands import (
    COMMAND_BYTES,
    COMPLETION_BYTES,
    Command,
    Completion,
    Opcode,
    Status,
)


def test_command_layout_matches_the_documented_offsets():
    cmd = Command(Opcode.RUN, context=0x1234, tag=0xDEADBEEF, args=(1, 2, 3, 4, 5, 6, 7),
                  flags=0x01)
    raw = cmd.pack()
    assert len(raw) == COMMAND_BYTES == 64
    assert raw[0] == 0x04 and raw[1] == 0x01
    assert int.from_bytes(raw[2:4], "little") == 0x1234
    assert int.from_bytes(raw[4:8], "little") == 0xDEADBEEF
    for i in range(7):
        assert int.from_bytes(raw[8 + 8 * i : 16 + 8 * i], "little") == i + 1
    assert Command.unpack(raw) == cmd


def test_short_argument_lists_are_zero_padded():
    raw = Command(Opcode.RESET_PE, 3, 9, (0b10,)).pack()
    assert raw[8:16] == (2).to_bytes(8, "little") and raw[16:] == bytes(48)


def test_too_many_arguments_are_refused():
    with pytest.raises(ValueError, match="at most 7"):
        Command(Opcode.RUN, 1, 1, tuple(range(8))).pack()


def test_completion_layout_matches_the_documented_offsets():
    cpl = Completion(tag=7, context=2, status=Status.PE_ERROR, pe=1, error_code=4,
                     error_pc=12, cycles=1 << 40, value=99)
    raw = cpl.pack()
    assert len(raw) == COMPLETION_BYTES == 32
    assert struct.unpack_from("<I", raw, 0)[0] == 7
    assert struct.unpack_from("<H", raw, 4)[0] == 2
    assert raw[6] == Status.PE_ERROR and raw[7] == 1
    assert struct.unpack_from("<IIQQ", raw, 8) == (4, 12, 1 << 40, 99)
    assert Completion.unpack(raw) == cpl
    assert not cpl.ok and Completion(1, 1, Status.OK).ok
