"""From a legalised graph to per-PE programs: memory planning and kernel emission.

Activations live in one arena (ARG1) planned by liveness with first-fit reuse; inputs
(ARG2) and outputs (ARG3) have fixed slots; constants go to the blob (ARG0). Kernels run
one after another; a BARRIER over all PEs between two kernels drains every queue, so
a kernel's stores are in DRAM before the next kernel's loads and SRAM may be reused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from stack.compiler.context import ARG_ARENA, ARG_INPUT, ARG_OUTPUT, Ctx
from stack.compiler.emit import pipeline
from stack.compiler.ir import Graph
from stack.compiler.k_data import k_cat, k_copy, k_gather, k_im2col, k_pool
from stack.compiler.k_gemm import k_gemm
from stack.compiler.k_vector import k_eltwise, k_norm, k_reduce, k_softmax

__all__ = ["Lowered", "generate", "KERNELS"]

log = logging.getLogger(__name__)

KERNELS = {"gemm": k_gemm, "eltwise": k_eltwise, "reduce": k_reduce, "softmax": k_softmax,
           "norm": k_norm, "copy": k_copy, "cat": k_cat, "gather": k_gather,
           "im2col": k_im2col, "pool": k_pool}
ALIGN = 64


def _al(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class Lowered:
    programs: dict[int, list[Any]]
    consts: bytes
    arena_bytes: int
    inputs: list[dict[str, Any]]  # name, offset, shape, dtype
    outputs: list[dict[str, Any]]  # offset, shape, dtype
    kernel_counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def plan_memory(ctx: Ctx, g: Graph) -> tuple[int, list[dict], list[dict]]:
    off = 0
    ins = []
    for v in g.inputs:
        ctx.places[id(v)] = (ARG_INPUT, off)
        ins.append({"name": v.name, "offset": off, "shape": list(v.shape), "dtype": v.dtype})
        off += _al(v.nbytes)
    off = 0
    outs = []
    for v in g.outputs:
        root = v.root
        if id(root) not in ctx.places:
            ctx.places[id(root)] = (ARG_OUTPUT, off)
            off += _al(root.nbytes)
        outs.append({"offset": ctx.places[id(root)][1] + v.offset * 4, "shape": list(v.shape),
                     "dtype": v.dtype})
    # Liveness over node order for the arena.
    last: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if v.kind != "const":
                last[id(v.root)] = i
    free: list[tuple[int, int]] = []  # (offset, size)
    top = 0
    live: dict[int, tuple[int, int]] = {}
    for i, n in enumerate(g.nodes):
        root = n.output
        if id(root) not in ctx.places:
            size = _al(root.nbytes)
            best = None
            for j, (_fo, fs) in enumerate(free):
                if fs >= size and (best is None or fs < free[best][1]):
                    best = j
            if best is not None:
                fo, fs = free.pop(best)
                if fs > size:
                    free.append((fo + size, fs - size))
                at = fo
            else:
                at, top = top, top + size
            ctx.places[id(root)] = (ARG_ARENA, at)
            live[id(root)] = (at, size)
        for v in n.inputs:
            key = id(v.root)
            if v.kind != "const" and last.get(key) == i and key in live:
                free.append(live.pop(key))
        if id(root) in live and last.get(id(root), -1) < i:
            free.append(live.pop(id(root)))  # never read
    return top, ins, outs


def generate(ctx: Ctx, g: Graph) -> Lowered:
    t0 = time.perf_counter()
    arena, ins, outs = plan_memory(ctx, g)
    t1 = time.perf_counter()
    isa = ctx.isa
    npes = ctx.num_pes
    progs: dict[int, list[Any]] = {pe: [] for pe in range(npes)}
    mask = (1 << npes) - 1
    counts: dict[str, int] = {}
    for node in g.nodes:
        kern = KERNELS.get(node.op)
        if kern is None:
            raise ValueError(f"no kernel for IR op {node.op}")
        per_pe = kern(ctx, node)
        counts[node.op] = counts.get(node.op, 0) + 1
        for pe in range(npes):
            prologue, steps = per_pe[pe] if pe < len(per_pe) else ([], [])
            if steps or prologue:
                progs[pe].extend(pipeline(isa, prologue, steps))
            progs[pe].append(isa.Barrier(pe_mask=mask))
    for pe in range(npes):
        progs[pe].append(isa.End())
    t2 = time.perf_counter()
    return Lowered(progs, ctx.consts.blob(), arena, ins, outs, counts,
                   {"memory_planning": t1 - t0, "codegen": t2 - t1})
