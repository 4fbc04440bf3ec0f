"""Bundles: the several executables one model compiles into.

A model becomes more than one executable in two cases, which combine:

- CPU fallback (`fallback="cpu"`): an operator the NPU cannot run splits the graph into
  NPU partitions (each an `Executable`) and CPU steps run with eager torch (graph breaks);
- shape buckets: one plan per input-shape bucket, chosen at run time by the inputs' shapes.

A `Plan` is a list of steps over named tensors: `npu` runs one executable on named
tensors and names its outputs; `cpu` runs one ATen operator. Named tensors are whole,
contiguous buffers (IR roots); a reference to one carries the view (shape, strides,
offset) the consumer reads.

File layout (little-endian): magic `NPUB`, u32 format version, u32 header length, 32-byte
SHA-256 of everything after it, the JSON header (plans, executable index), then each
executable's own file bytes, which keep their own checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stack.compiler.executable import Executable, ExecutableError

__all__ = ["Bundle", "Plan", "encode_arg", "BUNDLE_MAGIC", "BUNDLE_VERSION"]

log = logging.getLogger(__name__)

BUNDLE_MAGIC = b"NPUB"
BUNDLE_VERSION = 1

RunPart = Callable[[Executable, list[torch.Tensor]], list[torch.Tensor]]


def encode_arg(a: Any, ref: Callable[[Any], dict | None]) -> Any:
    """JSON form of an operator argument; `ref` turns an IR value into a reference."""
    r = ref(a)
    if r is not None:
        return r
    if isinstance(a, torch.Tensor):
        t = a.detach().contiguous().cpu()
        return {"$tensor": {"dtype": str(t.dtype).removeprefix("torch."),
                            "shape": list(t.shape),
                            "data": base64.b64encode(t.numpy().tobytes()).decode()}}
    if isinstance(a, torch.dtype):
        return {"$dtype": str(a).removeprefix("torch.")}
    if isinstance(a, torch.device):
        return {"$device": str(a)}
    if isinstance(a, (torch.layout, torch.memory_format)):
        return {"$torch": str(a).removeprefix("torch.")}
    if isinstance(a, (list, tuple)):
        return [encode_arg(x, ref) for x in a]
    if isinstance(a, dict):
        return {k: encode_arg(v, ref) for k, v in a.items()}
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    raise ExecutableError(f"cannot store operator argument {a!r} of type {type(a).__name__}")


def _decode(a: Any, env: dict[str, torch.Tensor]) -> Any:
    if isinstance(a, list):
        return [_decode(x, env) for x in a]
    if not isinstance(a, dict):
        return a
    if "$ref" in a:
        return _view(env[a["$ref"]], a)
    if "$tensor" in a:
        t = a["$tensor"]
        dt = getattr(torch, t["dtype"])
        raw = base64.b64decode(t["data"])
        if not raw:
            return torch.empty(t["shape"], dtype=dt)
        return torch.frombuffer(bytearray(raw), dtype=dt).reshape(t["shape"]).clone()
    if "$dtype" in a:
        return getattr(torch, a["$dtype"])
    if "$device" in a:
        return torch.device(a["$device"])
    if "$torch" in a:
        return getattr(torch, a["$torch"])
    return {k: _decode(v, env) for k, v in a.items()}


def _view(root: torch.Tensor, ref: dict) -> torch.Tensor:
    flat = root.reshape(-1)
    return torch.as_strided(flat, ref["shape"], ref["strides"], ref["offset"])


def _resolve_op(name: str) -> Any:
    ns, packet, overload = name.split(".")
    return getattr(getattr(getattr(torch.ops, ns), packet), overload)


@dataclass
class Plan:
    """One input-shape bucket: its inputs, steps and how the flat outputs are read."""

    inputs: list[dict[str, Any]]  # per flat user input: name, shape, dtype
    steps: list[dict[str, Any]]
    outputs: list[Any]  # per flat output: {"$ref": ...}, an encoded constant, or None
    breaks: list[str] = field(default_factory=list)
    out_tree: str | None = None  # torch pytree spec, serialised
    pad_dims: list[int | None] = field(default_factory=list)  # per output: bucket dim

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "steps": self.steps, "outputs": self.outputs,
                "breaks": self.breaks, "out_tree": self.out_tree, "pad_dims": self.pad_dims}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(d["inputs"], d["steps"], d["outputs"], d["breaks"], d["out_tree"],
                   d["pad_dims"])

    @classmethod
    def of_executable(cls, exe: Executable, index: int) -> Plan:
        """The plan that runs one whole-model executable (a bucket without breaks)."""
        names = [f"out{j}" for j in range(len(exe.outputs))]
        outs: list[Any] = []
        for (kind, idx), host in zip(exe.meta["flat"], exe.host_outputs or
                                     [None] * len(exe.meta["flat"]), strict=True):
            if kind == "device":
                o = exe.outputs[idx]
                strides = [int(s) for s in torch.empty(o["shape"], device="meta").stride()]
                outs.append({"$ref": names[idx], "shape": o["shape"], "strides": strides,
                             "offset": 0})
            else:
                outs.append(encode_arg(host, lambda a: None))
        step = {"kind": "npu", "exe": index, "inputs": [i["name"] for i in exe.inputs],
                "outputs": names}
        ins = [{"name": i["name"], "shape": i["shape"], "dtype": i["dtype"]} for i in exe.inputs]
        return cls(ins, [step], outs, [], _dump_tree(exe.out_tree),
                   [None] * len(outs))


def _dump_tree(tree: Any) -> str | None:
    if tree is None:
        return None
    return torch.utils._pytree.treespec_dumps(tree)


class Bundle:
    """Executables and the plans (one per shape bucket) that run them."""

    def __init__(self, exes: list[Executable], plans: list[Plan], meta: dict | None = None,
                 bucket_dim: int | None = None, pad: bool = True):
        if not exes or not plans:
            raise ValueError("a bundle needs at least one executable and one plan")
        self.exes, self.plans = exes, plans
        self.meta = dict(meta or {})
        self.bucket_dim, self.pad = bucket_dim, pad
        self.meta["graph_breaks"] = sorted({b for p in plans for b in p.breaks})
        self.meta["buckets"] = [[i["shape"] for i in p.inputs] for p in plans]

    @property
    def spec_name(self) -> str:
        return self.exes[0].spec_name

    @property
    def spec_hash(self) -> str:
        return self.exes[0].spec_hash

    @property
    def graph_breaks(self) -> list[str]:
        return self.meta["graph_breaks"]

    # ------------------------------------------------------------ buckets

    @staticmethod
    def merge(items: list[Executable | Bundle], bucket_dim: int | None, pad: bool) -> Bundle:
        """One bundle whose plans are the buckets `items` were compiled for."""
        exes: list[Executable] = []
        plans: list[Plan] = []
        meta: dict[str, Any] = {"timings": {}}
        for b, item in enumerate(items):
            if isinstance(item, Executable):
                plans.append(Plan.of_executable(item, len(exes)))
                exes.append(item)
                timings = item.meta.get("timings", {})
            else:
                base = len(exes)
                for p in item.plans:
                    p.steps = [dict(s, exe=s["exe"] + base) if s["kind"] == "npu" else s
                               for s in p.steps]
                    plans.append(p)
                exes.extend(item.exes)
                timings = item.meta.get("timings", {})
            meta["timings"].update({f"bucket{b}.{k}": v for k, v in timings.items()})
        shapes = [tuple(tuple(i["shape"]) for i in p.inputs) for p in plans]
        if len(set(shapes)) != len(shapes):
            raise ValueError(f"two buckets have the same input shapes: {shapes}")
        _mark_pad_dims(plans, bucket_dim)
        return Bundle(exes, plans, meta, bucket_dim, pad)

    def select(self, inputs: list[torch.Tensor]) -> tuple[Plan, list[torch.Tensor], int | None]:
        """The plan for these inputs, the inputs padded to it, and the true bucket size."""
        shapes = [tuple(x.shape) for x in inputs]
        for p in self.plans:
            if [tuple(i["shape"]) for i in p.inputs] == shapes:
                return p, inputs, None
        d = self.bucket_dim
        best = None
        if self.pad and d is not None:
            for p in self.plans:
                fit = self._padding(p, shapes, d)
                if fit is not None and (best is None or fit[1] < best[1]):
                    best = (p, fit[1], fit[0])
        if best is None:
            have = [[i["shape"] for i in p.inputs] for p in self.plans]
            how = f" (or smaller along dim {d}, padded)" if self.pad and d is not None else ""
            raise ValueError(f"no shape bucket takes inputs of shapes {[list(s) for s in shapes]}"
                             f"; buckets: {have}{how}")
        p, size, true = best
        padded = []
        for x, i in zip(inputs, p.inputs, strict=True):
            want = i["shape"][d]
            if x.shape[d] != want:
                pads = [0, 0] * (x.dim() - 1 - d % x.dim()) + [0, want - x.shape[d]]
                x = torch.nn.functional.pad(x, pads)
            padded.append(x)
        log.debug("bucket %s for input shapes %s (padded)", [i["shape"] for i in p.inputs],
                  shapes)
        return p, padded, true

    @staticmethod
    def _padding(p: Plan, shapes: list[tuple], d: int) -> tuple[int, int] | None:
        """(true size along d, padded element count) when `p` takes `shapes` padded."""
        if len(p.inputs) != len(shapes):
            return None
        true = None
        total = 0
        for s, i in zip(shapes, p.inputs, strict=True):
            want = tuple(i["shape"])
            if len(s) != len(want):
                return None
            dd = d % len(s)
            if s[:dd] + s[dd + 1:] != want[:dd] + want[dd + 1:] or s[dd] > want[dd]:
                return None
            if s[dd] != want[dd]:
                if true is not None and true != s[dd]:
                    return None
                true = s[dd]
            total += int(np.prod(want))
        return (true, total) if true is not None else None

    # ------------------------------------------------------------ running

    def run(self, inputs: Any, run_part: RunPart, profile: list | None = None) -> Any:
        """Run the plan of these inputs; `run_part(exe, tensors)` runs an NPU partition.

        `profile`, when given, receives (kind, name, start_s, duration_s, executable index
        or None) per step.
        """
        flat_in = [x for x in torch.utils._pytree.tree_leaves(list(inputs))
                   if isinstance(x, torch.Tensor)]
        plan, flat_in, true = self.select(flat_in)
        env: dict[str, torch.Tensor] = {}
        for i, x in zip(plan.inputs, flat_in, strict=True):
            env[i["name"]] = x.detach().contiguous()
        for st in plan.steps:
            t0 = time.perf_counter()
            if st["kind"] == "npu":
                exe = self.exes[st["exe"]]
                outs = run_part(exe, [env[n] for n in st["inputs"]])
                env.update(zip(st["outputs"], outs, strict=True))
                name = f"npu partition {st['exe']}"
            else:
                op = _resolve_op(st["op"])
                with torch.no_grad():
                    res = op(*_decode(st["args"], env), **_decode(st["kwargs"], env))
                res = list(res) if isinstance(res, (list, tuple)) else [res]
                for n, r in zip(st["outputs"], res, strict=False):
                    if n is not None:
                        env[n] = r.contiguous()
                name = st["op"]
                log.debug("cpu step %s (%s)", st["op"], st.get("source", ""))
            if profile is not None:
                profile.append((st["kind"], name, t0, time.perf_counter() - t0,
                                st.get("exe")))
        flat = []
        for o, pd in zip(plan.outputs, plan.pad_dims or [None] * len(plan.outputs), strict=True):
            v = _decode(o, env) if o is not None else None
            if true is not None and pd is not None and isinstance(v, torch.Tensor):
                v = v.narrow(pd, 0, true)
            flat.append(v.clone() if isinstance(v, torch.Tensor) else v)
        if plan.out_tree is None:
            return flat[0] if len(flat) == 1 else tuple(flat)
        tree = torch.utils._pytree.treespec_loads(plan.out_tree)
        return torch.utils._pytree.tree_unflatten(flat, tree)

    # ------------------------------------------------------------ files

    def to_bytes(self) -> bytes:
        blobs = [e.to_bytes() for e in self.exes]
        index, at = [], 0
        for b in blobs:
            index.append([at, len(b)])
            at += len(b)
        header = {"spec_name": self.spec_name, "spec_hash": self.spec_hash,
                  "plans": [p.to_json() for p in self.plans], "exes": index,
                  "meta": self.meta, "bucket_dim": self.bucket_dim, "pad": self.pad}
        hbytes = json.dumps(header, sort_keys=True).encode()
        body = hbytes + b"".join(blobs)
        return BUNDLE_MAGIC + struct.pack("<II", BUNDLE_VERSION, len(hbytes)) + \
            hashlib.sha256(body).digest() + body

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        log.info("wrote %s: %d executables, %d buckets", path, len(self.exes), len(self.plans))
        return path

    @classmethod
    def from_bytes(cls, data: bytes, spec: Any = None) -> Bundle:
        if len(data) < 44 or data[:4] != BUNDLE_MAGIC:
            raise ExecutableError("not an NPU bundle (bad magic)")
        version, hlen = struct.unpack_from("<II", data, 4)
        if version != BUNDLE_VERSION:
            raise ExecutableError(f"bundle format version {version}; this stack reads version "
                                  f"{BUNDLE_VERSION} - recompile the model")
        digest, body = data[12:44], data[44:]
        if hashlib.sha256(body).digest() != digest:
            raise ExecutableError("bundle is corrupted (checksum mismatch)")
        header = json.loads(body[:hlen])
        blobs = body[hlen:]
        exes = [Executable.from_bytes(bytes(blobs[at:at + n]), spec)
                for at, n in header["exes"]]
        return cls(exes, [Plan.from_json(p) for p in header["plans"]], header["meta"],
                   header["bucket_dim"], header["pad"])


def _mark_pad_dims(plans: list[Plan], d: int | None) -> None:
    """Per output, the dim that follows the bucket size (it differs between buckets)."""
    for p in plans:
        p.pad_dims = [None] * len(p.outputs)
    if d is None or len(plans) < 2:
        return
    for j in range(len(plans[0].outputs)):
        shapes = [p.outputs[j]["shape"] if isinstance(p.outputs[j], dict) and
                  "$ref" in p.outputs[j] else None for p in plans]
        if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
            continue
        varying = [k for k in range(len(shapes[0])) if len({s[k] for s in shapes}) > 1]
        if len(varying) != 1:
            continue
        k = varying[0]
        for p in plans:
            sizes = {i["shape"][d % len(i["shape"])] for i in p.inputs if i["shape"]}
            if p.outputs[j]["shape"][k] in sizes:
                p.pad_dims[j] = k
