"""Differential testing of the RTL against the functional model.

    python -m hw.sim.diff --seed S --programs N --spec small [--simulator icarus]

Generates N random legal programs over what the RTL implements (LOAD and STORE without
gather, int8 MATMUL, integer VECTOR, SEM_WAIT/SEM_SIGNAL, END), runs them all on the RTL in
one simulator launch and on the model (exact mode), and compares DRAM, SRAM and the PE
registers that do not depend on timing (STATUS, ERROR_CODE, ERROR_PC, PC, PERF_INSTRS,
PERF_MACS, PERF_DRAM_BYTES) bit for bit. Programs are race-free by construction: every
instruction is followed by a semaphore hand-off to the queue of the next one, so the
queues take turns. On a mismatch it shrinks the first failing program by dropping
instructions (all one-instruction-shorter candidates run in one launch per round) and
prints it with the command that reproduces it; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from dataclasses import dataclass, field
from typing import Any

import gen
from hw.rtl.common import ELEM_BYTES, INT_DTYPES, RTL_VECTOR_FUNCS
from hw.spec import Spec, load

log = logging.getLogger(__name__)

SRAM_USED = 8192            # bytes of each PE's SRAM the programs touch
DATA_BASE = 0x10000         # DRAM data of PE p at DATA_BASE + p * DATA_SPAN
DATA_SPAN = 0x10000
COMPARED_REGS = ("STATUS", "ERROR_CODE", "ERROR_PC", "PC", "PERF_INSTRS", "PERF_MACS_LO",
                 "PERF_DRAM_BYTES")


@dataclass
class Case:
    """Programs ({pe: [instruction]}) and the DRAM image they start from."""

    programs: dict[int, list]
    dram: dict[int, bytes] = field(default_factory=dict)
    args: dict[int, list[int]] = field(default_factory=dict)


def program_base(spec: Spec, blobs: dict[int, bytes]) -> dict[int, int]:
    """Where the model's `run_program` places each PE's program (the RTL bench matches)."""
    total = sum(len(b) for b in blobs.values())
    addr = (spec.dram_bytes - total) & ~0xFFF
    out = {}
    for pe, blob in sorted(blobs.items()):
        out[pe] = addr
        addr += len(blob)
    return out


def encode(spec: Spec, program: list) -> bytes:
    """Instruction words of `program`; raw 32-byte `bytes` items pass through (for
    illegal opcodes)."""
    return b"".join(i if isinstance(i, bytes) else i.encode() for i in program)


def to_bench(spec: Spec, case: Case, timeout: int = 100_000) -> dict[str, Any]:
    """The `hw.sim.npu.run_cases` form of `case`."""
    blobs = {pe: encode(spec, p) for pe, p in case.programs.items()}
    bases = program_base(spec, blobs)
    return {
        "programs": blobs,
        "dram": sorted(case.dram.items()),
        "config": {pe: {"prog_base": bases[pe], "win_base": 0, "win_size": spec.dram_bytes,
                        "args": (case.args.get(pe, []) + [0] * 8)[:8]} for pe in blobs},
        "sram_words": SRAM_USED // 8,
        "read_dram": [(DATA_BASE, DATA_SPAN * spec.npu.num_pes)],
        "timeout": timeout,
    }


def run_model(spec: Spec, case: Case) -> dict[str, Any]:
    """The model's view of `case`, in the shape the bench returns."""
    from hw.model import run_program

    regs = gen.build(spec).regs
    blobs = {pe: encode(spec, p) for pe, p in case.programs.items()}
    dev, _ = run_program(spec, blobs, case.dram, case.args, exact=True)
    out: dict[str, Any] = {"regs": {}, "sram": {}}
    for pe in range(spec.npu.num_pes):
        out["regs"][pe] = {n: dev.read32(regs.pe_reg(pe, regs.PE[n].offset))
                           for n in COMPARED_REGS}
        out["sram"][pe] = dev.read_sram(pe, 0, SRAM_USED)
    out["dram"] = [dev.read_dram(DATA_BASE, DATA_SPAN * spec.npu.num_pes)]
    return out


def compare(spec: Spec, case: Case, rtl: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """Differences between an RTL result and a model result, as readable lines."""
    bad = []
    if rtl.get("timed_out"):
        bad.append("RTL timed out")
    for pe in case.programs:
        for name in COMPARED_REGS:
            a, b = rtl["regs"][pe][name], model["regs"][pe][name]
            if a != b:
                bad.append(f"PE{pe} {name}: rtl {a:#x} model {b:#x}")
        a, b = rtl["sram"][pe], model["sram"][pe]
        if a != b:
            first = next(i for i in range(len(a)) if a[i] != b[i])
            bad.append(f"PE{pe} SRAM differs first at byte {first:#x}: rtl {a[first]:#04x} "
                       f"model {b[first]:#04x}")
    a, b = rtl["dram"][0], model["dram"][0]
    if a != b:
        first = next(i for i in range(len(a)) if a[i] != b[i])
        bad.append(f"DRAM differs first at {DATA_BASE + first:#x}")
    return bad


class Generator:
    """Random legal, race-free programs over the RTL's instructions."""

    def __init__(self, spec: Spec, seed: int):
        self.spec = spec
        self.rng = random.Random(seed)
        self.isa = gen.build(spec).isa

    def _span(self, align: int, size: int) -> int:
        """An aligned SRAM address with `size` bytes after it inside SRAM_USED."""
        hi = (SRAM_USED - size) // align
        return self.rng.randint(0, max(0, hi)) * align

    def load_store(self, pe: int, store: bool):
        r, isa = self.rng, self.isa
        n0 = 4 * r.randint(1, 8)
        n1, n2 = r.randint(1, 4), r.randint(1, 2)
        s1 = n0 + 4 * r.randint(0, 4)
        s2 = s1 * n1 + 4 * r.randint(0, 4)
        size = (n2 - 1) * s2 + (n1 - 1) * s1 + n0
        d1 = n0 + 4 * r.randint(0, 8)
        d2 = d1 * n1 + 4 * r.randint(0, 8)
        dsize = (n2 - 1) * d2 + (n1 - 1) * d1 + n0
        off = DATA_BASE + pe * DATA_SPAN + 4 * r.randint(0, (DATA_SPAN - dsize) // 4)
        cls = isa.Store if store else isa.Load
        return cls(base=0, gather=0, dram_offset=off, sram_addr=self._span(4, size), n0=n0,
                   n1=n1, n2=n2, dram_s1=d1, dram_s2=d2, sram_s1=s1, sram_s2=s2, gather_addr=0)

    def matmul(self):
        r = self.rng
        m, n, k = r.randint(1, 20), r.randint(1, 20), r.randint(1, 24)
        tb = r.randint(0, 1)
        a_stride = k + r.randint(0, 8)
        b_stride = (k if tb else n) + r.randint(0, 8)
        c_stride = 4 * (n + r.randint(0, 4))
        a_size = (m - 1) * a_stride + k
        b_size = ((n - 1) if tb else (k - 1)) * b_stride + (k if tb else n)
        c_size = (m - 1) * c_stride + 4 * n
        while True:
            a, b = self._span(1, a_size), self._span(1, b_size)
            c = self._span(4, c_size)
            if not (_overlap(a, a_size, c, c_size) or _overlap(b, b_size, c, c_size)):
                break
        return self.isa.Matmul(dtype=self.isa.DTYPES["int8"], accumulate=r.randint(0, 1),
                               transpose_b=tb, m=m, n=n, k=k, a_addr=a, b_addr=b, c_addr=c,
                               a_stride=a_stride, b_stride=b_stride, c_stride=c_stride)

    def vector(self):
        r, isa = self.rng, self.isa
        funcs = [f for f in RTL_VECTOR_FUNCS if f in self.spec.pe.vector.ops]
        func = r.choice(funcs)
        ind, outd = r.choice(INT_DTYPES), r.choice(INT_DTYPES)
        ie, oe = ELEM_BYTES[ind], ELEM_BYTES[outd]
        rows, cols = r.randint(1, 6), r.randint(1, 12)
        mode = r.choice(list(isa.SRC2_MODES))
        s1s = ie * (cols + r.randint(0, 3))
        s2s = ie * (cols + r.randint(0, 3))
        reduce = func in ("row_sum", "row_max")
        ds = oe * ((1 if reduce else cols) + r.randint(0, 3))
        s1_size = (rows - 1) * s1s + cols * ie
        s2_size = {"tile": (rows - 1) * s2s + cols * ie, "row": cols * ie,
                   "col": (rows - 1) * s2s + ie, "imm": 0}[mode]
        d_size = (rows - 1) * ds + (1 if reduce else cols) * oe
        while True:
            a, b, d = self._span(ie, s1_size), self._span(ie, s2_size), self._span(oe, d_size)
            if not (_overlap(a, s1_size, d, d_size) or _overlap(b, s2_size, d, d_size)):
                break
        if func == "clamp":
            lo, hi = sorted(r.randint(-300, 300) for _ in range(2))
            imm = (lo & 0xFFFF) | (hi & 0xFFFF) << 16
        else:
            imm = r.randint(-1000, 1000) & 0xFFFFFFFF
        return isa.Vector(func=isa.VECTOR_FUNCS[func], in_dtype=isa.DTYPES[ind],
                          out_dtype=isa.DTYPES[outd], src2_mode=isa.SRC2_MODES[mode],
                          rows=rows, cols=cols, src1_addr=a, src2_addr=b, dst_addr=d,
                          src1_stride=s1s, src2_stride=s2s, dst_stride=ds,
                          shift=r.randint(0, 12), imm=imm)

    def program(self, pe: int, length: int) -> list:
        isa = self.isa
        body = []
        for _ in range(length):
            kind = self.rng.choice(("load", "load", "store", "matmul", "vector", "vector"))
            if kind == "load":
                body.append(self.load_store(pe, False))
            elif kind == "store":
                body.append(self.load_store(pe, True))
            elif kind == "matmul":
                body.append(self.matmul())
            else:
                body.append(self.vector())
        return chain(isa, body)

    def case(self) -> Case:
        pes = list(range(self.spec.npu.num_pes))
        used = pes if self.rng.random() < 0.5 else [self.rng.choice(pes)]
        programs = {pe: self.program(pe, self.rng.randint(2, 7)) for pe in used}
        dram = {DATA_BASE + pe * DATA_SPAN: self.rng.randbytes(DATA_SPAN) for pe in pes}
        return Case(programs, dram)


def chain(isa, body: list) -> list:
    """`body` with a semaphore hand-off between consecutive instructions, then END."""
    q = isa.QUEUES
    out = []
    prev = None
    for ins in body:
        queue = q[isa.QUEUE_OF[isa.name_of(ins)]]
        if prev is not None and prev != queue:
            # Semaphore `queue` is only ever waited on by that queue, so each signal
            # releases exactly the wait it was meant for.
            out += [isa.SemSignal(queue=prev, sem=queue), isa.SemWait(queue=queue, sem=queue)]
        out.append(ins)
        prev = queue
    return out + [isa.End()]


def _overlap(a: int, an: int, b: int, bn: int) -> bool:
    return an > 0 and bn > 0 and a < b + bn and b < a + an


def run(spec: Spec, cases: list[Case], simulator: str | None = None) -> list[list[str]]:
    """Run `cases` on the RTL (one launch) and the model; the differences of each."""
    from hw.sim.npu import run_cases

    rtl, _ = run_cases(spec, [to_bench(spec, c) for c in cases], simulator=simulator)
    return [compare(spec, c, r, run_model(spec, c)) for c, r in zip(cases, rtl, strict=True)]


def shrink(spec: Spec, case: Case, simulator: str | None, rounds: int = 6) -> Case:
    """Drop instructions (one per candidate, END kept) while the mismatch persists."""
    for _ in range(rounds):
        candidates = []
        for pe, prog in case.programs.items():
            for i in range(len(prog) - 1):
                progs = dict(case.programs)
                progs[pe] = prog[:i] + prog[i + 1:]
                candidates.append(Case(progs, case.dram, case.args))
        if not candidates:
            break
        diffs = run(spec, candidates, simulator)
        smaller = [c for c, d in zip(candidates, diffs, strict=True) if d]
        if not smaller:
            break
        case = smaller[0]
    return case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--programs", type=int, default=20)
    ap.add_argument("--spec", default="small")
    ap.add_argument("--simulator", default=None, choices=("verilator", "icarus"))
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    spec = load(ns.spec)
    isa = gen.build(spec).isa
    g = Generator(spec, ns.seed)
    cases = [g.case() for _ in range(ns.programs)]
    diffs = run(spec, cases, ns.simulator)
    instrs = sum(len(p) for c in cases for p in c.programs.values())
    covered = sorted({isa.name_of(i) for c in cases for p in c.programs.values() for i in p})
    bad = [i for i, d in enumerate(diffs) if d]
    print(f"programs={len(cases)} instructions={instrs} opcodes={','.join(covered)} "
          f"mismatches={len(bad)}")
    if not bad:
        return 0
    first = cases[bad[0]]
    print("first mismatch:", *diffs[bad[0]], sep="\n  ")
    small = shrink(spec, first, ns.simulator)
    print("smallest failing program:")
    for pe, prog in small.programs.items():
        for i, ins in enumerate(prog):
            print(f"  PE{pe} [{i}] {ins}")
    sim = f" --simulator {ns.simulator}" if ns.simulator else ""
    print(f"reproduce: python -m hw.sim.diff --seed {ns.seed} --programs {ns.programs} "
          f"--spec {ns.spec}{sim}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
