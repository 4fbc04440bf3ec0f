"""CPU fallback: unsupported operators between NPU partitions, against eager PyTorch."""

import logging

import pytest
import torch

import stack
from stack.compiler import (
    Bundle,
    ExecutableError,
    UnsupportedOperator,
    compile_model,
    run_on_model,
)


class Sandwich(torch.nn.Module):
    """NPU part, cumsum and sort on the CPU, NPU part."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.cumsum(h, 1)
        v, i = torch.sort(h, dim=-1)
        return self.b(v) * 2, i


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Sandwich().eval()
    x = torch.randn(3, 8)
    return m, x, compile_model(m, (x,), pes=1, fallback="cpu")


def _check(out, m, x):
    with torch.no_grad():
        ref, idx = m(x)
    assert (out[0] - ref).abs().max().item() <= 2e-2 * ref.abs().max().item() + 1e-3
    assert torch.equal(out[1].long(), idx)


def test_breaks_reported_and_partitions(model, caplog):
    m, x, b = model
    assert isinstance(b, Bundle)
    kinds = [s["kind"] for s in b.plans[0].steps]
    assert kinds == ["npu", "cpu", "cpu", "npu"]
    assert any("aten.cumsum" in s and "test_fallback.py" in s for s in b.graph_breaks)
    assert any("aten.sort" in s for s in b.graph_breaks)
    with caplog.at_level(logging.WARNING, logger="stack.compiler"):
        compile_model(m, (x,), pes=1, fallback="cpu")
    assert "graph break" in caplog.text and "aten.cumsum" in caplog.text


def test_matches_eager_on_model(model):
    m, x, b = model
    out, _ = run_on_model(b, (x,))
    _check(out, m, x)


def test_matches_eager_through_driver(model):
    m, x, _ = model
    r = stack.compile_and_run(m, (x,), fallback="cpu")
    _check(r.outputs, m, x)
    assert len(r.stats["graph_breaks"]) == 2 and r.stats["cycles"] > 0


def test_without_fallback_the_error_names_op_and_line(model):
    m, x, _ = model
    with pytest.raises(UnsupportedOperator, match=r"aten\.cumsum at .*test_fallback\.py:\d+"):
        compile_model(m, (x,))


def test_bundle_save_load(tmp_path, model):
    m, x, b = model
    path = b.save(tmp_path / "m.npub")
    back = stack.load(path, spec="small")
    assert isinstance(back, Bundle) and back.graph_breaks == b.graph_breaks
    out, _ = run_on_model(back, (x,))
    _check(out, m, x)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    with pytest.raises(ExecutableError, match="corrupted"):
        Bundle.from_bytes(bytes(data))
