"""The server through the official `openai` client, against the same model run offline."""

from __future__ import annotations

import asyncio
import os
import re
import time

import httpx
import openai
import pytest
from conftest import API_KEY

from stack.llm import LLM, SamplingParams


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def offline(model_dir, cache_dir):
    os.environ["NPU_EMU_CACHE"] = str(cache_dir)
    with LLM(str(model_dir), spec="small", max_model_len=256, max_num_seqs=16,
             block_size=8) as llm:
        yield llm


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_models_health_version(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(f"{server}/health").status_code == 200
    assert "version" in httpx.get(f"{server}/version").json()


def test_completion_matches_offline_engine_stream_and_not(client, offline):
    ref = offline.generate("The NPU", SamplingParams(temperature=0, max_tokens=10,
                                                     ignore_eos=True), use_tqdm=False)[0]
    extra = {"ignore_eos": True}
    r = client.completions.create(model="tiny", prompt="The NPU", max_tokens=10, temperature=0,
                                  extra_body=extra)
    assert r.choices[0].text == ref.outputs[0].text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 10
    assert r.usage.prompt_tokens == len(ref.prompt_token_ids)
    chunks = list(client.completions.create(model="tiny", prompt="The NPU", max_tokens=10,
                                            temperature=0, stream=True, extra_body=extra))
    assert "".join(c.choices[0].text for c in chunks) == ref.outputs[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_stream_and_not(client, offline):
    msgs = [{"role": "user", "content": "hi there"}]
    ref = offline.chat(msgs, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                       use_tqdm=False)[0]
    extra = {"ignore_eos": True}
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8,
                                       temperature=0, extra_body=extra)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.outputs[0].text
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8,
                                            temperature=0, stream=True, extra_body=extra,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref.outputs[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8


def test_logprobs_and_token_prompt(client):
    r = client.completions.create(model="tiny", prompt=[5, 6, 7, 8], max_tokens=3,
                                  temperature=0, logprobs=2, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == 3 and all(v <= 0 for v in lp.token_logprobs)
    # greedy: the chosen token is the most likely one (byte tokens may share a text key)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3 and chosen >= max(top.values()) - 1e-6


def test_errors(server, client):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(f"{server}/v1/models").status_code == 401
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", temperature=-1)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")
    with pytest.raises(openai.BadRequestError, match="max_model_len"):
        client.completions.create(model="tiny", prompt=[5] * 300, max_tokens=2)
    r = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"model": "tiny", "messages": "nope"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_64_concurrent_requests(server):
    async def main():
        c = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0,
                               timeout=300)
        reqs = [c.completions.create(model="tiny", prompt=f"request {i}", max_tokens=6,
                                     temperature=0.8, seed=i, extra_body={"ignore_eos": True})
                for i in range(64)]
        return await asyncio.gather(*reqs)

    before = metric(server, "npu:request_success_total")
    outs = asyncio.run(main())
    assert len(outs) == 64
    assert all(o.choices[0].finish_reason == "length" and o.usage.completion_tokens == 6
               for o in outs)
    assert metric(server, "npu:request_success_total") >= before + 64
    assert metric(server, "npu:time_to_first_token_seconds_count") >= 64
    assert metric(server, "npu:inter_token_latency_seconds_count") >= 64 * 5
    assert metric(server, "npu:prompt_tokens_total") > 0


def test_client_disconnect_aborts_and_frees_blocks(server):
    body = {"model": "tiny", "prompt": "a long one", "max_tokens": 200, "stream": True,
            "ignore_eos": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(timeout=60) as h, h.stream("POST", f"{server}/v1/completions",
                                                 json=body, headers=headers) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(x.startswith("data: ") for x in got)
        assert metric(server, "npu:num_requests_running") == 1
        assert metric(server, "npu:kv_cache_usage_perc") > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (metric(server, "npu:num_requests_running") == 0
                and metric(server, "npu:kv_cache_usage_perc") == 0):
            break
        time.sleep(0.2)
    assert metric(server, "npu:num_requests_running") == 0
    assert metric(server, "npu:kv_cache_usage_perc") == 0
