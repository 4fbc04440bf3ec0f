"""VECTOR against an element-by-element reference in Python ints and np.float32 scalars."""

from __future__ import annotations

import math
import struct

import ml_dtypes
import numpy as np
import pytest
from model_kit import DT, ISA, E, error_of, place, run_ops, sram_array

NP = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "bf16": ml_dtypes.bfloat16,
      "fp32": np.float32, "fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2}
INTS = ("int8", "int16", "int32")
FLOATS = ("bf16", "fp32", "fp8_e4m3", "fp8_e5m2")
FUNCS = ISA.VECTOR_FUNCS
BINARY = ("add", "sub", "mul", "max", "min", "div", "mul_shift")
TRANSCENDENTAL = ("exp", "recip", "rsqrt", "silu", "gelu_tanh", "gelu_erf", "sigmoid", "tanh")
F32 = np.float32


# reference conversions, written independently of the model's


def _fp8_table(name):
    vals = np.arange(256, dtype=np.uint8).view(NP[name]).astype(np.float64)
    bits = np.arange(256)
    keep = np.isfinite(vals)
    return vals[keep], bits[keep]


def to_fp8(x: float, name: str) -> float:
    """Nearest finite fp8 value, ties to even code, saturating at the largest finite."""
    if math.isnan(x):
        return math.nan
    vals, bits = _fp8_table(name)
    top = vals.max()
    if abs(x) >= top:
        return math.copysign(top, x)
    d = np.abs(vals - x)
    best = np.flatnonzero(d == d.min())
    if len(best) > 1:
        best = [b for b in best if bits[b] % 2 == 0] or best
    v = vals[best[0]]
    return 0.0 if v == 0 else v


def to_bf16(x: float) -> float:
    if math.isnan(x):
        return math.nan
    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    bits = (bits + 0x7FFF + (bits >> 16 & 1)) >> 16 << 16
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def convert_ref(v, out: str):
    if out in INTS:
        lo, hi = np.iinfo(NP[out]).min, np.iinfo(NP[out]).max
        if isinstance(v, (float, np.floating)):
            if math.isnan(v):
                return 0
            if math.isinf(v):
                return hi if v > 0 else lo
            v = round(float(v))  # half to even
        return max(lo, min(hi, int(v)))
    v = float(v)
    if out == "fp32":
        return float(F32(v))
    if out == "bf16":
        return to_bf16(float(F32(v)))
    return to_fp8(float(F32(v)), out)


def func_ref(func, a, b, integer, shift, imm):
    if func == "copy":
        return a
    if func == "add":
        return a + b
    if func == "sub":
        return a - b
    if func == "mul":
        return a * b
    if func == "max":
        return max(a, b) if integer else F32(np.maximum(a, b))
    if func == "min":
        return min(a, b) if integer else F32(np.minimum(a, b))
    if func == "div":
        return F32(a / b) if b != 0 else F32(np.divide(a, b))
    if func == "relu":
        return max(a, 0) if integer else F32(np.maximum(a, F32(0)))
    if func == "mul_shift":
        if integer:
            return (a * b + (1 << (shift - 1))) >> shift if shift else a * b
        return F32(F32(a * b) * F32(2.0**-shift))
    if func == "clamp":
        lo_bits, hi_bits = imm & 0xFFFF, imm >> 16
        if integer:
            lo = lo_bits - 0x10000 if lo_bits & 0x8000 else lo_bits
            hi = hi_bits - 0x10000 if hi_bits & 0x8000 else hi_bits
            return min(max(a, lo), hi)
        lo = struct.unpack("<f", struct.pack("<I", lo_bits << 16))[0]
        hi = struct.unpack("<f", struct.pack("<I", hi_bits << 16))[0]
        return F32(min(max(a, F32(lo)), F32(hi)))
    x = float(a)
    with np.errstate(all="ignore"):
        if func == "exp":
            return math.exp(x) if x < 88 else math.inf
        if func == "recip":
            return 1 / x if x else math.copysign(math.inf, x)
        if func == "rsqrt":
            return 1 / math.sqrt(x) if x > 0 else (math.inf if x == 0 else math.nan)
        if func == "sigmoid":
            return 1 / (1 + math.exp(-x)) if x > -80 else 0.0
        if func == "silu":
            return x / (1 + math.exp(-x)) if x > -80 else 0.0
        if func == "tanh":
            return math.tanh(x)
        if func == "gelu_tanh":
            return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        if func == "gelu_erf":
            return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
    raise AssertionError(func)


def softmax_reference(a: np.ndarray) -> np.ndarray:
    """Exact mode's order: row max, exp, sequential fp32 sum, one division per element."""
    out = np.empty(a.shape, np.float64)
    for r in range(a.shape[0]):
        x = [F32(v) for v in a[r]]
        m = max(x)
        e = [F32(math.exp(float(F32(v - m)))) for v in x]
        s = F32(0)
        for v in e:
            s = F32(s + v)
        out[r] = [F32(v / s) for v in e]
    return out


def vector_reference(func, in_t, out_t, a, b2d, shift, imm):
    integer = in_t in INTS
    rows, cols = a.shape
    conv = (lambda v: int(v)) if integer else (lambda v: F32(v))
    if func == "softmax":
        return [[convert_ref(v, out_t) for v in row] for row in softmax_reference(a)]
    if func in ("row_sum", "row_max"):
        out = []
        for r in range(rows):
            acc = conv(a[r, 0])
            for c in range(1, cols):
                v = conv(a[r, c])
                acc = (acc + v if integer else F32(acc + v)) if func == "row_sum" else max(acc, v)
            out.append([convert_ref(acc, out_t)])
        return out
    return [[convert_ref(func_ref(func, conv(a[r, c]),
                                  None if b2d is None else conv(b2d[r][c]),
                                  integer, shift, imm), out_t)
             for c in range(cols)] for r in range(rows)]


def random_values(rng, dtype, shape):
    if dtype in INTS:
        info = np.iinfo(NP[dtype])
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(NP[dtype])
    return (rng.standard_normal(shape) * 4).astype(NP[dtype])


def run_vector(func, in_t, out_t, mode="tile", rows=5, cols=7, shift=0, imm=0, seed=0,
               a=None, b=None, exact=False):
    rng = np.random.default_rng(seed)
    ies, oes = np.dtype(NP[in_t]).itemsize, np.dtype(NP[out_t]).itemsize
    a = random_values(rng, in_t, (rows, cols)) if a is None else a
    if func in ("div", "recip", "rsqrt") and in_t in FLOATS:
        a = np.abs(a.astype(np.float32) + 0.5).astype(NP[in_t])
    b_shape = {"tile": (rows, cols), "row": (1, cols), "col": (rows, 1), "imm": None}[mode]
    b = random_values(rng, in_t, b_shape) if (b is None and b_shape) else b
    if func == "div" and b is not None:
        b = np.where(b.astype(np.float32) == 0, 1, b.astype(np.float32)).astype(NP[in_t])
    s1, s2, ds = cols * ies + 2 * ies, cols * ies + 6 * ies, cols * oes + 4 * oes
    reduce = func in ("row_sum", "row_max")
    ins = ISA.Vector(func=FUNCS[func], in_dtype=DT[in_t], out_dtype=DT[out_t],
                     src2_mode=ISA.SRC2_MODES[mode], rows=rows, cols=cols, src1_addr=0,
                     src2_addr=8192, dst_addr=16384, src1_stride=s1, src2_stride=s2,
                     dst_stride=ds, shift=shift, imm=imm)
    sram = {0: place(a, s1)}
    if b is not None:
        sram[8192] = place(b, s2)
    dev = run_ops([ins], sram=sram, exact=exact)
    assert error_of(dev) == (0, 0)
    got = sram_array(dev, 16384, (rows, 1 if reduce else cols), ds, NP[out_t])
    if mode == "imm":
        if in_t in INTS:
            v = imm - (1 << 32) if imm & 0x80000000 else imm
        else:
            v = F32(struct.unpack("<f", struct.pack("<I", imm))[0])
        b2d = [[v] * cols for _ in range(rows)]
    elif b is None:
        b2d = None
    else:
        b2d = [[b[0 if mode == "row" else r, 0 if mode == "col" else c] for c in range(cols)]
               for r in range(rows)]
    want = vector_reference(func, in_t, out_t, a, b2d, shift, imm)
    return got, np.array(want, dtype=np.float64 if out_t in FLOATS else np.int64)


def assert_same(got, want, out_t, rtol=0.0):
    g = got.astype(np.float64) if out_t in FLOATS else got.astype(np.int64)
    if rtol:
        np.testing.assert_allclose(g, want, rtol=rtol, atol=1e-6)
    else:
        np.testing.assert_array_equal(g, want)


EXACT_FUNCS = ["copy", "add", "sub", "mul", "max", "min", "relu", "mul_shift", "clamp",
               "row_sum", "row_max"]


@pytest.mark.parametrize("func", EXACT_FUNCS)
@pytest.mark.parametrize("in_t", INTS + FLOATS)
def test_vector_func_each_dtype(func, in_t):
    out_t = in_t if in_t != "int8" or func not in ("mul", "row_sum") else "int32"
    imm = (0x4200 << 16 | 0xC100) if in_t in FLOATS else ((100 & 0xFFFF) << 16 | (-37 & 0xFFFF))
    # the reference sums rows in increasing column order: exact mode's order
    got, want = run_vector(func, in_t, out_t, shift=3, imm=imm, seed=hash(func) % 1000,
                           exact=True)
    assert_same(got, want, out_t)


def test_float_row_sum_fast_mode_is_pytorchs_sum_within_bound():
    import torch

    rows, cols = 6, 300  # (run_vector's tiles sit 8 KiB apart)
    a = (np.random.default_rng(4).standard_normal((rows, cols)) * 8).astype(np.float32)
    got, want = run_vector("row_sum", "fp32", "fp32", rows=rows, cols=cols, a=a)
    np.testing.assert_array_equal(got[:, 0], torch.from_numpy(a).sum(1).numpy())
    bound = cols * 2.0**-23 * np.abs(a.astype(np.float64)).sum(1, keepdims=True)
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound)


@pytest.mark.parametrize("exact", [True, False])
def test_softmax(exact):
    import torch

    rows, cols = 7, 300
    a = (np.random.default_rng(8).standard_normal((rows, cols)) * 6).astype(ml_dtypes.bfloat16)
    a[2, 5:] = ml_dtypes.finfo(ml_dtypes.bfloat16).min  # a masked row tail: exactly 0 out
    got, want = run_vector("softmax", "bf16", "fp32", rows=rows, cols=cols, a=a, exact=exact)
    assert np.all(got[2, 5:] == 0)
    if exact:  # exp from the host library: within a few fp32 steps of math.exp
        np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-30)
    else:  # fast mode: eager PyTorch's softmax, bit for bit
        want = torch.softmax(torch.from_numpy(a.astype(np.float32)), dim=1).numpy()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["tile", "row", "col", "imm"])
@pytest.mark.parametrize("func", BINARY)
def test_vector_src2_modes(func, mode):
    for in_t, out_t in (("int16", "int32"), ("fp32", "bf16")):
        if func == "div" and in_t in INTS:
            continue
        imm = 0x3FC00000 if in_t == "fp32" else 0xFFFFFFF9  # 1.5, or -7
        got, want = run_vector(func, in_t, out_t, mode=mode, shift=2, imm=imm, seed=7)
        assert_same(got, want, out_t)


@pytest.mark.parametrize("func", TRANSCENDENTAL)
@pytest.mark.parametrize("in_t", ["bf16", "fp32"])
def test_vector_transcendentals(func, in_t):
    got, want = run_vector(func, in_t, "fp32", seed=11)
    assert_same(got, want, "fp32", rtol=3e-6)


@pytest.mark.parametrize("out_t", INTS + FLOATS)
def test_conversions_saturate_and_round(out_t):
    special = np.array([[0.5, 1.5, 2.5, -0.5, -2.5, 1e9, -1e9, np.inf],
                        [-np.inf, np.nan, 300.0, -300.0, 70000.0, 1e38, -1e-3, 65519.0]],
                       dtype=np.float32)
    got, want = run_vector("copy", "fp32", out_t, rows=2, cols=8, a=special)
    g = got.astype(np.float64) if out_t in FLOATS else got.astype(np.int64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(g[ok], want[ok])


def test_int_to_float_and_wide_int_saturation():
    a = np.array([[2**31 - 1, -(2**31), 16777217, 3]], dtype=np.int32)
    for out_t in ("bf16", "fp32", "int8", "int16"):
        got, want = run_vector("mul", "int32", out_t, rows=1, cols=4, a=a, b=a)
        assert_same(got, want, out_t)


def test_mul_shift_large_shift_does_not_overflow():
    a = np.array([[-(2**31), 2**31 - 1, -5, 7]], dtype=np.int32)
    for shift in (0, 1, 31, 62, 63):
        got, want = run_vector("mul_shift", "int32", "int32", rows=1, cols=4, a=a, b=a,
                               shift=shift)
        assert_same(got, want, "int32")


def test_float_only_func_on_int_is_bad_field():
    ins = ISA.Vector(func=FUNCS["exp"], in_dtype=DT["int8"], out_dtype=DT["int8"], rows=1,
                     cols=1, dst_addr=64)
    dev = run_ops([ISA.SemSignal(queue=1, sem=0), ins])
    assert error_of(dev) == (E["BAD_FIELD"], 1)


def test_in_place_update():
    a = np.arange(-12, 12, dtype=np.int8).reshape(3, 8)
    ins = ISA.Vector(func=FUNCS["relu"], in_dtype=DT["int8"], out_dtype=DT["int8"], rows=3,
                     cols=8, src1_addr=64, dst_addr=64, src1_stride=8, dst_stride=8)
    dev = run_ops([ins], sram={64: a.tobytes()})
    np.testing.assert_array_equal(sram_array(dev, 64, (3, 8), 8, np.int8), np.maximum(a, 0))


FAST_TYPES = [("bf16", "bf16"), ("bf16", "fp32"), ("fp32", "bf16"), ("fp32", "fp32")]


@pytest.mark.parametrize("in_t,out_t", FAST_TYPES)
@pytest.mark.parametrize("mode", ["tile", "row", "col", "imm"])
@pytest.mark.parametrize("func", ["add", "sub", "mul", "max", "min", "div"])
def test_fast_mode_elementwise_rounds_once(func, mode, in_t, out_t):
    # fast mode runs these on PyTorch's kernels, which must not round a bf16 operand or an
    # fp32 immediate on the way (0x3DCCCCCD is 0.1, not a bf16 value)
    got, want = run_vector(func, in_t, out_t, mode=mode, imm=0x3DCCCCCD, seed=5, rows=4,
                           cols=33)
    assert_same(got, want, out_t)


@pytest.mark.parametrize("in_t,out_t", FAST_TYPES)
def test_fast_mode_copy_and_in_place(in_t, out_t):
    got, want = run_vector("copy", in_t, out_t, seed=6)
    assert_same(got, want, out_t)
    a = (np.random.default_rng(2).standard_normal((3, 8)) * 3).astype(NP[in_t])
    ins = ISA.Vector(func=FUNCS["mul"], in_dtype=DT[in_t], out_dtype=DT[in_t], rows=3, cols=8,
                     src1_addr=64, src2_addr=64, dst_addr=64, src1_stride=64, src2_stride=64,
                     dst_stride=64)
    dev = run_ops([ins], sram={64: place(a, 64)})
    square = (a.astype(np.float32) * a.astype(np.float32)).astype(NP[in_t])
    np.testing.assert_array_equal(sram_array(dev, 64, (3, 8), 64, NP[in_t]), square)


@pytest.mark.parametrize("func", ["exp", "recip", "rsqrt", "silu", "sigmoid", "tanh"])
def test_fast_mode_transcendentals_bf16_out(func):
    # one rounding of the fp32 function: within one bf16 step of the reference's rounding
    got, want = run_vector(func, "bf16", "bf16", seed=12)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2**-7, atol=1e-30)
