"""Shape buckets: one executable per sequence length, chosen (and padded) at run time."""

import pytest
import torch
import torch.nn.functional as F

import stack
from stack.compiler import Bundle, run_on_model


class Causal(torch.nn.Module):
    """Causal self-attention over [batch, seq, dim]: right padding leaves earlier rows be."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.o = torch.nn.Linear(16, 16)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.o(F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    m = Causal().eval()
    return m, stack.compile(m, (torch.randn(1, 4, 16),), buckets=[4, 8])


def _close(out, ref):
    ref = ref.detach()
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 2e-2 * ref.abs().max().item() + 1e-3


def test_two_buckets(bundle):
    _, b = bundle
    assert isinstance(b, Bundle) and len(b.exes) == 2
    assert b.meta["buckets"] == [[[1, 4, 16]], [[1, 8, 16]]]


@pytest.mark.parametrize("seq", [4, 8, 6, 3])
def test_exact_and_padded(bundle, seq):
    m, b = bundle
    x = torch.randn(1, seq, 16)
    out, _ = run_on_model(b, (x,))
    _close(out, m(x))


def test_no_bucket_fits(bundle):
    _, b = bundle
    with pytest.raises(ValueError, match="no shape bucket"):
        run_on_model(b, (torch.randn(1, 9, 16),))


def test_exact_only_without_pad(bundle):
    m, _ = bundle
    b = stack.compile(m, (torch.randn(1, 4, 16),), buckets=[(torch.randn(1, 4, 16),)],
                      pad=False)
    with pytest.raises(ValueError, match="no shape bucket"):
        run_on_model(b, (torch.randn(1, 3, 16),))


def test_save_load_keeps_buckets_and_runs_through_driver(tmp_path, bundle):
    m, b = bundle
    back = stack.load(b.save(tmp_path / "b.npub"), spec="small")
    assert back.meta["buckets"] == b.meta["buckets"]
    with stack.Session(back) as s:
        for seq in (8, 5):
            x = torch.randn(1, seq, 16)
            _close(s.run(x).outputs, m(x))
