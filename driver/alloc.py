"""A first-fit range allocator for device memory: windows of contexts and buffers in them.

Free ranges are kept sorted and merged on free, so fragmentation stays visible in
`stats()` (free bytes against the largest free block).
"""

from __future__ import annotations

import bisect
import logging
from typing import NamedTuple

from driver.errors import OutOfDeviceMemory

log = logging.getLogger(__name__)

__all__ = ["MemoryStats", "RangeAllocator"]


class MemoryStats(NamedTuple):
    total: int
    used: int
    free: int
    largest_free: int
    allocations: int
    peak_used: int


class RangeAllocator:
    """Hands out aligned ranges of `[base, base + size)`."""

    def __init__(self, base: int, size: int, *, where: str = "device"):
        self.base, self.size, self.where = base, size, where
        self._free: list[tuple[int, int]] = [(base, size)] if size else []  # sorted by start
        self._used: dict[int, int] = {}  # start -> size
        self._starts: list[int] = []  # sorted keys of _used
        self._peak = 0

    def alloc(self, nbytes: int, align: int = 64) -> int:
        """Start of a new range of `nbytes`, aligned to `align` (a power of two)."""
        if nbytes <= 0:
            raise ValueError(f"allocation size must be positive, got {nbytes}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, got {align}")
        for i, (start, size) in enumerate(self._free):
            addr = -(-start // align) * align
            if addr + nbytes > start + size:
                continue
            del self._free[i]
            tail = start + size - (addr + nbytes)
            if tail:
                self._free.insert(i, (addr + nbytes, tail))
            if addr > start:
                self._free.insert(i, (start, addr - start))
            self._used[addr] = nbytes
            bisect.insort(self._starts, addr)
            self._peak = max(self._peak, self.used)
            return addr
        stats = self.stats()
        raise OutOfDeviceMemory(nbytes, stats.free, stats.largest_free, self.where)

    def free(self, addr: int) -> int:
        """Return the range starting at `addr`; returns its size."""
        try:
            nbytes = self._used.pop(addr)
        except KeyError:
            raise ValueError(f"0x{addr:x} is not the start of a live allocation") from None
        del self._starts[bisect.bisect_left(self._starts, addr)]
        i = bisect.bisect(self._free, (addr, 0))
        start, size = addr, nbytes
        if i < len(self._free) and self._free[i][0] == addr + nbytes:
            size += self._free.pop(i)[1]
        if i > 0 and sum(self._free[i - 1]) == addr:
            start, prev = self._free.pop(i - 1)
            size += prev
            i -= 1
        self._free.insert(i, (start, size))
        return nbytes

    def owns(self, addr: int, nbytes: int) -> bool:
        """True when `[addr, addr + nbytes)` lies inside one live allocation."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0 or nbytes < 0:
            return False
        start = self._starts[i]
        return addr + nbytes <= start + self._used[start]

    def size_of(self, addr: int) -> int:
        return self._used[addr]

    @property
    def used(self) -> int:
        return sum(self._used.values())

    def stats(self) -> MemoryStats:
        free = sum(s for _, s in self._free)
        largest = max((s for _, s in self._free), default=0)
        return MemoryStats(self.size, self.used, free, largest, len(self._used), self._peak)
