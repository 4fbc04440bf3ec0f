"""Sessions: an executable bound to one or several devices through the driver.

A session opens a driver context per device, uploads the constants (weights) once and
keeps arena, input and output buffers; every `submit` writes the inputs, queues a RUN and
returns a handle whose `result()` waits and reads the outputs back. Several devices take
submissions round-robin.

An executable runs as one driver job (`Context.submit_multi`, the firmware's RUN_PES): each
of its PEs gets its own program and ARG0..3 = constants, arena, inputs, outputs, and the
PEs start together so that their BARRIERs meet. An executable needing more PEs than the
device reports (`caps.num_pes`) is refused.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import driver
from stack.compiler import (
    Bundle,
    Executable,
    bind_inputs,
    input_bytes,
    raw_to_tensors,
    unpack_outputs,
)

__all__ = ["Session", "Result", "Pending", "parse_devices"]

log = logging.getLogger(__name__)


def parse_devices(devices: str | int | list[int] | None) -> list[int]:
    """"npu:0" -> [0]; "npu:0-3" -> [0, 1, 2, 3]; None -> [0]."""
    if devices is None:
        return [0]
    if isinstance(devices, int):
        return [devices]
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    m = re.fullmatch(r"npu:(\d+)(?:-(\d+))?", devices.strip())
    if not m:
        raise ValueError(f"devices must look like 'npu:0' or 'npu:0-3', got {devices!r}")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if hi < lo:
        raise ValueError(f"device range {devices!r} is empty")
    return list(range(lo, hi + 1))


@dataclass
class Result:
    outputs: Any
    stats: dict[str, Any] = field(default_factory=dict)


class _Binding:
    """One device's copy of an executable: its context, program and buffers."""

    def __init__(self, exe: Executable, index: int):
        self.dev = driver.open(index, spec=exe.spec_name)
        self._bind(exe)

    @classmethod
    def on(cls, exe: Executable, dev: Any) -> _Binding:
        """A binding on an already open device (e.g. one `driver.attach`ed to the RTL)."""
        self = cls.__new__(cls)
        self.dev = dev
        self._bind(exe)
        return self

    def _bind(self, exe: Executable) -> None:
        have = self.dev.caps.num_pes
        if max(exe.programs, default=0) >= have:
            raise ValueError(
                f"this executable uses PEs {sorted(exe.programs)} but device "
                f"npu{self.dev.index} has {have} PE(s); compile it with pes <= {have}")
        isize = sum(input_bytes(i) for i in exe.inputs) or 64
        osize = max((o["offset"] + _numel(o["shape"]) * 4 for o in exe.outputs), default=64)
        code = sum(len(p) for p in exe.programs.values())
        need = len(exe.consts) + exe.arena_bytes + isize + osize + code + (1 << 16)
        self.ctx = self.dev.context(memory=-(-need // 4096) * 4096 + (1 << 20))
        self.consts = self.ctx.upload(exe.consts or b"\0")
        self.arena = self.ctx.alloc(max(exe.arena_bytes, 64))
        self.inputs = self.ctx.alloc(isize)
        self.outputs = self.ctx.alloc(osize)
        # PEs sharing one program share its loaded copy.
        loaded: dict[bytes, Any] = {}
        for prog in exe.programs.values():
            if prog not in loaded:
                loaded[prog] = self.ctx.load_program(prog)
        self.programs = {pe: loaded[prog] for pe, prog in exe.programs.items()}
        self.lock = threading.Lock()

    def submit(self) -> Any:
        """Queue one job running every PE's program over this binding's buffers."""
        args = [self.consts, self.arena, self.inputs, self.outputs]
        return self.ctx.submit_multi({pe: (p, args) for pe, p in self.programs.items()})

    def close(self) -> None:
        self.ctx.close()


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class Pending:
    """A submitted run; `result()` waits for it."""

    def __init__(self, session: Session, binding: _Binding, job: Any):
        self.session, self.binding, self.job = session, binding, job

    def done(self) -> bool:
        return self.job.done()

    def read_raw(self) -> list[bytes]:
        """The outputs' bytes once the run is done; frees the binding for the next run."""
        b, exe = self.binding, self.session.exe
        try:
            return [b.outputs.read(_numel(o["shape"]) * 4, o["offset"]) for o in exe.outputs]
        finally:
            b.lock.release()

    def wait_raw(self, timeout: float | None = 600.0) -> tuple[Any, list[bytes]]:
        """Wait; (the driver's completion, the outputs' bytes)."""
        try:
            cpl = self.job.wait(timeout)
        except BaseException:
            self.binding.lock.release()
            raise
        return cpl, self.read_raw()

    def result(self, timeout: float | None = 600.0) -> Result:
        cpl, raw = self.wait_raw(timeout)
        exe = self.session.exe
        st = exe.meta.get("static", {})
        spec_peak = self.session.peak_macs_per_cycle
        cycles = int(cpl.cycles)
        util = st.get("macs", 0) / (cycles * spec_peak) if cycles and spec_peak else 0.0
        stats = {"cycles": cycles, "mac_utilization": util,
                 "dram_bytes": st.get("dram_bytes", 0), "macs": st.get("macs", 0)}
        return Result(unpack_outputs(exe, raw), stats)


class _Done:
    """A bundle's run, which completes before `submit` returns (its CPU steps need it)."""

    def __init__(self, result: Result):
        self._result = result

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Result:
        return self._result


class Session:
    """An executable or bundle ready to run on `devices` ("npu:0", "npu:0-3", or an open
    `driver.Device`, e.g. one `driver.attach`ed to a kernel over the RTL).

    A bundle (CPU fallback partitions, shape buckets) gets a session per NPU executable,
    each with its weights uploaded once; its CPU steps run on the host between them.
    """

    def __init__(self, exe: Executable | Bundle,
                 devices: str | int | list[int] | driver.Device | None = None):
        import hw.spec

        self.exe = exe
        self.parts: dict[int, Session] = {}
        self.devices = devices
        if isinstance(exe, Bundle):
            self.bindings = []
            return
        spec = hw.spec.load(exe.spec_name)
        self.peak_macs_per_cycle = spec.pe.mac.rows * spec.pe.mac.cols * exe.num_pes
        if isinstance(devices, driver.Device):
            self.bindings = [_Binding.on(exe, devices)]
        else:
            self.bindings = [_Binding(exe, i) for i in parse_devices(devices)]
        self._next = itertools.cycle(self.bindings)

    def _run_bundle(self, inputs: tuple, profile: list | None = None) -> Result:
        bundle = self.exe
        assert isinstance(bundle, Bundle)
        totals = {"cycles": 0, "macs": 0, "dram_bytes": 0}
        peak = [0]

        def run_part(part: Executable, tensors: list[Any]) -> list[Any]:
            sess = self.parts.get(id(part))
            if sess is None:
                sess = self.parts[id(part)] = Session(part, self.devices)
            cpl, raw = sess.submit(*tensors).wait_raw()
            for k in totals:
                totals[k] += int(cpl.cycles) if k == "cycles" else \
                    part.meta.get("static", {}).get(k, 0)
            peak[0] = max(peak[0], sess.peak_macs_per_cycle)
            return raw_to_tensors(part, raw)
        out = bundle.run(inputs, run_part, profile)
        cyc = totals["cycles"]
        util = totals["macs"] / (cyc * peak[0]) if cyc and peak[0] else 0.0
        stats = dict(totals, mac_utilization=util, graph_breaks=list(bundle.graph_breaks))
        return Result(out, stats)

    def submit(self, *inputs: Any) -> Pending | _Done:
        if isinstance(self.exe, Bundle):
            return _Done(self._run_bundle(inputs))
        data = bind_inputs(self.exe, inputs)
        b = next(self._next)
        b.lock.acquire()  # one run in flight per device binding: they share buffers
        try:
            for spec_i, raw in zip(self.exe.inputs, data, strict=True):
                b.inputs.write(raw, spec_i["offset"])
            job = b.submit()
        except BaseException:
            b.lock.release()
            raise
        return Pending(self, b, job)

    def run(self, *inputs: Any) -> Result:
        return self.submit(*inputs).result()

    def close(self) -> None:
        for b in self.bindings:
            b.close()
        for p in self.parts.values():
            p.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
