"""The runtime through the driver (in-process device), and the torch.compile backend."""

import pytest
import torch

import stack
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


def test_multi_pe_program_refused_by_driver_session():
    m = torch.nn.Linear(8, 64).eval()
    exe = stack.compile(m, (torch.randn(2, 8),), pes=2)
    with pytest.raises(ValueError, match="different program on each"):
        Session(exe)


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
