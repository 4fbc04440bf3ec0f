import numpy as np

from stack.llm.sampler import sample
from stack.llm.sampling_params import SamplingParams
from stack.llm.sequence import Sequence


def seq(params, prompt=(1, 2), out=(), seed=0):
    s = Sequence(0, "r", 0, list(prompt), params)
    s.output_token_ids = list(out)
    s.rng = np.random.default_rng(seed)
    return s


LOGITS = np.array([1.0, 3.0, 2.5, -1.0, 0.5], np.float32)


def test_greedy_is_argmax_and_logprob_is_raw_log_softmax():
    tok, lps, lp = sample(LOGITS, seq(SamplingParams(temperature=0, logprobs=2)))
    ref = LOGITS - np.log(np.exp(LOGITS.astype(np.float64)).sum())
    assert tok == 1
    assert abs(lp - ref[1]) < 1e-6
    assert set(lps) == {1, 2} and lps[1].rank == 1 and lps[2].rank == 2
    assert abs(lps[2].logprob - ref[2]) < 1e-6


def test_repetition_penalty_divides_positive_multiplies_negative():
    p = SamplingParams(temperature=0, repetition_penalty=2.0)
    # token 1 (3.0 -> 1.5) seen, so token 2 (2.5) wins
    assert sample(LOGITS, seq(p, prompt=(1,)))[0] == 2


def test_presence_and_frequency_penalties():
    p = SamplingParams(temperature=0, frequency_penalty=0.4)
    # token 1 generated twice: 3.0 - 0.8 = 2.2 < 2.5
    assert sample(LOGITS, seq(p, out=(1, 1)))[0] == 2
    p = SamplingParams(temperature=0, presence_penalty=0.4)
    assert sample(LOGITS, seq(p, out=(1, 1)))[0] == 1  # 2.6 > 2.5


def test_top_k_top_p_min_p_restrict_support():
    draws = lambda p: {sample(LOGITS, seq(p, seed=s))[0] for s in range(200)}  # noqa: E731
    assert draws(SamplingParams(top_k=2)) == {1, 2}
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum()
    assert probs[1] < 0.6 < probs[1] + probs[2]
    assert draws(SamplingParams(top_p=0.6)) == {1, 2}
    assert draws(SamplingParams(min_p=0.5)) == {1, 2}  # p(2)/p(1) = 0.61, p(0)/p(1) = 0.14
    assert draws(SamplingParams(temperature=1.0)) == {0, 1, 2, 3, 4}


def test_seed_reproducible_and_distribution_matches():
    p = SamplingParams(temperature=0.7, seed=3)
    a = [sample(LOGITS, seq(p, seed=9))[0] for _ in range(3)]
    b = [sample(LOGITS, seq(p, seed=9))[0] for _ in range(3)]
    assert a == b
    s = seq(SamplingParams(temperature=0.5), seed=1)
    counts = np.bincount([sample(LOGITS, s)[0] for _ in range(4000)], minlength=5) / 4000
    ref = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    assert np.abs(counts - ref).max() < 0.03


def test_min_tokens_masks_eos():
    logits = np.array([0.0, 0.0, 9.0], np.float32)
    p = SamplingParams(temperature=0, min_tokens=2)
    assert sample(logits, seq(p), eos_token_ids=[2])[0] != 2
    assert sample(logits, seq(p, out=(0, 0)), eos_token_ids=[2])[0] == 2
