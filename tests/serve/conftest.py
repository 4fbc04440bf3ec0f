"""A real server process on 127.0.0.1 serving a tiny Llama from a Hugging Face folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "llm"))

from tiny_models import save_tiny  # noqa: E402

API_KEY = "sk-test-npu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny(folder)
    return folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("npu-cache")


@pytest.fixture(scope="session")
def server(model_dir, cache_dir, tmp_path_factory):
    port = _free_port()
    env = dict(os.environ, NPU_EMU_CACHE=str(cache_dir), PYTHONPATH=str(ROOT),
               NPU_DEVICE_DIR=str(tmp_path_factory.mktemp("no-devices")))
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack.serve", str(model_dir), "--port", str(port), "--spec",
         "small", "--api-key", API_KEY, "--max-num-seqs", "16", "--max-model-len", "256",
         "--block-size", "8", "--served-model-name", "tiny"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"server did not start:\n{log.read()[-3000:]}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
