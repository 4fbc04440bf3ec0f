"""Shared pytest set-up: generated code goes to a per-session cache, not the user's home."""

import os
import tempfile

# gen.build() and the RTL builds cache under NPU_EMU_CACHE; keep the tests' cache apart from
# a developer's but shared by the xdist workers of one run.
os.environ.setdefault("NPU_EMU_CACHE", os.path.join(tempfile.gettempdir(), "npu-emu-test-cache"))
