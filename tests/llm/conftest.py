"""Shared fixtures: a tiny random Llama in bf16 and a private program cache."""

from __future__ import annotations

import pytest
from tiny_models import save_tiny, tiny_llama


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_llama()


@pytest.fixture(scope="session", autouse=True)
def _npu_cache(tmp_path_factory):
    import os

    old = os.environ.get("NPU_EMU_CACHE")
    os.environ["NPU_EMU_CACHE"] = str(tmp_path_factory.mktemp("npu-cache"))
    yield
    if old is None:
        os.environ.pop("NPU_EMU_CACHE", None)
    else:
        os.environ["NPU_EMU_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny(folder)
    return folder
