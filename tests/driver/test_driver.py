"""The driver on an in-process device: driver -> kernel -> firmware -> functional model."""

import numpy as np
import pytest
from npu_programs import (
    TILE,
    add_int32,
    barrier_consumer,
    barrier_producer,
    deadlock,
    load_from,
    no_end,
    slow,
)

import driver
from driver import CommandError, DeviceError, OutOfDeviceMemory, Program, Query, Status
from firmware import Opcode, PeEntry
from hw import spec as hwspec
from hw.generated import isa


@pytest.fixture
def dev():
    d = driver.open(local=True)
    yield d
    d.close()


def _inputs(ctx, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**30), 2**30, (4, 16), dtype=np.int32)
    y = rng.integers(-(2**30), 2**30, (4, 16), dtype=np.int32)
    return x, y, ctx.upload(x), ctx.upload(y), ctx.alloc(TILE)


def test_capabilities_come_from_the_registers(dev):
    spec = hwspec.load("small")
    caps = dev.caps
    assert caps.num_pes == spec.npu.num_pes
    assert (caps.mac_rows, caps.mac_cols) == (spec.pe.mac.rows, spec.pe.mac.cols)
    assert set(caps.dtypes) == set(spec.pe.mac.dtypes)
    assert caps.dram_bytes == spec.dram_bytes and caps.sram_bytes == spec.sram_bytes_per_pe
    assert caps.spec_hash32 == int(spec.hash[:8], 16)


def test_add_program_through_the_driver_matches_numpy(dev):
    with dev.context(memory=1 << 20) as ctx:
        x, y, bx, by, out = _inputs(ctx, 0)
        prog = ctx.load_program(add_int32())
        cpl = ctx.run(prog, [bx, by, out])
        assert cpl.status == Status.OK and cpl.cycles > 0
        np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), x + y)
        # Wrapping int32 addition is what the device computes, as numpy does.
        ctx.fence()


def test_pe_errors_raise_device_error_with_code_pe_and_pc(dev):
    with dev.context(memory=1 << 20) as ctx:
        buf = ctx.alloc(4096)
        with pytest.raises(DeviceError) as e:
            ctx.run(ctx.load_program(deadlock()), [buf])
        assert (e.value.code, e.value.name, e.value.pc) == (isa.ERR_DEADLOCK, "DEADLOCK", 0)
        assert e.value.pe in range(dev.caps.num_pes)
        overrun = Program(ctx.upload(no_end(), align=32), 1)  # bypasses LOAD_PROGRAM's check
        with pytest.raises(DeviceError) as e:
            ctx.run(overrun, [buf])
        assert e.value.name == "PC_OVERRUN"
        with pytest.raises(CommandError) as e:
            ctx.load_program(no_end())
        assert e.value.status == Status.BAD_ARGUMENT


def test_malformed_commands_fail_and_the_device_keeps_serving_another_context(dev):
    a = dev.context(memory=1 << 20)
    b = dev.context(memory=1 << 20)
    prog_b = b.load_program(add_int32())
    with pytest.raises(CommandError) as e:
        a.command(0x66).wait()
    assert e.value.status == Status.BAD_OPCODE
    with pytest.raises(CommandError) as e:  # b's program, run from a
        a.run(prog_b, [])
    assert e.value.status == Status.BAD_ADDRESS
    prog_a = a.load_program(load_from())
    with pytest.raises(CommandError) as e:
        a.run(prog_a, [a.alloc(64)], pe_mask=1 << dev.caps.num_pes)
    assert e.value.status == Status.BAD_PE_MASK
    x, y, bx, by, out = _inputs(b, 1)
    b.run(prog_b, [bx, by, out])
    np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), x + y)
    assert dev.stats()["errors"] >= 3


def test_one_context_cannot_touch_another_contexts_memory(dev):
    a = dev.context(memory=1 << 20)
    b = dev.context(memory=1 << 20)
    secret = b.upload(np.arange(64, dtype=np.uint8))
    with pytest.raises(PermissionError):
        a.read(secret.addr, 64)
    with pytest.raises(PermissionError):
        a.write(secret.addr, b"x")
    with pytest.raises(DeviceError) as e:  # a program of a reading b's buffer
        a.run(a.load_program(load_from()), [secret])
    assert e.value.name == "DRAM_RANGE"
    steal = a.load_program([
        isa.Load(base=0, sram_addr=0, n0=64, n1=1, n2=1),
        isa.SemSignal(queue=isa.QUEUES["load"], sem=0),
        isa.SemWait(queue=isa.QUEUES["store"], sem=0),
        isa.Store(base=1, sram_addr=0, n0=64, n1=1, n2=1),
        isa.End(),
    ])
    mine = a.upload(bytes(range(100, 164)))
    with pytest.raises(DeviceError) as e:  # ... or writing into it
        a.run(steal, [mine, secret])
    assert e.value.name == "DRAM_RANGE"
    np.testing.assert_array_equal(secret.numpy(np.uint8, 64), np.arange(64, dtype=np.uint8))


def test_watchdog_resets_a_hung_pe_and_the_other_pe_keeps_working(dev):
    a = dev.context(memory=1 << 20)
    b = dev.context(memory=1 << 20)
    hung = a.submit(a.load_program(slow()), [a.alloc(4096)], pe_mask=0b01, budget=2000)
    x, y, bx, by, out = _inputs(b, 2)
    b.run(b.load_program(add_int32()), [bx, by, out], pe_mask=0b10)
    with pytest.raises(DeviceError) as e:
        hung.wait()
    assert (e.value.name, e.value.pe) == ("WATCHDOG", 0)
    np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), x + y)
    assert a.query(Query.BUSY_PES) == 0


def test_allocator_statistics_and_out_of_memory(dev):
    with dev.context(memory=64 << 10) as ctx:
        bufs = [ctx.alloc(1000, align=256) for _ in range(10)]
        assert all(b.addr % 256 == 0 for b in bufs)
        stats = ctx.memory_stats()
        assert stats.used == 10_000 and stats.allocations == 10 and stats.total == 64 << 10
        with pytest.raises(OutOfDeviceMemory) as e:
            ctx.alloc(64 << 10)
        assert e.value.requested == 64 << 10
        for b in bufs:
            b.free()
        assert ctx.memory_stats().used == 0
    with pytest.raises(OutOfDeviceMemory):
        dev.context(memory=dev.caps.dram_bytes)


def test_device_reset_fails_work_in_flight_and_the_context_serves_after(dev):
    with dev.context(memory=1 << 20) as ctx:
        hung = ctx.submit(ctx.load_program(slow(64)), [ctx.alloc(4096)])
        dev.reset()
        with pytest.raises(driver.DeviceLost):
            hung.wait()
        x, y, bx, by, out = _inputs(ctx, 3)
        ctx.run(ctx.load_program(add_int32()), [bx, by, out])
        np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), x + y)


def _staged_reference(x, y):
    """2x - y as the device computes it: int32 results saturate (docs/isa.md, VECTOR)."""
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    t = np.clip(2 * x.astype(np.int64), lo, hi)
    return np.clip(t - y, lo, hi).astype(np.int32)


def test_submit_multi_runs_a_program_per_pe_and_they_meet_at_a_barrier(dev):
    with dev.context(memory=1 << 20) as ctx:
        x, y, bx, by, out = _inputs(ctx, 4)
        t = ctx.alloc(TILE)
        producer = ctx.load_program(barrier_producer())
        consumer = ctx.load_program(barrier_consumer())
        cpl = ctx.run_multi({1: (producer, [bx, t]), 0: (consumer, [t, by, out])})
        assert cpl.status == Status.OK and cpl.cycles > 0
        np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), _staged_reference(x, y))
        # One PE with a different program on each side of a plain run: both APIs coexist.
        ctx.run(ctx.load_program(add_int32()), [bx, by, out], pe_mask=0b10)
        np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), x + y)
        with pytest.raises(ValueError, match="PE must be in"):
            ctx.submit_multi({dev.caps.num_pes: (producer, [])})


def test_a_failing_pe_fails_the_multi_pe_job_and_its_partner_is_reset(dev):
    a = dev.context(memory=1 << 20)
    b = dev.context(memory=1 << 20)
    x, y, bx, by, out = _inputs(a, 5)
    t = a.alloc(TILE)
    producer = a.load_program(barrier_producer())
    consumer = a.load_program(barrier_consumer())
    foreign = b.alloc(TILE)  # the consumer's output in another context: DRAM_RANGE on PE 0
    with pytest.raises(DeviceError) as e:
        a.run_multi({1: (producer, [bx, t]), 0: (consumer, [t, by, foreign])})
    assert (e.value.name, e.value.pe) == ("DRAM_RANGE", 0)
    assert a.query(Query.BUSY_PES) == 0


def test_malformed_pe_tables_fail_while_another_context_keeps_being_served(dev):
    a = dev.context(memory=1 << 20)
    b = dev.context(memory=1 << 20)
    prog_a = a.load_program(load_from())
    args = a.upload(np.array([a.alloc(64).addr] + [0] * 7, np.uint64))
    prog_b = b.load_program(load_from())
    ok = PeEntry(prog_a.addr, prog_a.length, 0, args.addr)
    tables = {
        "program in b's window": ([ok, PeEntry(prog_b.addr, 2, 1, args.addr)],
                                  Status.BAD_ADDRESS),
        "pe out of range": ([ok, PeEntry(prog_a.addr, 2, dev.caps.num_pes, args.addr)],
                            Status.BAD_PE_MASK),
        "same pe twice": ([ok, ok], Status.BAD_ARGUMENT),
    }
    for name, (entries, status) in tables.items():
        table = a.upload(b"".join(e.pack() for e in entries))
        with pytest.raises(CommandError) as e:
            a.command(Opcode.RUN_PES, (table.addr, len(entries), 0)).wait()
        assert (e.value.status, e.value.pc) == (status, 1), name
    b_table = b.upload(b"".join(e.pack() for e in tables["same pe twice"][0]))
    with pytest.raises(CommandError) as e:  # a's table is not b's to use, nor b's a's
        a.command(Opcode.RUN_PES, (b_table.addr, 1, 0)).wait()
    assert e.value.status == Status.BAD_ADDRESS
    x, y, bx, by, out = _inputs(b, 6)
    t = b.alloc(TILE)
    b.run_multi({0: (b.load_program(barrier_producer()), [bx, t]),
                 1: (b.load_program(barrier_consumer()), [t, by, out])})
    np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), _staged_reference(x, y))
