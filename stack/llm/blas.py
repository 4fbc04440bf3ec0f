"""Limit the threads of numpy's bundled OpenBLAS, which the functional model computes with.

On small hosts OpenBLAS's thread pool makes the skinny fp32 and int8 matmuls of the
functional model (a few rows times a large weight tile) many times slower than one thread
does, and it competes with the device service thread, so the engine sets numpy's OpenBLAS
to `$NPU_BLAS_THREADS` threads (default 1). bf16 products and float VECTORs run on
PyTorch's kernels, whose threads `hw.model.host` manages per thread; other BLAS libraries
are left alone.
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
