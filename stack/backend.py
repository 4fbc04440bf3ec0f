"""The torch.compile backend "npu": each FX graph dynamo hands over becomes an executable.

Registered through the `torch_dynamo_backends` entry point of the installed package and,
for a source checkout, by `import stack` (see `stack._register_backend`).
"""

from __future__ import annotations

from typing import Any

import torch

from stack.compiler import compile_model
from stack.runtime import Session

__all__ = ["npu_backend"]


def npu_backend(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
    """Compile `gm` for the default spec on all its PEs; run it through the driver."""
    exe = compile_model(gm, tuple(example_inputs))
    sess: list[Session] = []

    def run(*args: Any) -> Any:
        if not sess:
            sess.append(Session(exe))
        return sess[0].run(*args).outputs
    run.executable = exe  # type: ignore[attr-defined]
    return run
