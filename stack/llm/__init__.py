"""LLM serving on the emulated NPU with vLLM's interface.

`LLM` generates offline, `AsyncLLMEngine` streams for servers; every matmul, norm and
attention of the model runs on the NPU (see `stack.llm.kernels` and `stack.llm.npu_runner`),
with continuous batching, chunked prefill, a paged KV cache with prefix caching and
preemption by recomputation (`stack.llm.scheduler`, `stack.llm.block_manager`).
"""

from stack.llm.async_engine import AsyncLLMEngine
from stack.llm.engine import EngineConfig, LLMEngine
from stack.llm.llm import LLM
from stack.llm.loader import LoadedModel, from_transformers, load_model
from stack.llm.outputs import CompletionOutput, Logprob, RequestOutput
from stack.llm.sampling_params import SamplingParams

__all__ = ["LLM", "LLMEngine", "EngineConfig", "AsyncLLMEngine", "SamplingParams",
           "RequestOutput", "CompletionOutput", "Logprob", "LoadedModel", "load_model",
           "from_transformers"]
