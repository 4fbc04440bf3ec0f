"""The shape of a hardware spec: every key a spec file may hold, its type and its range.

`hw.spec` walks a parsed TOML document against `SPEC` and raises `SpecError` naming the
dotted key of the first thing that does not fit. Cross-key rules (overlapping registers,
instruction words that overflow, opcodes used twice) live in `hw.spec`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A spec that cannot describe hardware. `key` is the dotted key at fault."""

    def __init__(self, key: str, why: str):
        self.key = key
        self.why = why
        super().__init__(f"{key}: {why}" if key else why)


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int
    power_of_two: bool = False
    default: int | None = None

    def check(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(key, f"must be an integer, not {value!r}")
        if not self.lo <= value <= self.hi:
            raise SpecError(key, f"must be in [{self.lo}, {self.hi}], got {value}")
        if self.power_of_two and value & (value - 1):
            raise SpecError(key, f"must be a power of two, not {value}")
        return value


@dataclass(frozen=True)
class Str:
    choices: tuple[str, ...] = ()
    default: str | None = None

    def check(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise SpecError(key, f"must be a string, not {value!r}")
        if self.choices and value not in self.choices:
            raise SpecError(key, f"must be one of {', '.join(self.choices)}; got {value!r}")
        return value


@dataclass(frozen=True)
class List:
    item: Any
    min_len: int = 0
    max_len: int = 1 << 16
    default: list | None = None

    def check(self, key: str, value: Any) -> list:
        if not isinstance(value, list):
            raise SpecError(key, f"must be a list, not {value!r}")
        if not self.min_len <= len(value) <= self.max_len:
            raise SpecError(
                key, f"must hold {self.min_len} to {self.max_len} items, got {len(value)}"
            )
        return [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Bool:
    default: bool | None = None

    def check(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise SpecError(key, f"must be true or false, not {value!r}")
        return value


@dataclass(frozen=True)
class Reset:
    """A register's reset value: an integer, or "spec:<dotted key>" to publish a figure."""

    default: int = 0

    def check(self, key: str, value: Any) -> int | str:
        if isinstance(value, str):
            if not value.startswith("spec:"):
                raise SpecError(key, f"must be an integer or 'spec:<key>', not {value!r}")
            return value
        return Int(0, 0xFFFF_FFFF).check(key, value)


@dataclass(frozen=True)
class Table:
    """A table whose keys are names chosen by the spec (registers, dtypes, ...)."""

    value: Any
    min_len: int = 0
    default: dict | None = None

    def check(self, key: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise SpecError(key, f"must be a table, not {value!r}")
        if len(value) < self.min_len:
            raise SpecError(key, f"must hold at least {self.min_len} entries")
        for name in value:
            if not name.replace("_", "").isalnum() or name[0].isdigit():
                raise SpecError(f"{key}.{name}", "is not a valid identifier")
        return {name: check(self.value, f"{key}.{name}", v) for name, v in value.items()}


@dataclass(frozen=True)
class Record:
    """A table with a fixed set of keys; a key it does not know is a typo."""

    keys: dict[str, Any]
    optional: frozenset[str] = field(default_factory=frozenset)
    default: dict | None = None

    def check(self, key: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise SpecError(key, f"must be a table, not {value!r}")
        for name in value:
            if name not in self.keys:
                near = difflib.get_close_matches(name, list(self.keys), n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise SpecError(_join(key, name), f"unknown key{hint}")
        out = {}
        for name, sub in self.keys.items():
            if name in value:
                out[name] = check(sub, _join(key, name), value[name])
            elif name in self.optional or getattr(sub, "default", None) is not None:
                default = getattr(sub, "default", None)
                if default is not None:
                    out[name] = default
            else:
                raise SpecError(_join(key, name), "missing key")
        return out


def check(schema: Any, key: str, value: Any) -> Any:
    if isinstance(schema, dict):
        schema = Record(schema)
    return schema.check(key, value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _bits() -> Any:
    return List(Int(0, 31), min_len=2, max_len=2)


REGISTER = Record(
    {
        "offset": Int(0, 0xFFFF),
        "access": Str(("ro", "rw", "wo", "w1c")),
        "reset": Reset(),
        "doc": Str(),
        "fields": Table(_bits()),
        "count": Int(1, 256),
        "stride": Int(4, 0x1000),
    },
    optional=frozenset({"doc", "fields", "count", "stride"}),
)

_DMA_FIELDS = (
    "base gather dram_offset sram_addr n0 n1 n2 dram_s1 dram_s2 sram_s1 sram_s2 gather_addr"
)

# The fields each instruction must have: the functional model and the RTL read them by
# name, so a spec may change their widths but not drop or invent them.
INSTRUCTION_FIELDS = {
    "LOAD": _DMA_FIELDS,
    "STORE": _DMA_FIELDS,
    "MATMUL": (
        "dtype accumulate transpose_b m n k a_addr b_addr c_addr a_stride b_stride c_stride "
        "narrow group b_group_stride"
    ),
    "VECTOR": (
        "func in_dtype out_dtype src2_mode rows cols src1_addr src2_addr dst_addr "
        "src1_stride src2_stride dst_stride shift imm"
    ),
    "SEM_WAIT": "queue sem",
    "SEM_SIGNAL": "queue sem",
    "BARRIER": "pe_mask",
    "END": "",
}


def _instruction(fields: str) -> Record:
    return Record(
        {
            "opcode": Int(1, 0xFF),
            "queue": Str(("load", "compute", "store", "any", "all")),
            "rtl": Bool(),
            "doc": Str(),
            "fields": Record({name: Int(1, 64) for name in fields.split()}),
        },
        optional=frozenset({"doc"}),
    )


_DTYPE_NAMES = ("int8", "int32", "bf16", "fp32", "fp8_e4m3", "fp8_e5m2", "int16")
_MAC_DTYPES = ("int8", "bf16", "fp8_e4m3", "fp8_e5m2")
_VECTOR_FUNCS = (
    "copy add sub mul max min relu mul_shift clamp row_sum row_max exp recip rsqrt silu "
    "gelu_tanh gelu_erf sigmoid tanh div softmax"
).split()

SPEC = Record(
    {
        "base": Str(),
        "npu": {
            "name": Str(),
            "version": List(Int(0, 0xFFFF), min_len=2, max_len=2),
            "clock_mhz": Int(1, 10_000),
            "num_pes": Int(1, 16),
        },
        "pe": {
            "mac": Record(
                {
                    "rows": Int(1, 1024),
                    "cols": Int(1, 1024),
                    "dtypes": List(Str(_MAC_DTYPES), min_len=1),
                    "pipeline_depth": Int(1, 64),
                    "accumulators": Record(
                        {d: Str(("int32", "fp32")) for d in _MAC_DTYPES},
                        optional=frozenset(_MAC_DTYPES),
                    ),
                    "rate": Record(
                        {d: Int(1, 16) for d in _MAC_DTYPES}, optional=frozenset(_MAC_DTYPES)
                    ),
                }
            ),
            "sram": {
                "size_kib": Int(1, 1 << 16),
                "banks": Int(1, 256, power_of_two=True),
                "bank_width_bytes": Int(1, 512, power_of_two=True),
            },
            "vector": {
                "lanes": Int(1, 4096),
                "pipeline_depth": Int(1, 64),
                "ops": List(Str(tuple(_VECTOR_FUNCS)), min_len=1),
            },
            "queues": {"depth": Int(1, 1024), "num_semaphores": Int(1, 64)},
        },
        "dram": {
            "size_mib": Int(1, 1 << 20),
            "bytes_per_cycle": Int(1, 1 << 16),
            "latency_cycles": Int(0, 100_000),
        },
        "dma": {
            "burst_bytes": Int(1, 1 << 16, power_of_two=True),
            "align_bytes": Int(1, 4096, power_of_two=True),
            "max_dims": Int(1, 3),
            "gather_max_entries": Int(1, 1 << 16),
            "setup_cycles": Int(0, 10_000),
        },
        "command": {"ring_entries": Int(2, 1 << 16), "watchdog_cycles": Int(1, 1 << 40)},
        "registers": {
            "pe_base": Int(0, 0xFFFF),
            "pe_stride": Int(4, 0x10000, power_of_two=True),
            "global": Table(REGISTER, min_len=1),
            "pe": Table(REGISTER, min_len=1),
        },
        "isa": {
            "word_bits": Int(32, 1024),
            "dtypes": Record({d: Int(0, 7) for d in _DTYPE_NAMES}),
            "errors": Table(Int(0, 255), min_len=1),
            "instructions": Record({n: _instruction(f) for n, f in INSTRUCTION_FIELDS.items()}),
            "vector_funcs": Record({f: Int(0, 63) for f in _VECTOR_FUNCS}),
            "src2_modes": Record({m: Int(0, 3) for m in ("tile", "row", "col", "imm")}),
            "queues": Record({q: Int(0, 3) for q in ("load", "compute", "store")}),
        },
    },
    optional=frozenset({"base"}),
)

# Registers and error codes the firmware, driver and models address by name.
REQUIRED_REGISTERS = {
    "global": (
        "ID VERSION CAP_NUM_PES CAP_MAC_ROWS CAP_MAC_COLS CAP_DTYPES CAP_SRAM_KIB CAP_DRAM_MIB "
        "CAP_CLOCK_MHZ CAP_VECTOR_LANES CAP_DRAM_BW CAP_SPEC_HASH CMD_RING_BASE_LO "
        "CMD_RING_BASE_HI CMD_RING_SIZE CMD_RING_HEAD CMD_RING_TAIL CPL_RING_BASE_LO "
        "CPL_RING_BASE_HI CPL_RING_SIZE CPL_RING_HEAD CPL_RING_TAIL DOORBELL IRQ_STATUS "
        "IRQ_MASK RESET PERF_CYCLES_LO PERF_CYCLES_HI PERF_COMMANDS PERF_ERRORS"
    ).split(),
    "pe": (
        "CTRL STATUS ERROR_CODE ERROR_PC PC PROG_BASE_LO PROG_BASE_HI PROG_LEN WIN_BASE_LO "
        "WIN_BASE_HI WIN_SIZE_LO WIN_SIZE_HI ARG_LO ARG_HI PERF_CYCLES PERF_INSTRS "
        "PERF_MAC_BUSY PERF_LOAD_BUSY PERF_STORE_BUSY PERF_VECTOR_BUSY PERF_DRAM_BYTES "
        "PERF_MACS_LO PERF_MACS_HI"
    ).split(),
}
REQUIRED_ERRORS = (
    "NONE ILLEGAL_OPCODE BAD_FIELD SRAM_RANGE DRAM_RANGE MISALIGNED DEADLOCK PC_OVERRUN WATCHDOG"
).split()
