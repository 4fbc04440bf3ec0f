"""A `Bus` over the RTL simulation: registers through the bench's register bus, DRAM direct.

`sync` is a `hw.sim.bus.SyncBus` (blocking register accesses from a thread started by
`cocotb.task.bridge`); `mem` is the bytearray behind the bench's DRAM model, which the
command processor reads and writes as the device's own memory port would.

Not modelled: the command processor's own interrupt line and PERF_COMMANDS counter (the
RTL top has neither), so `raise_irq` latches CPL here and `read32(IRQ_STATUS)` merges it
in; a doorbell is not observable, so `take_doorbell` always answers True and the firmware
polls the ring registers.
"""

from __future__ import annotations

import logging

from hw.generated import regs

log = logging.getLogger(__name__)

__all__ = ["RtlBus"]


class RtlBus:
    def __init__(self, sync, mem: bytearray):
        self.sync = sync
        self.mem = mem
        self._irq = 0

    def read32(self, addr: int) -> int:
        value = self.sync.read32(addr)
        return value | self._irq if addr == regs.IRQ_STATUS else value

    def write32(self, addr: int, value: int) -> None:
        if addr == regs.IRQ_STATUS:
            self._irq &= ~value
        self.sync.write32(addr, value)

    def read_mem(self, addr: int, n: int) -> bytes:
        return bytes(self.mem[addr : addr + n])

    def write_mem(self, addr: int, data: bytes) -> None:
        self.mem[addr : addr + len(data)] = data

    def wait(self, cycles: int) -> int:
        self.sync.cycles(cycles)
        return cycles

    def wait_irq(self, timeout: int) -> int:
        waited = 0
        while waited < timeout and not self.read32(regs.IRQ_STATUS):
            waited += self.wait(min(64, timeout - waited))
        return waited

    def take_doorbell(self) -> bool:
        return True

    def raise_irq(self, bits: int) -> None:
        self._irq |= bits & regs.IRQ_STATUS_CPL

    def count_command(self) -> None:
        pass
