"""How many host threads the functional model's PyTorch kernels take in a device's thread.

A device's service thread runs the model's MATMUL and VECTOR kernels through PyTorch,
whose CPU kernels fork an OpenMP team per call. OpenMP keeps one team per calling thread,
so a process where the caller's thread also runs PyTorch (a reference model, a sampler)
holds two teams. GNU OpenMP, PyTorch's on Linux, then counts more threads than cores on a
small host and stops spinning between parallel regions: every small kernel of both threads
pays a sleep and a wake-up. Measured on a 2-core host, a 1 x 576 by 576 x 64 bf16 product
took 130 us in the second thread against 9 us in the first, and a batch-1 decode step of
SmolLM2 took 0.30 s against 0.125 s on one thread.

So a device thread computes on one host thread unless `NPU_MODEL_THREADS` asks for more
(worth it on a host with cores to spare, where batched GEMMs gain from a team). The limit
is OpenMP's per-thread one (`omp_set_num_threads` in the calling thread): the caller's
threads keep PyTorch's default.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)

THREADS_ENV = "NPU_MODEL_THREADS"
_RUNTIMES = ("libgomp", "libiomp5", "libomp")
_local = threading.local()


def model_threads() -> int:
    """The host threads a device thread's kernels use: `NPU_MODEL_THREADS`, default 1."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer")
    return n


def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime PyTorch loaded into this process, or None if none is found."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        if os.path.basename(path).startswith(_RUNTIMES):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def serve_here() -> None:
    """Mark the calling thread as a device's service thread: its first PyTorch kernel call
    (through `torch()`) limits it to `model_threads()` host threads."""
    _local.limit = model_threads()


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
    lib = _openmp_runtime()
    if lib is None or not hasattr(lib, "omp_set_num_threads"):
        log.info("no OpenMP runtime found; device kernels use PyTorch's default threads")
        return
    lib.omp_set_num_threads(ctypes.c_int(n))
    log.debug("device thread computes on %d host thread(s)", n)
