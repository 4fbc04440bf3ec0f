"""CPU fallback: split an IR graph with `host` nodes into NPU partitions and CPU steps.

The front end, given `fallback="cpu"`, lowers each operator the NPU cannot run into a
`host` node. Here the node list (already in topological order) is cut into maximal runs
of NPU nodes and of host nodes. Each NPU run becomes a graph of its own, whose inputs are
the buffers it reads from earlier runs (or the model's inputs) and whose outputs are the
buffers later runs or the model's outputs read; it is compiled like any model. Each host
node becomes a `cpu` step calling its ATen operator with eager torch.

Everything a step refers to is captured by buffer name before any partition is compiled,
because the passes rewrite values in place (an activation fused into a GEMM epilogue
becomes a view of the GEMM's output).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from stack.compiler.bundle import Bundle, Plan, _dump_tree, encode_arg
from stack.compiler.ir import Graph, Node, Value

__all__ = ["build_bundle", "split"]

log = logging.getLogger(__name__)


def _ref(v: Any) -> dict | None:
    if isinstance(v, Value) and v.kind != "const":
        return {"$ref": v.root.name, "shape": list(v.shape), "strides": list(v.strides),
                "offset": int(v.offset)}
    if isinstance(v, Value):
        return encode_arg(v.const, lambda a: None)
    return None


def _op_name(target: Any) -> str:
    if not isinstance(target, torch._ops.OpOverload):
        raise ValueError(f"only ATen operators can fall back to the CPU, got {target}")
    return f"{target.namespace}.{target.overloadpacket.__name__}.{target._overloadname}"


def split(g: Graph) -> list[tuple[bool, list[Node]]]:
    """Maximal runs of nodes: (is_host, nodes)."""
    runs: list[tuple[bool, list[Node]]] = []
    for n in g.nodes:
        host = n.op == "host"
        if runs and runs[-1][0] == host:
            runs[-1][1].append(n)
        else:
            runs.append((host, [n]))
    return runs


def _remap(v: Value, ext: dict[str, Value], produced: set[str]) -> Value:
    """`v` as the partition sees it: buffers from outside become partition inputs."""
    if v.kind == "const" or v.root.name in produced:
        return v
    root = v.root
    new = ext.get(root.name)
    if new is None:
        new = Value(root.name, root.shape, root.dtype, "input")
        ext[root.name] = new
    if v is root:
        return new
    return Value(v.name, v.shape, v.dtype, "view", root=new, offset=v.offset,
                 strides=v.strides)


def build_bundle(g: Graph, flat: list[Any], out_tree: Any, breaks: list[str], spec: Any,
                 pes: int | None, timings: dict[str, float]) -> Bundle:
    from stack.compiler import _build

    runs = split(g)
    reads = [{v.root.name for n in nodes for v in n.inputs if v.kind != "const"}
             for _, nodes in runs]
    outputs = [_ref(v) if isinstance(v, Value) else
               (encode_arg(v, lambda a: None) if v is not None else None) for v in flat]
    out_names = {o["$ref"] for o in outputs if isinstance(o, dict) and "$ref" in o}
    # Capture every step before compiling anything (the passes rewrite values).
    pending: list[tuple[str, Any]] = []
    for i, (host, nodes) in enumerate(runs):
        later = set(out_names).union(*reads[i + 1:])
        if host:
            pending.extend(("cpu", s) for s in _cpu_steps(nodes))
            continue
        produced = {n.output.name for n in nodes}
        keep = [n.output for n in nodes if n.output.name in later]
        if keep:
            pending.append(("npu", (nodes, keep, produced)))
    ins = [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype} for v in g.inputs]
    steps: list[dict[str, Any]] = []
    exes = []
    for kind, item in pending:
        if kind == "cpu":
            steps.append(item)
            continue
        nodes, keep, produced = item
        ext: dict[str, Value] = {}
        for n in nodes:
            n.inputs = [_remap(v, ext, produced) for v in n.inputs]
        sub = Graph(inputs=list(ext.values()), nodes=list(nodes), outputs=list(keep),
                    _count=g._count)
        names = [v.name for v in keep]
        part_t: dict[str, float] = {}
        t = time.perf_counter()
        exe = _build(sub, list(keep), None, spec, pes, part_t)
        log.info("NPU partition %d: %d nodes, %d inputs, %d outputs (%.2f s)", len(exes),
                 len(nodes), len(ext), len(keep), time.perf_counter() - t)
        timings.update({f"partition{len(exes)}.{k}": v for k, v in part_t.items()})
        steps.append({"kind": "npu", "exe": len(exes),
                      "inputs": [i["name"] for i in exe.inputs], "outputs": names})
        exes.append(exe)
    if not exes:
        raise ValueError("every operator of this model falls back to the CPU; run it eagerly")
    plan = Plan(ins, steps, outputs, list(breaks), _dump_tree(out_tree), [None] * len(outputs))
    return Bundle(exes, [plan], {"timings": timings})


def _cpu_steps(nodes: list[Node]) -> list[dict[str, Any]]:
    """One step per operator call; a multi-output call has one host node per output."""
    steps: list[dict[str, Any]] = []
    prev_args = None
    for n in nodes:
        a = n.attrs
        if prev_args is not None and a["args"] is prev_args and steps:
            outs = steps[-1]["outputs"]
            outs[a["index"]] = n.output.name
            continue
        prev_args = a["args"]
        outs = [None] * a["n_out"]
        outs[a["index"]] = n.output.name
        steps.append({"kind": "cpu", "op": _op_name(a["target"]),
                      "args": encode_arg(a["args"], _ref),
                      "kwargs": encode_arg(dict(a["kwargs"]), _ref), "outputs": outs,
                      "source": n.source})
    return steps
