"""cocotb bench for the NPU: a DRAM model, the register bus, and a batch of programs.

Run through :func:`hw.sim.npu.run_cases`, which passes the job file in ``$NPU_BENCH_JOB``.
DRAM is a Python ``bytearray`` answering the top's DRAM port: it accepts one request a
cycle, applies writes at once and answers reads ``dram.latency_cycles`` later, in order.
The bench wakes every cycle only while requests are in flight; otherwise it sleeps until
``dram_req_valid`` rises, and the wait for the PEs is an edge wait on ``pe_done``.
"""

from __future__ import annotations

import collections
import os
import pickle
from typing import Any

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from hw.sim.bus import BusTimeout, RegisterBus, start_clock_and_reset, wait_for
from hw.sim.npu import job_path
from hw.spec import Spec

PERIOD_NS = 10
TRACE = bool(os.environ.get("NPU_BENCH_TRACE"))
REG_NAMES = ("STATUS", "ERROR_CODE", "ERROR_PC", "PC", "PERF_CYCLES", "PERF_INSTRS",
             "PERF_MAC_BUSY", "PERF_LOAD_BUSY", "PERF_STORE_BUSY", "PERF_VECTOR_BUSY",
             "PERF_DRAM_BYTES", "PERF_MACS_LO", "PERF_MACS_HI")


def _cycle() -> int:
    return int(get_sim_time("ns")) // PERIOD_NS


class Dram:
    """The DRAM behind the top's port, with a fixed read latency."""

    def __init__(self, dut: Any, size: int, latency: int):
        self.dut = dut
        self.mem = bytearray(size)
        self.latency = latency
        self.requests = 0

    async def serve(self) -> None:
        dut = self.dut
        dut.dram_req_ready.value = 1
        dut.dram_resp_valid.value = 0
        pending: collections.deque = collections.deque()
        mem = self.mem
        settled = False   # already in this cycle's read-only phase
        while True:
            if not settled:
                await ReadOnly()
            settled = False
            req = None
            if dut.dram_req_valid.value == 1:
                req = (int(dut.dram_req_we.value), int(dut.dram_req_addr.value),
                       int(dut.dram_req_wdata.value), int(dut.dram_req_wstrb.value),
                       int(dut.dram_req_tag.value))
            await RisingEdge(dut.clk)
            now = _cycle()
            if req is not None:
                self.requests += 1
                if TRACE:
                    dut._log.info("req %d %r", now, req)
                we, addr, wdata, wstrb, tag = req
                if we:
                    data = wdata.to_bytes(8, "little")
                    for i in range(8):
                        if wstrb >> i & 1:
                            mem[addr + i] = data[i]
                else:
                    pending.append((now + self.latency - 1, tag, bytes(mem[addr:addr + 8])))
            driving = bool(pending) and pending[0][0] <= now
            if driving:
                _, tag, data = pending.popleft()
                dut.dram_resp_valid.value = 1
                dut.dram_resp_tag.value = tag
                dut.dram_resp_data.value = int.from_bytes(data, "little")
            else:
                dut.dram_resp_valid.value = 0
            if not pending and req is None and not driving:
                await ReadOnly()
                settled = True
                if dut.dram_req_valid.value == 0:
                    await RisingEdge(dut.dram_req_valid)
                    settled = False


async def clear_sram(dut, pe: int, words: int) -> None:
    """Zero the first `words` words of PE `pe`'s SRAM."""
    dut.dbg_pe.value = pe
    dut.dbg_wdata.value = 0
    dut.dbg_we.value = 1
    for w in range(words):
        dut.dbg_addr.value = w
        await RisingEdge(dut.clk)
    dut.dbg_we.value = 0


async def read_sram(dut, pe: int, words: int) -> bytes:
    out = bytearray()
    dut.dbg_pe.value = pe
    dut.dbg_we.value = 0
    for w in range(words):
        dut.dbg_addr.value = w
        await RisingEdge(dut.clk)
        await ReadOnly()
        out += int(dut.dbg_rdata.value).to_bytes(8, "little")
        await RisingEdge(dut.clk)
    return bytes(out)


async def run_case(dut, bus: RegisterBus, dram: Dram, spec: Spec, case: dict) -> dict:
    from gen import build

    regs = build(spec).regs
    words = case.get("sram_words", 0)
    for pe in range(spec.npu.num_pes):
        await RisingEdge(dut.clk)
        await clear_sram(dut, pe, words)
    dram.mem[:] = bytes(len(dram.mem))
    for addr, blob in case.get("dram", []):
        dram.mem[addr:addr + len(blob)] = blob
    started = 0
    for pe, prog in case["programs"].items():
        cfg = case["config"][pe]
        dram.mem[cfg["prog_base"]:cfg["prog_base"] + len(prog)] = prog
        r = regs.pe_reg
        values = {
            regs.PE_PROG_BASE_LO: cfg["prog_base"] & 0xFFFFFFFF,
            regs.PE_PROG_BASE_HI: cfg["prog_base"] >> 32,
            regs.PE_PROG_LEN: cfg.get("prog_len", len(prog) // 32),
            regs.PE_WIN_BASE_LO: cfg["win_base"] & 0xFFFFFFFF,
            regs.PE_WIN_BASE_HI: cfg["win_base"] >> 32,
            regs.PE_WIN_SIZE_LO: cfg["win_size"] & 0xFFFFFFFF,
            regs.PE_WIN_SIZE_HI: cfg["win_size"] >> 32,
        }
        for i, arg in enumerate(cfg.get("args", [0] * 8)):
            values[regs.PE_ARG_LO + 8 * i] = arg & 0xFFFFFFFF
            values[regs.PE_ARG_HI + 8 * i] = arg >> 32
        for off, val in values.items():
            await bus.write(r(pe, off), val)
        started |= 1 << pe
    ctrl = regs.PE["CTRL"].fields
    for pe in range(spec.npu.num_pes):
        if pe not in case["programs"]:
            # Clears pe_done left by an earlier case, so the wait below sees only this one.
            await bus.write(regs.pe_reg(pe, regs.PE_CTRL), 1 << ctrl["RESET"][0])
    await bus.write(regs.IRQ_STATUS, 0xFFFFFFFF)
    start = _cycle()
    for pe in case["programs"]:
        await bus.write(regs.pe_reg(pe, regs.PE_CTRL), 1 << regs.PE["CTRL"].fields["START"][0])
    # pe_done drops at the START edge; let it settle before waiting for it to rise.
    await ClockCycles(dut.clk, 2)
    timed_out = False
    try:
        await wait_for(dut.pe_done, started, case.get("timeout", 200_000), clock=dut.clk)
    except BusTimeout:
        timed_out = True
    cycles = _cycle() - start
    out: dict[str, Any] = {"regs": {}, "sram": {}, "cycles": cycles, "timed_out": timed_out}
    for pe in range(spec.npu.num_pes):
        got = {}
        for name in REG_NAMES:
            got[name] = await bus.read(regs.pe_reg(pe, regs.PE[name].offset))
        out["regs"][pe] = got
        out["sram"][pe] = await read_sram(dut, pe, words)
    out["irq_status"] = await bus.read(regs.IRQ_STATUS)
    out["dram"] = [bytes(dram.mem[a:a + n]) for a, n in case.get("read_dram", [])]
    return out


async def bring_up(dut, spec) -> tuple[RegisterBus, Dram]:
    """Quiet the bench-driven inputs, start clock, reset and the DRAM model; returns (bus, DRAM)."""
    dut.dbg_we.value = 0
    dut.dbg_pe.value = 0
    dut.dbg_addr.value = 0
    dut.dram_resp_valid.value = 0
    await start_clock_and_reset(dut, period_ns=PERIOD_NS)
    dram = Dram(dut, spec.dram_bytes, spec.dram.latency_cycles)
    cocotb.start_soon(dram.serve())
    return RegisterBus(dut), dram


@cocotb.test()
async def run_job(dut):
    """Run every case of the job file and write the results next to it."""
    job = pickle.loads(open(job_path(), "rb").read())
    spec = Spec(job["spec"])
    bus, dram = await bring_up(dut, spec)
    results = []
    for case in job["cases"]:
        results.append(await run_case(dut, bus, dram, spec, case))
    with open(job["out"], "wb") as fh:
        pickle.dump(results, fh)
