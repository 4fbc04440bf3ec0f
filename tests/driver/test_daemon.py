"""`npu daemon` and its clients in separate processes; `npu smi --json`."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from npu_programs import TILE, add_int32, barrier_consumer, barrier_producer

import driver

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}

# A client process: runs the add program `n` times on device `path`, checks it with numpy.
CLIENT = textwrap.dedent("""
    import sys, numpy as np, driver
    from npu_programs import add_int32
    path, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with driver.open(path) as dev:
        ctx = dev.context(memory=1 << 20)
        prog = ctx.load_program(add_int32())
        rng = np.random.default_rng(seed)
        for _ in range(n):
            x = rng.integers(-1000, 1000, (4, 16), dtype=np.int32)
            y = rng.integers(-1000, 1000, (4, 16), dtype=np.int32)
            bx, by, out = ctx.upload(x), ctx.upload(y), ctx.alloc(256)
            ctx.run(prog, [bx, by, out])
            assert (out.numpy(np.int32, (4, 16)) == x + y).all()
            for b in (bx, by, out):
                b.free()
    print("ok", flush=True)
""")

# A client that takes memory and then waits to be killed.
HOLDER = textwrap.dedent("""
    import sys, time, driver
    dev = driver.open(sys.argv[1])
    ctx = dev.context(memory=4 << 20)
    ctx.alloc(1 << 20)
    print("ready", flush=True)
    time.sleep(600)
""")


def _npu(*args, **kw):
    return subprocess.run([sys.executable, "-m", "stack.cli", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack.cli", "daemon", "--devices", "2", "--dir", str(folder)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while len(driver.list_devices(folder)) < 2:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the daemon did not create its device files"
        time.sleep(0.05)
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _stats(path):
    with driver.open(path) as dev:
        return dev.stats()


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_two_processes_share_a_device(daemon):
    folder, _ = daemon
    path = str(driver.list_devices(folder)[0])
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, path, str(seed), "5"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    with driver.open(path) as dev:  # and this process too, at the same time
        ctx = dev.context(memory=1 << 20)
        x = np.arange(64, dtype=np.int32).reshape(4, 16)
        bx, out = ctx.upload(x), ctx.alloc(256)
        ctx.run(ctx.load_program(add_int32()), [bx, bx, out])
        np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), 2 * x)
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0 and stdout.strip() == "ok", stderr


def test_a_multi_pe_job_through_the_daemon(daemon):
    folder, _ = daemon
    with driver.open(driver.list_devices(folder)[0]) as dev, dev.context(1 << 20) as ctx:
        x = np.arange(64, dtype=np.int32).reshape(4, 16) * 7
        y = np.full((4, 16), 3, np.int32)
        bx, by, t, out = ctx.upload(x), ctx.upload(y), ctx.alloc(TILE), ctx.alloc(TILE)
        ctx.run_multi({0: (ctx.load_program(barrier_producer()), [bx, t]),
                       1: (ctx.load_program(barrier_consumer()), [t, by, out])})
        np.testing.assert_array_equal(out.numpy(np.int32, (4, 16)), 2 * x - y)


def test_a_killed_client_is_cleaned_up(daemon):
    folder, _ = daemon
    path = driver.list_devices(folder)[1]
    before = _stats(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        during = _stats(path)
        assert len(during["contexts"]) == len(before["contexts"]) + 1
        assert during["dram_used"] == before["dram_used"] + (4 << 20)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _wait_for(lambda: _stats(path)["dram_used"] == before["dram_used"])
    assert len(_stats(path)["contexts"]) == len(before["contexts"])
    # ... and the device still serves.
    with driver.open(path) as dev, dev.context(memory=1 << 20) as ctx:
        x = np.ones((4, 16), np.int32)
        bx, out = ctx.upload(x), ctx.alloc(256)
        ctx.run(ctx.load_program(add_int32()), [bx, bx, out])
        assert (out.numpy(np.int32, (4, 16)) == 2).all()


def test_smi_json_reports_what_the_test_set_up(daemon, capsys):
    folder, _ = daemon
    path = driver.list_devices(folder)[1]
    with driver.open(path) as dev:
        ctx = dev.context(memory=2 << 20)
        with pytest.raises(driver.CommandError):
            ctx.command(0x70).wait()
        assert dev.caps.num_pes == 2
        out = _npu("smi", "--json", "--dir", str(folder))
        assert out.returncode == 0, out.stderr
        rows = {r["device"]: r for r in json.loads(out.stdout)["devices"]}
        assert set(rows) == {"npu0", "npu1"}
        r = rows["npu1"]
        assert (r["spec"], r["num_pes"], r["contexts"]) == ("small", 2, 1)
        assert r["errors"] >= 1
        assert r["memory_used"] >= 2 << 20 and r["memory_total"] == dev.caps.dram_bytes
        assert 0.0 <= r["busy_percent"] <= 100.0
        from stack.cli import main

        assert main(["smi", "--dir", str(folder)]) == 0
        table = capsys.readouterr().out
        assert "npu1" in table and "small" in table


def test_sigterm_shuts_down_and_removes_the_files(daemon):
    folder, proc = daemon
    assert [p.name for p in driver.list_devices(folder)] == ["npu0", "npu1"]
    shm = list(Path("/dev/shm").glob(f"npu-{os.getuid()}-{proc.pid}-*"))
    assert len(shm) == 4  # DRAM and BAR mirror of each device
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert driver.list_devices(folder) == []
    assert not list(Path("/dev/shm").glob(f"npu-{os.getuid()}-{proc.pid}-*"))
