"""Exceptions the driver raises; each carries what the device or the caller needs to act."""

from __future__ import annotations

from firmware.commands import NO_PE, Status
from hw.generated import isa

__all__ = [
    "CommandError",
    "DeviceError",
    "DeviceLost",
    "DeviceNotFound",
    "DeviceTimeout",
    "NpuError",
    "OutOfDeviceMemory",
    "error_for",
]

_ERROR_NAMES = {code: name for name, code in isa.ERRORS.items()}


class NpuError(Exception):
    """Base of every driver error."""


class DeviceNotFound(NpuError):
    """No device at the given index or path."""


class DeviceLost(NpuError):
    """The daemon hosting the device went away, or the device was reset under a command."""


class DeviceTimeout(NpuError, TimeoutError):
    """A command did not complete in time; it may still complete later."""


class OutOfDeviceMemory(NpuError, MemoryError):
    """An allocation that does not fit; carries the request and what was free."""

    def __init__(self, requested: int, free: int, largest: int, where: str = "device"):
        self.requested, self.free, self.largest = requested, free, largest
        super().__init__(
            f"cannot allocate {requested} bytes of {where} memory: {free} bytes free, "
            f"largest free block {largest} bytes"
        )


class CommandError(NpuError):
    """The firmware rejected a command (bad address, unknown context, bad PE mask...)."""

    def __init__(self, status: int, message: str = "", error_code: int = 0, pc: int = 0):
        self.status = status
        self.status_name = Status(status).name if status in Status._value2member_map_ else "?"
        self.error_code, self.pc = error_code, pc
        text = f"command failed with {self.status_name}"
        if error_code:
            text += f" ({_ERROR_NAMES.get(error_code, error_code)} at pc {pc})"
        super().__init__(f"{text}: {message}" if message else text)


class DeviceError(NpuError):
    """A PE stopped with an ISA error code (WATCHDOG included)."""

    def __init__(self, code: int, name: str, pe: int | None, pc: int):
        self.code, self.name, self.pe, self.pc = code, name, pe, pc
        super().__init__(f"{name} (code {code}) on PE {pe} at instruction {pc}")


def error_for(completion) -> NpuError | None:
    """The exception a completion stands for, or None when it succeeded."""
    if completion.status == Status.OK:
        return None
    if completion.status == Status.PE_ERROR:
        code = completion.error_code
        pe = None if completion.pe == NO_PE else completion.pe
        return DeviceError(code, _ERROR_NAMES.get(code, f"ERROR_{code}"), pe, completion.error_pc)
    return CommandError(completion.status, "", completion.error_code, completion.error_pc)
