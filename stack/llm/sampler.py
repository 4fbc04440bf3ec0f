"""Pick the next token of each sequence from its logits, on the host.

Sampling is not part of the model's matmuls, norms or attention, so it runs in numpy:
penalties, then temperature, top-k, top-p and min-p filtering, then a draw from the
sequence's own seeded generator (or argmax when greedy). Reported logprobs are those of the
model's raw distribution, before penalties and filtering, as vLLM reports by default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from stack.llm.outputs import Logprob
from stack.llm.sequence import Sequence

__all__ = ["sample", "log_softmax"]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _penalize(logits: np.ndarray, seq: Sequence) -> np.ndarray:
    p = seq.params
    if p.repetition_penalty != 1.0:
        seen = np.unique(np.asarray(seq.all_token_ids, dtype=np.int64))
        vals = logits[seen]
        logits[seen] = np.where(vals > 0, vals / p.repetition_penalty,
                                vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.output_token_ids:
        counts = np.bincount(np.asarray(seq.output_token_ids, dtype=np.int64),
                             minlength=logits.shape[0])[: logits.shape[0]]
        logits -= p.frequency_penalty * counts
        logits -= p.presence_penalty * (counts > 0)
    return logits


def _filter(logits: np.ndarray, seq: Sequence) -> np.ndarray:
    p = seq.params
    logits = logits / p.temperature
    if p.top_k != -1 and p.top_k < logits.shape[0]:
        kth = np.partition(logits, -p.top_k)[-p.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    if p.top_p < 1.0 or p.min_p > 0.0:
        probs = np.exp(log_softmax(logits))
        if p.min_p > 0.0:
            logits = np.where(probs < p.min_p * probs.max(), -np.inf, logits)
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            # keep the smallest prefix whose mass reaches top_p (always the first token)
            drop = order[np.searchsorted(cum, p.top_p, side="left") + 1:]
            logits = logits.copy()
            logits[drop] = -np.inf
    return logits


def sample(logits: np.ndarray, seq: Sequence, eos_token_ids: Iterable[int] = (),
           decode: Callable | None = None) -> tuple[int, dict[int, Logprob] | None, float]:
    """Next token of `seq` from its fp32 logits row; returns (token, logprobs, logprob)."""
    raw = np.asarray(logits, dtype=np.float32)
    work = _penalize(raw.astype(np.float64), seq)
    p = seq.params
    if len(seq.output_token_ids) < p.min_tokens:
        for t in [*p.stop_token_ids, *eos_token_ids]:
            if 0 <= t < work.shape[0]:
                work[t] = -np.inf
    if p.greedy:
        token = int(np.argmax(work))
    else:
        work = _filter(work, seq)
        probs = np.exp(log_softmax(work))
        token = int(seq.rng.choice(work.shape[0], p=probs / probs.sum()))
    lp = log_softmax(raw)
    logprob = float(lp[token])
    if p.logprobs is None:
        return token, None, logprob
    top = np.argsort(-lp, kind="stable")[: p.logprobs]
    ranks = {int(t): i + 1 for i, t in enumerate(top)}
    ids = [token] + [int(t) for t in top if int(t) != token]
    out = {}
    for t in ids:
        rank = ranks.get(t) or int((lp > lp[t]).sum()) + 1
        out[t] = Logprob(float(lp[t]), rank, decode([t]) if decode else None)
    return token, out, logprob
