from stack.llm.block_manager import BlockManager
from stack.llm.sampling_params import SamplingParams
from stack.llm.scheduler import Scheduler
from stack.llm.sequence import SeqStatus, Sequence


def seq(i, n):
    return Sequence(i, str(i), 0, list(range(1, n + 1)), SamplingParams())


def advance(sched, out, token=7):
    """What the engine does after a step: count computed tokens, append sampled ones."""
    for s in out.scheduled:
        s.seq.num_computed_tokens += s.num_tokens
        if s.samples:
            s.seq.output_token_ids.append(token)


def test_chunked_prefill_under_token_budget():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=4, max_num_batched_tokens=16,
                      max_chunk=8)
    a, b = seq(0, 20), seq(1, 5)
    sched.add(a)
    sched.add(b)
    out = sched.schedule()
    assert [(s.seq.seq_id, s.start, s.num_tokens) for s in out.scheduled] == [(0, 0, 8), (1, 0, 5)]
    assert out.num_tokens <= 16 and not out.scheduled[0].samples and out.scheduled[1].samples
    advance(sched, out)
    out = sched.schedule()
    # a continues its prompt, b decodes one token: both in the same step
    assert [(s.seq.seq_id, s.start, s.num_tokens) for s in out.scheduled] == [(0, 8, 8), (1, 5, 1)]


def test_max_num_seqs_limits_running():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=2, max_num_batched_tokens=64,
                      max_chunk=64)
    for i in range(3):
        sched.add(seq(i, 3))
    out = sched.schedule()
    assert len(out.scheduled) == 2 and len(sched.waiting) == 1


def test_preemption_frees_newest_and_requeues_it_first():
    bm = BlockManager(5, 2)  # 4 usable blocks
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64, max_chunk=64)
    a, b = seq(0, 4), seq(1, 4)
    sched.add(a)
    sched.add(b)
    advance(sched, sched.schedule())  # both prefilled: 2 blocks each, 5 tokens each now
    out = sched.schedule()  # each needs a third block: b is preempted
    assert out.preempted == [b]
    assert b.status is SeqStatus.WAITING and b.block_table == [] and b.num_computed_tokens == 0
    assert sched.waiting[0] is b and [s.seq for s in out.scheduled] == [a]
    advance(sched, out)
    sched.finish(a)
    out = sched.schedule()
    # b is recomputed from its prompt and its generated token
    assert out.scheduled[0].seq is b and out.scheduled[0].num_tokens == 5
