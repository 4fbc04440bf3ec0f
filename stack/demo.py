"""The README's first command: one chat turn with SmolLM2-135M-Instruct on the emulated NPU.

The answer streams as the engine produces it; then the host's tokens per second and the
NPU's own figures (cycles, and what they mean in time at the spec's clock) are printed.
Every matmul, norm and attention runs as NPU instructions on the functional model of the
`board` spec, through the driver and firmware.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from stack.llm import SamplingParams
from stack.llm.engine import EngineConfig, LLMEngine
from stack.llm.llm import chat_prompt

QUESTION = "What is the capital of France? Answer in one sentence."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.demo", description=__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--spec", default="board")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("question", nargs="?", default=QUESTION)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    print(f"loading {args.model} onto the emulated NPU (spec {args.spec}) ...", flush=True)
    t0 = time.perf_counter()
    engine = LLMEngine(args.model, EngineConfig(spec=args.spec, max_model_len=512,
                                                max_num_seqs=1))
    print(f"ready in {time.perf_counter() - t0:.1f} s\n")
    _, ids = chat_prompt(engine.tokenizer, [{"role": "user", "content": args.question}])
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    print(f"user: {args.question}\nassistant: ", end="", flush=True)

    engine.add_request("demo", {"prompt_token_ids": ids}, params)
    shown, first, num_tokens = "", None, 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        for out in engine.step():
            text = out.outputs[0].text
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown, num_tokens = text, len(out.outputs[0].token_ids)
            first = first or time.perf_counter()
    end = time.perf_counter()
    engine.close()

    runner, clock_hz = engine.runner, engine.spec.npu.clock_mhz * 1e6
    decode_s = end - first if first and num_tokens > 1 else float("nan")
    npu_s = runner.cycles / clock_hz
    print("\n")
    print(f"prompt {len(ids)} tokens, answer {num_tokens} tokens")
    print(f"host: {num_tokens / (end - start):.2f} tokens/s overall, "
          f"{(num_tokens - 1) / decode_s:.2f} tokens/s decoding, "
          f"first token after {first - start:.2f} s")
    print("      (the first run of each step shape is scheduled instruction by instruction and "
          "recorded; later runs of it replay the recording)")
    print(f"NPU ({engine.spec.name}, {engine.spec.npu.num_pes} PEs at "
          f"{engine.spec.npu.clock_mhz} MHz): {runner.cycles:,} cycles in {runner.steps} steps "
          f"= {npu_s * 1e3:.2f} ms of device time, "
          f"{num_tokens / npu_s:,.0f} tokens/s at the spec's clock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
