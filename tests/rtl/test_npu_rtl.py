"""The NPU RTL against the functional model (exact mode) and numpy, one opcode at a time.

Every case runs in one Verilator launch (the `rtl_results` fixture); the design is built
once per content of hw/rtl (cached). Each test checks its case's DRAM/SRAM against numpy
and its memories and registers against the model.
"""

import numpy as np
import pytest

import gen
from hw.sim.diff import (
    DATA_BASE,
    Case,
    Generator,
    chain,
    compare,
    run_model,
    to_bench,
)
from hw.spec import load

pytestmark = [pytest.mark.rtl, pytest.mark.slow]

SPEC = load("small")
ISA = gen.build(SPEC).isa
RNG = np.random.default_rng(7)
DRAM = {DATA_BASE: RNG.integers(0, 256, 0x10000, dtype=np.uint8).tobytes()}
OUT = DATA_BASE + 0x8000   # where cases store results


def dma(cls, **kw):
    base = dict(base=0, gather=0, dram_offset=DATA_BASE, sram_addr=0, n0=4, n1=1, n2=1,
                dram_s1=0, dram_s2=0, sram_s1=0, sram_s2=0, gather_addr=0)
    base.update(kw)
    return cls(**base)


def matmul_case():
    m, n, k = 13, 11, 19
    ld_a = dma(ISA.Load, dram_offset=DATA_BASE, sram_addr=0, n0=20, n1=m, dram_s1=20, sram_s1=20)
    ld_b = dma(ISA.Load, dram_offset=DATA_BASE + 0x1000, sram_addr=512, n0=20, n1=n,
               dram_s1=20, sram_s1=20)
    mm = ISA.Matmul(dtype=ISA.DTYPES["int8"], accumulate=0, transpose_b=1, m=m, n=n, k=k,
                    a_addr=0, b_addr=512, c_addr=1024, a_stride=20, b_stride=20, c_stride=48)
    mm2 = mm._replace(accumulate=1)
    st = dma(ISA.Store, dram_offset=OUT, sram_addr=1024, n0=44, n1=m, dram_s1=44, sram_s1=48)
    return Case({0: chain(ISA, [ld_a, ld_b, mm, mm2, st])}, DRAM)


def vector_cases():
    out = []
    ld = dma(ISA.Load, dram_offset=DATA_BASE, sram_addr=0, n0=64, n1=4, dram_s1=64, sram_s1=64)
    for func in ("copy", "add", "sub", "mul", "max", "min", "relu", "mul_shift", "clamp",
                 "row_sum", "row_max"):
        imm = (0xFFF0 | (40 << 16)) if func == "clamp" else 77
        v = ISA.Vector(func=ISA.VECTOR_FUNCS[func], in_dtype=ISA.DTYPES["int8"],
                       out_dtype=ISA.DTYPES["int32"], src2_mode=ISA.SRC2_MODES["row"],
                       rows=3, cols=10, src1_addr=0, src2_addr=64, dst_addr=1024,
                       src1_stride=64, src2_stride=0, dst_stride=64, shift=3, imm=imm)
        st = dma(ISA.Store, dram_offset=OUT, sram_addr=1024, n0=64, n1=3, dram_s1=64,
                 sram_s1=64)
        out.append((func, Case({0: chain(ISA, [ld, v, st])}, DRAM)))
    return out


def vector_reference(func, raw):
    a = raw[:3 * 64].reshape(3, 64)[:, :10].view(np.int8).astype(np.int64)
    b = raw[64:74].view(np.int8).astype(np.int64)[None, :]
    ops = {
        "copy": lambda: a, "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
        "max": lambda: np.maximum(a, b), "min": lambda: np.minimum(a, b),
        "relu": lambda: np.maximum(a, 0), "mul_shift": lambda: (a * b + 4) >> 3,
        "clamp": lambda: np.clip(a, -16, 40),
        "row_sum": lambda: a.sum(1, keepdims=True), "row_max": lambda: a.max(1, keepdims=True),
    }
    return ops[func]().astype(np.int32)


def gather_case():
    table = np.array([3, 0, 2], dtype=np.uint32)
    dram = dict(DRAM)
    dram[DATA_BASE + 0x4000] = table.tobytes() + bytes(4)
    ld_t = dma(ISA.Load, dram_offset=DATA_BASE + 0x4000, sram_addr=2048, n0=16)
    ld_g = dma(ISA.Load, gather=1, dram_offset=DATA_BASE, sram_addr=0, n0=8, n1=2, n2=3,
               dram_s1=16, dram_s2=256, sram_s1=8, sram_s2=16, gather_addr=2048)
    st = dma(ISA.Store, dram_offset=OUT, sram_addr=0, n0=48)
    return Case({0: chain(ISA, [ld_t, ld_g, st])}, dram), table


def barrier_case():
    mask = ISA.Barrier(pe_mask=0b11)
    p0 = chain(ISA, [dma(ISA.Load, n0=64), dma(ISA.Store, dram_offset=OUT, n0=64)])[:-1]
    p0 += [mask, ISA.End()]
    p1 = [mask] + chain(ISA, [dma(ISA.Load, dram_offset=OUT, n0=64),
                              dma(ISA.Store, dram_offset=OUT + 64, n0=64)])
    return Case({0: p0, 1: p1}, DRAM)


def error_cases():
    """Programs by the error they raise; a name may add ":why" to the error code."""
    bad_word = bytes([0x77]) + bytes(31)
    return {
        "ILLEGAL_OPCODE": [dma(ISA.Load), bad_word, ISA.End()],
        "BAD_FIELD": [ISA.SemSignal(queue=3, sem=0), ISA.End()],
        # an int32 sum has no narrow form, on the RTL as in the model
        "BAD_FIELD:narrow": [ISA.Matmul(dtype=ISA.DTYPES["int8"], narrow=1, m=8, n=8, k=8,
                                        a_stride=8, b_stride=8, c_addr=4096, c_stride=32),
                             ISA.End()],
        "MISALIGNED": [dma(ISA.Load, n0=6), ISA.End()],
        "SRAM_RANGE": [dma(ISA.Load, sram_addr=SPEC.sram_bytes_per_pe - 4, n0=8), ISA.End()],
        "DRAM_RANGE": [dma(ISA.Store, dram_offset=SPEC.dram_bytes - 4, n0=8), ISA.End()],
        "PC_OVERRUN": [dma(ISA.Load)],
        "DEADLOCK": [ISA.SemWait(queue=1, sem=5), ISA.End()],
    }


def all_cases():
    cases = {"matmul": matmul_case()}
    for func, c in vector_cases():
        cases[f"vector_{func}"] = c
    cases["gather"] = gather_case()[0]
    cases["barrier"] = barrier_case()
    for name, prog in error_cases().items():
        cases[f"error_{name}"] = Case({0: prog}, DRAM)
    g = Generator(SPEC, seed=1234)
    for i in range(12):
        cases[f"random_{i}"] = g.case()
    return cases


@pytest.fixture(scope="session")
def rtl_results():
    from hw.sim.npu import run_cases

    cases = all_cases()
    results, _ = run_cases(SPEC, [to_bench(SPEC, c) for c in cases.values()])
    return {name: (case, res) for (name, case), res in zip(cases.items(), results,
                                                            strict=True)}


def agree(rtl_results, name):
    case, res = rtl_results[name]
    model = run_model(SPEC, case)
    diffs = compare(SPEC, case, res, model)
    assert not diffs, f"{name}: RTL and model differ:\n" + "\n".join(diffs)
    return res


def dram_at(res, addr, n):
    return np.frombuffer(res["dram"][0][addr - DATA_BASE:addr - DATA_BASE + n], np.uint8)


def test_matmul_int8_transposed_accumulate(rtl_results):
    res = agree(rtl_results, "matmul")
    raw = np.frombuffer(DRAM[DATA_BASE], np.uint8)
    a = raw[:13 * 20].reshape(13, 20)[:, :19].view(np.int8).astype(np.int64)
    bt = raw[0x1000:0x1000 + 11 * 20].reshape(11, 20)[:, :19].view(np.int8).astype(np.int64)
    want = (2 * (a @ bt.T)).astype(np.int32)
    got = dram_at(res, OUT, 13 * 44).reshape(13, 44).copy().view(np.int32)
    np.testing.assert_array_equal(got, want)
    assert res["regs"][0]["PERF_MACS_LO"] == 2 * 13 * 11 * 19


@pytest.mark.parametrize("func", [f for f, _ in vector_cases()])
def test_vector_int(rtl_results, func):
    res = agree(rtl_results, f"vector_{func}")
    want = vector_reference(func, np.frombuffer(DRAM[DATA_BASE], np.uint8))
    cols = want.shape[1]
    got = dram_at(res, OUT, 3 * 64).reshape(3, 64)[:, :4 * cols].copy().view(np.int32)
    np.testing.assert_array_equal(got, want)


def test_load_gather_and_store(rtl_results):
    res = agree(rtl_results, "gather")
    _, table = gather_case()
    raw = np.frombuffer(DRAM[DATA_BASE], np.uint8)
    want = np.concatenate([raw[t * 256 + r * 16:t * 256 + r * 16 + 8]
                           for t in table for r in range(2)])
    np.testing.assert_array_equal(dram_at(res, OUT, 48), want)


def test_barrier_orders_two_pes(rtl_results):
    res = agree(rtl_results, "barrier")
    raw = np.frombuffer(DRAM[DATA_BASE], np.uint8)
    np.testing.assert_array_equal(dram_at(res, OUT + 64, 64), raw[:64])
    done = gen.build(SPEC).regs.PE_STATUS_DONE
    for pe in (0, 1):
        assert res["regs"][pe]["STATUS"] == done


@pytest.mark.parametrize("code", list(error_cases()))
def test_error_states(rtl_results, code):
    res = agree(rtl_results, f"error_{code}")
    assert res["regs"][0]["ERROR_CODE"] == ISA.ERRORS[code.partition(":")[0]]
    assert res["regs"][0]["STATUS"] == 6   # DONE | ERROR


@pytest.mark.parametrize("i", range(12))
def test_random_programs_agree_with_model(rtl_results, i):
    agree(rtl_results, f"random_{i}")



@pytest.mark.skipif(__import__("shutil").which("iverilog") is None, reason="no iverilog")
def test_icarus_agrees_with_model():
    """The same design under Icarus: a GEMM case and two random programs."""
    from hw.sim.npu import run_cases

    g = Generator(SPEC, seed=99)
    cases = [matmul_case(), g.case(), g.case()]
    results, _ = run_cases(SPEC, [to_bench(SPEC, c) for c in cases], simulator="icarus")
    for case, res in zip(cases, results, strict=True):
        diffs = compare(SPEC, case, res, run_model(SPEC, case))
        assert not diffs, "\n".join(diffs)
