"""The NPU compiler: PyTorch models to relocatable NPU executables.

`compile_model` runs the front end (torch.export -> IR), the passes and code generation,
and returns an `Executable`. `run_on_model` runs an executable straight on the functional
model (`hw.model.run_program`), one program per PE; the runtime (`stack.runtime`) runs
through the driver instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

import gen
import hw.spec
from stack.compiler import codegen, frontend, passes
from stack.compiler.bundle import Bundle
from stack.compiler.context import Ctx
from stack.compiler.emit import Emitter
from stack.compiler.executable import Executable, ExecutableError
from stack.compiler.frontend import UnsupportedOperator
from stack.compiler.ir import DTYPE_BYTES

__all__ = ["compile_model", "compile_graph_module", "run_on_model", "Executable", "Bundle",
           "raw_to_tensors",
           "ExecutableError", "UnsupportedOperator", "bind_inputs", "unpack_outputs", "input_bytes"]

log = logging.getLogger(__name__)


def _spec(spec: Any) -> Any:
    if spec is None:
        return hw.spec.load()
    if isinstance(spec, str):
        return hw.spec.load(spec)
    return spec


def compile_model(model: torch.nn.Module, example_inputs: tuple, *, spec: Any = None,
                  pes: int | None = None, fallback: str | None = None) -> Executable | Bundle:
    """Compile `model` for `example_inputs`' shapes; `pes` PEs (default: all of the spec).

    With `fallback="cpu"` an operator the NPU cannot run becomes a CPU partition and the
    result is a `Bundle` of NPU partitions and host steps (when there is such an operator);
    without it, such an operator raises `UnsupportedOperator`.
    """
    if fallback not in (None, "cpu"):
        raise ValueError(f"fallback must be None or 'cpu', got {fallback!r}")
    t0 = time.perf_counter()
    ep = frontend.export(model, tuple(example_inputs))
    timings = {"export": time.perf_counter() - t0}
    spec = _spec(spec)
    t = time.perf_counter()
    g, flat, breaks, out_tree = frontend.from_exported(ep, fallback)
    timings["frontend"] = time.perf_counter() - t
    if not breaks:
        return _build(g, flat, out_tree, spec, pes, timings)
    from stack.compiler import partition

    for b in breaks:
        log.warning("graph break (runs on the CPU): %s", b)
    return partition.build_bundle(g, flat, out_tree, breaks, spec, pes, timings)


def compile_graph_module(gm: torch.fx.GraphModule, example_inputs: list, *, spec: Any = None,
                         pes: int | None = None, fallback: str | None = None
                         ) -> Executable | Bundle:
    """Compile an FX graph (as torch.compile hands a backend) by exporting it first."""
    return compile_model(gm, tuple(example_inputs), spec=spec, pes=pes, fallback=fallback)


def _build(g: Any, flat: list[Any], out_tree: Any, spec: Any, pes: int | None,
           timings: dict[str, float]) -> Executable:
    """Passes and code generation of one NPU graph into an executable."""
    npes = spec.npu.num_pes if pes is None else pes
    if not 1 <= npes <= spec.npu.num_pes:
        raise ValueError(f"pes must be in [1, {spec.npu.num_pes}], got {npes}")
    for name, fn in passes.PASSES:
        t = time.perf_counter()
        fn(g)
        timings[name] = time.perf_counter() - t
    isa = gen.build(spec).isa
    ctx = Ctx(spec, isa, npes, Emitter(spec, isa))
    low = codegen.generate(ctx, g)
    timings.update(low.timings)
    programs = {pe: isa.encode_program(prog) for pe, prog in low.programs.items()}
    # Which flat outputs the device produces and which are host constants.
    flat_kinds = []
    k = 0
    for v in flat:
        if hasattr(v, "kind") and v.kind != "const":
            flat_kinds.append(["device", k])
            k += 1
        else:
            flat_kinds.append(["host", None])
    meta = {"timings": timings, "kernels": low.kernel_counts, "flat": flat_kinds,
            "static": _static_counts(isa, low.programs)}
    exe = Executable(spec.name, spec.hash, programs, low.consts, low.arena_bytes, low.inputs,
                     low.outputs, meta)
    exe.out_tree = out_tree
    exe.host_outputs = [None if hasattr(v, "kind") and v.kind != "const" else
                        (v.const if hasattr(v, "const") else v) for v in flat]
    log.info("compiled for %s on %d PEs: %s", spec.name, npes, low.kernel_counts)
    return exe


def _static_counts(isa: Any, progs: dict[int, list[Any]]) -> dict[str, int]:
    macs = dma = 0
    for prog in progs.values():
        for ins in prog:
            if isinstance(ins, isa.Matmul):
                macs += ins.m * ins.n * ins.k
            elif isinstance(ins, (isa.Load, isa.Store)):
                dma += ins.n0 * max(ins.n1, 1) * max(ins.n2, 1)
    return {"macs": macs, "dram_bytes": dma}


def bind_inputs(exe: Executable, inputs: tuple) -> list[bytes]:
    """The bytes of each input as the executable lays it out (fp32 or int32)."""
    flat = [x for x in torch.utils._pytree.tree_leaves(list(inputs))
            if isinstance(x, torch.Tensor)]
    if len(flat) != len(exe.inputs):
        raise ValueError(f"the executable takes {len(exe.inputs)} tensors, got {len(flat)}")
    out = []
    for spec_i, x in zip(exe.inputs, flat, strict=True):
        if list(x.shape) != spec_i["shape"]:
            raise ValueError(f"input {spec_i['name']} must have shape {spec_i['shape']}, "
                             f"got {list(x.shape)}; compile another shape bucket")
        x = x.detach().cpu().contiguous()
        if "quant" in exe.meta and x.is_floating_point():  # an int8 executable's float input
            from stack.compiler.quant import quantize_input

            x = quantize_input(exe, x)
        if spec_i["dtype"] == "bf16":
            out.append(x.float().to(torch.bfloat16).view(torch.int16).numpy().tobytes())
            continue
        dt = np.float32 if spec_i["dtype"] == "f32" else np.int32
        out.append(np.ascontiguousarray(x.numpy().astype(dt)).tobytes())
    return out


def input_bytes(spec_i: dict[str, Any]) -> int:
    """DRAM bytes of one input binding, rounded up to the 64-byte slot the planner gives it."""
    n = int(np.prod(spec_i["shape"])) * DTYPE_BYTES[spec_i["dtype"]]
    return -(-n // 64) * 64


def unpack_outputs(exe: Executable, raw: list[bytes]) -> Any:
    """Rebuild the eager output structure from the device outputs' bytes."""
    dev = raw_to_tensors(exe, raw)
    flat = []
    for kind, idx in exe.meta["flat"]:
        flat.append(dev[idx] if kind == "device" else None)
    for i, h in enumerate(exe.host_outputs):
        if flat[i] is None:
            flat[i] = h
    if exe.out_tree is None:
        return flat[0] if len(flat) == 1 else tuple(flat)
    return torch.utils._pytree.tree_unflatten(flat, exe.out_tree)


def run_on_model(exe: Executable | Bundle, inputs: tuple, *, spec: Any = None
                 ) -> tuple[Any, Any]:
    """Run on a fresh functional model with hw.model.run_program: (outputs, Timeline).

    A bundle runs each NPU partition on its own fresh model (the Timeline is the last
    partition's) and its CPU steps with eager torch.
    """
    if isinstance(exe, Bundle):
        tls: list[Any] = []

        def run_part(part: Executable, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            raw, tl = _run_raw(part, tensors, spec)
            tls.append(tl)
            return raw_to_tensors(part, raw)
        out = exe.run(inputs, run_part)
        return out, (tls[-1] if tls else None)
    raw, tl = _run_raw(exe, inputs, spec)
    return unpack_outputs(exe, raw), tl


def raw_to_tensors(exe: Executable, raw: list[bytes]) -> list[torch.Tensor]:
    """The device outputs' bytes as tensors, in `exe.outputs` order."""
    out = []
    for o, data in zip(exe.outputs, raw, strict=True):
        dt = np.float32 if o["dtype"] == "f32" else np.int32
        out.append(torch.from_numpy(np.frombuffer(data, dt).reshape(o["shape"]).copy()))
    return out


def _run_raw(exe: Executable, inputs: Any, spec: Any) -> tuple[list[bytes], Any]:
    import hw.model

    spec = _spec(spec if spec is not None else exe.spec_name)
    if spec.hash != exe.spec_hash:
        raise ExecutableError(f"executable was built for another spec than {spec.name}")
    page = 4096

    def up(n: int) -> int:
        return -(-n // page) * page
    cbase = page
    abase = up(cbase + len(exe.consts))
    ibase = up(abase + exe.arena_bytes)
    isize = sum(input_bytes(i) for i in exe.inputs)
    obase = up(ibase + isize)
    init = {cbase: exe.consts}
    for spec_i, data in zip(exe.inputs, bind_inputs(exe, inputs), strict=True):
        init[ibase + spec_i["offset"]] = data
    args = {pe: [cbase, abase, ibase, obase] for pe in exe.programs}
    dev, tl = hw.model.run_program(spec, exe.programs, init, args)
    for pe, st in tl.pes.items():
        if st.error:
            raise RuntimeError(f"PE {pe} stopped with error {st.error} at pc {st.error_pc}")
    raw = [dev.read_dram(obase + o["offset"], int(np.prod(o["shape"])) * 4) for o in exe.outputs]
    return raw, tl
