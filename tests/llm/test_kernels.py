"""Kernel pieces on the functional model against numpy references."""

import ml_dtypes
import numpy as np
import pytest

import gen
from hw import spec as hwspec
from hw.model import run_program
from stack.llm import kernels as K
from stack.llm.builder import Arena, Builder

BF = ml_dtypes.bfloat16
SPEC = hwspec.load("small")
ISA = gen.build(SPEC).isa


def r16(x):
    return np.asarray(x, np.float32).astype(BF).astype(np.float32)


def test_wait_before_signal_and_unbalanced_barrier_are_caught():
    b = Builder(SPEC, ISA)
    with pytest.raises(AssertionError, match="before its signal"):
        b.wait("load", "compute")
    b.signal("load", "compute")
    with pytest.raises(AssertionError, match="unwaited"):
        b.end()


def test_arena_error_is_actionable():
    with pytest.raises(MemoryError, match="max_num_batched_tokens"):
        Arena(1024).alloc(2048)


@pytest.mark.parametrize("M, H, N", [(1, 64, 48), (5, 64, 200), (16, 128, 96)])
def test_rmsnorm_then_linear_matches_numpy(M, H, N):
    rng = np.random.default_rng(M)
    x = rng.standard_normal((M, H)).astype(BF)
    nw = rng.standard_normal(H).astype(BF)
    w = (rng.standard_normal((N, H)) * 0.1).astype(BF)
    b = Builder(SPEC, ISA)
    ar = Arena(SPEC.sram_bytes_per_pe // 4)  # small arena: several weight tiles
    xs, ws, xn, y = (ar.alloc(M * H * 2), ar.alloc(H * 2), ar.alloc(M * H * 2),
                     ar.alloc(M * N * 2))
    b.load(0, 0, xs, M * H * 2)
    b.load(0, 1 << 16, ws, H * 2)
    b.dep("load", "compute")
    K.rmsnorm(b, ar, xs, M, H, ws, xn, 1e-5)
    K.linear(b, ar, xn, M, H, 0, 1 << 17, [(N, y, N * 2)])
    b.dep("compute", "store")
    b.store(0, 1 << 20, y, M * N * 2)
    b.store(0, 1 << 21, xn, M * H * 2)
    dev, _ = run_program(SPEC, {0: b.end()},
                         {0: x.tobytes(), 1 << 16: nw.tobytes(), 1 << 17: w.tobytes()},
                         {0: [0]})
    assert dev.read32(0x1000 + 0x08) == 0  # no error
    got_xn = np.frombuffer(dev.read_dram(1 << 21, M * H * 2), BF).reshape(M, H)
    got_y = np.frombuffer(dev.read_dram(1 << 20, M * N * 2), BF).reshape(M, N)
    xf = x.astype(np.float32)
    rms = 1 / np.sqrt((xf * xf).sum(-1, keepdims=True) / H + np.float32(1e-5))
    ref_xn = r16(r16(xf * rms) * nw.astype(np.float32))
    # rsqrt and sums may differ from numpy in the last fp32 bit: allow one bf16 step
    assert np.abs(got_xn.astype(np.float32) - ref_xn).max() <= 2 ** -7 * np.abs(ref_xn).max()
    ref_y = r16(got_xn.astype(np.float32) @ w.astype(np.float32).T)
    np.testing.assert_allclose(got_y.astype(np.float32), ref_y, rtol=2 ** -7, atol=1e-3)


@pytest.mark.parametrize("one_token", [False, True])
def test_rope_matches_rotate_half_formula(one_token):
    """Rows are tokens with their own angles, or (one_token) heads sharing one cos/sin row."""
    rng = np.random.default_rng(0)
    rows, hd = 6, 16
    x = rng.standard_normal((rows, hd)).astype(BF)
    ang = rng.uniform(0, 6, (1 if one_token else rows, hd // 2))
    cos = np.concatenate([np.cos(ang)] * 2, -1).astype(BF)
    sin = np.concatenate([np.sin(ang)] * 2, -1).astype(BF)
    b = Builder(SPEC, ISA)
    ar = Arena(SPEC.sram_bytes_per_pe)
    xs, cs, ss, out, tmp = (ar.alloc(rows * hd * 2) for _ in range(5))
    b.load(0, 0, xs, rows * hd * 2)
    b.load(0, 4096, cs, rows * hd * 2)
    b.load(0, 8192, ss, rows * hd * 2)
    b.dep("load", "compute")
    K.rope(b, xs, hd * 2, rows, hd, cs, ss, out, hd * 2, tmp,
           cs_stride=0 if one_token else None)
    b.dep("compute", "store")
    b.store(0, 1 << 16, out, rows * hd * 2)
    dev, _ = run_program(SPEC, {0: b.end()},
                         {0: x.tobytes(), 4096: cos.tobytes(), 8192: sin.tobytes()}, {0: [0]})
    got = np.frombuffer(dev.read_dram(1 << 16, rows * hd * 2), BF).astype(np.float32)
    xf, c, s = (a.astype(np.float32) for a in (x, cos, sin))
    c, s = np.broadcast_to(c, (rows, hd)), np.broadcast_to(s, (rows, hd))
    rot = np.concatenate([-xf[:, hd // 2:], xf[:, :hd // 2]], -1)
    ref = r16(r16(xf * c) + r16(rot * s))
    np.testing.assert_array_equal(got.reshape(rows, hd), ref)


def test_work_split_divisors():
    assert K.largest_divisor(3, 4) == 3
    assert K.largest_divisor(576, 4, 2) == 4
    assert K.largest_divisor(260, 4, 2) == 2
    assert K.largest_divisor(7, 4) == 1
