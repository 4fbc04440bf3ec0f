"""Predecode NPU programs into `Op` records: decoded fields, static checks and costs.

A program is decoded once per (spec, program bytes) with the generated `isa.decode`, and
every check that depends only on the instruction and the spec (BAD_FIELD, MISALIGNED,
SRAM_RANGE) and every cost is worked out then, so a run pays only for what depends on
run-time state: the DRAM window, the ARG registers and gather tables.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import gen
from hw.model import costs
from hw.model.numerics import BINARY_FUNCS, FLOAT_ONLY_FUNCS, INT_TYPES, NP_DTYPES, REDUCTIONS
from hw.spec import Spec

log = logging.getLogger(__name__)

# Op kinds
LOAD, STORE, MATMUL, VECTOR, SEM_WAIT, SEM_SIGNAL, BARRIER, END, ILLEGAL = range(9)
KIND_OF = {
    "LOAD": LOAD, "STORE": STORE, "MATMUL": MATMUL, "VECTOR": VECTOR, "SEM_WAIT": SEM_WAIT,
    "SEM_SIGNAL": SEM_SIGNAL, "BARRIER": BARRIER, "END": END,
}
# Queue indices (docs/isa.md order, also the tie-break order of the scheduler)
LOAD_Q, COMPUTE_Q, STORE_Q = 0, 1, 2
QUEUE_NAMES = ("load", "compute", "store")
# Engine busy counters: which perf counter an op's cycles go to
ENGINE_LOAD, ENGINE_MAC, ENGINE_VECTOR, ENGINE_STORE, ENGINE_NONE = range(5)

_CACHE_SIZE = 64
# Accumulators a MATMUL may narrow back to its input type (a float sum's one rounding).
FLOAT_ACCUMULATORS = frozenset({"fp32"})


class Op:
    """One predecoded instruction. `err` is a static fault of an execution unit (raised
    when it starts), `disp_err` one the dispatcher raises; 0 when none."""

    __slots__ = (
        "kind", "name", "queue", "ins", "disp_err", "err", "sram_err", "empty", "cycles",
        "channel", "overhead", "nbytes", "macs", "mac_slots", "engine", "extent", "p",
    )

    def __init__(self, kind: int, name: str, ins: object):
        self.kind = kind
        self.name = name
        self.ins = ins
        self.queue = -1
        self.disp_err = 0
        self.err = 0
        self.sram_err = False
        self.empty = False
        self.cycles = costs.MIN_CYCLES
        self.channel = 0  # DMA: cycles of `cycles` the shared DRAM channel is taken
        self.overhead = 0
        self.nbytes = 0
        self.macs = 0
        self.mac_slots = 0  # MAC-array cell-cycles the op fills: macs / rate
        self.engine = ENGINE_NONE
        self.extent = 0  # DMA: DRAM bytes spanned from the first byte (non-gather)
        self.p: tuple = ()  # per-kind execution parameters

    def __repr__(self) -> str:
        return f"Op({self.name}, {self.ins!r})"


class Limits:
    """The spec figures the static checks and costs read, looked up once per spec."""

    def __init__(self, spec: Spec):
        isa = spec.isa
        self.spec = spec
        self.gen = gen.build(spec)
        self.errors = dict(isa.errors)
        self.dtype_names = {code: name for name, code in isa.dtypes.items()}
        self.func_names = {code: name for name, code in isa.vector_funcs.items()}
        self.vector_ops = frozenset(spec.pe.vector.ops)
        self.mac_dtypes = frozenset(spec.pe.mac.dtypes)
        self.accumulators = dict(spec.pe.mac.accumulators)
        self.src2_modes = {code: name for name, code in isa.src2_modes.items()}
        self.sram = spec.sram_bytes_per_pe
        self.align = spec.dma.align_bytes
        self.max_dims = spec.dma.max_dims
        self.gather_max = spec.dma.gather_max_entries
        self.num_sems = spec.pe.queues.num_semaphores
        self.num_pes = spec.npu.num_pes
        self.rate = dict(spec.pe.mac.rate)
        self.costs = costs.Costs(spec)
        self.dma_overhead = self.costs.dma_overhead()
        self.store_overhead = self.costs.dma_overhead(store=True)
        self.class_names = {cls.__name__: n for n, cls in self.gen.isa.CLASSES.items()}


_limits: dict[str, Limits] = {}


def limits(spec: Spec) -> Limits:
    lim = _limits.get(spec.hash)
    if lim is None:
        lim = _limits[spec.hash] = Limits(spec)
    return lim


_cache: OrderedDict[tuple[str, bytes], tuple[Op, ...]] = OrderedDict()


def predecode(spec: Spec, blob: bytes) -> tuple[Op, ...]:
    """The predecoded program for `blob` (a whole number of instruction words), cached."""
    key = (spec.hash, bytes(blob))
    prog = _cache.get(key)
    if prog is not None:
        _cache.move_to_end(key)
        return prog
    lim = limits(spec)
    isa = lim.gen.isa
    wb = isa.WORD_BYTES
    n = len(blob) // wb
    words = (blob[i * wb : (i + 1) * wb] for i in range(n))
    prog = tuple(_predecode_word(lim, w) for w in words)
    _cache[key] = prog
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    log.debug("predecoded %d instructions", n)
    return prog


def from_instructions(spec: Spec, instructions: Iterable[object]) -> tuple[Op, ...]:
    """Predecode already-decoded instructions (perf-only estimates skip the bytes)."""
    lim = limits(spec)
    return tuple(_predecode(lim, ins) for ins in instructions)


def _predecode_word(lim: Limits, word: bytes) -> Op:
    try:
        ins = lim.gen.isa.decode(word)
    except lim.gen.isa.DecodeError:
        op = Op(ILLEGAL, "ILLEGAL", None)
        op.disp_err = lim.errors["ILLEGAL_OPCODE"]
        return op
    return _predecode(lim, ins)


def _predecode(lim: Limits, ins: object) -> Op:
    name = lim.class_names.get(type(ins).__name__)
    if name is None:
        raise TypeError(f"not an NPU instruction: {ins!r}")
    # An instruction built by another spec's generated module has the same field names
    # (hw.schema fixes them), so it is used as it is.
    kind = KIND_OF[name]
    op = Op(kind, name, ins)
    if kind in (LOAD, STORE):
        _dma(lim, op)
    elif kind == MATMUL:
        _matmul(lim, op)
    elif kind == VECTOR:
        _vector(lim, op)
    elif kind in (SEM_WAIT, SEM_SIGNAL):
        op.cycles = costs.SEM_CYCLES
        if ins.queue > STORE_Q or ins.sem >= lim.num_sems:
            op.disp_err = lim.errors["BAD_FIELD"]
        else:
            op.queue = ins.queue
    elif kind == BARRIER:
        if ins.pe_mask >> lim.num_pes:
            op.disp_err = lim.errors["BAD_FIELD"]
    return op


def _dma(lim: Limits, op: Op) -> None:
    ins = op.ins
    e = lim.errors
    op.queue = LOAD_Q if op.kind == LOAD else STORE_Q
    op.engine = ENGINE_LOAD if op.kind == LOAD else ENGINE_STORE
    n0, n1, n2 = ins.n0, ins.n1, ins.n2
    if (ins.gather and n2 > lim.gather_max) or (lim.max_dims < 3 and n2 > 1) or (
        lim.max_dims < 2 and n1 > 1
    ):
        op.err = e["BAD_FIELD"]
    op.empty = not (n0 and n1 and n2)
    if op.empty:
        return
    a = lim.align
    if ins.sram_addr % a or n0 % a or any(
        s % a for s in (ins.dram_s1, ins.dram_s2, ins.sram_s1, ins.sram_s2)
    ) or (ins.gather and ins.gather_addr % 4):
        op.err = op.err or e["MISALIGNED"]
    last = ins.sram_addr + (n2 - 1) * ins.sram_s2 + (n1 - 1) * ins.sram_s1 + n0
    op.sram_err = last > lim.sram or bool(ins.gather and ins.gather_addr + 4 * n2 > lim.sram)
    op.extent = (n2 - 1) * ins.dram_s2 + (n1 - 1) * ins.dram_s1 + n0
    op.nbytes = n0 * n1 * n2
    store = op.kind != LOAD
    op.overhead = lim.store_overhead if store else lim.dma_overhead
    op.cycles = lim.costs.dma_transfer(n0, n1, n2, bool(ins.gather), store)
    # A store slower than the channel leaves it free between its writes for other DMAs.
    op.channel = min(op.cycles, lim.costs.dma_transfer(n0, n1, n2, bool(ins.gather)))


def _matmul(lim: Limits, op: Op) -> None:
    ins = op.ins
    e = lim.errors
    op.queue = COMPUTE_Q
    op.engine = ENGINE_MAC
    dtype = lim.dtype_names.get(ins.dtype)
    if dtype not in lim.mac_dtypes:
        op.err = e["BAD_FIELD"]
        dtype = None
    m, n, k = ins.m, ins.n, ins.k
    acc = lim.accumulators.get(dtype)
    # narrow rounds a float sum to the input type; an integer sum has no such rounding.
    if dtype is not None and ins.narrow and acc not in FLOAT_ACCUMULATORS:
        op.err = e["BAD_FIELD"]
    group = ins.group or m
    if m and m % group:
        op.err = op.err or e["BAD_FIELD"]
    op.empty = not (m and n and k)
    if dtype is None or op.empty or op.err:
        op.cycles = costs.MIN_CYCLES
        return
    es = NP_DTYPES[dtype].itemsize
    c_type = dtype if ins.narrow else acc
    cs = NP_DTYPES[c_type].itemsize
    groups = m // group
    b_step = ins.b_group_stride if groups > 1 else 0
    if any(v % es for v in (ins.a_addr, ins.a_stride, ins.b_addr, ins.b_stride, b_step)) or (
        ins.c_addr % cs or ins.c_stride % cs
    ):
        op.err = e["MISALIGNED"]
    b_rows, b_cols = (n, k) if ins.transpose_b else (k, n)
    op.sram_err = (
        ins.a_addr + (m - 1) * ins.a_stride + k * es > lim.sram
        or ins.b_addr + (groups - 1) * b_step + (b_rows - 1) * ins.b_stride + b_cols * es
        > lim.sram
        or ins.c_addr + (m - 1) * ins.c_stride + n * cs > lim.sram
    )
    op.macs = m * n * k
    rate = lim.rate.get(dtype, 1)
    op.mac_slots = m * n * -(-k // rate)
    op.cycles = groups * lim.costs.matmul(dtype, group, n, k)
    op.p = (dtype, acc, es, c_type, groups)


def _vector(lim: Limits, op: Op) -> None:
    ins = op.ins
    e = lim.errors
    op.queue = COMPUTE_Q
    op.engine = ENGINE_VECTOR
    func = lim.func_names.get(ins.func)
    in_t = lim.dtype_names.get(ins.in_dtype)
    out_t = lim.dtype_names.get(ins.out_dtype)
    mode = lim.src2_modes.get(ins.src2_mode)
    if (
        func not in lim.vector_ops
        or in_t is None
        or out_t is None
        or mode is None
        or (in_t in INT_TYPES and func in FLOAT_ONLY_FUNCS)
    ):
        op.err = e["BAD_FIELD"]
    rows, cols = ins.rows, ins.cols
    op.empty = not (rows and cols)
    op.cycles = lim.costs.vector(rows, cols, func)
    if op.err or op.empty:
        return
    ies, oes = NP_DTYPES[in_t].itemsize, NP_DTYPES[out_t].itemsize
    binary = func in BINARY_FUNCS
    reads2 = binary and mode != "imm"
    strided2 = reads2 and mode in ("tile", "col")
    misaligned = ins.src1_addr % ies or ins.src1_stride % ies
    misaligned = misaligned or ins.dst_addr % oes or ins.dst_stride % oes
    if reads2:
        misaligned = misaligned or ins.src2_addr % ies or (strided2 and ins.src2_stride % ies)
    if misaligned:
        op.err = e["MISALIGNED"]
    reduce = func in REDUCTIONS
    dst_cols = 1 if reduce else cols
    ends = [
        ins.src1_addr + (rows - 1) * ins.src1_stride + cols * ies,
        ins.dst_addr + (rows - 1) * ins.dst_stride + dst_cols * oes,
    ]
    if reads2:
        s2_rows = 1 if mode == "row" else rows
        s2_cols = 1 if mode == "col" else cols
        ends.append(ins.src2_addr + (s2_rows - 1) * ins.src2_stride + s2_cols * ies)
    op.sram_err = max(ends) > lim.sram
    op.p = (func, in_t, out_t, mode if binary else None, ies, oes, dst_cols)


def program_ops(spec: Spec, program: bytes | Sequence[object]) -> tuple[Op, ...]:
    """Predecode `program` given as bytes or as decoded instruction NamedTuples."""
    if isinstance(program, (bytes, bytearray, memoryview)):
        return predecode(spec, bytes(program))
    return from_instructions(spec, program)
