"""Load, validate and derive figures from a hardware spec (`hw/specs/*.toml`).

A spec file may name another as its `base`; it is then merged over that base key by key.
Overrides use dotted keys (`load("small", **{"pe.mac.rows": 16})`, or `pe__mac__rows=16`)
so an experiment changes one figure without writing a file. Every spec, file or
override, is checked against `hw.schema.SPEC` and the cross-key rules below; the first
problem raises `SpecError` naming the dotted key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hw.schema import REQUIRED_ERRORS, REQUIRED_REGISTERS, SPEC, SpecError, check

__all__ = ["Spec", "SpecError", "load", "names", "SPEC_DIR", "DEFAULT"]

SPEC_DIR = Path(__file__).parent / "specs"
DEFAULT = "small"
OPCODE_BITS = 8


def names() -> list[str]:
    """The shipped spec names."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def load(name_or_path: str | Path = DEFAULT, **overrides: Any) -> Spec:
    """Return the validated, immutable spec `name_or_path` with `overrides` applied.

    Raises `SpecError` (a `ValueError`) naming the key of the first problem.
    """
    raw = _read(name_or_path, seen=())
    for dotted, value in overrides.items():
        _override(raw, dotted.replace("__", "."), value)
    return Spec(_validate(raw))


class Node(Mapping):
    """A read-only view of one table of the spec; keys are also attributes."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", MappingProxyType(dict(data)))

    def __getitem__(self, key: str) -> Any:
        return _freeze(self._data[key])

    def __getattr__(self, key: str) -> Any:
        try:
            return _freeze(self._data[key])
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("a spec is immutable; use hw.spec.load(..., **overrides)")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Node({dict(self._data)!r})"


class Spec(Node):
    """A validated hardware spec with its derived figures.

    Tables are attributes (`spec.pe.mac.rows`); `to_dict()` gives a deep copy and `hash`
    the content hash that keys generated code and compiled executables.
    """

    __slots__ = ("_hash",)

    def __init__(self, data: Mapping[str, Any]):
        super().__init__(data)
        blob = json.dumps(_thaw(data), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_hash", hashlib.sha256(blob.encode()).hexdigest())

    @property
    def name(self) -> str:
        return self.npu.name

    @property
    def hash(self) -> str:
        return self._hash

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(_thaw(self._data))

    # derived figures

    def peak_macs_per_cycle(self, dtype: str = "int8") -> int:
        """MACs per cycle of all PEs together for `dtype` inputs."""
        mac = self.pe.mac
        return self.npu.num_pes * mac.rows * mac.cols * mac.rate.get(dtype, 1)

    def peak_tflops(self, dtype: str = "int8") -> float:
        return 2 * self.peak_macs_per_cycle(dtype) * self.npu.clock_mhz * 1e6 / 1e12

    @property
    def sram_bytes_per_pe(self) -> int:
        return self.pe.sram.size_kib * 1024

    @property
    def total_sram_bytes(self) -> int:
        return self.sram_bytes_per_pe * self.npu.num_pes

    @property
    def sram_bytes_per_cycle(self) -> int:
        return self.pe.sram.banks * self.pe.sram.bank_width_bytes

    @property
    def dram_bytes(self) -> int:
        return self.dram.size_mib << 20

    @property
    def dram_bytes_per_cycle(self) -> int:
        return self.dram.bytes_per_cycle

    @property
    def dram_gbytes_per_s(self) -> float:
        return self.dram.bytes_per_cycle * self.npu.clock_mhz / 1e3

    @property
    def instruction_bytes(self) -> int:
        return self.isa.word_bits // 8

    def field_layout(self, instruction: str) -> list[tuple[str, int, int]]:
        """(field, lsb, width) of each field of `instruction`, after the opcode."""
        out, lsb = [], OPCODE_BITS
        for field, width in self.isa.instructions[instruction].fields.items():
            out.append((field, lsb, width))
            lsb += width
        return out

    def register_value(self, ref: int | str) -> int:
        """Resolve a register reset value, publishing spec figures for "spec:<key>"."""
        if isinstance(ref, int):
            return ref
        key = ref.removeprefix("spec:")
        if key == "hash32":
            return int(self.hash[:8], 16)
        node: Any = self
        for part in key.split("."):
            node = node[part]
        if key == "npu.version":
            return (node[0] << 16) | node[1]
        if key == "pe.mac.dtypes":
            return sum(1 << self.isa.dtypes[d] for d in node)
        return int(node)

    def __repr__(self) -> str:
        return f"<Spec {self.name} {self.hash[:12]}>"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Node):
        return Node(value)
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _read(name_or_path: str | Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SPEC_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise SpecError("", f"no spec named {name_or_path!r}; shipped: {', '.join(names())}")
    path = path.resolve()
    if path in seen:
        raise SpecError("base", f"{path.name} names itself as a base, through {seen[-1].name}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError("", f"{path.name} is not valid TOML: {e}") from None
    except OSError as e:
        raise SpecError("", f"cannot read spec {path}: {e.strerror}") from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise SpecError("base", f"must be a spec name, not {base!r}")
    base_path = path.parent / f"{base}.toml"
    merged = _read(base_path if base_path.exists() else base, seen + (path,))
    _merge(merged, raw)
    return merged


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            # Let the schema name the bad key: a typo then gets its "did you mean".
            node[part] = {} if part not in node else node[part]
            if not isinstance(node[part], dict):
                raise SpecError(".".join(parts[: i + 1]), "is a value, not a table")
        node = node[part]
    node[parts[-1]] = value


def _validate(raw: dict[str, Any]) -> dict[str, Any]:
    data = check(SPEC, "", raw)
    _check_mac(data)
    _check_registers(data)
    _check_isa(data)
    return data


def _check_mac(data: dict[str, Any]) -> None:
    mac = data["pe"]["mac"]
    for key in ("accumulators", "rate"):
        for dtype in mac[key]:
            if dtype not in mac["dtypes"]:
                raise SpecError(f"pe.mac.{key}.{dtype}", "is not among pe.mac.dtypes")
    for dtype in mac["dtypes"]:
        if dtype not in mac["accumulators"]:
            raise SpecError(f"pe.mac.accumulators.{dtype}", "missing key")
        mac["rate"].setdefault(dtype, 1)
    if len(set(mac["dtypes"])) != len(mac["dtypes"]):
        raise SpecError("pe.mac.dtypes", "lists a type twice")
    sram = data["pe"]["sram"]
    if sram["size_kib"] * 1024 % (sram["banks"] * sram["bank_width_bytes"]):
        raise SpecError("pe.sram.size_kib", "must be a whole number of bank rows")


def _check_registers(data: dict[str, Any]) -> None:
    regs = data["registers"]
    num_pes = data["npu"]["num_pes"]
    for block, required in REQUIRED_REGISTERS.items():
        for name in required:
            if name not in regs[block]:
                raise SpecError(f"registers.{block}.{name}", "missing key")

    # Every 32-bit word a register claims, across the global block and all PE blocks.
    claimed: dict[int, str] = {}

    def claim(addr: int, key: str) -> None:
        if addr % 4:
            raise SpecError(key, f"offset 0x{addr:x} is not 32-bit aligned")
        if addr in claimed:
            raise SpecError(key, f"overlaps {claimed[addr]} at 0x{addr:04x}")
        claimed[addr] = key

    for block in ("global", "pe"):
        for name, reg in regs[block].items():
            key = f"registers.{block}.{name}"
            count, stride = reg.get("count", 1), reg.get("stride", 4)
            last = reg["offset"] + (count - 1) * stride + 4
            if block == "pe" and last > regs["pe_stride"]:
                raise SpecError(
                    key, f"ends at 0x{last:x}, past the PE block of 0x{regs['pe_stride']:x} bytes"
                )
            if block == "global" and last > regs["pe_base"]:
                raise SpecError(key, f"ends at 0x{last:x}, inside the PE blocks at pe_base")
            for pe in range(num_pes if block == "pe" else 1):
                origin = regs["pe_base"] + pe * regs["pe_stride"] if block == "pe" else 0
                for i in range(count):
                    claim(origin + reg["offset"] + i * stride, key)
            for fname, (lsb, msb) in reg.get("fields", {}).items():
                if msb < lsb:
                    raise SpecError(f"{key}.fields.{fname}", f"msb {msb} is below lsb {lsb}")
            if isinstance(reg["reset"], str):
                _resolve_ref(data, reg["reset"], f"{key}.reset")
    if regs["pe_base"] + num_pes * regs["pe_stride"] > 0x10000:
        raise SpecError("registers.pe_stride", f"{num_pes} PE blocks do not fit the 64 KiB BAR")


def _resolve_ref(data: dict[str, Any], ref: str, key: str) -> None:
    target = ref.removeprefix("spec:")
    if target == "hash32":
        return
    node: Any = data
    for part in target.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SpecError(key, f"refers to {target!r}, which the spec does not have")
        node = node[part]


def _check_isa(data: dict[str, Any]) -> None:
    isa = data["isa"]
    if isa["word_bits"] % 32:
        raise SpecError("isa.word_bits", f"must be a multiple of 32, not {isa['word_bits']}")
    for name in REQUIRED_ERRORS:
        if name not in isa["errors"]:
            raise SpecError(f"isa.errors.{name}", "missing key")
    for table in ("dtypes", "errors", "vector_funcs", "src2_modes", "queues"):
        _unique(isa[table], f"isa.{table}")
    opcodes: dict[int, str] = {}
    for name, ins in isa["instructions"].items():
        key = f"isa.instructions.{name}"
        if ins["opcode"] in opcodes:
            raise SpecError(
                f"{key}.opcode", f"0x{ins['opcode']:02x} is already {opcodes[ins['opcode']]}'s"
            )
        opcodes[ins["opcode"]] = name
        used = OPCODE_BITS + sum(ins["fields"].values())
        if used > isa["word_bits"]:
            raise SpecError(
                f"{key}.fields",
                f"{used} bits do not fit the {isa['word_bits']}-bit instruction word",
            )
    for op in data["pe"]["vector"]["ops"]:
        if op not in isa["vector_funcs"]:
            raise SpecError("pe.vector.ops", f"{op!r} has no code in isa.vector_funcs")
    limits = {"dtype": isa["dtypes"], "func": isa["vector_funcs"], "queue": isa["queues"]}
    fields = {f: w for ins in isa["instructions"].values() for f, w in ins["fields"].items()}
    for field, table in limits.items():
        if field in fields and max(table.values()) >= 1 << fields[field]:
            raise SpecError(
                f"isa.{field}", f"codes up to {max(table.values())} do not fit {fields[field]} bits"
            )


def _unique(table: dict[str, int], key: str) -> None:
    seen: dict[int, str] = {}
    for name, code in table.items():
        if code in seen:
            raise SpecError(f"{key}.{name}", f"code {code} is already {seen[code]}'s")
        seen[code] = name
