"""`stack.compile`, `stack.load` and `stack.compile_and_run` (imported lazily by `stack`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stack.compiler import Bundle, Executable, compile_model
from stack.runtime import Result, Session

__all__ = ["compile", "load", "compile_and_run"]

log = logging.getLogger(__name__)


def _bucket_inputs(example_inputs: tuple, size: int, dim: int) -> tuple:
    """The example inputs resized along `dim` to `size` (zero padding or truncation)."""
    ref = None
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.dim() > dim % max(x.dim(), 1):
            ref = x.shape[dim]
            break
    out = []
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.dim() and x.shape[dim % x.dim()] == ref:
            d = dim % x.dim()
            if size <= x.shape[d]:
                x = x.narrow(d, 0, size)
            else:
                pads = [0, 0] * (x.dim() - 1 - d) + [0, size - x.shape[d]]
                x = torch.nn.functional.pad(x, pads)
        out.append(x)
    return tuple(out)


def compile(model: torch.nn.Module, example_inputs: tuple, *, spec: Any = None,  # noqa: A001
            devices: Any = None, pes: int | None = None, fallback: str | None = None,
            buckets: Sequence[int] | Sequence[tuple] | None = None, bucket_dim: int = 1,
            pad: bool = True, dtype: str = "float") -> Executable | Bundle:
    """Compile `model` for the shapes of `example_inputs` into an `Executable`.

    `pes` is how many PEs the work is partitioned over (None: all of the spec's); the
    driver runs each PE's program in one job.

    `fallback="cpu"` runs operators the NPU cannot run on the host (graph breaks, logged
    and listed in `.graph_breaks`); without it they raise `UnsupportedOperator`.

    `buckets` compiles one executable per input-shape bucket: either sizes of dimension
    `bucket_dim` (every example input whose `bucket_dim` has the example's size is resized
    to each), or a list of example-input tuples. At run time the bucket whose shapes match
    is used; with `pad`, an input shorter along `bucket_dim` than a bucket is zero-padded
    at the end and the outputs cut back. Padding is only correct for models in which
    earlier positions do not see later ones (causal attention, per-row MLPs).

    The result is an `Executable`, or a `Bundle` of several when there are graph breaks or
    buckets; both `save(path)` and load back with `stack.load`.

    `dtype="int8"` compiles a stack of Linear (+ ReLU) layers to integer instructions only
    (int8 MATMUL, int32 bias, mul_shift requantisation) with power-of-two scales calibrated
    on `example_inputs` (see `stack.compiler.quant`); such an executable also runs on the
    RTL. Its output is the int8 codes as int32 (`quant.dequantize_output` gives floats).
    """
    if dtype not in ("float", "int8"):
        raise ValueError(f"dtype must be 'float' or 'int8', got {dtype!r}")
    if dtype == "int8":
        if buckets or fallback:
            raise ValueError("dtype='int8' takes neither buckets nor fallback")
        from stack.compiler.quant import compile_int8

        return compile_int8(model, tuple(example_inputs), spec=spec, pes=pes)
    if not buckets:
        return compile_model(model, tuple(example_inputs), spec=spec, pes=pes,
                             fallback=fallback)
    items = []
    for b in buckets:
        ins = tuple(b) if isinstance(b, (tuple, list)) else \
            _bucket_inputs(tuple(example_inputs), int(b), bucket_dim)
        items.append(compile_model(model, ins, spec=spec, pes=pes, fallback=fallback))
    return Bundle.merge(items, bucket_dim, pad)


def load(path: str | Path, spec: Any = None) -> Executable | Bundle:
    """Read an executable or bundle; refuses corrupted, wrong-version or (given `spec`)
    wrong-spec files."""
    import hw.spec
    from stack.compiler.bundle import BUNDLE_MAGIC

    if isinstance(spec, str):
        spec = hw.spec.load(spec)
    data = Path(path).read_bytes()
    if data[:4] == BUNDLE_MAGIC:
        return Bundle.from_bytes(data, spec)
    return Executable.from_bytes(data, spec)


def compile_and_run(model: torch.nn.Module, example_inputs: tuple, *, spec: Any = None,
                    backend: str = "model", devices: Any = None, pes: int | None = None,
                    fallback: str | None = None, profile: str | Path | None = None,
                    dtype: str = "float") -> Result:
    """Compile and run once; `.outputs` has the eager structure, `.stats` the run's figures.

    `backend="model"` runs through the driver on the functional model (in-process, or a
    daemon's device); `backend="rtl"` runs through driver and firmware on a cocotb
    simulation of the RTL (`stack.runtime.rtl`; integer executables only, so with
    `dtype="int8"`; `devices` does not apply). `profile` names a Chrome/Perfetto trace file
    to write with the compiler pass timings and per-PE engine activity (see
    `stack.runtime.profile`).
    """
    if backend not in ("model", "rtl"):
        raise ValueError(f"backend must be 'model' or 'rtl', got {backend!r}")
    exe = compile(model, example_inputs, spec=spec, pes=pes, fallback=fallback, dtype=dtype)
    if backend == "rtl":
        if isinstance(exe, Bundle) or profile is not None:
            raise ValueError("backend='rtl' runs one executable, without profile")
        from stack.runtime.rtl import run_on_rtl

        return run_on_rtl(exe, tuple(example_inputs))[0]
    steps: list[tuple] = []
    with Session(exe, devices) as s:
        if isinstance(exe, Bundle):
            res = s._run_bundle(tuple(example_inputs), steps)
        else:
            res = s.run(*example_inputs)
    if profile is not None:
        import hw.spec
        from stack.runtime.profile import build_trace, write_trace

        if isinstance(exe, Bundle):
            parts = [exe.exes[i] for kind, *_, i in steps if kind == "npu"]
        else:
            parts = [exe]
        trace = build_trace(exe.meta.get("timings", {}), parts, hw.spec.load(exe.spec_name),
                            steps)
        write_trace(profile, trace)
        res.stats["profile"] = str(profile)
    return res
