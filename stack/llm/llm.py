"""`LLM`: offline batched generation with vLLM's interface, running the model on the NPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from stack.llm.engine import EngineConfig, LLMEngine, Prompt
from stack.llm.loader import LoadedModel
from stack.llm.outputs import RequestOutput
from stack.llm.sampling_params import SamplingParams

__all__ = ["LLM"]

log = logging.getLogger(__name__)


class LLM:
    """A model loaded onto an NPU device for offline generation.

    `model` is a short name (`smollm2-135m-instruct`), a Hugging Face folder, a cached hub
    id, a GGUF file, or a `LoadedModel`. `kv_cache_memory` is the bytes of device DRAM given
    to the paged KV cache (default: room for `max_num_seqs` full-length sequences). `spec`
    names the hardware spec of the in-process device when no daemon serves one (default
    `board`).
    """

    def __init__(self, model: str | LoadedModel, *, devices: str = "npu:0",
                 dtype: str = "bfloat16", max_model_len: int | None = None,
                 max_num_seqs: int = 8, max_num_batched_tokens: int | None = None,
                 block_size: int = 16, kv_cache_memory: int | None = None, spec=None,
                 seed: int = 0, enable_prefix_caching: bool = True, device=None):
        config = EngineConfig(devices=devices, dtype=dtype, max_model_len=max_model_len,
                              max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=max_num_batched_tokens,
                              block_size=block_size, kv_cache_memory=kv_cache_memory,
                              spec=spec, seed=seed, enable_prefix_caching=enable_prefix_caching)
        self.llm_engine = LLMEngine(model, config, device=device)

    def get_tokenizer(self):
        return self.llm_engine.tokenizer

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate completions for every prompt; outputs come back in prompt order."""
        if isinstance(prompts, (str, dict)) or (
                isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} sampling_params for {len(prompts)} prompts")
        engine = self.llm_engine
        ids = [engine.add_request(None, p, sp) for p, sp in zip(prompts, params, strict=True)]
        done: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(ids), desc="Processed prompts", dynamic_ncols=True)
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        done[out.request_id] = out
                        if bar is not None:
                            bar.update(1)
        except BaseException:
            for rid in ids:
                engine.abort_request(rid)
            raise
        finally:
            if bar is not None:
                bar.close()
        return [done[rid] for rid in ids]

    def chat(self, messages: list[dict] | list[list[dict]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             use_tqdm: bool = True, add_generation_prompt: bool = True,
             chat_template: str | None = None) -> list[RequestOutput]:
        """Generate replies to conversations, formatted with the model's chat template."""
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        tok = self.llm_engine.tokenizer
        prompts = []
        for conv in convs:
            text, ids = chat_prompt(tok, conv, add_generation_prompt, chat_template)
            prompts.append({"prompt_token_ids": ids, "prompt": text})
        return self.generate(prompts, sampling_params, use_tqdm)

    def close(self) -> None:
        self.llm_engine.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chat_prompt(tokenizer, conversation: list[dict], add_generation_prompt: bool = True,
                chat_template: str | None = None) -> tuple[str, list[int]]:
    """(text, token ids) of a conversation under the tokenizer's chat template."""
    if tokenizer is None:
        raise ValueError("this model has no tokenizer, so it has no chat template")
    for m in conversation:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError("each message must be a dict with 'role' and 'content'")
    if chat_template is None and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; pass chat_template=")
    text = tokenizer.apply_chat_template(conversation, tokenize=False,
                                         add_generation_prompt=add_generation_prompt,
                                         chat_template=chat_template)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text, list(ids)
