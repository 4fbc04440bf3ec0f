"""Graph passes between the front end and code generation.

- `fuse_epilogues`: a unary activation applied only to a GEMM's result runs in the GEMM's
  epilogue.
- `legalize`: every kernel gets operands in a form it can address (contiguous where it
  needs, a broadcast plan for elementwise ops), inserting copies where a view is not
  addressable, and graph outputs get buffers of their own.
- `dead_code`: drops nodes whose results nobody uses.
- `bf16_inputs`: an fp32 input that only ever feeds GEMMs as their left operand is bound
  as bf16 by the host. The GEMM rounds that operand to bf16 anyway, so the numbers do not
  change, but the input moves half the DRAM bytes and needs no conversion on the PE.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from stack.compiler.frontend import UnsupportedOperator
from stack.compiler.ir import Graph, Node, Value

__all__ = ["fuse_epilogues", "legalize", "dead_code", "bf16_inputs", "PASSES"]

log = logging.getLogger(__name__)

FUSABLE = {"relu", "silu", "gelu_tanh", "gelu_erf", "sigmoid", "tanh"}
COMMUTATIVE = {"add", "mul", "max", "min"}
SWAP = {"sub": "rsub", "div": "rdiv"}


def _uses(g: Graph) -> dict[int, int]:
    n: dict[int, int] = {}
    for node in g.nodes:
        for v in node.inputs:
            n[id(v.root)] = n.get(id(v.root), 0) + 1
    for v in g.outputs:
        n[id(v.root)] = n.get(id(v.root), 0) + 1
    return n


def fuse_epilogues(g: Graph) -> None:
    uses = _uses(g)
    keep = []
    for node in g.nodes:
        x = node.inputs[0] if node.inputs else None
        if (node.op == "eltwise" and len(node.inputs) == 1 and node.attrs.get("func") in FUSABLE
                and "scalar" not in node.attrs and x.root.producer is not None
                and x.root.producer.op == "gemm" and not x.root.producer.attrs.get("act")
                and all(v.kind == "const" for v in x.root.producer.inputs[2:])
                and uses.get(id(x.root)) == 1 and x.is_contiguous() and x.offset == 0
                and x.numel == x.root.numel):
            gemm = x.root.producer
            gemm.attrs["act"] = node.attrs["func"]
            # The eltwise output becomes a view of the GEMM's result.
            out = node.output
            out.kind, out.root, out.offset, out.producer = "view", gemm.output, 0, None
            out.strides = tuple(out.strides)
            continue
        keep.append(node)
    g.nodes = keep
    reroot(g)


def reroot(g: Graph) -> None:
    """Point views at real buffers after a pass turned an activation into a view."""
    def fix(v: Value) -> None:
        while v.root is not None and v.root is not v and v.root.kind == "view":
            inner = v.root
            v.offset += inner.offset
            v.root = inner.root
    for node in g.nodes:
        for v in node.inputs:
            fix(v)
    for v in g.outputs:
        fix(v)


def dead_code(g: Graph) -> None:
    live = {id(v.root) for v in g.outputs}
    keep = []
    for node in reversed(g.nodes):
        if id(node.output) in live:
            keep.append(node)
            live.update(id(v.root) for v in node.inputs if v.kind != "const")
    g.nodes = list(reversed(keep))


def legalize(g: Graph) -> None:
    out_nodes: list[Node] = []

    def copy(v: Value) -> Value:
        if v.kind == "const":
            return v
        if v.kind != "view" and v.is_contiguous():
            return v
        if v.kind == "view" and v.is_contiguous():
            return v
        c = Value(g.fresh("copy"), v.shape, v.dtype, "act")
        n = Node("copy", [v], c, {}, "")
        c.producer = n
        out_nodes.append(n)
        return c

    for node in g.nodes:
        op = node.op
        ins = node.inputs
        if op == "gemm":
            a = ins[0]
            if a.strides[-1] != 1 and a.shape[-1] != 1:
                ins[0] = copy_force(g, out_nodes, a)
            b = ins[1]
            if b.kind == "const":
                if b.const.dim() > 2 and any(d != 1 for d in b.shape[:-2]):
                    ins[1] = _const_act(g, out_nodes, b)
            elif not (b.strides[-1] == 1 or b.strides[-2] == 1 or 1 in b.shape[-2:]):
                ins[1] = copy_force(g, out_nodes, b)
            if len(ins) > 2 and ins[2].kind != "const":
                bias = ins.pop()
                node.attrs["bias"] = False
                out_nodes.append(node)
                _split_bias(g, out_nodes, node, bias)
                continue
        elif op == "eltwise":
            _plan_eltwise(g, out_nodes, node, copy)
        elif op in ("reduce", "softmax", "norm", "gather", "im2col", "pool"):
            ins[0] = copy(ins[0])
            if op == "softmax" and len(ins[0].shape) != 2:
                C = ins[0].shape[-1]
                flat = _reshape(g, ins[0], (ins[0].numel // C, C))
                node.inputs[0] = flat
                out2 = node.output
                real = Value(g.fresh("softmax"), flat.shape, "f32", "act")
                real.producer = node
                node.output = real
                out2.kind, out2.root, out2.offset, out2.producer = "view", real, 0, None
        out_nodes.append(node)
    g.nodes = out_nodes
    reroot(g)
    # Graph outputs: each a whole, contiguous activation of its own.
    seen: set[int] = set()
    outs = []
    for v in g.outputs:
        whole = v.kind == "act" or (v.kind == "view" and v.root.kind == "act" and v.offset == 0
                                    and v.is_contiguous() and v.numel == v.root.numel)
        if not whole or id(v.root) in seen:
            c = copy_force(g, g.nodes, v)
            c.is_output = True  # type: ignore[attr-defined]
            outs.append(c)
            seen.add(id(c))
            v._alias_of = c  # type: ignore[attr-defined]
        else:
            v.root.is_output = True  # type: ignore[attr-defined]
            seen.add(id(v.root))
            outs.append(v)
    g.outputs = outs


def copy_force(g: Graph, sink: list[Node], v: Value) -> Value:
    c = Value(g.fresh("copy"), v.shape, v.dtype, "act")
    n = Node("copy", [v], c, {}, "")
    c.producer = n
    sink.append(n)
    return c


def _reshape(g: Graph, v: Value, shape: tuple[int, ...]) -> Value:
    return Value(g.fresh("view"), shape, v.dtype, "view", root=v.root, offset=v.offset)


def _const_act(g: Graph, sink: list[Node], v: Value) -> Value:
    raise UnsupportedOperator("gemm", "", "a batched constant right operand")


def _split_bias(g: Graph, sink: list[Node], node: Node, bias: Value) -> None:
    """Turn gemm(+computed bias) into gemm then an elementwise add."""
    y = node.output
    tmp = Value(g.fresh("gemm"), y.shape, "f32", "act")
    tmp.producer = node
    node.output = tmp
    add = Node("eltwise", [tmp, bias], y, {"func": "add"}, node.source)
    y.producer = add
    _plan_eltwise(g, sink, add, lambda v: v)
    sink.append(add)


def _classify(S: tuple[int, ...], bs: tuple[int, ...]) -> tuple[str, int] | None:
    r = len(S)
    if bs == S:
        return "tile", r - 1
    for p in range(r - 1, 0, -1):
        if all(x == 1 for x in bs[:p]) and bs[p:] == S[p:]:
            return "row", p
        if bs[:p] == S[:p] and all(x == 1 for x in bs[p:]):
            return "col", p
    return None


def _plan_eltwise(g: Graph, sink: list[Node], node: Node, copy: Any) -> None:
    S = node.output.shape
    r = len(S)
    func = node.attrs["func"]
    ins = node.inputs

    def full(v: Value) -> bool:
        return (1,) * (r - len(v.shape)) + v.shape == S

    def expand(v: Value) -> Value:
        if v.kind == "const":
            return Value(g.fresh("c"), S, "f32", "const",
                         const=v.const.float().expand(S).contiguous())
        vs = (1,) * (r - len(v.shape)) + v.shape
        meta = torch.empty(v.root.numel, device="meta").as_strided(v.shape, v.strides, v.offset)
        e = meta.reshape(vs).expand(S) if meta.reshape(vs)._base is not None else None
        if e is None:
            v = copy_force(g, sink, v)
            return expand(v)
        ev = Value(g.fresh("view"), S, v.dtype, "view", root=v.root,
                   offset=e.storage_offset(), strides=tuple(e.stride()))
        return copy_force(g, sink, ev)

    if len(ins) == 2:
        a, b = ins
        if (not full(a) and full(b)) or (a.kind == "const" and b.kind != "const" and full(b)):
            a, b = b, a
            func = func if func in COMMUTATIVE else SWAP.get(func, func)
        if not full(a):
            a = expand(a)
        bs = (1,) * (r - len(b.shape)) + b.shape
        cl = _classify(S, bs)
        if cl is None:
            b, cl = expand(b), ("tile", r - 1)
        mode, p = cl
        a = copy(a) if a.kind != "const" else a
        if a.kind == "const":
            a = _const_to_act_error(node)
        if b.kind != "const":
            b = copy(b)
        node.inputs = [a, b]
    else:
        a = copy(ins[0])
        node.inputs = [a]
        mode, p = "tile", r - 1
    if mode == "tile":
        C = S[-1] if S else 1
        p = r - 1
        while p > 0 and C < 64 and C * S[p - 1] <= 8192:
            p -= 1
            C *= S[p]
    else:
        C = math.prod(S[p:])
    R = math.prod(S) // max(C, 1)
    plan = {"R": R, "C": C, "func": func, "mode": mode}
    if len(node.inputs) == 2 and node.inputs[1].kind == "const":
        b = node.inputs[1]
        t = b.const.float()
        if mode == "tile":
            plan["b_const"] = t.expand(S).reshape(R, C)
        elif mode == "row":
            plan["b_const"] = t.reshape((1,) * (r - t.dim()) + tuple(t.shape)).expand(S) \
                .reshape(R, C)[0].contiguous()
        else:
            plan["b_const"] = t.reshape((1,) * (r - t.dim()) + tuple(t.shape)).expand(S) \
                .reshape(R, C)[:, 0].contiguous()
    node.attrs["plan"] = plan


def _const_to_act_error(node: Node) -> Value:
    raise UnsupportedOperator("eltwise", node.source, "an elementwise op on constants only")


def bf16_inputs(g: Graph) -> None:
    uses: dict[int, list[tuple[Node, int]]] = {}
    for node in g.nodes:
        for i, v in enumerate(node.inputs):
            if v.kind != "const":
                uses.setdefault(id(v.root), []).append((node, i))
    outs = {id(v.root) for v in g.outputs}
    for v in g.inputs:
        us = uses.get(id(v), [])
        if v.dtype != "f32" or id(v) in outs or not us:
            continue
        ok = True
        for node, i in us:
            a = node.inputs[i]
            ok = ok and (node.op == "gemm" and i == 0 and a.shape[-1] % 2 == 0
                         and a.strides[-1] == 1 and a.offset % 2 == 0
                         and all(st % 2 == 0 for st in a.strides[:-1]))
        if ok:
            v.dtype = "bf16"
            log.debug("input %s is bound as bf16 (only GEMM left operands read it)", v)


PASSES = [("fuse_epilogues", fuse_epilogues), ("dead_code", dead_code), ("legalize", legalize),
          ("bf16_inputs", bf16_inputs)]
