"""Shared pytest set-up: generated code goes to a per-session cache, not the user's home."""

import os
import tempfile

import numpy as np
import pytest

# gen.build() and the RTL builds cache under NPU_EMU_CACHE; keep the tests' cache apart from
# a developer's but shared by the xdist workers of one run.
os.environ.setdefault("NPU_EMU_CACHE", os.path.join(tempfile.gettempdir(), "npu-emu-test-cache"))


@pytest.fixture
def numpy_int8_mlp():
    """An integer MLP written out independently of the compiler: int64 matmul, int32 wrap,
    round-half-up shift, int8 saturation, ReLU. Takes the compiler's layer records."""

    def run(layers, xq):
        h = xq.astype(np.int64)
        for ly in layers:
            acc = h @ ly.weight.astype(np.int64) + ly.bias.astype(np.int64)
            acc = ((acc + 2**31) % 2**32) - 2**31
            s = ly.shift
            h = np.clip(np.floor_divide(acc + (2 ** (s - 1) if s else 0), 2**s), -128, 127)
            if ly.relu:
                h = np.where(h > 0, h, 0)
        return h

    return run
