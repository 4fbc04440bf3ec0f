"""Paged KV-cache blocks: allocation, reference counts and prefix caching.

The cache holds `num_blocks` blocks of `block_size` token slots per layer in device DRAM;
this module only decides which block ids a sequence owns. Block 0 is reserved as the null
block: padded rows of a batch write their keys and values there, so it is never handed out.

Prefix caching: once a block is full, it gets a hash chained from its predecessor's hash
and its own token ids, so equal prefixes give equal hashes. A later sequence whose leading
full blocks hash the same reuses them (reference counted) instead of recomputing them. A
freed hashed block keeps its contents and stays findable until it is evicted, least
recently freed first, when a fresh block is needed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from stack.llm.sequence import Sequence

__all__ = ["BlockManager", "NULL_BLOCK"]

log = logging.getLogger(__name__)

NULL_BLOCK = 0


def chain_hash(parent: int | None, tokens: list[int] | tuple[int, ...]) -> int:
    return hash((parent, tuple(tokens)))


class BlockManager:
    """Hands out KV-cache blocks to sequences."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True):
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be at least 2 (one is the null block), "
                             f"got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self._free: list[int] = list(range(num_blocks - 1, NULL_BLOCK, -1))  # pop() -> low ids
        self._evictable: OrderedDict[int, None] = OrderedDict()  # hashed, ref 0, LRU first
        self._cached: dict[int, int] = {}  # hash -> block id
        self.prefix_queries = 0
        self.prefix_hits = 0

    # capacity

    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of usable blocks held by running sequences."""
        usable = self.num_blocks - 1
        return (usable - self.num_free_blocks) / usable

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = seq.num_computed_tokens + num_new_tokens
        need = -(-total // self.block_size)
        return max(0, need - len(seq.block_table))

    # prefix cache

    def _full_block_hashes(self, seq: Sequence) -> list[int]:
        """Hashes of every full block of the sequence's tokens, extending `seq.block_hashes`."""
        tokens = seq.all_token_ids
        bs = self.block_size
        hashes = seq.block_hashes
        for i in range(len(hashes), len(tokens) // bs):
            hashes.append(chain_hash(hashes[-1] if hashes else None, tokens[i * bs:(i + 1) * bs]))
        return hashes

    def allocate_cached_prefix(self, seq: Sequence) -> int:
        """Give a sequence with no blocks the cached blocks of its longest cached prefix.

        At least the last token is left to compute, since its logits are needed. Returns the
        number of tokens found in the cache and sets `seq.num_computed_tokens` to it.
        """
        assert not seq.block_table, "sequence already holds blocks"
        seq.num_computed_tokens = 0
        if not self.enable_prefix_caching:
            return 0
        hashes = self._full_block_hashes(seq)
        max_blocks = (seq.num_tokens - 1) // self.block_size
        hit: list[int] = []
        for h in hashes[:max_blocks]:
            block = self._cached.get(h)
            if block is None:
                break
            hit.append(block)
        self.prefix_queries += seq.num_tokens
        self.prefix_hits += len(hit) * self.block_size
        for block in hit:
            self._take(block)
        seq.block_table = hit
        seq.num_hashed_blocks = len(hit)
        seq.num_computed_tokens = len(hit) * self.block_size
        return seq.num_computed_tokens

    def _take(self, block: int) -> None:
        if self.ref_count[block] == 0:
            self._evictable.pop(block, None)
        self.ref_count[block] += 1

    def _fresh_block(self) -> int:
        if self._free:
            block = self._free.pop()
        else:
            block, _ = self._evictable.popitem(last=False)
            h = self.block_hash[block]
            if h is not None and self._cached.get(h) == block:
                del self._cached[h]
            self.block_hash[block] = None
        self.ref_count[block] = 1
        return block

    # allocation

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq, num_new_tokens) <= self.num_free_blocks

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Grow the block table to hold `num_new_tokens` more tokens; False if out of blocks."""
        need = self.blocks_needed(seq, num_new_tokens)
        if need > self.num_free_blocks:
            return False
        for _ in range(need):
            seq.block_table.append(self._fresh_block())
        return True

    def slot(self, seq: Sequence, position: int) -> int:
        """Cache slot (block * block_size + offset) of token `position` of the sequence."""
        return seq.block_table[position // self.block_size] * self.block_size + (
            position % self.block_size)

    def commit_computed(self, seq: Sequence) -> None:
        """Register the sequence's newly completed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        full = seq.num_computed_tokens // self.block_size
        if full <= seq.num_hashed_blocks:
            return
        hashes = self._full_block_hashes(seq)
        for i in range(seq.num_hashed_blocks, min(full, len(hashes))):
            block = seq.block_table[i]
            h = hashes[i]
            if h not in self._cached:
                self._cached[h] = block
                self.block_hash[block] = h
        seq.num_hashed_blocks = full

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; hashed blocks stay cached until evicted."""
        for block in reversed(seq.block_table):
            self.ref_count[block] -= 1
            assert self.ref_count[block] >= 0, f"block {block} freed twice"
            if self.ref_count[block] == 0:
                if self.block_hash[block] is not None:
                    self._evictable[block] = None
                else:
                    self._free.append(block)
        seq.block_table = []
        seq.num_hashed_blocks = 0
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        for block in list(self._evictable):
            self.block_hash[block] = None
            self._free.append(block)
        self._evictable.clear()
        self._cached = {h: b for h, b in self._cached.items() if self.ref_count[b] > 0}
