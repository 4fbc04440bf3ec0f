"""Limit the threads of numpy's bundled OpenBLAS, which the functional model computes with.

On small hosts OpenBLAS's thread pool makes the skinny matmuls of LLM decoding (a few rows
times a large weight tile) many times slower than one thread does, and it competes with the
device service thread, so the engine sets numpy's OpenBLAS to `$NPU_BLAS_THREADS` threads
(default 1). Other BLAS libraries (torch's) are left alone.

With 2 threads SmolLM2 answers "L'Étoile, ..." instead of "The capital of France is
Paris." for "What is the capital of France?". That is summation order, not a wrong result:
every MATMUL of that run stays within the fp32 error bound (K * 2**-23 * |a| @ |b|) of an
fp64 reference, and the first answer token is a near-tie (transformers puts "The" one bf16
step above "L"; with 2 threads the two logits round to the same bf16 value and the lower id
wins). One thread keeps the run reproducible and the faster of the two on small hosts.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["limit_numpy_blas_threads"]

log = logging.getLogger(__name__)

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def limit_numpy_blas_threads(n: int | None = None) -> bool:
    """Set numpy's OpenBLAS thread count; returns False when it cannot be found."""
    n = int(os.environ.get("NPU_BLAS_THREADS", "1")) if n is None else n
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib in sorted(libs.glob("lib*openblas*.so*")):
        handle = ctypes.CDLL(str(lib))
        for sym in _SYMBOLS:
            fn = getattr(handle, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                log.debug("numpy OpenBLAS (%s) set to %d threads", lib.name, n)
                return True
    log.debug("numpy's OpenBLAS not found; BLAS threads left as they are")
    return False
