"""Iteration-level (continuous) batching under a token budget.

Each step the scheduler decides, for every running sequence and then for waiting ones,
how many of its uncomputed tokens to feed the model: one for a decoding sequence, up to
`max_chunk` for a prompt (chunked prefill), all within `max_num_batched_tokens`. New
requests join the batch at any step and finished ones leave it at once. When the KV cache
has no block for a running sequence, the most recently arrived running sequence is
preempted: its blocks are freed and it goes back to the head of the waiting queue, to be
recomputed from its prompt and the tokens it has generated so far.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from stack.llm.block_manager import BlockManager
from stack.llm.sequence import SeqStatus, Sequence

__all__ = ["Scheduler", "ScheduledSeq", "SchedulerOutput"]

log = logging.getLogger(__name__)


@dataclass
class ScheduledSeq:
    seq: Sequence
    start: int  # position of the first token fed this step
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this step reaches the sequence's last token, so a token is sampled."""
        return self.start + self.num_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, block_manager: BlockManager, *, max_num_seqs: int,
                 max_num_batched_tokens: int, max_chunk: int):
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {max_num_batched_tokens}")
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_chunk = max(1, min(max_chunk, max_num_batched_tokens))
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.bm.free(seq)

    def finish(self, seq: Sequence) -> None:
        seq.status = SeqStatus.FINISHED
        if seq in self.running:
            self.running.remove(seq)
        self.bm.free(seq)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.bm.free(seq)
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        out.preempted.append(seq)
        log.debug("preempted sequence %d (%d tokens)", seq.seq_id, seq.num_tokens)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        # Running sequences first, oldest first; preempt from the newest end.
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed, budget, self.max_chunk)
            while not self.bm.allocate_slots(seq, n):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                break
            out.scheduled.append(ScheduledSeq(seq, seq.num_computed_tokens, n))
            budget -= n
            i += 1
        # Then admit waiting sequences while there is room, unless something was preempted.
        while (self.waiting and budget > 0 and not out.preempted
               and len(self.running) < self.max_num_seqs):
            seq = self.waiting[0]
            if not seq.block_table:
                seq.num_cached_tokens = self.bm.allocate_cached_prefix(seq)
            n = min(seq.num_uncomputed, budget, self.max_chunk)
            if not self.bm.allocate_slots(seq, n):
                self.bm.free(seq)
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, seq.num_computed_tokens, n))
            budget -= n
        return out
