"""The range allocator behind context windows and buffers."""

import random

import pytest

from driver.alloc import RangeAllocator
from driver.errors import OutOfDeviceMemory


def test_alignment_and_no_overlap():
    a = RangeAllocator(0x1000, 1 << 20)
    rng = random.Random(1)
    live = {}
    for _ in range(300):
        if live and rng.random() < 0.4:
            addr = rng.choice(list(live))
            assert a.free(addr) == live.pop(addr)
            continue
        n, align = rng.randrange(1, 5000), 1 << rng.randrange(0, 10)
        try:
            addr = a.alloc(n, align)
        except OutOfDeviceMemory:
            continue
        assert addr % align == 0 and 0x1000 <= addr and addr + n <= 0x1000 + (1 << 20)
        for other, m in live.items():
            assert addr + n <= other or other + m <= addr
        live[addr] = n
    stats = a.stats()
    assert stats.used == sum(live.values()) and stats.allocations == len(live)
    assert stats.used + stats.free == 1 << 20


def test_free_merges_neighbours_back_into_one_block():
    a = RangeAllocator(0, 4096)
    blocks = [a.alloc(1024, 1) for _ in range(4)]
    for addr in (blocks[1], blocks[3], blocks[0], blocks[2]):
        a.free(addr)
    assert a.stats().largest_free == 4096
    assert a.alloc(4096, 1) == 0


def test_out_of_memory_says_what_was_asked_and_what_is_free():
    a = RangeAllocator(0, 4096)
    a.alloc(3000)
    with pytest.raises(OutOfDeviceMemory) as e:
        a.alloc(2000)
    assert e.value.requested == 2000 and e.value.free == 4096 - 3000
    assert "2000 bytes" in str(e.value)


def test_owns_and_bad_frees():
    a = RangeAllocator(0, 4096)
    x = a.alloc(100, 64)
    assert a.owns(x, 100) and a.owns(x + 10, 90)
    assert not a.owns(x, 101) and not a.owns(x + 100, 1)
    with pytest.raises(ValueError, match="not the start"):
        a.free(x + 1)
    with pytest.raises(ValueError, match="power of two"):
        a.alloc(10, 3)
