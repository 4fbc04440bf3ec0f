import pytest

from stack.llm import SamplingParams


def test_defaults_mirror_vllm():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.max_tokens) == (1, 1.0, 1.0, -1,
                                                                              0.0, 16)
    assert p.stop_strings == [] and p.stop_token_ids == [] and not p.greedy
    assert SamplingParams(temperature=0).greedy
    assert SamplingParams(stop="x").stop_strings == ["x"]
    assert SamplingParams(top_k=0).top_k == -1


@pytest.mark.parametrize("kw, field", [
    (dict(n=0), "n"), (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(top_k=-5), "top_k"), (dict(min_p=2), "min_p"),
    (dict(max_tokens=0), "max_tokens"), (dict(presence_penalty=3), "presence_penalty"),
    (dict(frequency_penalty=-3), "frequency_penalty"),
    (dict(repetition_penalty=0), "repetition_penalty"), (dict(logprobs=50), "logprobs"),
    (dict(stop=[""]), "stop"), (dict(stop_token_ids=[-1]), "stop_token_ids"),
    (dict(min_tokens=5, max_tokens=2), "min_tokens"),
])
def test_invalid_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kw)
