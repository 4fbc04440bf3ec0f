"""Chrome/Perfetto trace schema, and perf-only estimates that allocate no DRAM."""

from __future__ import annotations

import json
import tracemalloc
from collections import defaultdict

from model_kit import DT, ISA, SPEC
from test_schedule import double_buffered

from hw.model import estimate, run_program
from hw.spec import load


def check_trace(trace: dict, clock_mhz: int) -> list[dict]:
    text = json.dumps(trace, allow_nan=False)  # strict JSON: no NaN/Infinity
    events = json.loads(text)["traceEvents"]
    names = {}
    tracks = defaultdict(list)
    for e in events:
        assert e["ph"] in ("X", "C", "M")
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "M":
            names[(e["name"], e["pid"], e["tid"] if e["name"].startswith("thread") else 0)] = (
                e["args"])
        elif e["ph"] == "X":
            assert e["dur"] >= 0 and e["ts"] >= 0 and isinstance(e["name"], str)
            tracks[(e["pid"], e["tid"])].append(e)
        else:
            assert all(isinstance(v, (int, float)) for v in e["args"].values())
            tracks[("C", e["pid"], e["name"])].append(e)
    for key, evs in tracks.items():
        ts = [e["ts"] for e in evs]
        assert ts == sorted(ts), key
        if key[0] != "C":
            assert ("process_name", key[0], 0) in names
            assert ("thread_name", key[0], key[1]) in names
            for a, b in zip(evs, evs[1:], strict=False):
                assert a["ts"] + a["dur"] <= b["ts"] + 1e-9, (key, a, b)
    return events


def test_trace_is_valid_and_in_microseconds():
    data = bytes(4096)
    dev, tl = run_program(SPEC, {0: double_buffered(), 1: double_buffered()}, {0: data},
                          trace=True)
    events = check_trace(dev.trace_json(), SPEC.npu.clock_mhz)
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in slices} >= {"LOAD", "MATMUL", "STORE", "SEM_WAIT"}
    assert {e["pid"] for e in slices} == {0, 1}
    mm = next(e for e in slices if e["name"] == "MATMUL")
    assert mm["args"]["m"] == 32 and mm["args"]["dtype"] == "int8"
    # the MATMUL slice lasts its cost in cycles, converted at the spec clock
    mac = SPEC.pe.mac
    cycles = (32 // mac.rows) * (32 // mac.cols) * (64 + mac.pipeline_depth)
    assert abs(mm["dur"] - cycles / SPEC.npu.clock_mhz) < 1e-9
    end_us = max(e["ts"] + e["dur"] for e in slices)
    assert abs(end_us - tl.cycles / SPEC.npu.clock_mhz) < 1e-6
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and max(e["args"]["GB/s"] for e in counters) <= (
        SPEC.dram.bytes_per_cycle * SPEC.npu.clock_mhz / 1e3 + 1e-6)


def test_estimate_trace_is_valid():
    tl = estimate(SPEC, {0: double_buffered()}, trace=True)
    check_trace(tl.trace_json(), SPEC.npu.clock_mhz)


def big_gemm_programs(spec, M=8192, N=8192, K=8192, tm=512, tn=512, tk=1024):
    """An output-stationary GEMM tiled over all PEs: DMA A/B tiles, MATMUL, store C."""
    progs = {}
    pes = spec.npu.num_pes
    tiles = [(i, j) for i in range(0, M, tm) for j in range(0, N, tn)]
    for pe in range(pes):
        prog = []
        for t, (i, j) in enumerate(tiles[pe::pes]):
            for kk in range(0, K, tk):
                prog.append(ISA.Load(n0=tk, n1=tm, n2=1, dram_offset=(i * K + kk) % (1 << 31),
                                     dram_s1=K, sram_addr=0, sram_s1=tk))
                prog.append(ISA.Load(n0=tn, n1=tk, n2=1, dram_offset=(kk * N + j) % (1 << 31),
                                     dram_s1=N, sram_addr=1 << 20, sram_s1=tn))
                prog.append(ISA.SemSignal(queue=0, sem=0))
                prog.append(ISA.SemWait(queue=1, sem=0))
                prog.append(ISA.Matmul(dtype=DT["int8"], accumulate=int(kk > 0), m=tm, n=tn,
                                       k=tk, a_addr=0, b_addr=1 << 20, c_addr=4 << 20,
                                       a_stride=tk, b_stride=tn, c_stride=4 * tn))
                prog.append(ISA.SemSignal(queue=1, sem=1))
                prog.append(ISA.SemWait(queue=0, sem=1))
            prog.append(ISA.SemSignal(queue=1, sem=2))
            prog.append(ISA.SemWait(queue=2, sem=2))
            prog.append(ISA.Store(n0=4 * tn, n1=tm, n2=1, dram_offset=t * 4 * tm * tn,
                                  dram_s1=4 * tn, sram_addr=4 << 20, sram_s1=4 * tn))
        progs[pe] = prog + [ISA.End()]
    return progs


def test_datacenter_estimate_allocates_no_dram():
    spec = load("datacenter")
    progs = big_gemm_programs(spec)
    n_ins = sum(len(p) for p in progs.values())
    tracemalloc.start()
    tl = estimate(spec, progs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert spec.dram_bytes == 48 << 30
    assert peak < 64 << 20  # megabytes of bookkeeping, never the 48 GiB DRAM
    assert n_ins > 10_000 and tl.errors == {}
    assert tl.macs == 8192**3
    # the schedule is at least as long as the MAC work of one PE at peak rate
    per_pe = 8192**3 / spec.npu.num_pes / (spec.pe.mac.rows * spec.pe.mac.cols * 2)
    assert tl.cycles >= per_pe
    assert 0 < tl.mac_utilization <= 1
