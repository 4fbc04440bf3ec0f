"""Device firmware: the command processor that serves the command and completion rings.

It touches nothing but registers and device memory through a `Bus`, so the same firmware
runs on the functional model (`ModelBus`) and on the RTL simulation.
"""

from firmware.bus import Bus, ModelBus
from firmware.commands import (
    ARGS_PER_PE,
    COMMAND_BYTES,
    COMPLETION_BYTES,
    NO_PE,
    PE_ENTRY_BYTES,
    Command,
    Completion,
    Opcode,
    PeEntry,
    Query,
    Status,
)
from firmware.processor import DEFAULT_BUDGET, KERNEL_CONTEXT, CommandProcessor

__all__ = [
    "ARGS_PER_PE",
    "COMMAND_BYTES",
    "COMPLETION_BYTES",
    "DEFAULT_BUDGET",
    "KERNEL_CONTEXT",
    "NO_PE",
    "PE_ENTRY_BYTES",
    "Bus",
    "Command",
    "CommandProcessor",
    "Completion",
    "ModelBus",
    "Opcode",
    "PeEntry",
    "Query",
    "Status",
]
