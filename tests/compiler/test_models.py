"""Compiled models against eager PyTorch, run on the functional model.

Tolerance (docs/compiler.md): matmul operands are rounded to bf16 (relative error 2**-9
each) and accumulated in fp32, so outputs match eager fp32 within
atol = 2e-2 * max|ref| + 1e-3 for these shallow models.
"""

import pytest
import torch

from stack.compiler import UnsupportedOperator, compile_model, run_on_model


def close(out, ref, rel=2e-2):
    ref = ref.detach()
    tol = rel * ref.abs().max().item() + 1e-3
    err = (out - ref).abs().max().item()
    assert err <= tol, f"max error {err} > {tol}"


def check(model, inputs, pes=None, rel=2e-2):
    model = model.eval()
    exe = compile_model(model, inputs, pes=pes)
    out, tl = run_on_model(exe, inputs)
    with torch.no_grad():
        ref = model(*inputs)
    close(out, ref, rel)
    return out, tl


def test_mlp():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    _, tl = check(m, (torch.randn(4, 32),))
    assert tl.macs == 4 * 32 * 64 + 4 * 64 * 16


def test_cnn_batchnorm_pool():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.AvgPool2d(1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    check(m, (torch.randn(2, 3, 10, 10),))


def test_transformer_encoder_layer():
    torch.manual_seed(0)
    m = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    check(m, (torch.randn(2, 5, 32),))


def test_llama_tiny():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    llama = transformers.LlamaForCausalLM(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = llama

        def forward(self, ids):
            return self.m(ids, use_cache=False).logits
    check(Logits(), (torch.randint(0, 128, (1, 8)),))


def test_multi_pe_partition_same_numbers():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.SiLU(), torch.nn.Linear(96, 48))
    x = torch.randn(6, 64)
    one, _ = run_on_model(compile_model(m, (x,), pes=1), (x,))
    two, tl = run_on_model(compile_model(m, (x,), pes=2), (x,))
    assert torch.equal(one, two)
    assert all(st.macs > 0 for st in tl.pes.values())  # both PEs did GEMM work
    close(two, m(x))


def test_unsupported_operator_names_op_and_line():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 0)  # the line the error must name
    with pytest.raises(UnsupportedOperator) as e:
        compile_model(M(), (torch.randn(4, 4),))
    msg = str(e.value)
    assert "aten.cumsum" in msg and "test_models.py" in msg
