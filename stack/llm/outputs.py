"""What `LLM.generate` returns, mirroring vLLM's `RequestOutput` and `CompletionOutput`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Logprob", "CompletionOutput", "RequestOutput"]


@dataclass
class Logprob:
    """Log probability of one token, its rank among all tokens (1 = most likely), its text."""

    logprob: float
    rank: int
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    """One generated sequence of a request.

    `finish_reason` is None while running, then "stop" (EOS, a stop token or string) or
    "length" (max_tokens or the model length); `stop_reason` is the stop string or token id.
    `logprobs` has one {token id: Logprob} dict per generated token when asked for.
    """

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """The state of one request: its prompt and its `n` completions."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: dict[str, float] = field(default_factory=dict)
    num_cached_tokens: int = 0
