"""Messages between clients and the daemon over a device file (a Unix stream socket).

Each message is a 4-byte little-endian length and that many bytes of UTF-8 JSON. A request
carries `id` and `op`; the daemon answers each request once with the same `id` and either
the result fields or `error` (a message) and `kind` (the exception class). A `submit` is
answered when its command completes, with `completion` (the completion record's fields in
order): that answer is the interrupt, delivered to the process that submitted.

Requests: `hello`, `create_context` (size), `destroy_context` (context), `submit`
(context, opcode, flags, args), `reset`, `stats`.
"""

from __future__ import annotations

import json
import queue
import socket
import struct
import threading
from typing import Any

__all__ = ["MAX_MESSAGE", "QueuedSender", "recv_message", "send_message", "Sender"]

MAX_MESSAGE = 1 << 20
_LEN = struct.Struct("<I")


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_LEN.pack(len(body)) + body)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the peer closed the connection."""
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_MESSAGE:
        raise ValueError(f"message of {n} bytes exceeds the {MAX_MESSAGE}-byte limit")
    body = _recv_exact(sock, n)
    if body is None:
        return None
    return json.loads(body)


class Sender:
    """Sends whole messages on one socket from several threads."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self._lock:
            send_message(self.sock, message)


class QueuedSender:
    """Sends messages from a thread of its own, so a slow reader never blocks the caller."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def __call__(self, message: dict[str, Any]) -> None:
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(None)

    def _drain(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                send_message(self.sock, message)
            except OSError:
                return
