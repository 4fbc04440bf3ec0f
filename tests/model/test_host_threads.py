"""The functional model's PyTorch kernels take one host thread in a device's thread."""

from __future__ import annotations

import threading

import ml_dtypes
import numpy as np
import pytest
import torch

import driver
from driver.kernel import KernelDevice
from hw import spec as hwspec
from hw.generated import isa
from hw.model import host


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


def test_a_device_thread_is_limited_and_other_threads_are_not(monkeypatch):
    monkeypatch.delenv(host.THREADS_ENV, raising=False)
    before = torch.get_num_threads()

    def device_thread():
        host.serve_here()
        host.torch()
        return torch.get_num_threads()

    assert _in_thread(device_thread) == 1
    assert torch.get_num_threads() == before
    # a thread that never called serve_here keeps PyTorch's default
    assert _in_thread(lambda: (host.torch(), torch.get_num_threads())[1]) == before


def test_threads_env(monkeypatch):
    monkeypatch.setenv(host.THREADS_ENV, "2")
    assert host.model_threads() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(host.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=host.THREADS_ENV):
            host.model_threads()


def test_the_kernel_service_thread_sets_the_limit(monkeypatch):
    monkeypatch.delenv(host.THREADS_ENV, raising=False)
    seen = []
    real = host._limit
    monkeypatch.setattr(host, "_limit", lambda torch, n: (
        seen.append((threading.current_thread().name, n)), real(torch, n)))
    # a bf16 VECTOR runs on PyTorch in fast mode
    prog = [
        isa.Load(base=0, sram_addr=0, n0=64, n1=1, n2=1),
        isa.SemSignal(queue=isa.QUEUES["load"], sem=0),
        isa.SemWait(queue=isa.QUEUES["compute"], sem=0),
        isa.Vector(func=isa.VECTOR_FUNCS["mul"], in_dtype=isa.DTYPE_BF16,
                   out_dtype=isa.DTYPE_BF16, src2_mode=isa.SRC2_MODES["tile"], rows=1,
                   cols=32, src1_addr=0, src2_addr=0, dst_addr=64, src1_stride=64,
                   src2_stride=64, dst_stride=64),
        isa.SemSignal(queue=isa.QUEUES["compute"], sem=1),
        isa.SemWait(queue=isa.QUEUES["store"], sem=1),
        isa.Store(base=1, sram_addr=64, n0=64, n1=1, n2=1),
        isa.End(),
    ]
    x = np.arange(32, dtype=np.float32).astype(ml_dtypes.bfloat16)
    kernel = KernelDevice(hwspec.load("small"))  # a service thread of its own, not yet run
    try:
        with driver.attach(kernel) as dev, dev.context(memory=1 << 20) as ctx:
            src, out = ctx.upload(x), ctx.alloc(64)
            ctx.run(ctx.load_program(prog), [src, out])
            got = out.numpy(ml_dtypes.bfloat16, (32,))
    finally:
        kernel.close()
    want = (x.astype(np.float32) ** 2).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    assert seen and all(name.startswith("npu") and n == 1 for name, n in seen)


@pytest.mark.parametrize("transpose_b, batched", [(True, False), (False, False), (True, True)])
def test_large_gemm_column_blocks_give_pytorchs_bits(monkeypatch, transpose_b, batched):
    from hw.model import numerics

    if numerics._lone_row_kernel_differs():
        pytest.skip("oneDNN's bf16 GEMM: products are not cut into column blocks")
    monkeypatch.setenv(host.THREADS_ENV, "3")
    calls = []
    real = host.run_split
    monkeypatch.setattr(host, "run_split", lambda parts: (calls.append(len(parts)),
                                                          real(parts)))
    g = torch.Generator().manual_seed(3)
    m, k, n = 64, 640, 520  # 21 M MACs: as many blocks as threads
    shape = (2,) if batched else ()
    a = torch.randn(*shape, m, k, generator=g).bfloat16()
    w = torch.randn(*shape, n, k, generator=g).bfloat16()
    b = w.transpose(-1, -2) if transpose_b else w.transpose(-1, -2).contiguous()
    want = torch.bmm(a, b) if batched else torch.mm(a, b)
    out = torch.full(want.shape, 7.0, dtype=torch.bfloat16)
    got = _in_thread(lambda: (host.serve_here(), numerics.torch_bf16_mm(a, b, out))[1])
    assert calls == [3]
    assert got is out
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))
