"""LOAD, STORE and MATMUL against references written with plain loops."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from model_kit import DT, ISA, place, run_ops, sram_array

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


def _matmul_case(dtype, m, n, k, transpose_b, accumulate, exact, seed=0):
    rng = np.random.default_rng(seed)
    es = 1 if dtype == "int8" else np.dtype(FLOAT_TYPES[dtype]).itemsize
    a = random_tile(rng, dtype, (m, k))
    b = random_tile(rng, dtype, (k, n))
    acc_t = np.int32 if dtype == "int8" else np.float32
    if dtype == "int8":
        c0 = rng.integers(2**31 - 2**20, 2**31 - 1, (m, n)).astype(np.int32)
        c0[::2] = -c0[::2]  # near both ends, so accumulate wraps
    else:
        c0 = (rng.standard_normal((m, n)) * 10).astype(np.float32)
    a_stride = k * es + 4 * es
    b_store = b.T.copy() if transpose_b else b
    b_stride = b_store.shape[1] * es + 8 * es
    c_stride = n * 4 + 12
    a_addr, b_addr, c_addr = 0, 16384, 32768
    ins = ISA.Matmul(dtype=DT[dtype], accumulate=int(accumulate), transpose_b=int(transpose_b),
                     m=m, n=n, k=k, a_addr=a_addr, b_addr=b_addr, c_addr=c_addr,
                     a_stride=a_stride, b_stride=b_stride, c_stride=c_stride)
    sram = {a_addr: place(a, a_stride), b_addr: place(b_store, b_stride),
            c_addr: place(c0, c_stride)}
    dev = run_ops([ins], sram=sram, exact=exact)
    got = sram_array(dev, c_addr, (m, n), c_stride, acc_t)
    return a, b, (c0 if accumulate else None), got


@pytest.mark.parametrize("dtype", ["int8", "bf16", "fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("transpose_b,accumulate", [(0, 0), (1, 1), (0, 1)])
@pytest.mark.parametrize("shape", [(5, 7, 9), (17, 3, 33)])
def test_matmul_exact_mode_matches_reference(dtype, transpose_b, accumulate, shape):
    a, b, c0, got = _matmul_case(dtype, *shape, transpose_b, accumulate, exact=True)
    want = matmul_reference(a, b, c0, dtype)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", ["int8", "bf16", "fp8_e4m3", "fp8_e5m2"])
def test_matmul_fast_mode_within_documented_bound(dtype):
    m, n, k = 12, 10, 300
    a, b, c0, got = _matmul_case(dtype, m, n, k, 0, 1, exact=False, seed=5)
    want = matmul_reference(a, b, c0, dtype)
    if dtype == "int8":
        np.testing.assert_array_equal(got, want)  # integer sums are exact in any order
        return
    mag = np.abs(c0.astype(np.float64)) + np.abs(a.astype(np.float64)) @ np.abs(
        b.astype(np.float64))
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
