"""The engine on the NPU functional model against eager transformers on the CPU (bf16)."""

import numpy as np
import pytest
import torch
from tiny_models import hf_greedy, tiny_llama

import driver
from driver.kernel import KernelDevice
from hw import spec as hwspec
from stack.llm import LLM, SamplingParams, from_transformers

GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


def prompts(k, lo=3, hi=20, seed=0, vocab=256):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(rng.integers(lo, hi))).tolist() for _ in range(k)]


def run(llm, ps, params=GREEDY):
    outs = llm.generate([{"prompt_token_ids": p} for p in ps], params, use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs]


@pytest.fixture(scope="module")
def llm(tiny_model):
    with LLM(from_transformers(tiny_model), spec="small", max_model_len=128, max_num_seqs=4,
             block_size=8, max_num_batched_tokens=32) as engine:
        yield engine


def test_greedy_matches_transformers(llm, tiny_model):
    ps = prompts(10)
    got = run(llm, ps)
    same = sum(g == hf_greedy(tiny_model, p, 32) for p, g in zip(ps, got, strict=True))
    assert same >= 8, f"only {same}/10 greedy sequences match transformers"


def test_batching_chunking_and_preemption_keep_greedy_outputs(tiny_model, llm):
    ps = prompts(5, 10, 30, seed=1)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    ref = run(llm, ps, params)
    # one sequence at a time
    with LLM(from_transformers(tiny_model), spec="small", max_model_len=128, max_num_seqs=1,
             block_size=8, max_num_batched_tokens=32, enable_prefix_caching=False) as one:
        assert run(one, ps, params) == ref
    # small chunks and a KV cache too small for all five: preemption by recomputation
    per_block = 2 * 2 * 8 * 32 * 2
    with LLM(from_transformers(tiny_model), spec="small", max_model_len=64, max_num_seqs=5,
             block_size=8, max_num_batched_tokens=8, kv_cache_memory=12 * per_block) as tight:
        assert run(tight, ps, params) == ref
        assert tight.llm_engine.stats.preemptions > 0


def test_prefix_cache_reuses_blocks_and_keeps_outputs(llm):
    base = prompts(1, 24, 25, seed=2)[0]
    ps = [base + [5], base + [9, 11]]
    first = run(llm, ps[:1])
    hits = llm.llm_engine.block_manager.prefix_hits
    outs = llm.generate([{"prompt_token_ids": p} for p in ps], GREEDY, use_tqdm=False)
    assert outs[0].outputs[0].token_ids == first[0]
    assert outs[1].num_cached_tokens >= 16
    assert llm.llm_engine.block_manager.prefix_hits > hits


def test_finish_reasons_logprobs_and_n(llm, tiny_model):
    p = prompts(1, seed=3)[0]
    ref = hf_greedy(tiny_model, p, 8)
    out = llm.generate({"prompt_token_ids": p},
                       SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[ref[3]],
                                      logprobs=3), use_tqdm=False)[0]
    c = out.outputs[0]
    assert c.token_ids == ref[:4] and c.finish_reason == "stop" and c.stop_reason == ref[3]
    with torch.no_grad():
        logits = tiny_model(torch.tensor([p])).logits[0, -1].float()
    lp = torch.log_softmax(logits, -1)
    first = c.logprobs[0]
    assert len(first) == 3 and first[ref[0]].rank == 1
    assert abs(first[ref[0]].logprob - lp[ref[0]].item()) < 0.05
    out = llm.generate({"prompt_token_ids": p},
                       SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=5),
                       use_tqdm=False)[0]
    assert [o.index for o in out.outputs] == [0, 1, 2]
    assert all(o.finish_reason == "length" and len(o.token_ids) == 5 for o in out.outputs)
    again = llm.generate({"prompt_token_ids": p},
                         SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=5),
                         use_tqdm=False)[0]
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in out.outputs]
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1


def test_steps_longer_than_the_default_watchdog_budget(tiny_model):
    # every step of this model takes more than 20,000 cycles on `small`: the runner must give
    # each program a budget from its cycle-model estimate, not the spec's default
    tight = hwspec.load("small", command__watchdog_cycles=20_000)
    kernel = KernelDevice(tight)
    ps = prompts(2, seed=7)
    try:
        with driver.attach(kernel) as dev, LLM(
                from_transformers(tiny_model), spec=tight, max_model_len=64, max_num_seqs=2,
                block_size=8, max_num_batched_tokens=32, device=dev) as llm:
            got = run(llm, ps, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
            assert llm.llm_engine.runner.cycles > 20_000 * llm.llm_engine.runner.steps
    finally:
        kernel.close()
    assert got == [hf_greedy(tiny_model, p, 8) for p in ps]


def test_four_pes_with_idle_attention_pes():
    # board has 4 PEs; 2 KV heads use 2 of them for attention, the others skip it
    model = tiny_llama(seed=5)
    ps = prompts(3, seed=4)
    with LLM(from_transformers(model), spec="board", max_model_len=64, max_num_seqs=4,
             block_size=8, max_num_batched_tokens=32) as board:
        got = run(board, ps, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    same = sum(g == hf_greedy(model, p, 12) for p, g in zip(ps, got, strict=True))
    assert same >= 2


def test_folder_model_text_chat_and_stop_strings(tiny_dir):
    with LLM(str(tiny_dir), spec="small", max_model_len=128, block_size=8) as llm:
        tok = llm.get_tokenizer()
        out = llm.generate("hello", SamplingParams(temperature=0, max_tokens=12,
                                                   ignore_eos=True), use_tqdm=False)[0]
        c = out.outputs[0]
        assert out.prompt_token_ids == tok.encode("hello")
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
        stop = c.text[3:5]
        if stop:
            cut = llm.generate("hello", SamplingParams(temperature=0, max_tokens=12, stop=stop,
                                                       ignore_eos=True), use_tqdm=False)[0]
            assert cut.outputs[0].finish_reason == "stop"
            assert cut.outputs[0].text == c.text[:c.text.find(stop)]
        chat = llm.chat([{"role": "user", "content": "hi"}],
                        SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)[0]
        assert chat.prompt.endswith("<|im_start|>assistant\n")
        assert len(chat.outputs[0].token_ids) <= 4


def test_errors(llm):
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate({"prompt_token_ids": [5] * 200}, use_tqdm=False)
    with pytest.raises(ValueError, match="token ids"):
        llm.generate({"prompt_token_ids": [999]}, use_tqdm=False)
    with pytest.raises(ValueError, match="dtype"):
        LLM("unused", dtype="float16")
    with pytest.raises(FileNotFoundError, match="unknown model"):
        LLM("no-such-model")
