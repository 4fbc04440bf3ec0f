"""`npu daemon`: host N emulated devices and expose each as a device file, like a kernel driver.

For device N the daemon creates, in the device folder, `npuN`: a Unix stream socket that
clients connect to (one connection is one open file). Device DRAM and a read-only mirror
of the BAR registers are files in /dev/shm (or the device folder where /dev/shm is
missing) that clients map; their paths come in the `hello` answer. Doorbells travel as
`submit` requests and interrupts as their answers (`driver.protocol`). Each device runs
in its own service thread (`driver.kernel.KernelDevice`); each connection is served by a
thread. When a connection closes, for whatever reason, the daemon destroys that client's
contexts and reclaims their memory. SIGTERM or SIGINT shuts down cleanly, removing every
file the daemon created.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import signal
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from driver.errors import NpuError
from driver.kernel import KernelDevice
from driver.protocol import QueuedSender, recv_message
from hw import spec as hwspec

log = logging.getLogger(__name__)

__all__ = ["BAR_BYTES", "Daemon", "DeviceServer", "device_dir", "shm_dir"]

BAR_BYTES = 0x10000
_owners = itertools.count(1)


def device_dir() -> Path:
    """Where device files live: $NPU_DEVICE_DIR, else $XDG_RUNTIME_DIR/npu, else /tmp/npu-$UID."""
    if os.environ.get("NPU_DEVICE_DIR"):
        return Path(os.environ["NPU_DEVICE_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "npu"
    return Path(f"/tmp/npu-{os.getuid()}")


def shm_dir(fallback: Path) -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else fallback


def _shared_file(path: Path, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)  # sparse: pages exist once touched
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _peer_pid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


class DeviceServer:
    """One device: its kernel, its shared files and the socket that is its device file."""

    def __init__(self, index: int, spec: hwspec.Spec, folder: Path, *, exact: bool = False):
        self.index = index
        self.path = folder / f"npu{index}"
        stem = f"npu-{os.getuid()}-{os.getpid()}-{index}"
        shm = shm_dir(folder)
        self.dram_path = shm / f"{stem}.dram"
        self.bar_path = shm / f"{stem}.bar"
        self._dram = _shared_file(self.dram_path, spec.dram_bytes)
        self._bar = _shared_file(self.bar_path, BAR_BYTES)
        self.kernel = KernelDevice(
            spec, index=index, dram=self._dram, bar_mirror=memoryview(self._bar), exact=exact
        )
        _remove_stale(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(64)
        self._conns: set[socket.socket] = set()
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name=f"npu{index}-accept",
                                        daemon=True)
        self._thread.start()
        log.info("npu%d: serving %s at %s", index, spec.name, self.path)

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.add(conn)
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        pid = _peer_pid(conn)
        owner = f"pid{pid}#{next(_owners)}"
        send = QueuedSender(conn)
        log.info("npu%d: client %s connected", self.index, owner)
        try:
            while True:
                msg = recv_message(conn)
                if msg is None:
                    break
                self._request(msg, owner, send)
        except (OSError, ValueError) as e:
            log.info("npu%d: client %s: %s", self.index, owner, e)
        finally:
            send.close()
            self._conns.discard(conn)
            conn.close()
            log.info("npu%d: client %s gone", self.index, owner)
            if not self._closing:
                self.kernel.drop_owner(owner)

    def _request(self, msg: dict[str, Any], owner: str, send: QueuedSender) -> None:
        rid, op = msg.get("id"), msg.get("op")
        k = self.kernel
        try:
            if op == "submit":
                fut = k.submit(msg["context"], msg["opcode"], msg.get("args", ()),
                               msg.get("flags", 0), owner=owner)
                fut.add_done_callback(lambda f: _answer_completion(send, rid, f))
                return
            if op == "hello":
                reply = {"index": self.index, "spec": k.spec.name, "owner": owner,
                         "dram_path": str(self.dram_path), "dram_bytes": k.dram_bytes,
                         "bar_path": str(self.bar_path), "daemon_pid": os.getpid()}
            elif op == "create_context":
                rec = k.create_context(owner, int(msg["size"]))
                reply = {"context": rec.id, "base": rec.base, "size": rec.size}
            elif op == "destroy_context":
                k.destroy_context(int(msg["context"]), owner=owner)
                reply = {}
            elif op == "reset":
                k.reset()
                reply = {}
            elif op == "stats":
                reply = k.stats()
            else:
                raise ValueError(f"unknown request {op!r}")
        except (NpuError, PermissionError, ValueError, KeyError, TimeoutError) as e:
            reply = _error(e)
        reply["id"] = rid
        send(reply)

    def close(self) -> None:
        self._closing = True
        self.sock.close()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.kernel.close()
        for path in (self.path, self.dram_path, self.bar_path):
            path.unlink(missing_ok=True)
        log.info("npu%d: closed", self.index)


def _error(e: Exception) -> dict[str, Any]:
    out: dict[str, Any] = {"error": str(e), "kind": type(e).__name__}
    for attr in ("requested", "free", "largest", "status", "error_code", "pc"):
        if hasattr(e, attr):
            out[attr] = getattr(e, attr)
    return out


def _answer_completion(send: QueuedSender, rid: Any, fut) -> None:
    try:
        exc = fut.exception()
        send({"id": rid, **_error(exc)} if exc else {"id": rid, "completion": list(fut.result())})
    except OSError:
        pass  # the client is gone; its contexts are being reclaimed


def _remove_stale(path: Path) -> None:
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise RuntimeError(f"{path} is served by a running daemon; stop it first")


class Daemon:
    """Hosts `devices` devices of `spec` in `folder` until `stop()` or SIGTERM/SIGINT."""

    def __init__(self, devices: int = 1, spec: str = hwspec.DEFAULT,
                 folder: Path | None = None, *, exact: bool = False):
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.folder = Path(folder) if folder else device_dir()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spec = hwspec.load(spec)
        self._stop = threading.Event()
        self.servers: list[DeviceServer] = []
        try:
            for i in range(devices):
                self.servers.append(DeviceServer(i, self.spec, self.folder, exact=exact))
        except BaseException:
            self.close()
            raise

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def serve(self) -> None:
        """Block until stopped by `stop()`, SIGTERM or SIGINT; then remove every file."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        log.info("daemon %d: %d device(s) in %s", os.getpid(), len(self.servers), self.folder)
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.close()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()
        log.info("daemon %d: stopped", os.getpid())
