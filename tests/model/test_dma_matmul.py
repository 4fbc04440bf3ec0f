"""LOAD, STORE and MATMUL against references written with plain loops."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from model_kit import DT, ISA, E, error_of, place, run_ops, sram_array
from test_vector import to_bf16, to_fp8

SRAM = 256 * 1024


def dma_reference(src: bytes, dst: bytearray, src_off, dst_off, n0, n1, n2,
                  src_s1, src_s2, dst_s1, dst_s2, table=None) -> None:
    for i2 in range(n2):
        plane = table[i2] if table is not None else i2
        for i1 in range(n1):
            s = src_off(plane, i2) + i1 * src_s1
            d = dst_off(plane, i2) + i1 * dst_s1
            dst[d : d + n0] = src[s : s + n0]


@pytest.mark.parametrize(
    "n0,n1,n2,ds1,ds2,ss1,ss2",
    [(8, 3, 2, 16, 64, 12, 40), (64, 1, 1, 0, 0, 0, 0), (4, 5, 3, 8, 100, 4, 24),
     (12, 4, 2, 12, 48, 12, 48)],
)
def test_load_store_boxes(n0, n1, n2, ds1, ds2, ss1, ss2):
    rng = np.random.default_rng(n0 * 7 + n1)
    dram = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    arg, off, sram_addr = 256, 32, 512
    load = ISA.Load(base=1, dram_offset=off, sram_addr=sram_addr, n0=n0, n1=n1, n2=n2,
                    dram_s1=ds1, dram_s2=ds2, sram_s1=ss1, sram_s2=ss2)
    dev = run_ops([load], dram={0: dram}, args=[0, arg])
    want = bytearray(4096)
    dma_reference(dram, want, lambda p, i2: arg + off + i2 * ds2,
                  lambda p, i2: sram_addr + i2 * ss2, n0, n1, n2, ds1, ds2, ss1, ss2)
    assert dev.read_sram(0, 0, 4096) == bytes(want)

    sram = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    store = ISA.Store(base=2, dram_offset=off, sram_addr=sram_addr, n0=n0, n1=n1, n2=n2,
                      dram_s1=ds1, dram_s2=ds2, sram_s1=ss1, sram_s2=ss2)
    dev = run_ops([store], sram={0: sram}, args=[0, 0, arg])
    want = bytearray(4096)
    dma_reference(sram, want, lambda p, i2: sram_addr + i2 * ss2,
                  lambda p, i2: arg + off + i2 * ds2, n0, n1, n2, ss1, ss2, ds1, ds2)
    assert dev.read_dram(0, 4096) == bytes(want)


@pytest.mark.parametrize("kind", ["load", "store"])
def test_gather(kind):
    rng = np.random.default_rng(3)
    table = [5, 0, 3, 3, 7]
    n0, n1, ds1, ds2, ss1, ss2 = 16, 2, 32, 128, 16, 32
    tbl = np.array(table, "<u4").tobytes()
    if kind == "load":
        dram = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
        ins = ISA.Load(gather=1, dram_offset=64, sram_addr=1024, n0=n0, n1=n1, n2=len(table),
                       dram_s1=ds1, dram_s2=ds2, sram_s1=ss1, sram_s2=ss2, gather_addr=4000)
        dev = run_ops([ins], sram={4000: tbl}, dram={0: dram})
        want = bytearray(4000)
        dma_reference(dram, want, lambda p, i2: 64 + p * ds2, lambda p, i2: 1024 + i2 * ss2,
                      n0, n1, len(table), ds1, ds2, ss1, ss2, table)
        assert dev.read_sram(0, 0, 4000) == bytes(want)
    else:
        sram = bytearray(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        table = [5, 0, 3, 7]  # a scatter with distinct targets
        tbl = np.array(table, "<u4").tobytes()
        ins = ISA.Store(gather=1, dram_offset=64, sram_addr=1024, n0=n0, n1=n1, n2=len(table),
                        dram_s1=ds1, dram_s2=ds2, sram_s1=ss1, sram_s2=ss2, gather_addr=4000)
        dev = run_ops([ins], sram={0: bytes(sram), 4000: tbl})
        want = bytearray(2048)
        dma_reference(bytes(sram), want, lambda p, i2: 1024 + i2 * ss2,
                      lambda p, i2: 64 + p * ds2, n0, n1, len(table), ss1, ss2, ds1, ds2, table)
        assert dev.read_dram(0, 2048) == bytes(want)


FLOAT_TYPES = {"bf16": ml_dtypes.bfloat16, "fp8_e4m3": ml_dtypes.float8_e4m3fn,
               "fp8_e5m2": ml_dtypes.float8_e5m2}


def random_tile(rng, dtype: str, shape) -> np.ndarray:
    if dtype == "int8":
        return rng.integers(-128, 128, shape, dtype=np.int8)
    return (rng.standard_normal(shape) * 3).astype(FLOAT_TYPES[dtype])


def matmul_reference(a, b, c0, dtype: str):
    """Triple loop: int8 exact with int32 wrap; floats fp32, one rounding per add in k order."""
    m, k = a.shape
    n = b.shape[1]
    if dtype == "int8":
        out = np.zeros((m, n), np.int32)
        for i in range(m):
            for j in range(n):
                s = int(c0[i, j]) if c0 is not None else 0
                for kk in range(k):
                    s += int(a[i, kk]) * int(b[kk, j])
                out[i, j] = (s + 2**31) % 2**32 - 2**31
        return out
    out = np.zeros((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            acc = np.float32(c0[i, j]) if c0 is not None else np.float32(0)
            for kk in range(k):
                acc = np.float32(acc + np.float32(a[i, kk]) * np.float32(b[kk, j]))
            out[i, j] = acc
    return out


def _matmul_case(dtype, m, n, k, transpose_b, accumulate, exact, seed=0, narrow=False,
                 groups=1):
    """Run one MATMUL on strided tiles; B holds `groups` tiles [k, n], one per group of rows."""
    rng = np.random.default_rng(seed)
    es = 1 if dtype == "int8" else np.dtype(FLOAT_TYPES[dtype]).itemsize
    a = random_tile(rng, dtype, (m, k))
    b = random_tile(rng, dtype, (groups, k, n))
    if dtype == "int8":
        c_t = np.int32
        c0 = rng.integers(2**31 - 2**20, 2**31 - 1, (m, n)).astype(np.int32)
        c0[::2] = -c0[::2]  # near both ends, so accumulate wraps
    else:
        c_t = FLOAT_TYPES[dtype] if narrow else np.float32
        c0 = (rng.standard_normal((m, n)) * 10).astype(c_t)
    cs = np.dtype(c_t).itemsize
    a_stride = k * es + 4 * es
    b_store = b.transpose(0, 2, 1).copy() if transpose_b else b
    b_stride = b_store.shape[2] * es + 8 * es
    b_group_stride = b_store.shape[1] * b_stride + 64
    c_stride = n * cs + 12
    a_addr, b_addr = 0, 16384
    c_addr = max(65536, -(-(b_addr + groups * b_group_stride) // 64) * 64)  # past B
    ins = ISA.Matmul(dtype=DT[dtype], accumulate=int(accumulate), transpose_b=int(transpose_b),
                     m=m, n=n, k=k, a_addr=a_addr, b_addr=b_addr, c_addr=c_addr,
                     a_stride=a_stride, b_stride=b_stride, c_stride=c_stride,
                     narrow=int(narrow), group=m // groups if groups > 1 else 0,
                     b_group_stride=b_group_stride if groups > 1 else 0)
    sram = {a_addr: place(a, a_stride), c_addr: place(c0, c_stride)}
    for g in range(groups):
        sram[b_addr + g * b_group_stride] = place(b_store[g], b_stride)
    dev = run_ops([ins], sram=sram, exact=exact)
    got = sram_array(dev, c_addr, (m, n), c_stride, c_t)
    return a, b, (c0 if accumulate else None), got


def grouped_reference(a, b, c0, dtype: str, narrow: bool = False):
    """matmul_reference per group of rows; with `narrow` each sum rounded once to `dtype`."""
    groups = b.shape[0]
    g = a.shape[0] // groups
    parts = [matmul_reference(a[i * g:(i + 1) * g], b[i],
                              None if c0 is None else c0[i * g:(i + 1) * g], dtype)
             for i in range(groups)]
    out = np.concatenate(parts)
    if not narrow:
        return out
    rnd = to_bf16 if dtype == "bf16" else (lambda v: to_fp8(v, dtype))
    return np.vectorize(lambda v: rnd(float(v)))(out).astype(FLOAT_TYPES[dtype])


@pytest.mark.parametrize("dtype", ["int8", "bf16", "fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("transpose_b,accumulate", [(0, 0), (1, 1), (0, 1)])
@pytest.mark.parametrize("shape", [(5, 7, 9), (17, 3, 33)])
def test_matmul_exact_mode_matches_reference(dtype, transpose_b, accumulate, shape):
    a, b, c0, got = _matmul_case(dtype, *shape, transpose_b, accumulate, exact=True)
    want = grouped_reference(a, b, c0, dtype)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", ["int8", "bf16", "fp8_e4m3", "fp8_e5m2"])
def test_matmul_fast_mode_within_documented_bound(dtype):
    m, n, k = 12, 10, 300
    a, b, c0, got = _matmul_case(dtype, m, n, k, 0, 1, exact=False, seed=5)
    want = grouped_reference(a, b, c0, dtype)
    if dtype == "int8":
        np.testing.assert_array_equal(got, want)  # integer sums are exact in any order
        return
    mag = np.abs(c0.astype(np.float64)) + np.abs(a.astype(np.float64)) @ np.abs(
        b[0].astype(np.float64))
    bound = k * 2.0**-23 * mag
    assert np.all(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= bound)


def test_int8_fast_path_is_exact_for_long_k():
    # k large enough for the float64 path; extreme values make the sums as large as they go.
    m, n, k = 2, 3, 4096
    a = np.full((m, k), -128, np.int8)
    b = np.full((k, n), -128, np.int8)
    b[:, 1] = 127
    ins = ISA.Matmul(dtype=DT["int8"], m=m, n=n, k=k, a_addr=0, b_addr=8192, c_addr=65536,
                     a_stride=k, b_stride=n, c_stride=4 * n)
    dev = run_ops([ins], sram={0: a.tobytes(), 8192: b.tobytes()})
    got = sram_array(dev, 65536, (m, n), 4 * n, np.int32)
    assert got[0, 0] == 128 * 128 * k and got[0, 1] == -128 * 127 * k


def test_zero_count_matmul_writes_nothing():
    before = bytes(range(256)) * 4
    ins = ISA.Matmul(dtype=DT["int8"], m=4, n=0, k=4, a_addr=0, b_addr=0, c_addr=0,
                     a_stride=3, b_stride=3, c_stride=3)  # misaligned but skipped
    dev = run_ops([ins], sram={0: before})
    assert dev.read_sram(0, 0, 1024) == before
    assert dev.read32(dev.regs.pe_reg(0, dev.regs.PE_ERROR_CODE)) == 0


@pytest.mark.parametrize("dtype", ["bf16", "fp8_e4m3"])
@pytest.mark.parametrize("transpose_b,accumulate,groups", [(1, 0, 1), (0, 1, 3), (1, 0, 4)])
def test_narrow_and_grouped_matmul_exact_mode(dtype, transpose_b, accumulate, groups):
    a, b, c0, got = _matmul_case(dtype, 12, 5, 19, transpose_b, accumulate, exact=True,
                                 seed=groups, narrow=True, groups=groups)
    want = grouped_reference(a, b, c0, dtype, narrow=True)
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("groups", [1, 3])
def test_grouped_fp32_and_int8_matmul(groups):
    for dtype in ("int8", "bf16"):
        a, b, c0, got = _matmul_case(dtype, 6, 7, 11, 1, 1, exact=True, seed=9, groups=groups)
        want = grouped_reference(a, b, c0, dtype)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("m, groups", [(8, 1), (8, 4), (1, 1)])  # one row: C is contiguous
def test_narrow_bf16_fast_mode_is_pytorchs_bf16_gemm(m, groups):
    """Fast mode rounds C as torch's CPU bf16 GEMM does, within one rounding of exact."""
    import torch

    n, k = 40, 700
    a, b, _, got = _matmul_case("bf16", m, n, k, 1, 0, exact=False, seed=2, narrow=True,
                                groups=groups)

    def t(x):
        return torch.from_numpy(x.astype(np.float32)).bfloat16()

    g = m // groups
    want = torch.cat([t(a[i * g:(i + 1) * g]) @ t(b[i]) for i in range(groups)])
    np.testing.assert_array_equal(got.astype(np.float32), want.float().numpy())
    exact = grouped_reference(a, b, None, "bf16").astype(np.float64)
    mag = np.concatenate([np.abs(a[i * g:(i + 1) * g].astype(np.float64))
                          @ np.abs(b[i].astype(np.float64)) for i in range(groups)])
    # fp32 order error, then the bf16 rounding of either side (half a step each)
    err = np.abs(got.astype(np.float64) - exact)
    assert np.all(err <= k * 2.0**-23 * mag + 2.0**-8 * np.abs(exact) + 1e-30)


@pytest.mark.parametrize("fields, code", [
    (dict(dtype=DT["int8"], narrow=1), "BAD_FIELD"),  # an int32 sum has no narrow form
    (dict(dtype=DT["bf16"], group=5), "BAD_FIELD"),  # m = 12 is not a multiple of 5
    (dict(dtype=DT["bf16"], group=4, b_group_stride=3), "MISALIGNED"),
    (dict(dtype=DT["bf16"], group=4, b_group_stride=1 << 17), "SRAM_RANGE"),
])
def test_narrow_and_group_field_errors(fields, code):
    ins = ISA.Matmul(m=12, n=4, k=8, a_addr=0, b_addr=4096, c_addr=8192, a_stride=16,
                     b_stride=8, c_stride=16, **fields)
    dev = run_ops([ISA.SemSignal(queue=1, sem=0), ins])
    assert error_of(dev) == (E[code], 1)
