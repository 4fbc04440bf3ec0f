"""Amaranth -> Verilog conversion with an on-disk cache.

Every simulation needs the design as Verilog. Converting through Yosys takes seconds, and the
simulator build after it takes much longer, so both are kept in a cache folder per *cache key*:

    $NPU_EMU_CACHE/<cache_key>/            (default: ~/.cache/npu-emu/rtl/<cache_key>/)
        <name>.v                           the converted design, top module called <name>
        verilator/, icarus/                simulator builds (see :mod:`hw.sim.runner`)

The cache key must change whenever the design changes; :func:`digest` makes one from the
things the design depends on (spec text, source files, parameters).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

log = logging.getLogger(__name__)

CACHE_ENV = "NPU_EMU_CACHE"
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def cache_root() -> Path:
    """Root of the RTL cache: ``$NPU_EMU_CACHE`` or ``~/.cache/npu-emu/rtl``."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env) if env else Path.home() / ".cache" / "npu-emu" / "rtl"
    return root.expanduser().resolve()


def cache_dir(cache_key: str) -> Path:
    """The folder for one cache key (created). Keys are plain file names: ``[A-Za-z0-9._+-]``."""
    if not _KEY_RE.match(cache_key):
        raise ValueError(f"cache_key {cache_key!r} must match {_KEY_RE.pattern}")
    path = cache_root() / cache_key
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts: str | bytes | os.PathLike[str], length: int = 16) -> str:
    """Hex digest of *parts* for use in a cache key.

    ``str``/``bytes`` are hashed as given; a path is hashed by its contents (a folder by the
    contents of its ``*.py``/``*.toml`` files, sorted), so editing a source invalidates the key.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            path = Path(part)
            files = (
                sorted(p for p in path.rglob("*") if p.suffix in (".py", ".toml"))
                if path.is_dir()
                else [path]
            )
            for f in files:
                h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
                h.update(f.read_bytes())
        # Separator so that ("ab", "c") and ("a", "bc") differ.
        h.update(b"\0")
    return h.hexdigest()[:length]


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on *folder* (so parallel pytest workers build a key once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def verilog_for(
    component: wiring.Component | Callable[[], wiring.Component],
    name: str,
    *,
    cache_key: str,
    force: bool = False,
) -> Path:
    """Return the path of ``<cache>/<cache_key>/<name>.v``, converting the design if needed.

    *component* is an Amaranth ``wiring.Component`` or a zero-argument factory for one; a
    factory is only called when the file is missing, so a cache hit costs no elaboration.
    The ports are taken from the component's signature (``a__b`` for nested members), plus
    ``clk``/``rst`` when the design uses the ``sync`` domain. The top module is named *name*
    so that the simulator's top level does not depend on Amaranth's defaults.
    ``emit_src=False`` keeps absolute source paths out of the file, so it only changes when
    the design does.
    """
    folder = cache_dir(cache_key)
    out = folder / f"{name}.v"
    with locked(folder):
        if out.is_file() and not force:
            log.debug("verilog cache hit: %s", out)
            return out
        comp = component if isinstance(component, wiring.Component) else component()
        if not isinstance(comp, wiring.Component):
            raise TypeError(f"expected an amaranth wiring.Component, got {type(comp).__name__}")
        log.info("converting %s to Verilog -> %s", type(comp).__name__, out)
        text = verilog.convert(comp, name=name, emit_src=False)
        # Write then rename, so an interrupted conversion never leaves a truncated file behind.
        tmp = out.with_suffix(".v.tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return out
