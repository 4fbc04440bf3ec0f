"""The compiler's graph IR: values with shapes and dtypes, nodes in topological order.

A value is one of four kinds: a runtime `input`, a compile-time `const` (a host tensor), an
`act`ivation that a node computes into its own DRAM buffer, or a `view` of an input or
activation (shape, element strides and offset over its root's buffer, as torch defines them).
Views cost nothing until a kernel needs its operand contiguous; a legalisation pass then
inserts a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Value", "Node", "Graph", "contiguous_strides", "DTYPE_BYTES"]

# Element sizes of the DRAM formats the compiler uses: activations are fp32, integer
# tensors (indices) int32, matmul weights bf16 (chosen per use when constants are placed).
DTYPE_BYTES = {"f32": 4, "i32": 4, "bf16": 2}


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


@dataclass(eq=False)
class Value:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "f32" or "i32"
    kind: str  # "input" | "const" | "act" | "view"
    const: torch.Tensor | None = None
    root: Value | None = None  # for views: the input or act whose buffer this reads
    offset: int = 0  # element offset into root's buffer (views)
    strides: tuple[int, ...] = ()
    producer: Node | None = None

    def __post_init__(self) -> None:
        if not self.strides:
            self.strides = contiguous_strides(self.shape)
        if self.root is None and self.kind != "view":
            self.root = self

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]

    def is_contiguous(self) -> bool:
        return all(
            st == cs
            for d, st, cs in zip(self.shape, self.strides, contiguous_strides(self.shape),
                                 strict=True)
            if d != 1
        )

    def __repr__(self) -> str:
        return f"%{self.name}:{self.kind}{list(self.shape)}"


@dataclass(eq=False)
class Node:
    op: str
    inputs: list[Value]
    output: Value
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "file:line" of the model code that produced it

    def __repr__(self) -> str:
        args = ", ".join(repr(v) for v in self.inputs)
        return f"{self.output!r} = {self.op}({args}) {self.attrs or ''}"


@dataclass(eq=False)
class Graph:
    inputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    _count: int = 0

    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"{hint}{self._count}"

    def add(self, op: str, inputs: list[Value], shape: tuple[int, ...], dtype: str = "f32",
            source: str = "", **attrs: Any) -> Value:
        out = Value(self.fresh(op.split(".")[0]), tuple(shape), dtype, "act")
        node = Node(op, list(inputs), out, attrs, source)
        out.producer = node
        self.nodes.append(node)
        return out

    def users(self) -> dict[int, list[Node]]:
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(id(v.root if v.kind == "view" else v), []).append(n)
        return out

    def dump(self) -> str:
        lines = [f"inputs: {self.inputs}"]
        lines += [repr(n) for n in self.nodes]
        lines.append(f"outputs: {self.outputs}")
        return "\n".join(lines)
