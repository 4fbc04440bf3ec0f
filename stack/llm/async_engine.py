"""An asynchronous front to `LLMEngine` for streaming servers.

One background thread owns the engine and steps it while requests are pending; coroutines
add requests and receive each step's `RequestOutput` through an asyncio queue. Aborting a
request (for example when the client disconnects) frees its KV blocks at the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator

from stack.llm.engine import LLMEngine, Prompt
from stack.llm.outputs import RequestOutput
from stack.llm.sampling_params import SamplingParams

__all__ = ["AsyncLLMEngine"]

log = logging.getLogger(__name__)

_DONE = object()


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stop = False
        self._ids = itertools.count()
        self.errored: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def _push(self, rid: str, item) -> None:
        entry = self._streams.get(rid)
        if entry is None:
            return
        loop, q = entry
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the client's loop is gone
            self._streams.pop(rid, None)

    def _loop(self) -> None:
        while not self._stop:
            try:
                while True:
                    cmd, *args = self._commands.get_nowait()
                    if cmd == "add":
                        rid, prompt, params = args
                        try:
                            self.engine.add_request(rid, prompt, params)
                        except Exception as e:  # noqa: BLE001 - reported to the caller
                            self._push(rid, e)
                    elif cmd == "abort":
                        self.engine.abort_request(args[0])
                        self._push(args[0], _DONE)
            except queue.Empty:
                pass
            if not self.engine.has_unfinished_requests():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except BaseException as e:  # noqa: BLE001 - fail every stream, keep serving
                log.exception("engine step failed")
                self.errored = e
                for rid in list(self.engine.requests):
                    self.engine.abort_request(rid)
                    self._push(rid, e)
                continue
            for out in outputs:
                self._push(out.request_id, out)
                if out.finished:
                    self._push(out.request_id, _DONE)

    async def generate(self, prompt: Prompt, params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Yield the request's cumulative output after each step that advanced it."""
        rid = request_id or f"req-{next(self._ids)}"
        q: asyncio.Queue = asyncio.Queue()
        self._streams[rid] = (asyncio.get_running_loop(), q)
        self._commands.put(("add", rid, prompt, params))
        self._wake.set()
        finished = False
        try:
            while True:
                item = await q.get()
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            self._streams.pop(rid, None)
            if not finished:
                self.abort(rid)

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))
        self._wake.set()

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)
