"""How the userspace driver reaches a device: in this process, or through a device file.

Both transports offer the same calls: `read32` (BAR registers), `dram` (a writable view of
device memory), `create_context`, `destroy_context`, `submit` (a future of the command's
`Completion`), `reset`, `stats` and `close`.

`LocalTransport` talks to a `KernelDevice` in this process; all opens of one spec in a
process share one such device, closed with the last of them. `SocketTransport` talks to
`npu daemon` through a device file and maps the daemon's DRAM and BAR mirror files.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import socket
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from driver.errors import (
    CommandError,
    DeviceLost,
    DeviceTimeout,
    NpuError,
    OutOfDeviceMemory,
)
from driver.kernel import KernelDevice
from driver.protocol import Sender, recv_message
from firmware import Completion

log = logging.getLogger(__name__)

__all__ = ["LocalTransport", "SocketTransport"]

REQUEST_TIMEOUT = 60.0

_local_lock = threading.Lock()
_local: dict[str, tuple[KernelDevice, int]] = {}  # spec name -> (kernel, open count)
_local_owners = itertools.count(1)


class LocalTransport:
    """A device in this process (no daemon): the kernel emulation runs in a thread here."""

    path = None

    def __init__(self, spec: str, *, kernel: KernelDevice | None = None):
        """The shared in-process device of `spec`, or the given `kernel` (which the caller
        owns: closing the transport leaves it running)."""
        self._spec_key = None if kernel is not None else spec
        if kernel is None:
            with _local_lock:
                kernel, count = _local.get(spec, (None, 0))
                if kernel is None:
                    kernel = KernelDevice(spec, index=0)
                _local[spec] = (kernel, count + 1)
        self.kernel = kernel
        self.spec_name = kernel.spec.name
        self.index = kernel.index
        self.owner = f"local-pid{os.getpid()}#{next(_local_owners)}"
        self.dram = kernel.dram
        self._closed = False

    def read32(self, addr: int) -> int:
        return self.kernel.read32(addr)

    def create_context(self, size: int) -> tuple[int, int, int]:
        rec = self.kernel.create_context(self.owner, size)
        return rec.id, rec.base, rec.size

    def destroy_context(self, ctx: int) -> None:
        self.kernel.destroy_context(ctx, owner=self.owner)

    def submit(self, ctx: int, opcode: int, args=(), flags: int = 0) -> Future:
        return self.kernel.submit(ctx, opcode, args, flags, owner=self.owner)

    def reset(self) -> None:
        self.kernel.reset()

    def stats(self) -> dict[str, Any]:
        return self.kernel.stats()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kernel.drop_owner(self.owner)
        if self._spec_key is None:
            return
        with _local_lock:
            kernel, count = _local[self._spec_key]
            if count > 1:
                _local[self._spec_key] = (kernel, count - 1)
                return
            del _local[self._spec_key]
        kernel.close()


class SocketTransport:
    """A device served by `npu daemon`, reached through its device file."""

    def __init__(self, path: str | Path, *, timeout: float = REQUEST_TIMEOUT):
        self.path = Path(path)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(str(self.path))
        except OSError as e:
            self.sock.close()
            raise DeviceLost(f"cannot open {self.path}: {e.strerror}") from None
        self._send = Sender(self.sock)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._lost: Exception | None = None
        self._reader = threading.Thread(target=self._read, name="npu-client", daemon=True)
        self._reader.start()
        hello = self._call("hello")
        self.index = hello["index"]
        self.spec_name = hello["spec"]
        self.owner = hello["owner"]
        self._dram_map = _map_file(hello["dram_path"], hello["dram_bytes"], writable=True)
        self._bar_map = _map_file(hello["bar_path"], 0, writable=False)
        self.dram = memoryview(self._dram_map)

    def _read(self) -> None:
        try:
            while (msg := recv_message(self.sock)) is not None:
                with self._lock:
                    fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    _resolve(fut, msg)
        except (OSError, ValueError) as e:
            log.debug("connection to %s: %s", self.path, e)
        with self._lock:
            self._lost = DeviceLost(f"connection to {self.path} closed")
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self._lost)

    def _request(self, op: str, **fields: Any) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._lost is not None:
                raise self._lost
            rid = next(self._ids)
            self._pending[rid] = fut
        try:
            self._send({"id": rid, "op": op, **fields})
        except OSError as e:
            raise DeviceLost(f"connection to {self.path}: {e}") from None
        return fut

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            return self._request(op, **fields).result(self.timeout)
        except TimeoutError:
            raise DeviceTimeout(f"{op} on {self.path}: no answer in {self.timeout} s") from None

    def read32(self, addr: int) -> int:
        return int.from_bytes(self._bar_map[addr : addr + 4], "little")

    def create_context(self, size: int) -> tuple[int, int, int]:
        r = self._call("create_context", size=size)
        return r["context"], r["base"], r["size"]

    def destroy_context(self, ctx: int) -> None:
        self._call("destroy_context", context=ctx)

    def submit(self, ctx: int, opcode: int, args=(), flags: int = 0) -> Future:
        return self._request("submit", context=ctx, opcode=int(opcode), args=list(args),
                             flags=flags)

    def reset(self) -> None:
        self._call("reset")

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(timeout=5)
        self.dram.release()
        for m in (self._dram_map, self._bar_map):
            try:
                m.close()
            except BufferError:
                log.debug("device memory of %s still viewed; left mapped", self.path)


def _map_file(path: str, size: int, *, writable: bool) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)


def _resolve(fut: Future, msg: dict[str, Any]) -> None:
    if "completion" in msg:
        fut.set_result(Completion(*msg["completion"]))
    elif "error" in msg:
        fut.set_exception(_exception(msg))
    else:
        fut.set_result(msg)


def _exception(msg: dict[str, Any]) -> Exception:
    kind, text = msg.get("kind"), msg["error"]
    if kind == "OutOfDeviceMemory":
        return OutOfDeviceMemory(msg["requested"], msg["free"], msg["largest"])
    if kind == "PermissionError":
        return PermissionError(text)
    if kind == "CommandError":
        return CommandError(msg["status"], "", msg.get("error_code", 0), msg.get("pc", 0))
    if kind == "DeviceLost":
        return DeviceLost(text)
    return NpuError(f"{kind}: {text}")
