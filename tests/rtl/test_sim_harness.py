"""Tests of the RTL simulation harness (hw/sim) on a tiny Amaranth design.

The design is converted and built once per content of harness_dut.py (the cache key), in the
shared cache (``$NPU_EMU_CACHE`` or ``~/.cache/npu-emu/rtl``), so reruns skip the builds.
"""

import shutil
from pathlib import Path

import harness_dut
import pytest

from hw.sim.build import digest, verilog_for
from hw.sim.runner import CocotbFailure, SimResult, run_cocotb

HERE = Path(__file__).resolve().parent
CACHE_KEY = "harness-" + digest(HERE / "harness_dut.py", HERE / "harness_map.py")

needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="no iverilog")
SIMULATORS = [
    pytest.param("verilator", id="verilator"),
    pytest.param("icarus", id="icarus", marks=needs_iverilog),
]

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="session")
def dut_verilog() -> Path:
    return verilog_for(harness_dut.HarnessDut, harness_dut.TOP, cache_key=CACHE_KEY)


def run(verilog: Path, module: str, simulator: str, **kwargs) -> SimResult:
    return run_cocotb(
        verilog,
        harness_dut.TOP,
        module,
        cache_key=CACHE_KEY,
        simulator=simulator,
        python_paths=[HERE],
        **kwargs,
    )


def test_verilog_for_converts_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NPU_EMU_CACHE", str(tmp_path))
    calls = []

    def factory():
        calls.append(1)
        return harness_dut.HarnessDut()

    first = verilog_for(factory, "renamed_top", cache_key="k1")
    second = verilog_for(factory, "renamed_top", cache_key="k1")
    assert first == second == tmp_path / "k1" / "renamed_top.v"
    assert len(calls) == 1, "a cache hit must not elaborate the design again"
    text = first.read_text()
    assert "module renamed_top(" in text
    for port in ("clk", "rst", "valid", "we", "addr", "wdata", "ready", "rdata", "done"):
        assert f" {port};" in text, port


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_bridge_drives_registers_and_waits_for_done(dut_verilog, simulator):
    result = run(dut_verilog, "harness_cocotb", simulator, waves=False)
    assert sorted(result.passed) == [
        "async_bus_and_restart",
        "bridge_registers_and_done",
        "wait_for_times_out",
    ]
    # Same design again: the build is reused, and testcase picks tests.
    again = run(
        dut_verilog,
        "harness_cocotb",
        simulator,
        waves=False,
        testcase="wait_for_times_out, async_bus_and_restart",
    )
    assert again.build_s == 0.0
    assert sorted(again.passed) == ["async_bus_and_restart", "wait_for_times_out"]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_failing_cocotb_test_raises(dut_verilog, simulator):
    with pytest.raises(CocotbFailure) as info:
        run(dut_verilog, "harness_cocotb_failing", simulator, waves=False)
    result = info.value.result
    assert result.passed == ["passes"]
    assert list(result.failed) == ["fails_on_purpose"]
    assert "deliberate failure" in str(info.value)


@pytest.mark.parametrize(
    "simulator",
    [
        # A waves build of Verilator is a second full C++ build.
        pytest.param("verilator", id="verilator", marks=pytest.mark.slow),
        pytest.param("icarus", id="icarus", marks=needs_iverilog),
    ],
)
def test_waves_are_written(dut_verilog, simulator):
    result = run(
        dut_verilog, "harness_cocotb", simulator, waves=True, testcase="async_bus_and_restart"
    )
    assert result.waves is not None and result.waves.suffix in (".fst", ".vcd")
    assert result.waves.stat().st_size > 0
