"""The engine: requests in, scheduled steps on the NPU runner, sampled tokens out.

`LLMEngine.step()` runs one iteration: the scheduler picks the tokens to feed, the runner
executes them on the NPU (one batched decode program for every sequence that feeds one
token, one prefill program per prompt chunk), the sampler picks next tokens on the host,
and stop conditions are checked. It returns a `RequestOutput` for every request that made
progress. The engine is synchronous; `stack.llm.async_engine` drives it from a thread.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from stack.llm.block_manager import BlockManager
from stack.llm.loader import LoadedModel, load_model
from stack.llm.outputs import CompletionOutput, RequestOutput
from stack.llm.sampler import sample
from stack.llm.sampling_params import SamplingParams
from stack.llm.scheduler import ScheduledSeq, Scheduler
from stack.llm.sequence import SeqStatus, Sequence

__all__ = ["EngineConfig", "LLMEngine", "EngineStats"]

log = logging.getLogger(__name__)

Prompt = str | list[int] | dict


@dataclass
class EngineConfig:
    devices: str = "npu:0"
    dtype: str = "bfloat16"
    max_model_len: int | None = None
    max_num_seqs: int = 8
    max_num_batched_tokens: int | None = None
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes of device DRAM for the KV cache
    spec: object = None  # spec name or hw.spec.Spec; default: the device's, else "board"
    seed: int = 0
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in ("bfloat16", "auto"):
            raise ValueError(f"dtype must be 'bfloat16' or 'auto' (the NPU runs bf16 models), "
                             f"got {self.dtype!r}")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")


@dataclass
class EngineStats:
    """Counters the server exports as Prometheus metrics."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests_finished: int = 0
    preemptions: int = 0
    prefix_cache_hits: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)


@dataclass(eq=False)
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    arrival: float


def open_device(devices: str, spec):
    """Open the device named like "npu:0" and return (device, Spec)."""
    import driver
    from hw import spec as hwspec

    name = devices.strip()
    if not name.startswith("npu:"):
        raise ValueError(f"devices must look like 'npu:0', got {devices!r}")
    try:
        index = int(name[4:])
    except ValueError:
        raise ValueError(f"devices must look like 'npu:0' (one device), got {devices!r}") from None
    if spec is None:
        files = driver.list_devices()
        spec = "board" if not files else None
    if isinstance(spec, str):
        spec = hwspec.load(spec)
    dev = driver.open(index, spec=spec.name if spec is not None else hwspec.DEFAULT)
    if spec is None:
        spec = hwspec.load(dev.spec_name)
    if dev.caps.spec_hash32 != spec.register_value("spec:hash32"):
        dev.close()
        raise ValueError(f"device {devices} runs spec {dev.spec_name!r}, not the requested "
                         f"{spec.name!r} (spec hashes differ)")
    return dev, spec


class LLMEngine:
    """Continuous-batching engine over one NPU device."""

    def __init__(self, model: str | LoadedModel, config: EngineConfig | None = None, *,
                 device=None):
        from stack.llm.npu_runner import NPURunner

        self.config = cfg = config or EngineConfig()
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        mc = self.model.config
        self.tokenizer = self.model.tokenizer
        self.max_model_len = min(cfg.max_model_len or mc.max_position_embeddings,
                                 mc.max_position_embeddings)
        if self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        self.max_num_batched_tokens = cfg.max_num_batched_tokens or max(
            64, cfg.max_num_seqs)
        self.max_num_batched_tokens = max(self.max_num_batched_tokens, cfg.max_num_seqs)
        bs = cfg.block_size
        per_block = mc.num_layers * 2 * bs * mc.kv_dim * 2
        blocks_per_seq = -(-self.max_model_len // bs)
        if cfg.kv_cache_memory is not None:
            num_blocks = cfg.kv_cache_memory // per_block + 1
        else:
            num_blocks = cfg.max_num_seqs * blocks_per_seq + 1
        if num_blocks - 1 < blocks_per_seq:
            raise ValueError(
                f"kv_cache_memory holds {num_blocks - 1} blocks of {bs} tokens but one sequence "
                f"of max_model_len {self.max_model_len} needs {blocks_per_seq}; give at least "
                f"{blocks_per_seq * per_block} bytes or lower max_model_len")
        self._own_device = device is None
        if device is None:
            device, spec = open_device(cfg.devices, cfg.spec)
        else:
            from hw import spec as hwspec
            spec = cfg.spec if not isinstance(cfg.spec, (str, type(None))) else hwspec.load(
                cfg.spec or device.spec_name)
        self.device, self.spec = device, spec
        self.block_manager = BlockManager(num_blocks, bs,
                                          enable_prefix_caching=cfg.enable_prefix_caching)
        self.runner = NPURunner(self.model, spec, device, block_size=bs, num_blocks=num_blocks,
                                max_num_seqs=cfg.max_num_seqs,
                                max_num_batched_tokens=self.max_num_batched_tokens,
                                max_model_len=self.max_model_len)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs=cfg.max_num_seqs,
                                   max_num_batched_tokens=self.max_num_batched_tokens,
                                   max_chunk=self.runner.max_chunk)
        self.requests: dict[str, RequestState] = {}
        self.stats = EngineStats()
        self._seq_ids = itertools.count()
        self._req_ids = itertools.count()
        self.eos_token_ids = set(self.model.eos_token_ids)
        log.info("engine ready: %s on %s, %d KV blocks of %d tokens, max_model_len %d",
                 self.model.name, spec.name, num_blocks - 1, bs, self.max_model_len)

    # requests

    def tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), [int(t) for t in prompt["prompt_token_ids"]]
            prompt = prompt["prompt"]
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer; pass prompt_token_ids")
            return prompt, list(self.tokenizer.encode(prompt))
        return None, [int(t) for t in prompt]

    def add_request(self, request_id: str | None, prompt: Prompt,
                    params: SamplingParams | None = None) -> str:
        params = params or SamplingParams()
        request_id = str(next(self._req_ids)) if request_id is None else str(request_id)
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already running")
        text, ids = self.tokenize(prompt)
        if not ids:
            raise ValueError("the prompt must not be empty")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; max_model_len is "
                             f"{self.max_model_len}, leaving no room to generate")
        now = time.monotonic()
        seqs = []
        for i in range(params.n):
            seq = Sequence(next(self._seq_ids), request_id, i, list(ids), params, arrival=now)
            seed = None if params.seed is None else params.seed + i
            seq.rng = np.random.default_rng(
                seed if seed is not None else (self.config.seed, seq.seq_id))
            seqs.append(seq)
            self.scheduler.add(seq)
        self.requests[request_id] = RequestState(request_id, text, ids, params, seqs, now)
        self.stats.prompt_tokens += len(ids) * params.n
        return request_id

    def abort_request(self, request_id: str) -> bool:
        """Stop a request and free its KV blocks; False if it is unknown or done."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return False
        for seq in state.seqs:
            if not seq.finished:
                self.scheduler.abort(seq)
                seq.status = SeqStatus.FINISHED
                seq.finish_reason = seq.finish_reason or "abort"
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def kv_cache_usage(self) -> float:
        return self.block_manager.usage

    # stepping

    def _item(self, s: ScheduledSeq):
        from stack.llm.npu_runner import StepItem

        seq = s.seq
        ids = seq.all_token_ids[s.start:s.start + s.num_tokens]
        slots = [self.block_manager.slot(seq, p) for p in range(s.start, s.start + s.num_tokens)]
        return StepItem(ids, s.start, slots, list(seq.block_table), s.samples)

    def _run_model(self, scheduled: list[ScheduledSeq]) -> dict[int, np.ndarray]:
        logits: dict[int, np.ndarray] = {}
        decode = [s for s in scheduled if s.num_tokens == 1]
        if decode:
            out = self.runner.execute([self._item(s) for s in decode], decode=True)
            for s, row in zip(decode, out, strict=True):
                logits[s.seq.seq_id] = row
        for s in scheduled:
            if s.num_tokens > 1:
                logits[s.seq.seq_id] = self.runner.execute([self._item(s)], decode=False)[0]
        return logits

    def _decode_text(self, ids: list[int], params: SamplingParams) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=params.skip_special_tokens)

    def _check_stop(self, seq: Sequence, token: int) -> None:
        p = seq.params
        n_out = len(seq.output_token_ids)
        if n_out >= p.min_tokens:
            if not p.ignore_eos and token in self.eos_token_ids:
                seq.finish_reason, seq.stop_reason = "stop", None
            elif token in p.stop_token_ids:
                seq.finish_reason, seq.stop_reason = "stop", token
        if seq.finish_reason is None and p.stop_strings and n_out >= p.min_tokens:
            for stop in p.stop_strings:
                # only a stop string that ends in the newest token's text can be new
                k = seq.text.find(stop, max(0, len(seq.text) - len(stop) - 32))
                if k != -1:
                    seq.text = seq.text[:k + (len(stop) if p.include_stop_str_in_output else 0)]
                    seq.finish_reason, seq.stop_reason = "stop", stop
                    break
        if seq.finish_reason is None:
            if p.max_tokens is not None and n_out >= p.max_tokens:
                seq.finish_reason = "length"
            elif seq.num_tokens >= self.max_model_len:
                seq.finish_reason = "length"

    def step(self) -> list[RequestOutput]:
        sched = self.scheduler.schedule()
        self.stats.preemptions += len(sched.preempted)
        if not sched.scheduled:
            if self.scheduler.waiting and not self.scheduler.running:
                raise RuntimeError("no request can be scheduled: the KV cache is too small")
            return []
        logits = self._run_model(sched.scheduled)
        now = time.monotonic()
        touched: dict[str, RequestState] = {}
        decode = self.tokenizer.decode if self.tokenizer is not None else None
        for s in sched.scheduled:
            seq = s.seq
            seq.num_computed_tokens += s.num_tokens
            self.block_manager.commit_computed(seq)
            if not s.samples:
                continue
            token, lps, lp = sample(logits[seq.seq_id], seq, self.eos_token_ids, decode)
            seq.output_token_ids.append(token)
            seq.cumulative_logprob += lp
            if lps is not None:
                seq.logprobs.append(lps)
            if seq.first_token_time is None:
                seq.first_token_time = now
                self.stats.ttft.append(now - seq.arrival)
            else:
                self.stats.itl.append(now - seq.last_token_time)
            seq.last_token_time = now
            self.stats.generation_tokens += 1
            seq.text = self._decode_text(seq.output_token_ids, seq.params)
            self._check_stop(seq, token)
            if seq.finish_reason is not None:
                self.scheduler.finish(seq)
            state = self.requests.get(seq.request_id)
            if state is not None:
                touched[seq.request_id] = state
        outputs = []
        for rid, state in touched.items():
            out = self._output(state)
            if out.finished:
                del self.requests[rid]
                self.stats.requests_finished += 1
            outputs.append(out)
        self.stats.prefix_cache_hits = self.block_manager.prefix_hits
        return outputs

    def _output(self, state: RequestState) -> RequestOutput:
        comps = [CompletionOutput(
            index=s.index, text=s.text, token_ids=list(s.output_token_ids),
            cumulative_logprob=s.cumulative_logprob,
            logprobs=list(s.logprobs) if s.params.logprobs is not None else None,
            finish_reason=s.finish_reason, stop_reason=s.stop_reason) for s in state.seqs]
        finished = all(s.finish_reason is not None for s in state.seqs)
        first = [s.first_token_time for s in state.seqs if s.first_token_time is not None]
        metrics = {"arrival_time": state.arrival}
        if first:
            metrics["first_token_time"] = min(first)
        return RequestOutput(state.request_id, state.prompt, list(state.prompt_token_ids),
                             comps, finished, metrics,
                             num_cached_tokens=max(s.num_cached_tokens for s in state.seqs))

    def close(self) -> None:
        self.runner.close()
        if self._own_device:
            self.device.close()
