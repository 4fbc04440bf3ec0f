"""Render the code and documents that derive from a hardware spec.

`render(spec)` turns the Jinja2 templates in `gen/templates/` into text, one entry per
output path. `python -m gen` writes the default spec's outputs into the tree and
`python -m gen --check` reports stale ones. `build(spec)` renders any spec, overridden or
not, into a cache folder keyed by the spec's content hash and imports the Python modules
from there, so that a co-design experiment never edits files in the tree.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import jinja2

from hw import spec as hwspec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).parent / "templates"

# template -> path in the tree (relative to ROOT) for the default spec
OUTPUTS = {
    "init.py.j2": "hw/generated/__init__.py",
    "isa.py.j2": "hw/generated/isa.py",
    "regs.py.j2": "hw/generated/regs.py",
    "layouts.py.j2": "hw/generated/layouts.py",
    "npu.h.j2": "driver/include/npu.h",
    "reference.md.j2": "docs/reference.md",
}
PYTHON_MODULES = ("isa", "regs", "layouts")


def command_for(spec: hwspec.Spec) -> str:
    return "python -m gen" if spec.name == hwspec.DEFAULT else f"python -m gen --spec {spec.name}"


def render(spec: hwspec.Spec) -> dict[str, str]:
    """Render every template for `spec`; returns {tree path: text}."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hex"] = lambda v, w=0: f"0x{v:0{w}x}"
    ctx = _context(spec)
    return {out: env.get_template(t).render(**ctx) for t, out in OUTPUTS.items()}


@dataclass(frozen=True)
class Generated:
    """The importable modules rendered from one spec."""

    spec: hwspec.Spec
    isa: ModuleType
    regs: ModuleType
    layouts: ModuleType


_built: dict[str, Generated] = {}


def cache_dir() -> Path:
    base = os.environ.get("NPU_EMU_CACHE") or Path.home() / ".cache" / "npu-emu"
    return Path(base) / "gen"


def build(spec: hwspec.Spec) -> Generated:
    """Render `spec` into the cache (once per content hash) and import its modules."""
    if spec.hash in _built:
        return _built[spec.hash]
    # The templates are part of the key: editing one must not serve a stale rendering.
    key = hashlib.sha256((spec.hash + _templates_hash()).encode()).hexdigest()
    package = f"npu_gen_{key[:16]}"
    folder = cache_dir() / package
    if not (folder / "__init__.py").exists():
        log.debug("rendering spec %s into %s", spec.name, folder)
        tmp = folder.with_name(f"{package}.tmp{os.getpid()}")
        (tmp / package).mkdir(parents=True, exist_ok=True)
        for out, text in render(spec).items():
            if out.endswith(".py"):
                (tmp / package / Path(out).name).write_text(text)
        # Publish atomically so that concurrent processes never import half a package.
        try:
            os.replace(tmp / package, folder)
        except OSError:
            pass
    parent = str(folder.parent)
    if parent not in sys.path:
        sys.path.append(parent)
    modules = {m: importlib.import_module(f"{package}.{m}") for m in PYTHON_MODULES}
    gen = Generated(spec, **modules)
    _built[spec.hash] = gen
    return gen


@functools.cache
def _templates_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(TEMPLATES.glob("*.j2")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _context(spec: hwspec.Spec) -> dict:
    isa = spec.isa
    instructions = []
    for name, ins in isa.instructions.items():
        fields = spec.field_layout(name)
        used = hwspec.OPCODE_BITS + sum(w for _, _, w in fields)
        instructions.append(
            {
                "name": name,
                "cls": "".join(p.capitalize() for p in name.split("_")),
                "opcode": ins.opcode,
                "queue": ins.queue,
                "rtl": ins.rtl,
                "doc": ins.get("doc", ""),
                "fields": fields,
                "pad": isa.word_bits - used,
                "used": used,
            }
        )

    def registers(block: str) -> list[dict]:
        out = []
        for name, reg in spec.registers[block].items():
            fields = [
                (f, lo, hi, ((1 << (hi - lo + 1)) - 1) << lo)
                for f, (lo, hi) in reg.get("fields", {}).items()
            ]
            out.append(
                {
                    "name": name,
                    "offset": reg.offset,
                    "access": reg.access,
                    "reset": spec.register_value(reg.reset),
                    "reset_ref": reg.reset if isinstance(reg.reset, str) else "",
                    "doc": reg.get("doc", ""),
                    "count": reg.get("count", 1),
                    "stride": reg.get("stride", 4),
                    "fields": sorted(fields, key=lambda f: f[1]),
                }
            )
        return sorted(out, key=lambda r: r["offset"])

    return {
        "spec": spec,
        "command": command_for(spec),
        "word_bits": isa.word_bits,
        "instructions": instructions,
        "global_regs": registers("global"),
        "pe_regs": registers("pe"),
        "dtypes": dict(isa.dtypes),
        "errors": dict(isa.errors),
        "vector_funcs": dict(isa.vector_funcs),
        "src2_modes": dict(isa.src2_modes),
        "queues": dict(isa.queues),
    }
