"""The arithmetic of the MAC array and the vector unit, on whole numpy arrays.

MATMUL: int8 products are summed exactly (a float BLAS product is exact while every
partial sum stays below the float's integer range, checked per call) and wrap into int32;
float inputs are widened to fp32 and summed in fp32, either by BLAS in its own order
(fast mode) or one K step at a time with a rounding after each add (exact mode, the
order docs/isa.md defines). VECTOR: integer inputs compute in int64, float inputs in fp32,
then convert to the output type with saturation as docs/isa.md says.

Fast mode takes PyTorch's CPU kernels where the sum order shows in the result: a bf16
MATMUL that rounds C to bf16 (`narrow`), float row_sum and softmax. Their results are then
those of eager PyTorch on the same host, which is what a model compared against PyTorch
needs; the order is the host kernel's, within the bounds docs/isa.md gives.

Not modelled: the transcendental functions use the host's fp32 libraries (numpy, and
torch for erf), so they are not bit-exact with any hardware implementation.
"""

from __future__ import annotations

import functools
import math
from functools import partial

import ml_dtypes
import numpy as np

from hw.model import host

# Storage type of each ISA data type name.
NP_DTYPES: dict[str, np.dtype] = {
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "fp32": np.dtype(np.float32),
    "fp8_e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "fp8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
INT_TYPES = frozenset({"int8", "int16", "int32"})
FLOAT_ONLY_FUNCS = frozenset(
    "div exp recip rsqrt silu gelu_tanh gelu_erf sigmoid tanh softmax".split()
)
BINARY_FUNCS = frozenset("add sub mul max min div mul_shift".split())
REDUCTIONS = frozenset({"row_sum", "row_max"})

# int8 x int8 products are at most 2**14 in magnitude; a float type sums them exactly
# while k * 2**14 stays within its contiguous integer range.
_INT8_PRODUCT_MAX = 1 << 14
_FP32_EXACT_INT = 1 << 24
_FP64_EXACT_INT = 1 << 53


def elem_bytes(dtype: str) -> int:
    return NP_DTYPES[dtype].itemsize


def matmul(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, acc: str, exact: bool,
           narrow: str | None = None) -> np.ndarray:
    """Return `(c or 0) + a @ b` in the accumulator type `acc` ("int32" or "fp32").

    `a` is [m, k] and `b` [k, n] of the input type, or [groups, m, k] and [groups, k, n]
    for a grouped MATMUL; `c` is the current accumulator (of C's type) when accumulating.
    With `narrow` (a float input type name) the fp32 sums are rounded once to that type,
    which in fast mode for bf16 is PyTorch's bf16 GEMM, accumulating in fp32 in its own order.
    """
    k = a.shape[-1]
    if acc == "int32":
        # Integer inputs only reach here (the spec pairs int8 with int32).
        work = np.float32 if k * _INT8_PRODUCT_MAX <= _FP32_EXACT_INT else np.float64
        assert k * _INT8_PRODUCT_MAX < _FP64_EXACT_INT
        prod = np.matmul(a.astype(work), b.astype(work)).astype(np.int64)
        if c is not None:
            prod += c
        return prod.astype(np.int32)  # two's-complement wrap
    if on_torch_gemm(narrow, c is not None, exact):
        return _torch_bf16_matmul(a, b)
    af = a.astype(np.float32)
    bf = b.astype(np.float32)
    if not exact:
        out = np.matmul(af, bf)
        if c is not None:
            out += c.astype(np.float32)
    else:
        out = np.zeros(a.shape[:-1] + b.shape[-1:], np.float32)
        if c is not None:
            out += c.astype(np.float32)
        for kk in range(k):
            # fp32 product (exact for bf16/fp8 inputs) then one fp32 rounding per add.
            out += af[..., kk, None] * bf[..., None, kk, :]
    return out if narrow is None else convert(out, narrow)


def on_torch_gemm(narrow: str | None, accumulate: bool, exact: bool) -> bool:
    """Whether a MATMUL is PyTorch's bf16 GEMM: fast mode, bf16 C, no accumulate."""
    return narrow == "bf16" and not accumulate and not exact


def torch_bf16(x: np.ndarray):
    """A torch bf16 tensor sharing the memory of the bf16 array (or view) `x`."""
    torch = host.torch()

    return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)


@functools.cache
def _lone_row_kernel_differs() -> bool:
    """Whether PyTorch may sum a single-row product in another order than a multi-row one.

    With oneDNN's bf16 GEMM (x86 with AVX-512 or AMX) it does: a single row takes a GEMV
    kernel whose order differs once k passes 512. Without it, ATen's own kernel computes
    every output as an independent dot product, whatever the number of rows.
    """
    torch = host.torch()

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


# A bf16 GEMM of at least this many MACs (about 0.4 ms on one thread) runs as column
# blocks on the host threads (hw/model/host.py): handing a block to a worker and waiting
# for it costs 0.1-0.2 ms on a 2-core host, so smaller products stay whole.
SPLIT_MACS = 1 << 21
_MIN_BLOCK = 16  # columns


def torch_bf16_mm(ta, tb, out=None):
    """ta @ tb (2-D, or 3-D batched) rounded to bf16 by PyTorch's CPU kernel, into `out`
    when given (written in place where it is contiguous: the same kernel, no copy).

    Where PyTorch would sum a lone row in another order than several rows, the row is
    computed as the first of two: every row then comes out the same whatever the
    instruction's `m` or group size, as on an array that computes rows independently, and
    a batch never changes a row's result. Where instead every output is its own dot
    product (ATen's kernel), a large product runs as column blocks side by side.
    """
    torch = host.torch()

    mm = torch.bmm if ta.dim() == 3 else torch.mm
    if ta.shape[-2] == 1 and _lone_row_kernel_differs():
        result = mm(torch.cat([ta, ta], dim=-2), tb)[..., :1, :]
    else:
        n = tb.shape[-1]
        macs = ta.numel() * n
        blocks = 1
        if macs >= SPLIT_MACS and not _lone_row_kernel_differs():
            blocks = min(host.model_threads(), macs // SPLIT_MACS + 1, n // _MIN_BLOCK)
        if blocks > 1:
            if out is None:
                out = torch.empty(ta.shape[:-1] + (n,), dtype=torch.bfloat16)
            cuts = [n * i // blocks for i in range(blocks + 1)]
            host.run_split([partial(_mm_block, mm, ta, tb[..., j0:j1], out[..., j0:j1])
                            for j0, j1 in zip(cuts[:-1], cuts[1:], strict=True)])
            return out
        if out is not None and out.is_contiguous():
            return mm(ta, tb, out=out)
        result = mm(ta, tb)
    if out is None:
        return result
    out.copy_(result)
    return out


def _mm_block(mm, ta, tb, out) -> None:
    out.copy_(mm(ta, tb))


def _torch_bf16_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    torch = host.torch()

    out = torch_bf16_mm(torch_bf16(a), torch_bf16(b))
    return out.contiguous().view(torch.int16).numpy().view(NP_DTYPES["bf16"])


def _imm_value(imm: int, integer: bool) -> np.ndarray:
    if integer:
        return np.array(imm - (1 << 32) if imm & 0x8000_0000 else imm, dtype=np.int64)
    return np.array(imm, dtype=np.uint32).view(np.float32)


def _clamp_bounds(imm: int, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = imm & 0xFFFF, imm >> 16 & 0xFFFF
    if integer:
        signed = np.array([lo, hi], dtype=np.uint16).view(np.int16).astype(np.int64)
        return signed[0], signed[1]
    as_bf16 = np.array([lo, hi], dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    return as_bf16[0], as_bf16[1]


def _round_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """(x + 2**(shift-1)) >> shift without overflowing int64: add back bit shift-1."""
    if shift == 0:
        return x
    return (x >> shift) + ((x >> (shift - 1)) & 1)


def _gelu_erf(a: np.ndarray) -> np.ndarray:
    torch = host.torch()  # numpy has no erf

    t = torch.from_numpy(np.ascontiguousarray(a))
    return (0.5 * t * (1.0 + torch.special.erf(t * np.float32(1 / math.sqrt(2))))).numpy()


def _sequential_row_sum(x: np.ndarray) -> np.ndarray:
    """fp32 sums in increasing column order (np.sum would be pairwise), [rows, 1]."""
    return np.cumsum(x, axis=1, dtype=np.float32)[:, -1:]


def _torch_rows(x: np.ndarray, what: str) -> np.ndarray:
    """Row sums [rows, 1] or row softmax of fp32 `x` by PyTorch's CPU kernels."""
    torch = host.torch()

    t = torch.from_numpy(x)
    if what == "sum":
        return t.sum(dim=1, keepdim=True).numpy()
    return torch.softmax(t, dim=1).numpy()


def _float_unary(func: str, a: np.ndarray) -> np.ndarray:
    one = np.float32(1)
    if func == "exp":
        return np.exp(a)
    if func == "recip":
        return one / a
    if func == "rsqrt":
        return one / np.sqrt(a)
    if func == "sigmoid":
        return one / (one + np.exp(-a))
    if func == "silu":
        return a / (one + np.exp(-a))
    if func == "tanh":
        return np.tanh(a)
    if func == "gelu_tanh":
        inner = np.float32(math.sqrt(2 / math.pi)) * (a + np.float32(0.044715) * a * a * a)
        return np.float32(0.5) * a * (one + np.tanh(inner))
    if func == "gelu_erf":
        return _gelu_erf(a)
    raise ValueError(f"{func} is not a float unary function")


def vector(
    func: str,
    in_dtype: str,
    a: np.ndarray,
    b: np.ndarray | None,
    shift: int,
    imm: int,
    exact: bool = False,
) -> np.ndarray:
    """Compute `func(a, b)`; `a` [rows, cols] of `in_dtype`, `b` broadcastable or None.

    Returns int64 for integer inputs and float32 for float inputs, before conversion.
    `exact` sums float rows in increasing column order; otherwise PyTorch's CPU kernels
    sum them (row_sum, softmax), as eager PyTorch does on the same host.
    """
    integer = in_dtype in INT_TYPES
    wide = np.int64 if integer else np.float32
    x = a.astype(wide)
    y = b.astype(wide) if b is not None else None
    with np.errstate(all="ignore"):
        if func == "copy":
            return x
        if func == "add":
            return x + y
        if func == "sub":
            return x - y
        if func == "mul":
            return x * y
        if func == "max":
            return np.maximum(x, y)
        if func == "min":
            return np.minimum(x, y)
        if func == "div":
            return x / y
        if func == "relu":
            return np.maximum(x, wide(0))
        if func == "mul_shift":
            if integer:
                return _round_shift(x * y, shift)
            return x * y * np.float32(2.0**-shift)
        if func == "clamp":
            lo, hi = _clamp_bounds(imm, integer)
            return np.minimum(np.maximum(x, lo), hi)
        if func == "row_sum":
            if integer:
                return x.sum(axis=1, keepdims=True)
            if exact:
                return _sequential_row_sum(x)
            return _torch_rows(x, "sum")
        if func == "row_max":
            return x.max(axis=1, keepdims=True)
        if func == "softmax":
            if exact:
                e = np.exp(x - x.max(axis=1, keepdims=True))
                return e / _sequential_row_sum(e)
            return _torch_rows(x, "softmax")
        return _float_unary(func, x)


# Fast mode's VECTOR functions on PyTorch's CPU kernels, by ISA name: (torch function,
# whether it takes src2). Each computes in fp32 and rounds once, so the values are the
# numpy path's; the transcendentals are PyTorch's fp32 ones (eager PyTorch's bits).
_TORCH_FUNCS = {
    "add": ("add", True), "sub": ("sub", True), "mul": ("mul", True), "div": ("div", True),
    "max": ("maximum", True), "min": ("minimum", True), "copy": (None, False),
    "exp": ("exp", False), "rsqrt": ("rsqrt", False), "recip": ("reciprocal", False),
    "sigmoid": ("sigmoid", False), "tanh": ("tanh", False), "silu": ("silu", False),
    "row_sum": ("sum", False), "softmax": ("softmax", False),
}
_TORCH_TYPES = ("bf16", "fp32")


def torch_view(x: np.ndarray):
    """A torch tensor sharing the memory of a bf16 or fp32 array (or view) `x`."""
    if x.dtype == np.float32:
        return host.torch().from_numpy(x)
    return torch_bf16(x)


def torch_vector(func: str, in_dtype: str, out_dtype: str, a: np.ndarray,
                 b: np.ndarray | None, dst: np.ndarray):
    """Fast mode's `dst = func(a, b)` on PyTorch's kernels, straight on the SRAM views, as
    a call; None where PyTorch has no kernel with the ISA's numerics for it.

    PyTorch computes a bf16 op in fp32 and rounds once, as the ISA does, except where the
    result type is fp32 and an input is bf16: there PyTorch would round to bf16 first, so
    the inputs are widened into fp32 scratch tiles. A NaN may come out with another sign or
    payload than on the numpy path.
    """
    if func not in _TORCH_FUNCS or in_dtype not in _TORCH_TYPES or out_dtype not in _TORCH_TYPES:
        return None
    torch = host.torch()
    name, binary = _TORCH_FUNCS[func]
    ta, td = torch_view(a), torch_view(dst)
    tb = None
    if binary:
        # an immediate becomes a [1, 1] fp32 tile: PyTorch would round a bare scalar to bf16
        tb = torch.from_numpy(b.reshape(1, 1).copy()) if b.ndim == 0 else torch_view(b)
    if func in ("row_sum", "softmax"):
        # contiguous fp32 rows, as eager PyTorch reduces them
        src = torch.empty(ta.shape, dtype=torch.float32)
        if func == "row_sum":
            def run() -> None:
                src.copy_(ta)
                td.copy_(torch.sum(src, dim=1, keepdim=True))
        else:
            def run() -> None:
                src.copy_(ta)
                td.copy_(torch.softmax(src, dim=1))
        return run
    if func == "copy":
        return lambda: td.copy_(ta)  # one rounding (widening is exact)
    fn = torch.nn.functional.silu if func == "silu" else getattr(torch, name)
    if in_dtype != "fp32" and out_dtype == "fp32":
        wa = torch.empty(ta.shape, dtype=torch.float32)
        if not binary:
            def run() -> None:
                wa.copy_(ta)
                td.copy_(fn(wa))
            return run
        if tb.dtype == torch.float32:
            def run() -> None:
                wa.copy_(ta)
                fn(wa, tb, out=td)
            return run
        wb = torch.empty(tb.shape, dtype=torch.float32)

        def run() -> None:
            wa.copy_(ta)
            wb.copy_(tb)
            fn(wa, wb, out=td)
        return run
    if binary:
        return lambda: fn(ta, tb, out=td)
    return lambda: td.copy_(fn(ta))


def imm_operand(imm: int, in_dtype: str) -> np.ndarray:
    """The 32-bit immediate as the src2 operand: int32 or fp32 bits by the input type."""
    return _imm_value(imm, in_dtype in INT_TYPES)


_INT_RANGE = {name: (np.iinfo(NP_DTYPES[name]).min, np.iinfo(NP_DTYPES[name]).max)
              for name in INT_TYPES}
_FP8_MAX = {
    "fp8_e4m3": float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max),
    "fp8_e5m2": float(ml_dtypes.finfo(ml_dtypes.float8_e5m2).max),
}


def convert(x: np.ndarray, out_dtype: str) -> np.ndarray:
    """Convert an int64 or float32 result to `out_dtype` as docs/isa.md says."""
    out = NP_DTYPES[out_dtype]
    if out_dtype in INT_TYPES:
        lo, hi = _INT_RANGE[out_dtype]
        if x.dtype.kind == "f":
            # In float64 the int32 bounds are exact; in fp32 2**31 - 1 would round up.
            x = np.rint(x.astype(np.float64))
            x[np.isnan(x)] = 0
        # minimum/maximum: np.clip's wrapper costs more than the work on small tiles
        return np.minimum(np.maximum(x, lo), hi).astype(out)
    if x.dtype.kind == "i":
        # int64 -> float64 is exact below 2**53, so the one rounding is the one to `out`.
        x = x.astype(np.float64)
    if out_dtype in _FP8_MAX:
        m = _FP8_MAX[out_dtype]
        x = np.clip(x, -m, m)  # saturate; NaN stays NaN
    return x.astype(out)
