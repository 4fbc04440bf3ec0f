"""int8 MLPs: power-of-two calibration and integer-only NPU programs.

`compile_int8(model, example_inputs, spec=None, pes=None)` takes a stack of `nn.Linear`
layers with optional `nn.ReLU` after each (an `nn.Sequential`, or a single `nn.Linear`)
and one `[M, K]` example input, and returns an `Executable` that uses integer
instructions only, so it runs on the RTL as well as on the functional model:

- Scales are symmetric powers of two, calibrated on the example input: a tensor `t` with
  exponent `e` is stored as `q = clamp(round(t * 2**e), -128, 127)`, `e` the largest
  integer with `max|t| * 2**e <= 127`. Weights get one exponent per layer, activations
  one per layer output (from the float model on the example input), the input its own.
- A layer computes `acc = x_q @ W_q` (int8 x int8 -> int32 MATMUL), adds the bias
  quantised to int32 at exponent `e_x + e_w`, then requantises with VECTOR `mul_shift`
  (`(acc * 1 + 2**(s-1)) >> s`, `s = e_x + e_w - e_out`, saturating to int8) and applies
  ReLU in int8. `e_out` is lowered where needed so that `s >= 0`.
- The executable's input is the int8 codes held in an int32 tensor (the host quantises
  floats with `quantize_input`; `bind_inputs` does so for a float tensor), its output the
  last layer's int8 codes in an int32 tensor; `dequantize_output` gives floats.

Each PE takes a contiguous block of the M rows and runs every layer on it with weights
and activations resident in SRAM (no tiling: the layers must fit SRAM). Limitations: no
per-channel scales, no zero points, only Linear and ReLU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import gen
import hw.spec
from stack.compiler.executable import Executable

__all__ = ["compile_int8", "quantize_input", "dequantize_output", "reference_int8",
           "QuantLayer"]

log = logging.getLogger(__name__)

_ALIGN = 64  # SRAM and DRAM placement granularity


@dataclass
class QuantLayer:
    """One Linear layer in integers: int8 `weight` [K, N], int32 `bias` [N], `shift`."""

    weight: np.ndarray
    bias: np.ndarray
    shift: int
    relu: bool


def _exponent(amax: float) -> int:
    """The largest e with amax * 2**e <= 127 (0 for an all-zero tensor)."""
    if amax <= 0:
        return 0
    return int(math.floor(math.log2(127.0 / amax)))


def _quant(t: np.ndarray, e: int, lo: int = -128, hi: int = 127) -> np.ndarray:
    return np.clip(np.rint(t.astype(np.float64) * 2.0 ** e), lo, hi).astype(np.int64)


def _layers(model: torch.nn.Module) -> list[tuple[torch.nn.Linear, bool]]:
    mods = list(model) if isinstance(model, torch.nn.Sequential) else [model]
    out: list[tuple[torch.nn.Linear, bool]] = []
    for m in mods:
        if isinstance(m, torch.nn.Linear):
            out.append((m, False))
        elif isinstance(m, torch.nn.ReLU) and out and not out[-1][1]:
            out[-1] = (out[-1][0], True)
        else:
            raise ValueError(f"dtype='int8' takes Linear layers each optionally followed by "
                             f"ReLU, got {type(m).__name__}")
    if not out:
        raise ValueError("dtype='int8' needs at least one Linear layer")
    return out


def calibrate(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, list[QuantLayer], int]:
    """(input exponent, integer layers, output exponent) from the example input `x`."""
    layers = _layers(model)
    h = x.detach().float()
    e_in = e_x = _exponent(float(h.abs().max()))
    qls = []
    with torch.no_grad():
        for lin, relu in layers:
            w = lin.weight.detach().float().numpy().T  # [K, N]
            e_w = _exponent(float(np.abs(w).max()))
            h = lin(h)
            if relu:
                h = torch.relu(h)
            e_out = min(_exponent(float(h.abs().max())), e_x + e_w)
            b = lin.bias.detach().float().numpy() if lin.bias is not None else \
                np.zeros(w.shape[1], np.float32)
            bias = _quant(b, e_x + e_w, -(2**31), 2**31 - 1).astype(np.int32)
            qls.append(QuantLayer(_quant(w, e_w).astype(np.int8), bias, e_x + e_w - e_out, relu))
            e_x = e_out
    return e_in, qls, e_x


def reference_int8(layers: list[QuantLayer], xq: np.ndarray) -> np.ndarray:
    """The integer network in numpy (int64 arithmetic): what the NPU must compute."""
    h = xq.astype(np.int64)
    for ly in layers:
        acc = h @ ly.weight.astype(np.int64)
        acc = (acc + ly.bias.astype(np.int64)).astype(np.int32).astype(np.int64)  # wraps
        if ly.shift:
            acc = (acc + (1 << (ly.shift - 1))) >> ly.shift
        h = np.clip(acc, -128, 127)
        if ly.relu:
            h = np.maximum(h, 0)
    return h


def quantize_input(exe: Executable, x: torch.Tensor) -> torch.Tensor:
    """Float input -> its int8 codes (as int32) at the executable's input exponent."""
    e = exe.meta["quant"]["input_exp"]
    return torch.from_numpy(_quant(x.detach().float().numpy(), e).astype(np.int32))


def dequantize_output(exe: Executable, y: torch.Tensor) -> torch.Tensor:
    """Output codes -> floats (`y * 2**-e_out`)."""
    return y.float() * 2.0 ** -exe.meta["quant"]["output_exp"]


def _up(n: int, a: int = _ALIGN) -> int:
    return -(-n // a) * a


def compile_int8(model: torch.nn.Module, example_inputs: tuple, *, spec: Any = None,
                 pes: int | None = None) -> Executable:
    """An integer-only executable of the Linear/ReLU stack `model` (see the module doc)."""
    spec = hw.spec.load() if spec is None else hw.spec.load(spec) if isinstance(spec, str) \
        else spec
    if "int8" not in spec.pe.mac.dtypes:
        raise ValueError(f"spec {spec.name} has no int8 MAC (dtypes {spec.pe.mac.dtypes})")
    if len(example_inputs) != 1 or example_inputs[0].dim() != 2:
        raise ValueError("dtype='int8' takes one [M, K] input")
    x = example_inputs[0]
    m, k0 = x.shape
    npes = spec.npu.num_pes if pes is None else pes
    if not 1 <= npes <= spec.npu.num_pes:
        raise ValueError(f"pes must be in [1, {spec.npu.num_pes}], got {npes}")
    npes = min(npes, m)
    e_in, layers, e_out = calibrate(model, x)
    if layers[0].weight.shape[0] != k0:
        raise ValueError(f"input has {k0} features, the first Linear takes "
                         f"{layers[0].weight.shape[0]}")
    isa = gen.build(spec).isa

    # DRAM constants: per layer W (int8 [K, N]) then bias (int32 [N]), 64-byte aligned.
    consts = bytearray()
    where = []
    for ly in layers:
        w_at = len(consts)
        consts += ly.weight.tobytes()
        consts += bytes(_up(len(consts)) - len(consts))
        b_at = len(consts)
        consts += ly.bias.tobytes()
        consts += bytes(_up(len(consts)) - len(consts))
        where.append((w_at, b_at))
    n_last = layers[-1].weight.shape[1]
    rows = [m // npes + (1 if p < m % npes else 0) for p in range(npes)]
    programs = {}
    r0 = 0
    for pe in range(npes):
        programs[pe] = isa.encode_program(
            _program(isa, spec, layers, where, r0, rows[pe], k0, n_last))
        r0 += rows[pe]
    inputs = [{"name": "x", "shape": [m, k0], "dtype": "i32", "offset": 0}]
    outputs = [{"name": "y", "shape": [m, n_last], "dtype": "i32", "offset": 0}]
    macs = m * sum(ly.weight.shape[0] * ly.weight.shape[1] for ly in layers)
    meta = {"quant": {"input_exp": e_in, "output_exp": e_out,
                      "shifts": [ly.shift for ly in layers]},
            "flat": [["device", 0]], "kernels": {"int8_linear": len(layers)},
            "static": {"macs": macs, "dram_bytes": len(consts) + m * (k0 + n_last) * 4},
            "timings": {}}
    exe = Executable(spec.name, spec.hash, programs, bytes(consts), 0, inputs, outputs, meta)
    exe.host_outputs = [None]
    exe.int8_layers = layers  # type: ignore[attr-defined]
    log.info("int8 MLP for %s: %d layers on %d PEs, shifts %s", spec.name, len(layers), npes,
             meta["quant"]["shifts"])
    return exe


def _program(isa: Any, spec: Any, layers: list[QuantLayer], where: list[tuple[int, int]],
             r0: int, rows: int, k0: int, n_last: int) -> list[Any]:
    """One PE's program: rows [r0, r0 + rows) through every layer, all in SRAM."""
    i8, i32 = isa.DTYPE_INT8, isa.DTYPE_INT32
    f = isa.VECTOR_FUNCS
    q = isa.QUEUES
    sram = [0]

    def alloc(n: int) -> int:
        at = sram[0]
        sram[0] = _up(at + n)
        if sram[0] > spec.sram_bytes_per_pe:
            raise ValueError(f"the int8 MLP needs more than {spec.sram_bytes_per_pe} bytes of "
                             "SRAM per PE; use fewer rows per PE or smaller layers")
        return at

    def load(base: int, dram: int, to: int, n: int) -> Any:
        if n > 0xFFFF:
            raise ValueError(f"a transfer of {n} bytes exceeds one LOAD/STORE (65535)")
        return isa.Load(base=base, dram_offset=dram, sram_addr=to, n0=n, n1=1, n2=1)

    prog: list[Any] = []
    comp: list[Any] = []
    x32 = alloc(rows * k0 * 4)
    prog.append(load(2, r0 * k0 * 4, x32, rows * k0 * 4))
    x8 = alloc(rows * k0)
    comp.append(isa.Vector(func=f["copy"], in_dtype=i32, out_dtype=i8, rows=rows, cols=k0,
                           src1_addr=x32, dst_addr=x8, src1_stride=k0 * 4, dst_stride=k0))
    kdim = k0
    for ly, (w_at, b_at) in zip(layers, where, strict=True):
        kk, n = ly.weight.shape
        w = alloc(kk * n)
        b = alloc(n * 4)
        prog.append(load(0, w_at, w, kk * n))
        prog.append(load(0, b_at, b, n * 4))
        acc = alloc(rows * n * 4)
        y8 = alloc(rows * n)
        comp += [
            isa.Matmul(dtype=i8, m=rows, n=n, k=kdim, a_addr=x8, b_addr=w, c_addr=acc,
                       a_stride=kdim, b_stride=n, c_stride=n * 4),
            isa.Vector(func=f["add"], in_dtype=i32, out_dtype=i32, src2_mode=isa.SRC2_MODES["row"],
                       rows=rows, cols=n, src1_addr=acc, src2_addr=b, dst_addr=acc,
                       src1_stride=n * 4, src2_stride=0, dst_stride=n * 4),
            isa.Vector(func=f["mul_shift"], in_dtype=i32, out_dtype=i8,
                       src2_mode=isa.SRC2_MODES["imm"], rows=rows, cols=n, src1_addr=acc,
                       dst_addr=y8, src1_stride=n * 4, dst_stride=n, shift=ly.shift, imm=1),
        ]
        if ly.relu:
            comp.append(isa.Vector(func=f["relu"], in_dtype=i8, out_dtype=i8, rows=rows,
                                   cols=n, src1_addr=y8, dst_addr=y8, src1_stride=n,
                                   dst_stride=n))
        x8, kdim = y8, n
    y32 = alloc(rows * n_last * 4)
    comp.append(isa.Vector(func=f["copy"], in_dtype=i8, out_dtype=i32, rows=rows, cols=n_last,
                           src1_addr=x8, dst_addr=y32, src1_stride=n_last,
                           dst_stride=n_last * 4))
    # Loads, then compute once they have landed, then the store once compute is done.
    prog.append(isa.SemSignal(queue=q["load"], sem=0))
    prog.append(isa.SemWait(queue=q["compute"], sem=0))
    prog += comp
    prog.append(isa.SemSignal(queue=q["compute"], sem=1))
    prog.append(isa.SemWait(queue=q["store"], sem=1))
    n_out = rows * n_last * 4
    if n_out > 0xFFFF:
        raise ValueError(f"a transfer of {n_out} bytes exceeds one LOAD/STORE (65535)")
    prog.append(isa.Store(base=3, dram_offset=r0 * n_last * 4, sram_addr=y32, n0=n_out, n1=1,
                          n2=1))
    prog.append(isa.End())
    return prog
