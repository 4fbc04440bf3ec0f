"""The runtime through the driver (in-process device), and the torch.compile backend."""

import pytest
import torch

import driver
import stack
from stack.compiler import run_on_model
from stack.runtime import Session, parse_devices


def test_compile_and_run_through_driver():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    m.eval()
    x = torch.randn(4, 16)
    r = stack.compile_and_run(m, (x,))
    ref = m(x).detach()
    assert (r.outputs - ref).abs().max().item() < 2e-2 * ref.abs().max().item() + 1e-3
    assert r.stats["cycles"] > 0 and r.stats["macs"] == 4 * 16 * 32 + 4 * 32 * 8
    assert 0 < r.stats["mac_utilization"] <= 1 and r.stats["dram_bytes"] > 0


def test_session_reuses_weights_and_submits_async():
    torch.manual_seed(0)
    m = torch.nn.Linear(8, 8).eval()
    exe = stack.compile(m, (torch.randn(2, 8),))
    with Session(exe) as s:
        xs = [torch.randn(2, 8) for _ in range(3)]
        results = [s.submit(x).result() for x in xs]
        consts = s.bindings[0].consts
        assert s.bindings[0].consts is consts  # uploaded once
    for x, res in zip(xs, results, strict=True):
        assert (res.outputs - m(x)).abs().max().item() < 2e-2


def test_two_pe_executable_through_the_driver_matches_eager_and_the_model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 32)).eval()
    x = torch.randn(8, 16)
    exe = stack.compile(m, (x,), spec="small", pes=2)
    assert exe.num_pes == 2 and len(set(exe.programs.values())) == 2
    with Session(exe) as s:
        got = s.run(x)
    ref = m(x).detach()
    assert (got.outputs - ref).abs().max().item() < 2e-2 * ref.abs().max().item() + 1e-3
    direct, _ = run_on_model(exe, (x,))
    assert torch.equal(got.outputs, direct)  # bit for bit
    assert got.stats["cycles"] > 0


def test_executable_needing_more_pes_than_the_device_is_refused():
    m = torch.nn.Linear(8, 64).eval()
    exe = stack.compile(m, (torch.randn(2, 8),), spec="board", pes=4)
    with pytest.raises(ValueError, match="has 2 PE"):
        with driver.open(local=True, spec="small") as dev:
            Session(exe, dev)


def test_parse_devices():
    assert parse_devices("npu:0") == [0]
    assert parse_devices("npu:0-3") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="npu:0-3"):
        parse_devices("gpu0")


def test_torch_compile_backend():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    m.eval()
    x = torch.randn(4, 16)
    f = torch.compile(m, backend="npu")
    with torch.no_grad():
        y = f(x)
        ref = m(x)
    assert (y - ref).abs().max().item() < 2e-2 * ref.abs().max().item() + 1e-3


def _python(code):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_import_stack_does_not_import_torch_but_registers_the_backend():
    assert _python("import sys, stack.cli; print('torch' in sys.modules)") == "False"
    code = ("import stack, torch\n"
            "from torch._dynamo.backends.registry import lookup_backend, list_backends\n"
            "print('npu' in list_backends(), lookup_backend('npu').__module__)")
    assert _python(code) == "True stack"
