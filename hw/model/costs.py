"""Cycle costs of the NPU's instructions: every timing formula of the cycle model lives here.

The constants in capitals are the knobs that RTL calibration tunes; the spec supplies the
figures (array size, pipeline depths, DRAM latency and bandwidth, DMA burst and setup).
The scheduler in `hw.model.schedule` only adds queueing: dispatch, queue order, semaphores,
barriers and the shared DRAM channel.

Not modelled: SRAM bank conflicts, DRAM page/refresh effects, and DMA transfers of one
queue overlapping each other (a queue runs one instruction at a time).
"""

from __future__ import annotations

from hw.spec import Spec

# Cycles between two dispatches of the in-order dispatcher (it issues one per cycle).
DISPATCH_CYCLES = 1
# Cycles from dispatch until the instruction may start at its queue's head.
ISSUE_CYCLES = 1
# Cycles a SEM_WAIT or SEM_SIGNAL occupies its queue once it proceeds.
SEM_CYCLES = 1
# Cycles from the release of a barrier to the next dispatch.
BARRIER_CYCLES = 1
# Smallest cost of an instruction that does work or nothing (zero counts).
MIN_CYCLES = 1
# Extra cycles per MATMUL tile on top of ceil(k / rate) + pipeline depth (drain of C).
MATMUL_TILE_EXTRA = 0
# Extra cycles per VECTOR instruction on top of ceil(elements / lanes) + pipeline depth.
VECTOR_EXTRA = 0
# Extra cycles per gather entry (the table read) on top of the transfer.
GATHER_ENTRY_CYCLES = 0


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class Costs:
    """The cost formulas for one spec, with its figures read once (spec lookups are slow)."""

    def __init__(self, spec: Spec):
        mac, vec = spec.pe.mac, spec.pe.vector
        self.dma_setup = spec.dma.setup_cycles
        self.dram_latency = spec.dram.latency_cycles
        self.burst = spec.dma.burst_bytes
        # DMA rate: the slower of the DRAM channel and the SRAM port
        self.dma_rate = min(spec.dram.bytes_per_cycle, spec.sram_bytes_per_cycle)
        self.rows, self.cols, self.mac_depth = mac.rows, mac.cols, mac.pipeline_depth
        self.rate = dict(mac.rate)
        self.lanes, self.vec_depth = vec.lanes, vec.pipeline_depth

    def dma_overhead(self) -> int:
        """Cycles a DMA spends before its data moves: descriptor setup plus DRAM latency."""
        return self.dma_setup + self.dram_latency

    def dma_transfer(self, n0: int, n1: int, n2: int, gather: bool = False) -> int:
        """Cycles the shared DRAM channel is busy for an `n0 x n1 x n2` box.

        Each row of `n0` bytes is rounded up to whole bursts.
        """
        if not (n0 and n1 and n2):
            return 0
        moved = _ceil(n0, self.burst) * self.burst * n1 * n2
        return _ceil(moved, self.dma_rate) + (GATHER_ENTRY_CYCLES * n2 if gather else 0)

    def matmul(self, dtype: str, m: int, n: int, k: int) -> int:
        """Output-stationary: ceil(m/rows) * ceil(n/cols) tiles of ceil(k/rate) + depth."""
        if not (m and n and k):
            return MIN_CYCLES
        tiles = _ceil(m, self.rows) * _ceil(n, self.cols)
        per_tile = _ceil(k, self.rate.get(dtype, 1)) + self.mac_depth + MATMUL_TILE_EXTRA
        return max(MIN_CYCLES, tiles * per_tile)

    def vector(self, rows: int, cols: int) -> int:
        """ceil(rows * cols / lanes) + pipeline depth."""
        if not (rows and cols):
            return MIN_CYCLES
        return max(MIN_CYCLES, _ceil(rows * cols, self.lanes) + self.vec_depth + VECTOR_EXTRA)
