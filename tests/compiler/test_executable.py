"""Executable files: round trip, and refusal of corrupted, wrong-version, wrong-spec files."""

import struct

import pytest
import torch

import hw.spec
import stack
from stack.compiler import Executable, ExecutableError, compile_model, run_on_model


@pytest.fixture(scope="module")
def exe():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh()).eval()
    return m, compile_model(m, (torch.randn(3, 8),))


def test_round_trip_runs(tmp_path, exe):
    m, e = exe
    path = e.save(tmp_path / "m.npux")
    back = stack.load(path, spec="small")
    assert back.programs == e.programs and back.consts == e.consts
    x = torch.randn(3, 8)
    out, _ = run_on_model(back, (x,))
    assert (out - m(x)).abs().max().item() < 2e-2


def test_corrupted_refused(tmp_path, exe):
    data = bytearray(exe[1].to_bytes())
    data[-5] ^= 0xFF
    with pytest.raises(ExecutableError, match="corrupted"):
        Executable.from_bytes(bytes(data))


def test_wrong_version_refused(exe):
    data = bytearray(exe[1].to_bytes())
    struct.pack_into("<I", data, 4, 99)
    with pytest.raises(ExecutableError, match="version 99"):
        Executable.from_bytes(bytes(data))


def test_wrong_spec_refused(tmp_path, exe):
    path = exe[1].save(tmp_path / "m.npux")
    with pytest.raises(ExecutableError, match="built for spec small"):
        stack.load(path, spec=hw.spec.load("board"))


def test_not_an_executable(tmp_path):
    with pytest.raises(ExecutableError, match="magic"):
        Executable.from_bytes(b"hello world" * 10)
