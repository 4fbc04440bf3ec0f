"""The fast functional model of the NPU with its cycle model and traces.

`Device` is the emulated NPU behind the register bus; `run_program` runs programs on a
fresh device; `estimate` schedules programs with no memory at all (performance only).
"""

from hw.model.device import Device
from hw.model.run import estimate, run_program
from hw.model.timeline import PEStats, Timeline

__all__ = ["Device", "PEStats", "Timeline", "estimate", "run_program"]
