"""Random race-free programs and a plain-loop reference interpreter for them.

`Builder` appends instructions and, whenever a new one touches memory that an earlier
instruction of another queue touched (read after write, write after read or write after
write), first inserts SEM_SIGNAL on the earlier queue and SEM_WAIT on the new one, so the
program's result does not depend on timing and equals running it in program order.
"""

from __future__ import annotations

import numpy as np
from model_kit import DT, ISA

QUEUE = {"Load": 0, "Matmul": 1, "Vector": 1, "Store": 2}
SEM = {(p, q): i for i, (p, q) in enumerate((p, q) for p in range(3) for q in range(3) if p != q)}


def _overlap(a, b):
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


class Builder:
    def __init__(self):
        self.program: list = []
        self.unsynced = {(p, q): [] for p in range(3) for q in range(3) if p != q}

    def add(self, ins, reads, writes):
        q = QUEUE[type(ins).__name__]
        for p in range(3):
            if p == q:
                continue
            pending = self.unsynced[(p, q)]
            conflict = any(
                _overlap(x, y)
                for r2, w2 in pending
                for x, y in [(a, b) for a in writes for b in r2 + w2]
                + [(a, b) for a in reads for b in w2]
            )
            if conflict:
                self.program.append(ISA.SemSignal(queue=p, sem=SEM[(p, q)]))
                self.program.append(ISA.SemWait(queue=q, sem=SEM[(p, q)]))
                pending.clear()
        self.program.append(ins)
        for r in range(3):
            if r != q:
                self.unsynced[(q, r)].append((reads, writes))

    def finish(self):
        return self.program + [ISA.End()]


def box(space, base, n0, n1, n2, s1, s2):
    return (space, base, base + (n2 - 1) * s2 + (n1 - 1) * s1 + n0)


def random_program(rng, n_ins, dram_base, sram_size=8192, dram_size=8192):
    """A race-free program over SRAM [0, sram_size) and DRAM [dram_base, +dram_size)."""
    b = Builder()
    a4 = lambda hi: int(rng.integers(0, hi // 4)) * 4  # noqa: E731
    for _ in range(n_ins):
        kind = rng.choice(["Load", "Store", "Matmul", "Vector"])
        if kind in ("Load", "Store"):
            n0 = int(rng.choice([4, 8, 16]))
            n1, n2 = int(rng.integers(1, 5)), int(rng.integers(1, 3))
            s1 = n0 + 4 * int(rng.integers(0, 3))
            s2 = n1 * s1 + 4 * int(rng.integers(0, 3))
            span = (n2 - 1) * s2 + (n1 - 1) * s1 + n0
            d, s = a4(dram_size - span), a4(sram_size - span)
            ins = getattr(ISA, kind)(base=0, dram_offset=d, sram_addr=s, n0=n0, n1=n1, n2=n2,
                                     dram_s1=s1, dram_s2=s2, sram_s1=s1, sram_s2=s2)
            dram_box = box("d", dram_base + d, n0, n1, n2, s1, s2)
            sram_box = box("s", s, n0, n1, n2, s1, s2)
            if kind == "Load":
                b.add(ins, [dram_box], [sram_box])
            else:
                b.add(ins, [sram_box], [dram_box])
        elif kind == "Matmul":
            m, n, k = (int(v) for v in rng.integers(1, 9, 3))
            third = sram_size // 3
            a_addr = int(rng.integers(0, third - 8 * 16))
            b_addr = third + int(rng.integers(0, third - 8 * 16))
            c_addr = 2 * third + a4(third - 8 * 48)
            ins = ISA.Matmul(dtype=DT["int8"], accumulate=int(rng.integers(0, 2)), m=m, n=n,
                             k=k, a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, a_stride=16,
                             b_stride=16, c_stride=48)
            reads = [box("s", a_addr, k, m, 1, 16, 0), box("s", b_addr, n, k, 1, 16, 0)]
            c = box("s", c_addr, 4 * n, m, 1, 48, 0)
            b.add(ins, reads + ([c] if ins.accumulate else []), [c])
        else:
            func = str(rng.choice(["add", "max", "relu", "copy", "mul_shift", "sub"]))
            out_t = str(rng.choice(["int8", "int32"]))
            oes = 1 if out_t == "int8" else 4
            rows, cols = (int(v) for v in rng.integers(1, 6, 2))
            third = sram_size // 3
            s1a = int(rng.integers(0, third - 6 * 8))
            s2a = third + int(rng.integers(0, third - 6 * 8))
            da = 2 * third + a4(third - 6 * 24)
            ins = ISA.Vector(func=ISA.VECTOR_FUNCS[func], in_dtype=DT["int8"],
                             out_dtype=DT[out_t], rows=rows, cols=cols, src1_addr=s1a,
                             src2_addr=s2a, dst_addr=da, src1_stride=8, src2_stride=8,
                             dst_stride=24, shift=int(rng.integers(0, 4)))
            reads = [box("s", s1a, cols, rows, 1, 8, 0), box("s", s2a, cols, rows, 1, 8, 0)]
            b.add(ins, reads, [box("s", da, cols * oes, rows, 1, 24, 0)])
    return b.finish()


# reference interpreter: program order, element by element


def _i8(mem, addr):
    v = mem[addr]
    return v - 256 if v > 127 else v


def _rd(mem, addr, nbytes):
    return int.from_bytes(mem[addr : addr + nbytes], "little", signed=True)


def _wr(mem, addr, nbytes, value):
    mem[addr : addr + nbytes] = (value % (1 << 8 * nbytes)).to_bytes(nbytes, "little")


def reference(program, sram: bytearray, dram: bytearray, arg0: int) -> None:
    for ins in program:
        name = type(ins).__name__
        if name in ("Load", "Store"):
            for i2 in range(ins.n2):
                for i1 in range(ins.n1):
                    d = arg0 + ins.dram_offset + i2 * ins.dram_s2 + i1 * ins.dram_s1
                    s = ins.sram_addr + i2 * ins.sram_s2 + i1 * ins.sram_s1
                    if name == "Load":
                        sram[s : s + ins.n0] = dram[d : d + ins.n0]
                    else:
                        dram[d : d + ins.n0] = sram[s : s + ins.n0]
        elif name == "Matmul":
            for i in range(ins.m):
                for j in range(ins.n):
                    c = ins.c_addr + i * ins.c_stride + 4 * j
                    acc = _rd(sram, c, 4) if ins.accumulate else 0
                    for kk in range(ins.k):
                        acc += _i8(sram, ins.a_addr + i * ins.a_stride + kk) * _i8(
                            sram, ins.b_addr + kk * ins.b_stride + j)
                    _wr(sram, c, 4, acc)
        elif name == "Vector":
            func = {v: k for k, v in ISA.VECTOR_FUNCS.items()}[ins.func]
            oes = 1 if ins.out_dtype == DT["int8"] else 4
            lo, hi = (-128, 127) if oes == 1 else (-(2**31), 2**31 - 1)
            out = np.zeros((ins.rows, ins.cols), dtype=object)
            for r in range(ins.rows):
                for c in range(ins.cols):
                    a = _i8(sram, ins.src1_addr + r * ins.src1_stride + c)
                    b = _i8(sram, ins.src2_addr + r * ins.src2_stride + c)
                    sh = ins.shift
                    v = {"add": a + b, "sub": a - b, "max": max(a, b), "relu": max(a, 0),
                         "copy": a,
                         "mul_shift": (a * b + (1 << (sh - 1))) >> sh if sh else a * b}[func]
                    out[r, c] = max(lo, min(hi, v))
            for r in range(ins.rows):
                for c in range(ins.cols):
                    _wr(sram, ins.dst_addr + r * ins.dst_stride + c * oes, oes, int(out[r, c]))
