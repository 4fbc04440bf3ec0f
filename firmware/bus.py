"""What the firmware may touch: device registers and device memory, through a `Bus`.

The command processor runs against any object with this interface, so one firmware
serves the functional model (`ModelBus`) and the RTL simulation (a bus over
`hw.sim.bus.SyncBus` plus a memory port).

The functional model offers the on-device hooks a host cannot reach through registers:
`raise_irq` (the command processor sets IRQ_STATUS.CPL, which is write-one-to-clear for
the host) and `count_command` (PERF_COMMANDS). A bus over the RTL maps them to whatever
the RTL provides.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

__all__ = ["Bus", "ModelBus"]


@runtime_checkable
class Bus(Protocol):
    """Registers, device memory and time, as seen by firmware or a driver."""

    def read32(self, addr: int) -> int:
        """Read the 32-bit register at BAR byte offset `addr`."""

    def write32(self, addr: int, value: int) -> None:
        """Write the 32-bit register at BAR byte offset `addr`."""

    def read_mem(self, addr: int, n: int) -> bytes:
        """Read `n` bytes of device DRAM at `addr`."""

    def write_mem(self, addr: int, data: bytes) -> None:
        """Write `data` into device DRAM at `addr`."""

    def wait(self, cycles: int) -> int:
        """Let the device run up to `cycles` cycles; returns the cycles that passed."""

    def wait_irq(self, timeout: int) -> int:
        """Let the device run until an interrupt is pending or `timeout` cycles pass."""

    def take_doorbell(self) -> bool:
        """True once per DOORBELL write since the last call."""

    def raise_irq(self, bits: int) -> None:
        """Raise IRQ_STATUS bits on behalf of the command processor."""

    def count_command(self) -> None:
        """Count one completed command in PERF_COMMANDS."""


class ModelBus:
    """A `Bus` over a functional model `hw.model.Device`.

    Not thread-safe: whoever shares one between threads (the kernel emulation in
    `driver.kernel`) serialises calls with a lock.
    """

    def __init__(self, device):
        self.device = device

    def read32(self, addr: int) -> int:
        return self.device.read32(addr)

    def write32(self, addr: int, value: int) -> None:
        self.device.write32(addr, value)

    def read_mem(self, addr: int, n: int) -> bytes:
        return bytes(self.device.read_dram(addr, n))

    def write_mem(self, addr: int, data: bytes) -> None:
        self.device.write_dram(addr, data)

    def wait(self, cycles: int) -> int:
        return self.device.advance(cycles)

    def wait_irq(self, timeout: int) -> int:
        waited = 0
        step = max(1, min(timeout, 1024))
        while waited < timeout and not self.irq_pending():
            moved = self.device.advance(min(step, timeout - waited))
            if moved == 0:  # nothing runs: no interrupt can come from the PEs
                break
            waited += moved
        return waited

    def take_doorbell(self) -> bool:
        return self.device.take_doorbell()

    def raise_irq(self, bits: int) -> None:
        self.device.raise_irq(bits)

    def count_command(self) -> None:
        self.device.count_command()

    def irq_pending(self) -> bool:
        return self.device.irq_pending()

    def busy(self) -> bool:
        return self.device.busy()
