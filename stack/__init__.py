"""The NPU software stack: compile PyTorch models, run them, and a torch.compile backend.

`import stack` registers the torch.compile backend "npu".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stack.compiler import (
    Bundle,
    Executable,
    ExecutableError,
    UnsupportedOperator,
    compile_model,
)
from stack.runtime import Result, Session

__all__ = ["compile", "load", "compile_and_run", "Executable", "Bundle", "ExecutableError",
           "UnsupportedOperator", "Result", "Session"]

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
            devices: Any = None, pes: int | None = 1, fallback: str | None = None,
            buckets: Sequence[int] | Sequence[tuple] | None = None, bucket_dim: int = 1,
            pad: bool = True) -> Executable | Bundle:
    """Compile `model` for the shapes of `example_inputs` into an `Executable`.

    `pes` is how many PEs the work is partitioned over (None: all of the spec's). The
    driver runs single-program executables, so the default is 1.

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
    """
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
                    backend: str = "model", devices: Any = None, pes: int | None = 1,
                    fallback: str | None = None, profile: str | Path | None = None
                    ) -> Result:
    """Compile and run once; `.outputs` has the eager structure, `.stats` the run's figures.

    `profile` names a Chrome/Perfetto trace file to write with the compiler pass timings
    and per-PE engine activity (see `stack.runtime.profile`).
    """
    if backend != "model":
        raise ValueError(f"backend must be 'model' (the RTL backend is not wired), got {backend!r}")
    exe = compile(model, example_inputs, spec=spec, pes=pes, fallback=fallback)
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


def _npu_backend(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
    exe = compile_model(gm, tuple(example_inputs), pes=1)
    sess: list[Session] = []

    def run(*args: Any) -> Any:
        if not sess:
            sess.append(Session(exe))
        out = sess[0].run(*args).outputs
        return out
    run.executable = exe  # type: ignore[attr-defined]
    return run


def _register() -> None:
    from torch._dynamo.backends.registry import register_backend

    try:
        register_backend(compiler_fn=_npu_backend, name="npu")
    except Exception as e:  # registered already (a reload)
        log.debug("backend npu: %s", e)


_register()
