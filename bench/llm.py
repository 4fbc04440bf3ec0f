"""LLM serving benchmark: the NPU engine (functional model) against transformers on the CPU.

Prints, last line as name=value pairs:
- batch-1 decode tokens/s of the engine on the NPU functional model (host wall clock) and of
  transformers (bf16, eager) on the CPU, and their ratio;
- throughput of `--concurrent` requests x `--tokens` tokens through the engine vs the same
  requests run one after another with transformers, and vs transformers generating them
  as one batch (what batching gives the reference on the same host);
- cycle-model decode tokens/s: the model on `--spec` (board), and Llama-3.1-8B shapes with
  random weights (perf only, never allocated) on `datacenter`, from `hw.model.estimate`.

    python bench/llm.py                      # SmolLM2-135M, the task's full sizes (slow)
    python bench/llm.py --concurrent 8 --tokens 16 --decode-tokens 8   # quicker
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import gen  # noqa: E402
from hw import spec as hwspec  # noqa: E402
from hw.model import estimate  # noqa: E402
from stack.llm import LLM, SamplingParams  # noqa: E402
from stack.llm.kernels import Plan, step_program  # noqa: E402
from stack.llm.loader import ModelConfig, to_transformers  # noqa: E402

LLAMA_31_8B = ModelConfig("LlamaForCausalLM", hidden_size=4096, num_layers=32, num_heads=32,
                          num_kv_heads=8, head_dim=128, intermediate_size=14336,
                          vocab_size=128256, rms_norm_eps=1e-5, max_position_embeddings=131072)


def reference_model(llm: LLM):
    return to_transformers(llm.llm_engine.model)


def hf_decode_rate(model, ids: list[int], n: int) -> float:
    """Decode tokens/s of transformers: (time for n tokens - time for 1) / (n - 1)."""
    def timed(k):
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(torch.tensor([ids]), max_new_tokens=k, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
        return time.perf_counter() - t
    timed(2)
    return (n - 1) / (timed(n) - timed(1))


def npu_decode_rate(llm: LLM, ids: list[int], n: int) -> tuple[float, float]:
    """(tokens/s on the host clock, device cycles per decode step) for batch 1, in steady
    state: a first run of the same request generates the programs and records the first
    run of each bucket it meets (one-time costs per process), as transformers is warmed."""
    runner = llm.llm_engine.runner
    p = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    llm.generate({"prompt_token_ids": ids}, p, use_tqdm=False)
    p = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    t0, s0, c0 = time.perf_counter(), runner.steps, runner.cycles
    llm.generate({"prompt_token_ids": ids}, p, use_tqdm=False)
    t1, s1, c1 = time.perf_counter(), runner.steps, runner.cycles
    p = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    llm.generate({"prompt_token_ids": ids}, p, use_tqdm=False)
    t2, s2, c2 = time.perf_counter(), runner.steps, runner.cycles
    decode_time = (t2 - t1) - (t1 - t0)
    decode_cycles = (c2 - c1) - (c1 - c0)
    return (n - 1) / decode_time, decode_cycles / max(1, (s2 - s1) - (s1 - s0))


def throughput(llm: LLM, model, prompts: list[list[int]],
               tokens: int) -> tuple[float, float, float]:
    """Tokens/s of the engine, of transformers one request after another, and of
    transformers generating all requests as one batch (the prompts share a length).

    The engine's figure includes the first, recorded run of each bucket it meets (a few
    per workload, each run once per process)."""
    p = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": x} for x in prompts], p, use_tqdm=False)
    npu = sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t)

    def hf_rate(batches):
        t = time.perf_counter()
        for batch in batches:
            with torch.no_grad():
                model.generate(torch.tensor(batch), max_new_tokens=tokens, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
        return len(prompts) * tokens / (time.perf_counter() - t)
    return npu, hf_rate([[x] for x in prompts]), hf_rate([prompts])


def cycle_model_rate(cfg: ModelConfig, spec: hwspec.Spec, batch: int, context: int,
                     block_size: int = 16) -> float:
    """Decode tokens/s of `batch` sequences at `context` tokens, from the cycle model only.

    The layer program is estimated once and counted `num_layers` times (all layers are the
    same program at other offsets); embedding and LM head are estimated once.
    """
    nblk = -(-context // block_size)
    plan = Plan(cfg, spec.npu.num_pes, block_size, batch * nblk + 1, batch, batch, nblk,
                context)
    isa = gen.build(spec).isa
    layer = {att: step_program(plan, spec, isa, batch, 1, nblk, layers=range(1), embed=False,
                               head=False, attention=att) for att in (True, False)}
    ends = step_program(plan, spec, isa, batch, 1, nblk, layers=range(0))
    pes = range(spec.npu.num_pes)
    # as the runner does: PEs without a KV head of their own skip attention
    cycles = (estimate(spec, {p: layer[p < plan.p_att] for p in pes}).cycles * cfg.num_layers
              + estimate(spec, {p: ends for p in pes}).cycles)
    return batch * spec.npu.clock_mhz * 1e6 / cycles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--spec", default="board")
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--concurrent", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    torch.manual_seed(0)
    spec = hwspec.load(args.spec)
    ctx = args.prompt_len + max(args.tokens, args.decode_tokens)
    llm = LLM(args.model, spec=spec, max_model_len=max(256, ctx + 16),
              max_num_seqs=args.concurrent, enable_prefix_caching=False)
    cfg = llm.llm_engine.model.config
    model = reference_model(llm)
    vocab = cfg.vocab_size
    gen_ids = torch.Generator().manual_seed(1)
    prompts = [torch.randint(100, vocab, (args.prompt_len,), generator=gen_ids).tolist()
               for _ in range(args.concurrent)]
    npu_rate, step_cycles = npu_decode_rate(llm, prompts[0], args.decode_tokens)
    hf_rate = hf_decode_rate(model, prompts[0], args.decode_tokens)
    print(f"batch-1 decode: NPU model {npu_rate:.3f} tok/s ({step_cycles:.0f} cycles/step), "
          f"transformers CPU {hf_rate:.2f} tok/s")
    npu_tp, hf_tp, hf_batch_tp = throughput(llm, model, prompts, args.tokens)
    print(f"{args.concurrent} x {args.tokens} tokens: engine {npu_tp:.3f} tok/s, "
          f"sequential transformers {hf_tp:.2f} tok/s, batched transformers "
          f"{hf_batch_tp:.2f} tok/s")
    board_1 = cycle_model_rate(cfg, spec, 1, ctx)
    board_32 = cycle_model_rate(cfg, spec, 32, ctx)
    dc = hwspec.load("datacenter")
    llama_1 = cycle_model_rate(LLAMA_31_8B, dc, 1, 1024)
    llama_32 = cycle_model_rate(LLAMA_31_8B, dc, 32, 1024)
    print(f"cycle model: {cfg.num_layers}-layer model on {spec.name}: {board_1:.1f} tok/s "
          f"(batch 1), {board_32:.1f} tok/s (batch 32); Llama-3.1-8B on datacenter: "
          f"{llama_1:.1f} tok/s (batch 1), {llama_32:.1f} tok/s (batch 32)")
    llm.close()
    print(f"npu_decode_tok_s={npu_rate:.4f} cpu_decode_tok_s={hf_rate:.3f} "
          f"npu_vs_cpu={npu_rate / hf_rate:.4f} engine_tok_s={npu_tp:.4f} "
          f"sequential_cpu_tok_s={hf_tp:.3f} engine_vs_cpu={npu_tp / hf_tp:.4f} "
          f"batched_cpu_tok_s={hf_batch_tp:.3f} engine_vs_batched_cpu={npu_tp / hf_batch_tp:.4f} "
          f"cycle_{spec.name}_tok_s={board_1:.2f} cycle_{spec.name}_b32_tok_s={board_32:.2f} "
          f"cycle_llama8b_datacenter_tok_s={llama_1:.2f} "
          f"cycle_llama8b_datacenter_b32_tok_s={llama_32:.2f}")


if __name__ == "__main__":
    main()
