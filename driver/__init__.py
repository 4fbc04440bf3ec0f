"""Userspace driver for the NPU.

    import driver
    with driver.open() as dev:                  # a daemon's device, else one in this process
        ctx = dev.context(memory=1 << 20)
        x = ctx.upload(np.arange(64, dtype=np.int8))
        prog = ctx.load_program([isa.Load(...), ..., isa.End()])
        cpl = ctx.run(prog, args=[x])            # raises DeviceError(code, name, pe, pc)

`list_devices()` lists the device files of a running `npu daemon`; `open()` opens one of
them, or, when none exists (or with `local=True`), starts a device in this process so that
nothing must be started by hand.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from driver.alloc import MemoryStats
from driver.daemon import device_dir
from driver.device import Buffer, Capabilities, Context, Device, Job, Program
from driver.errors import (
    CommandError,
    DeviceError,
    DeviceLost,
    DeviceNotFound,
    DeviceTimeout,
    NpuError,
    OutOfDeviceMemory,
)
from driver.kernel import KernelDevice
from driver.transport import LocalTransport, SocketTransport
from firmware.commands import Completion, Query, Status
from hw import spec as hwspec

log = logging.getLogger(__name__)

__all__ = [
    "Buffer",
    "Capabilities",
    "CommandError",
    "Completion",
    "Context",
    "Device",
    "DeviceError",
    "DeviceLost",
    "DeviceNotFound",
    "DeviceTimeout",
    "Job",
    "KernelDevice",
    "MemoryStats",
    "NpuError",
    "OutOfDeviceMemory",
    "Program",
    "Query",
    "Status",
    "attach",
    "device_dir",
    "list_devices",
    "open",
]

_DEVICE_FILE = re.compile(r"npu(\d+)$")


def list_devices(folder: str | Path | None = None) -> list[Path]:
    """Device files in `folder` (default `device_dir()`), in index order."""
    folder = Path(folder) if folder else device_dir()
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _DEVICE_FILE.match(p.name))]
    return [p for _, p in sorted(found) if p.is_socket()]


def attach(kernel: KernelDevice) -> Device:
    """A `Device` over a kernel built by the caller, e.g. one over the RTL simulation:

        kernel = KernelDevice("small", bus=RtlBus(sync, dram.mem), dram=dram.mem,
                              threaded=False)
        dev = driver.attach(kernel)

    Closing the device destroys its contexts but leaves the kernel to its owner.
    """
    return Device(LocalTransport(kernel.spec.name, kernel=kernel))


def open(  # noqa: A001 - the driver's entry point reads best as driver.open()
    device: int | str | Path | None = None,
    *,
    folder: str | Path | None = None,
    local: bool = False,
    spec: str = hwspec.DEFAULT,
) -> Device:
    """Open a device.

    `device` is an index into `list_devices(folder)` or a device file path. With no device
    files (and `device` None or 0), or with `local=True`, the device is the in-process one
    for `spec` (shared by every `open` of that spec in this process).
    """
    if isinstance(device, (str, Path)):
        return Device(SocketTransport(device))
    files = [] if local else list_devices(folder)
    if not files:
        if device not in (None, 0):
            where = folder or device_dir()
            raise DeviceNotFound(f"no device npu{device}: no daemon serves {where}")
        log.debug("no device files; starting an in-process %s device", spec)
        return Device(LocalTransport(spec))
    index = device or 0
    by_index = {int(_DEVICE_FILE.match(p.name).group(1)): p for p in files}
    if index not in by_index:
        raise DeviceNotFound(f"no device npu{index}; present: {sorted(by_index)}")
    return Device(SocketTransport(by_index[index]))
