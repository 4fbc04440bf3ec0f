"""Command line of the server: `npu serve MODEL ...` or `python -m stack.serve MODEL ...`."""

from __future__ import annotations

import argparse
import logging
import os

__all__ = ["add_arguments", "serve", "main"]

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="short name, HF folder, cached hub id or .gguf file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("NPU_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 (default $NPU_API_KEY)")
    p.add_argument("--served-model-name", help="model id clients use (default MODEL)")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--kv-cache-memory", type=int, help="bytes of device DRAM for the KV cache")
    p.add_argument("--devices", default="npu:0")
    p.add_argument("--spec", help="hardware spec of the in-process device (default board)")
    p.add_argument("--seed", type=int, default=0)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from stack.llm.async_engine import AsyncLLMEngine
    from stack.llm.engine import EngineConfig, LLMEngine
    from stack.serve.app import build_app

    config = EngineConfig(devices=args.devices, max_model_len=args.max_model_len,
                          max_num_seqs=args.max_num_seqs,
                          max_num_batched_tokens=args.max_num_batched_tokens,
                          block_size=args.block_size, kv_cache_memory=args.kv_cache_memory,
                          spec=args.spec, seed=args.seed)
    engine = LLMEngine(args.model, config)
    aengine = AsyncLLMEngine(engine)
    app = build_app(aengine, args.served_model_name or args.model, api_key=args.api_key,
                    max_model_len=engine.max_model_len)
    log.info("serving %s on http://%s:%d", args.model, args.host, args.port)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        aengine.shutdown()
        engine.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="npu serve", description=__doc__)
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args)
