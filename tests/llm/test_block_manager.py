import pytest

from stack.llm.block_manager import NULL_BLOCK, BlockManager
from stack.llm.sampling_params import SamplingParams
from stack.llm.sequence import Sequence


def seq(i, tokens):
    return Sequence(i, str(i), 0, list(tokens), SamplingParams())


def test_allocate_grow_free():
    bm = BlockManager(9, 4)
    s = seq(0, range(10))
    assert bm.allocate_cached_prefix(s) == 0
    assert bm.allocate_slots(s, 10)
    assert len(s.block_table) == 3 and NULL_BLOCK not in s.block_table
    assert bm.num_free_blocks == 5
    s.num_computed_tokens = 10
    assert bm.blocks_needed(s, 2) == 0 and bm.blocks_needed(s, 3) == 1
    assert bm.slot(s, 5) == s.block_table[1] * 4 + 1
    bm.free(s)
    assert bm.num_free_blocks == 8 and bm.usage == 0.0


def test_out_of_blocks_returns_false():
    bm = BlockManager(3, 4)
    s = seq(0, range(12))
    bm.allocate_cached_prefix(s)
    assert not bm.allocate_slots(s, 12)
    assert s.block_table == [] and bm.num_free_blocks == 2


def test_prefix_cache_shares_full_blocks_and_leaves_last_token():
    bm = BlockManager(16, 4)
    a = seq(0, range(10))
    bm.allocate_cached_prefix(a)
    bm.allocate_slots(a, 10)
    a.num_computed_tokens = 10
    bm.commit_computed(a)  # two full blocks hashed
    b = seq(1, list(range(8)) + [99, 98, 97])
    assert bm.allocate_cached_prefix(b) == 8
    assert b.block_table == a.block_table[:2]
    assert bm.ref_count[a.block_table[0]] == 2
    # a prompt that is exactly the cached blocks still computes its last token
    c = seq(2, range(8))
    assert bm.allocate_cached_prefix(c) == 4
    # a different first block shares nothing
    d = seq(3, [7] + list(range(1, 10)))
    assert bm.allocate_cached_prefix(d) == 0


def test_freed_cached_blocks_survive_until_evicted():
    bm = BlockManager(4, 2)  # 3 usable blocks
    a = seq(0, [1, 2, 3, 4, 5])
    bm.allocate_cached_prefix(a)
    bm.allocate_slots(a, 5)
    a.num_computed_tokens = 5
    bm.commit_computed(a)
    bm.free(a)
    assert bm.num_free_blocks == 3
    b = seq(1, [1, 2, 3, 4, 9])
    assert bm.allocate_cached_prefix(b) == 4
    bm.free(b)
    # a long unrelated sequence evicts the cached blocks
    c = seq(2, [8] * 6)
    bm.allocate_cached_prefix(c)
    assert bm.allocate_slots(c, 6)
    d = seq(3, [1, 2, 3, 4, 9])
    assert bm.allocate_cached_prefix(d) == 0


def test_invalid_sizes():
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(1, 4)
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(4, 0)
