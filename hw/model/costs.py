"""Cycle costs of the NPU's instructions: every timing formula of the cycle model lives here.

The constants in capitals are the knobs that RTL calibration tunes; the spec supplies the
figures (array size, pipeline depths, DRAM latency and bandwidth, DMA burst and setup).
The scheduler in `hw.model.schedule` only adds queueing: dispatch, queue order, semaphores,
barriers and the shared DRAM channel.

Two datapaths are described (`Datapath`). For a spec the RTL in `hw/rtl` builds (MAC arrays
of at most `RTL_MAX_ARRAY` x `RTL_MAX_ARRAY`, i.e. `small`), the model times what that RTL
does: 8-byte DMA beats without bursts, stores at one beat per two cycles, a one-lane vector
unit and an instruction fetch of four DRAM reads per word without prefetch. For the specs it
does not build (`board`, `datacenter`), the model assumes hardware that meets the spec's
figures: `dram.bytes_per_cycle` in both directions, `pe.vector.lanes` elements a cycle and a
dispatcher that issues one instruction a cycle.

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
# Passes of the vector unit over a row for softmax: the max, exp and sum, the scaling.
SOFTMAX_PASSES = 3
# Extra cycles per gather entry (the table read) on top of the transfer.
GATHER_ENTRY_CYCLES = 0

# The RTL's datapath (hw/rtl), the figures it builds whatever the spec says:
# the widest MAC array it builds (hw.rtl.mac.MacArray refuses larger ones),
RTL_MAX_ARRAY = 8
# bytes one DMA beat or fetch read moves (hw.rtl.common.DATA_BYTES: a 64-bit DRAM port),
RTL_BEAT_BYTES = 8
# cycles a STORE beat takes (an SRAM read, then the DRAM write; not pipelined),
RTL_STORE_CYCLES_PER_BEAT = 2
# VECTOR elements a cycle (hw.rtl.vector: one lane),
RTL_VECTOR_ELEMS_PER_CYCLE = 1
# and DRAM reads per fetched 32-byte instruction word (no prefetch).
RTL_FETCH_READS = 4
# Cycles of the RTL dispatcher per instruction besides the reads' latency: FETCH and
# DECODE states, and the issue of the reads after the first.
RTL_FETCH_EXTRA = 4


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def rtl_builds(spec: Spec) -> bool:
    """True when `hw/rtl` builds this spec, so the model times the RTL's datapath."""
    mac = spec.pe.mac
    return mac.rows <= RTL_MAX_ARRAY and mac.cols <= RTL_MAX_ARRAY


class Costs:
    """The cost formulas for one spec, with its figures read once (spec lookups are slow)."""

    def __init__(self, spec: Spec):
        mac, vec = spec.pe.mac, spec.pe.vector
        self.dma_setup = spec.dma.setup_cycles
        self.dram_latency = spec.dram.latency_cycles
        self.rows, self.cols, self.mac_depth = mac.rows, mac.cols, mac.pipeline_depth
        self.rate = dict(mac.rate)
        self.vec_depth = vec.pipeline_depth
        # DMA rate: the slower of the DRAM channel and the SRAM port
        spec_rate = min(spec.dram.bytes_per_cycle, spec.sram_bytes_per_cycle)
        self.rtl = rtl_builds(spec)
        if self.rtl:
            # Every beat is its own DRAM request: no burst rounding, beat-sized granules.
            self.burst = RTL_BEAT_BYTES
            self.load_rate = min(spec_rate, RTL_BEAT_BYTES)
            self.store_rate = self.load_rate / RTL_STORE_CYCLES_PER_BEAT
            self.lanes = min(vec.lanes, RTL_VECTOR_ELEMS_PER_CYCLE)
            # The next fetch starts once the previous word is dispatched.
            self.dispatch = self.dram_latency + RTL_FETCH_READS + RTL_FETCH_EXTRA
        else:
            self.burst = spec.dma.burst_bytes
            self.load_rate = self.store_rate = spec_rate
            self.lanes = vec.lanes
            self.dispatch = DISPATCH_CYCLES
        self.dma_rate = self.load_rate

    def dma_overhead(self, store: bool = False) -> int:
        """Cycles a DMA spends besides moving data: descriptor setup plus DRAM latency.

        The RTL's stores post their writes and wait for no reply, so they pay no latency.
        """
        if store and self.rtl:
            return self.dma_setup
        return self.dma_setup + self.dram_latency

    def dma_transfer(self, n0: int, n1: int, n2: int, gather: bool = False,
                     store: bool = False) -> int:
        """Cycles the shared DRAM channel is busy for an `n0 x n1 x n2` box.

        Each row of `n0` bytes is rounded up to whole bursts (whole beats on the RTL).
        """
        if not (n0 and n1 and n2):
            return 0
        moved = _ceil(n0, self.burst) * self.burst * n1 * n2
        rate = self.store_rate if store else self.load_rate
        return -int(-moved // rate) + (GATHER_ENTRY_CYCLES * n2 if gather else 0)

    def matmul(self, dtype: str, m: int, n: int, k: int) -> int:
        """Output-stationary: ceil(m/rows) * ceil(n/cols) tiles of ceil(k/rate) + depth."""
        if not (m and n and k):
            return MIN_CYCLES
        tiles = _ceil(m, self.rows) * _ceil(n, self.cols)
        per_tile = _ceil(k, self.rate.get(dtype, 1)) + self.mac_depth + MATMUL_TILE_EXTRA
        return max(MIN_CYCLES, tiles * per_tile)

    def vector(self, rows: int, cols: int, func: str = "") -> int:
        """ceil(rows * cols / lanes) + pipeline depth (lanes: the datapath's elements a cycle),
        the elements once more per extra pass of softmax."""
        if not (rows and cols):
            return MIN_CYCLES
        passes = SOFTMAX_PASSES if func == "softmax" else 1
        return max(MIN_CYCLES,
                   passes * _ceil(rows * cols, self.lanes) + self.vec_depth + VECTOR_EXTRA)
