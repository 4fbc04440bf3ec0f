"""The NPU software stack: compile PyTorch models, run them, and a torch.compile backend.

`import stack` is cheap: torch and the compiler load on first use of `stack.compile`,
`stack.load`, `stack.compile_and_run`, `stack.Session`, ... (module `__getattr__`), so that
`npu smi` and `npu daemon` start quickly. The torch.compile backend "npu" is registered
through the package's `torch_dynamo_backends` entry point and, for a source checkout that
is not installed, by `import stack` itself: at once when dynamo's backend registry is
loaded already, else as soon as it loads.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
from typing import Any

__all__ = ["compile", "load", "compile_and_run", "Executable", "Bundle", "ExecutableError",
           "UnsupportedOperator", "Result", "Session"]

log = logging.getLogger(__name__)

_LAZY = {
    "compile": "stack.api",
    "load": "stack.api",
    "compile_and_run": "stack.api",
    "Executable": "stack.compiler",
    "Bundle": "stack.compiler",
    "ExecutableError": "stack.compiler",
    "UnsupportedOperator": "stack.compiler",
    "Result": "stack.runtime",
    "Session": "stack.runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_REGISTRY = "torch._dynamo.backends.registry"


def _npu(gm: Any, example_inputs: list) -> Any:
    """The "npu" backend; imports the compiler only when dynamo calls it."""
    from stack.backend import npu_backend

    return npu_backend(gm, example_inputs)


def _register_into(registry: Any) -> None:
    if "npu" in registry._COMPILER_FNS:  # the entry point or an earlier import got there
        return
    registry.register_backend(compiler_fn=_npu, name="npu")


class _Loader(importlib.abc.Loader):
    """Runs the registry module's own loader, then registers "npu" into it."""

    def __init__(self, inner: Any):
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        try:
            _register_into(module)
        except Exception as e:  # never break importing torch over the backend
            log.warning("could not register the torch.compile backend 'npu': %s", e)


class _RegistryWatch(importlib.abc.MetaPathFinder):
    """Waits for dynamo's backend registry to be imported (it is, by torch.compile)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _REGISTRY:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def _register_backend() -> None:
    registry = sys.modules.get(_REGISTRY)
    if registry is not None:
        _register_into(registry)
    elif not any(isinstance(f, _RegistryWatch) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryWatch())


_register_backend()
