"""Host threads for the functional model's PyTorch kernels.

A device's service thread runs the model's MATMUL and VECTOR kernels through PyTorch,
whose CPU kernels fork an OpenMP team per call. OpenMP keeps one team per calling thread,
so a process where the caller's thread also runs PyTorch (a reference model, a sampler)
holds two teams. GNU OpenMP, PyTorch's on Linux, then counts more threads than cores on a
small host and stops spinning between parallel regions: every small kernel of both threads
pays a sleep and a wake-up. Measured on a 2-core host, a 1 x 576 by 576 x 64 bf16 product
took 130 us in the second thread against 9 us in the first, and a batch-1 decode step of
SmolLM2 took 0.30 s against 0.125 s on one thread.

So a device's service thread (`serve_here`) and the workers here each compute on one
OpenMP thread (`omp_set_num_threads` in the calling thread; the caller's threads keep
PyTorch's default), and a large GEMM is cut into column blocks that run side by side on
`model_threads()` host threads (`NPU_MODEL_THREADS`, default: the CPUs this process may
run on) with no OpenMP team at all.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

THREADS_ENV = "NPU_MODEL_THREADS"
_RUNTIMES = ("libgomp", "libiomp5", "libomp")
_local = threading.local()


def model_threads() -> int:
    """Host threads for one large kernel: `NPU_MODEL_THREADS`, default the usable CPUs."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer")
    return n


def _openmp_runtimes() -> list[ctypes.CDLL]:
    """The OpenMP runtimes loaded into this process (PyTorch's among them)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        if os.path.basename(path).startswith(_RUNTIMES):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            if hasattr(lib, "omp_set_num_threads"):
                libs.append(lib)
    return libs


def serve_here() -> None:
    """Mark the calling thread as a device's service thread: its first PyTorch kernel call
    (through `torch()`) limits it to one OpenMP thread."""
    _local.limit = 1


def torch():
    """PyTorch, imported on first use (the model needs it only for some kernels); in a
    device's service thread the thread's limit is set before its first kernel."""
    import torch

    if getattr(_local, "limit", 0):
        _limit(torch, _local.limit)
        _local.limit = 0
    return torch


def _limit(torch, n: int) -> None:
    # ATen sets a thread's team size on the thread's first parallel call; make that call
    # now so that it does not undo the limit later.
    torch.get_num_threads()
    libs = _openmp_runtimes()
    if not libs:
        log.info("no OpenMP runtime found; device kernels use PyTorch's default threads")
        return
    # every runtime loaded: which one PyTorch links to is not visible from here, and the
    # limit is this thread's alone in each
    for lib in libs:
        lib.omp_set_num_threads(ctypes.c_int(n))
    log.debug("%s computes on %d OpenMP thread(s)", threading.current_thread().name, n)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker_start() -> None:
    serve_here()
    torch()


def run_split(parts: list[Callable[[], object]]) -> None:
    """Run the independent calls `parts` side by side: all but the first on the worker
    threads, the first in the calling thread; returns when all are done (re-raising the
    first error)."""
    global _pool
    if len(parts) > 1 and _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max(1, model_threads() - 1), "npu-model",
                                           initializer=_worker_start)
    futures = [_pool.submit(f) for f in parts[1:]]
    try:
        parts[0]()
    finally:
        for f in futures:
            f.result()
