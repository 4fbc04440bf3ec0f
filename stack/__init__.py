"""The NPU software stack: compile PyTorch models, run them, and a torch.compile backend.

`import stack` registers the torch.compile backend "npu".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from stack.compiler import Executable, ExecutableError, UnsupportedOperator, compile_model
from stack.runtime import Result, Session

__all__ = ["compile", "load", "compile_and_run", "Executable", "ExecutableError",
           "UnsupportedOperator", "Result", "Session"]

log = logging.getLogger(__name__)


def compile(model: torch.nn.Module, example_inputs: tuple, *, spec: Any = None,  # noqa: A001
            devices: Any = None, pes: int | None = 1) -> Executable:
    """Compile `model` for the shapes of `example_inputs` into an `Executable`.

    `pes` is how many PEs the work is partitioned over (None: all of the spec's). The
    driver runs single-program executables, so the default is 1.
    """
    return compile_model(model, tuple(example_inputs), spec=spec, pes=pes)


def load(path: str | Path, spec: Any = None) -> Executable:
    """Read an executable; refuses corrupted, wrong-version or (given `spec`) wrong-spec files."""
    import hw.spec

    if isinstance(spec, str):
        spec = hw.spec.load(spec)
    return Executable.load(path, spec)


def compile_and_run(model: torch.nn.Module, example_inputs: tuple, *, spec: Any = None,
                    backend: str = "model", devices: Any = None, pes: int | None = 1
                    ) -> Result:
    """Compile and run once; `.outputs` has the eager structure, `.stats` the run's figures."""
    if backend != "model":
        raise ValueError(f"backend must be 'model' (the RTL backend is not wired), got {backend!r}")
    exe = compile(model, example_inputs, spec=spec, pes=pes)
    with Session(exe, devices) as s:
        return s.run(*example_inputs)


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
