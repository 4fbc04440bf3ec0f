"""What kernels share while one graph is being lowered: the spec, DRAM places, constants.

DRAM is addressed through four ARG base registers, so executables are relocatable:
ARG0 the constant blob (weights), ARG1 the activation arena, ARG2 the inputs, ARG3 the
outputs. Every place is a (base register, byte offset) pair.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stack.compiler.emit import Emitter
from stack.compiler.ir import DTYPE_BYTES, Value

__all__ = ["ARG_CONST", "ARG_ARENA", "ARG_INPUT", "ARG_OUTPUT", "ConstPool", "Ctx"]

log = logging.getLogger(__name__)

ARG_CONST, ARG_ARENA, ARG_INPUT, ARG_OUTPUT = 0, 1, 2, 3
ALIGN = 64


class ConstPool:
    """The constant blob: tensors converted to the format a kernel asks for, deduplicated."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self._seen: dict[str, int] = {}

    def add(self, data: bytes) -> int:
        key = hashlib.sha1(data).hexdigest()
        if key in self._seen:
            return self._seen[key]
        pad = -self.size % ALIGN
        if pad:
            self.chunks.append(bytes(pad))
            self.size += pad
        off = self.size
        self.chunks.append(data)
        self.size += len(data)
        self._seen[key] = off
        return off

    def tensor(self, t: torch.Tensor, fmt: str = "f32") -> int:
        t = t.detach().contiguous()
        if fmt == "f32":
            arr = t.float().numpy()
        elif fmt == "bf16":
            arr = t.to(torch.bfloat16).view(torch.int16).numpy()
        elif fmt == "i32":
            arr = t.to(torch.int32).numpy()
        else:
            raise ValueError(f"constant format must be f32, bf16 or i32, got {fmt!r}")
        return self.add(np.ascontiguousarray(arr).tobytes())

    def zeros(self, nbytes: int) -> int:
        return self.add(bytes(nbytes))

    def blob(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Ctx:
    spec: Any
    isa: Any
    num_pes: int
    em: Emitter
    consts: ConstPool = field(default_factory=ConstPool)
    places: dict[int, tuple[int, int]] = field(default_factory=dict)  # id(root) -> (arg, off)

    @property
    def sram(self) -> int:
        return self.spec.sram_bytes_per_pe

    def place(self, v: Value) -> tuple[int, int]:
        """(base register, byte offset) of element 0 of `v` (a view adds its offset)."""
        if v.kind == "const":
            raise ValueError(f"{v} is a constant; kernels place constants themselves")
        root = v.root
        arg, off = self.places[id(root)]
        return arg, off + v.offset * DTYPE_BYTES[root.dtype]
