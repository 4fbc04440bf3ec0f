"""The cycle model: costs, overlap, the shared DRAM channel, barriers, random programs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from model_kit import DT, ISA, SPEC, start
from racefree import Builder, random_program, reference

from hw.model import Device, costs, estimate, run_program
from hw.spec import load


def _matmul(m, n, k, dtype="int8"):
    return ISA.Matmul(dtype=DT[dtype], m=m, n=n, k=k, a_addr=0, b_addr=0, c_addr=0,
                      a_stride=k, b_stride=n, c_stride=4 * n)


@pytest.mark.parametrize("spec_name", ["small", "datacenter"])
def test_matmul_cycles_follow_the_output_stationary_formula(spec_name):
    spec = load(spec_name)
    mac = spec.pe.mac
    busy = {}
    for k in (512, 1024):
        m, n = 3 * mac.rows + 1, 2 * mac.cols
        tl = estimate(spec, {0: [_matmul(m, n, k), ISA.End()]})
        busy[k] = tl.pes[0].mac_busy
        tiles = math.ceil(m / mac.rows) * math.ceil(n / mac.cols)
        assert busy[k] == tiles * (math.ceil(k / mac.rate["int8"]) + mac.pipeline_depth)
    # doubling K doubles the streaming part and leaves the pipeline fill alone
    assert busy[1024] - busy[512] == tiles * 512 // mac.rate["int8"]
    assert 1.9 < busy[1024] / busy[512] <= 2.0


def test_grouped_matmul_costs_one_pass_per_group_and_softmax_three_passes():
    spec = load("board")
    mac, vec = spec.pe.mac, spec.pe.vector
    m, n, k, groups = 3 * 8, 100, 64, 8  # decode attention: 3 query rows per sequence
    ins = ISA.Matmul(dtype=DT["bf16"], m=m, n=n, k=k, a_stride=2 * k, b_stride=2 * k,
                     c_stride=2 * n, c_addr=1 << 16, transpose_b=1, narrow=1, group=m // groups,
                     b_group_stride=2 * k * n)
    tl = estimate(spec, {0: [ins, ISA.End()]})
    per_group = math.ceil(n / mac.cols) * (math.ceil(k / mac.rate["bf16"]) + mac.pipeline_depth)
    assert tl.pes[0].mac_busy == groups * per_group
    assert tl.macs == m * n * k
    sm = ISA.Vector(func=ISA.VECTOR_FUNCS["softmax"], in_dtype=DT["fp32"], out_dtype=DT["bf16"],
                    rows=m, cols=n, src1_stride=4 * n, dst_addr=1 << 16, dst_stride=2 * n)
    tl = estimate(spec, {0: [sm, ISA.End()]})
    assert tl.pes[0].vector_busy == 3 * math.ceil(m * n / vec.lanes) + vec.pipeline_depth


def test_vector_chain_is_serial_on_the_compute_queue():
    rows, cols, n = 7, 33, 20
    ins = ISA.Vector(func=ISA.VECTOR_FUNCS["relu"], in_dtype=DT["int8"], out_dtype=DT["int8"],
                     rows=rows, cols=cols, src1_stride=cols, dst_addr=4096, dst_stride=cols)
    for spec, lanes in ((SPEC, costs.RTL_VECTOR_ELEMS_PER_CYCLE), (load("board"), None)):
        # small times the RTL's one-lane unit, board the spec's lanes
        lanes = lanes or spec.pe.vector.lanes
        tl = estimate(spec, {0: [ins] * n + [ISA.End()]})
        cost = math.ceil(rows * cols / lanes) + spec.pe.vector.pipeline_depth
        assert tl.pes[0].vector_busy == n * cost
        assert tl.cycles == 1 + n * cost  # one cycle from dispatch to start, then back to back


def test_dma_bound_program_is_bounded_by_dram_bandwidth():
    nbytes = 16384
    loads = [ISA.Load(n0=nbytes, n1=1, n2=1, dram_offset=i * nbytes, sram_addr=0)
             for i in range(8)]
    for spec in (SPEC, load("board")):
        tl = estimate(spec, {0: loads + [ISA.End()]})
        assert tl.dram_bytes == 8 * nbytes
        assert tl.cycles >= 8 * nbytes / spec.dram.bytes_per_cycle
        assert tl.pes[0].load_busy >= 8 * (spec.dma.setup_cycles + spec.dram.latency_cycles)


def test_burst_rounding_costs_short_rows():
    # board: 64 rows of 4 bytes move 64 bursts, not 256 bytes
    board = load("board")
    tl = estimate(board, {0: [ISA.Load(n0=4, n1=64, n2=1, dram_s1=4, sram_s1=4), ISA.End()]})
    burst = board.dma.burst_bytes
    rate = min(board.dram.bytes_per_cycle, board.sram_bytes_per_cycle)
    overhead = board.dma.setup_cycles + board.dram.latency_cycles
    assert tl.pes[0].load_busy == overhead + 64 * burst // rate
    # small times the RTL: no bursts, one beat (a cycle) per 4-byte row
    tl = estimate(SPEC, {0: [ISA.Load(n0=4, n1=64, n2=1, dram_s1=4, sram_s1=4), ISA.End()]})
    overhead = SPEC.dma.setup_cycles + SPEC.dram.latency_cycles
    assert tl.pes[0].load_busy == overhead + 64


def test_rtl_datapath_store_is_half_rate_and_waits_no_latency():
    n = 4096
    tl = estimate(SPEC, {0: [ISA.Store(n0=n, n1=1, n2=1, sram_addr=0), ISA.End()]})
    beats = n // costs.RTL_BEAT_BYTES
    assert tl.pes[0].store_busy == SPEC.dma.setup_cycles + beats * costs.RTL_STORE_CYCLES_PER_BEAT
    assert tl.dram_busy == beats  # the channel is free every other cycle of the store


def test_rtl_datapath_fetch_spaces_dispatches():
    # SEM_SIGNALs cost one cycle; on small each one waits for its word's DRAM fetch
    sig = ISA.SemSignal(queue=0, sem=0)
    n = 10
    small = estimate(SPEC, {0: [sig] * n + [ISA.End()]}).cycles
    board = estimate(load("board"), {0: [sig] * n + [ISA.End()]}).cycles
    assert small >= n * SPEC.dram.latency_cycles
    assert board <= 2 * n + 2


def test_pes_share_one_dram_channel():
    prog = [ISA.Load(n0=32768, n1=1, n2=1, sram_addr=0), ISA.End()]
    one = estimate(SPEC, {0: prog})
    two = estimate(SPEC, {0: prog, 1: prog})
    assert two.cycles >= 2 * 32768 / SPEC.dram.bytes_per_cycle
    assert two.cycles > one.cycles
    assert two.dram_busy == 2 * one.dram_busy


def double_buffered(tiles=6, k=64, m=32, n=32):
    """LOAD tile i+1 while MATMUL runs on tile i and STORE drains tile i-1."""
    b = Builder()
    tile = m * k
    for i in range(tiles):
        buf = (i % 2) * 8192
        b.add(ISA.Load(n0=tile, n1=1, n2=1, dram_offset=i * tile, sram_addr=buf),
              [("d", i * tile, (i + 1) * tile)], [("s", buf, buf + tile)])
        c = 32768 + (i % 2) * 8192
        b.add(ISA.Matmul(dtype=DT["int8"], m=m, n=n, k=k, a_addr=buf, b_addr=16384,
                         c_addr=c, a_stride=k, b_stride=n, c_stride=4 * n),
              [("s", buf, buf + tile), ("s", 16384, 16384 + k * n)], [("s", c, c + 4 * m * n)])
        out = 65536 + i * 4 * m * n
        b.add(ISA.Store(n0=4 * m * n, n1=1, n2=1, dram_offset=out, sram_addr=c),
              [("s", c, c + 4 * m * n)], [("d", out, out + 4 * m * n)])
    return b.finish()


def test_semaphore_overlap_beats_the_sum_of_engine_times():
    tl = estimate(SPEC, {0: double_buffered()})
    s = tl.pes[0]
    assert tl.cycles < s.load_busy + s.mac_busy + s.store_busy
    assert tl.cycles >= max(s.load_busy, s.mac_busy, s.store_busy)
    # and the overlapped program computes the same as program order
    rng = np.random.default_rng(0)
    dram = bytearray(rng.integers(-3, 4, 65536 + 6 * 4096, dtype=np.int8).tobytes())
    dev, _ = run_program(SPEC, {0: double_buffered()}, {0: bytes(dram)})
    sram, want = bytearray(SPEC.sram_bytes_per_pe), bytearray(dram)
    reference(double_buffered(), sram, want, 0)
    assert dev.read_dram(0, len(want)) == bytes(want)


def test_shallow_queues_stall_the_dispatcher():
    deep = estimate(SPEC, {0: double_buffered()})
    shallow = estimate(load("small", **{"pe.queues.depth": 1}), {0: double_buffered()})
    assert shallow.cycles >= deep.cycles


def test_barrier_orders_data_between_pes():
    data = bytes(range(256)) * 4
    p1 = [ISA.Load(n0=1024, n1=1, n2=1, sram_addr=0),
          ISA.Matmul(dtype=DT["int8"], m=64, n=64, k=256, a_addr=0, b_addr=0, c_addr=65536,
                     a_stride=256, b_stride=64, c_stride=256),
          ISA.SemSignal(queue=0, sem=0), ISA.SemWait(queue=2, sem=0),
          ISA.Store(n0=1024, n1=1, n2=1, dram_offset=1 << 16, sram_addr=0),
          ISA.Barrier(pe_mask=0b11), ISA.End()]
    p0 = [ISA.Barrier(pe_mask=0b11),
          ISA.Load(n0=1024, n1=1, n2=1, dram_offset=1 << 16, sram_addr=0), ISA.End()]
    dev, tl = run_program(SPEC, {0: p0, 1: p1}, {0: data}, trace=True)
    assert dev.read_sram(0, 0, 1024) == data
    assert tl.errors == {}
    slices = [e for e in dev.trace_json()["traceEvents"] if e["ph"] == "X"]
    store_end = max(e["ts"] + e["dur"] for e in slices if e["pid"] == 1 and e["name"] == "STORE")
    load_start = min(e["ts"] for e in slices if e["pid"] == 0 and e["name"] == "LOAD")
    assert load_start >= store_end


def test_semaphores_count():
    prog = [ISA.SemSignal(queue=0, sem=3), ISA.SemSignal(queue=0, sem=3),
            ISA.SemWait(queue=2, sem=3), ISA.SemWait(queue=1, sem=3), ISA.End()]
    _, tl = run_program(SPEC, {0: prog}, {})
    assert tl.errors == {}


@pytest.mark.parametrize("seed", range(12))
def test_random_race_free_programs_match_program_order(seed):
    rng = np.random.default_rng(seed)
    dram0 = bytearray(rng.integers(0, 256, 3 * 8192, dtype=np.uint8).tobytes())
    sram0 = [bytearray(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()) for _ in range(2)]
    progs = {pe: random_program(rng, 25, pe * 8192) for pe in range(2)}
    dev = Device(SPEC)
    dev.write_dram(0, bytes(dram0))
    for pe in range(2):
        dev.write_sram(pe, 0, bytes(sram0[pe]))
        start(dev, pe, progs[pe], args=[pe * 8192], prog_at=(8 << 20) + pe * 65536)
    dev.run_until_idle()
    want_dram = bytearray(dram0)
    for pe in range(2):
        want_sram = bytearray(sram0[pe])
        reference(progs[pe], want_sram, want_dram, pe * 8192)
        assert dev.read_sram(pe, 0, 8192) == bytes(want_sram)
        assert dev.read32(dev.regs.pe_reg(pe, dev.regs.PE_ERROR_CODE)) == 0
    assert dev.read_dram(0, len(want_dram)) == bytes(want_dram)


def test_advance_in_small_steps_matches_one_run():
    prog = double_buffered()
    _, whole = run_program(SPEC, {0: prog}, {})
    dev = Device(SPEC)
    start(dev, 0, prog)
    steps = 0
    while dev.busy():
        assert dev.advance(37) <= 37
        steps += 1
    assert dev.cycle == whole.cycles
    assert steps == math.ceil(whole.cycles / 37)
    assert dev.advance(100) == 0  # idle time is not consumed
