"""Runs the model on the NPU: weights uploaded once, one device program per step bucket.

The runner owns a driver context on the device. At start it packs the bf16 weights into
one blob per PE (each PE's column slices, see `kernels.Plan.blob_layout`) and a shared
region (norm weights, rope tables, activation buffers), uploads them, and reserves the paged
KV cache. Each step writes the step inputs (token ids, cache slots, positions, block tables,
attention masks, which rows need logits) into the shared region, runs the bucket's program
on all PEs through the driver, and reads back the bf16 logits.

Programs are generated once per bucket: decode buckets (B sequences x 1 token, B a power
of two) and prefill buckets (1 sequence x Q tokens, Q a power of two), each for a power of
two number of KV blocks. Encoded programs are cached on disk under `$NPU_EMU_CACHE` keyed by
the spec hash, the model shape and the runner version, so a second run skips generation.

Not done on the NPU: sampling and detokenization (host), the rope cos/sin tables and the
attention masks (host-built step inputs, like block tables).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass

import ml_dtypes
import numpy as np

import gen
from hw import spec as hwspec
from hw.model import estimate
from stack.llm.blas import limit_numpy_blas_threads
from stack.llm.block_manager import NULL_BLOCK
from stack.llm.kernels import BF16_LOWEST, Plan, step_program
from stack.llm.loader import LoadedModel, cache_dir

__all__ = ["NPURunner", "StepItem", "bucket"]

log = logging.getLogger(__name__)

RUNNER_VERSION = "3"


def _generator_digest() -> str:
    """Hash of the kernel sources, so a changed generator never reuses stale programs."""
    from stack.llm import builder, kernels

    h = hashlib.sha256()
    for mod in (builder, kernels):
        h.update(open(mod.__file__, "rb").read())
    return h.hexdigest()[:16]
BF16 = ml_dtypes.bfloat16


def bucket(n: int, cap: int, floor: int = 1) -> int:
    """Smallest power of two >= n (at least `floor`), capped at `cap`."""
    b = floor
    while b < n:
        b *= 2
    return min(b, cap)


@dataclass
class StepItem:
    """One sequence's part of a step: tokens fed from position `start`, its cache slots."""

    token_ids: list[int]
    start: int
    slots: list[int]
    block_table: list[int]
    needs_logits: bool = True


def _bf16(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).astype(BF16)


class NPURunner:
    """Executes engine steps of a Llama-family model on an NPU device."""

    def __init__(self, model: LoadedModel, spec: hwspec.Spec, device, *, block_size: int,
                 num_blocks: int, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int):
        self.model, self.spec, self.device = model, spec, device
        limit_numpy_blas_threads()
        cfg = model.config
        self.cfg = cfg
        self.isa = gen.build(spec).isa
        self.block_size = block_size
        self.max_blocks = -(-max_model_len // block_size)
        self.plan = Plan(cfg, spec.npu.num_pes, block_size, num_blocks,
                         max(max_num_batched_tokens, max_num_seqs), max_num_seqs,
                         self.max_blocks, max_model_len)
        self.max_chunk = bucket(max_num_batched_tokens, max_num_batched_tokens)
        self.programs: dict[tuple[int, int, int], object] = {}
        self.cycles = 0
        self.steps = 0
        self.device_seconds = 0.0
        self._key = hashlib.sha256(json.dumps(
            [RUNNER_VERSION, _generator_digest(), spec.hash, asdict(cfg), block_size, num_blocks,
             self.plan.max_tokens, max_num_seqs, self.max_blocks, max_model_len],
            sort_keys=True).encode()).hexdigest()[:20]
        self._upload()

    # weights

    def _pack_blobs(self) -> list[np.ndarray]:
        c, p, w = self.cfg, self.plan, self.model.weights
        lay = p.blob_layout()
        hd, hg = c.head_dim, p.hg
        blobs = []
        for pe in range(p.num_pes):
            blob = np.zeros(lay["size"], np.uint8)

            def put(name, arr, dtype=BF16, blob=blob):
                data = np.ascontiguousarray(arr, dtype=np.float32).astype(dtype).view(np.uint8)
                blob[lay[name]:lay[name] + data.size] = data.ravel()

            sh = (pe if pe < p.p_h else 0) * p.ns_h
            si = (pe if pe < p.p_i else 0) * p.ns_i
            sv = (pe if pe < p.p_v else 0) * p.ns_v
            ga = pe if pe < p.p_att else 0
            put("embed", w["model.embed_tokens.weight"][:, sh:sh + p.ns_h])
            for l in range(c.num_layers):
                pre = f"model.layers.{l}."
                for i in range(p.groups_per_pe):
                    g = ga + i * p.p_att
                    parts = [w[pre + "self_attn.q_proj.weight"][g * hg * hd:(g + 1) * hg * hd],
                             w[pre + "self_attn.k_proj.weight"][g * hd:(g + 1) * hd],
                             w[pre + "self_attn.v_proj.weight"][g * hd:(g + 1) * hd]]
                    put(f"{l}.qkv{i}", np.concatenate(parts))
                    if c.attention_bias:
                        bias = np.concatenate([
                            w[pre + "self_attn.q_proj.bias"][g * hg * hd:(g + 1) * hg * hd],
                            w[pre + "self_attn.k_proj.bias"][g * hd:(g + 1) * hd],
                            w[pre + "self_attn.v_proj.bias"][g * hd:(g + 1) * hd]])
                        # bf16 values kept exactly in fp32, added before the single rounding
                        put(f"{l}.qkv_bias{i}", _bf16(bias).astype(np.float32), np.float32)
                put(f"{l}.o", w[pre + "self_attn.o_proj.weight"][sh:sh + p.ns_h])
                put(f"{l}.gate_up", np.concatenate([w[pre + "mlp.gate_proj.weight"][si:si + p.ns_i],
                                                   w[pre + "mlp.up_proj.weight"][si:si + p.ns_i]]))
                put(f"{l}.down", w[pre + "mlp.down_proj.weight"][sh:sh + p.ns_h])
            put("lm_head", w["lm_head.weight"][sv:sv + p.ns_v])
            blobs.append(blob)
        return blobs

    def _rope_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin [max_pos, head_dim] in bf16, computed as the HF rotary embedding does."""
        import torch
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        rot = self.model.rotary or LlamaRotaryEmbedding(config=self.model.hf_config)
        pos = torch.arange(self.plan.max_pos)[None]
        x = torch.zeros(1, dtype=torch.bfloat16)
        with torch.no_grad():
            cos, sin = rot(x, pos)
        return (cos[0].float().numpy(), sin[0].float().numpy())

    def _upload(self) -> None:
        t0 = time.monotonic()
        p, c, w = self.plan, self.cfg, self.model.weights
        self.shared_lay = p.shared_layout()
        blobs = self._pack_blobs()
        shared = np.zeros(self.shared_lay["size"], np.uint8)

        def put(name, arr):
            data = _bf16(arr).view(np.uint8).ravel()
            off = self.shared_lay[name]
            shared[off:off + data.size] = data

        for l in range(c.num_layers):
            put(f"{l}.in_norm", w[f"model.layers.{l}.input_layernorm.weight"])
            put(f"{l}.post_norm", w[f"model.layers.{l}.post_attention_layernorm.weight"])
        put("final_norm", w["model.norm.weight"])
        cos, sin = self._rope_tables()
        put("cos", cos)
        put("sin", sin)
        total = sum(b.size for b in blobs) + shared.size + p.kv_bytes + (len(blobs) + 8) * 4096
        # room for programs and argument tables, within what the device has
        total = min(total + (4 << 20), self.device.caps.dram_bytes - (256 << 10))
        self.ctx = self.device.context(memory=-(-total // 4096) * 4096)
        self.blob_bufs = [self.ctx.upload(b, align=256) for b in blobs]
        self.shared_buf = self.ctx.upload(shared, align=256)
        self.kv_buf = self.ctx.alloc(p.kv_bytes, align=256)
        self.kv_buf.write(np.zeros(p.kv_bytes, np.uint8))
        self.args = self._args()
        log.info("uploaded %.1f MiB of weights to %r in %.1f s",
                 (sum(b.size for b in blobs) + shared.size) / 2**20, self.device,
                 time.monotonic() - t0)

    # programs

    def _program(self, B: int, Q: int, nblk: int):
        """The bucket's loaded programs, one per PE, and its watchdog budget in cycles.

        PEs from `plan.p_att` on have no KV head: they share a program without attention.
        """
        key = (B, Q, nblk)
        entry = self.programs.get(key)
        if entry is not None:
            return entry
        n, p_att = self.plan.num_pes, self.plan.p_att
        kinds = [True] if p_att == n else [True, False]
        stem = cache_dir() / "programs" / f"{self._key}-b{B}q{Q}n{nblk}"
        paths = {att: stem.with_suffix(".bin" if att else ".noatt.bin") for att in kinds}
        side = stem.with_suffix(".cycles")
        if all(f.is_file() for f in paths.values()) and side.is_file():
            blobs = {att: f.read_bytes() for att, f in paths.items()}
            cycles = int(side.read_text())
        else:
            t0 = time.monotonic()
            ins = {att: step_program(self.plan, self.spec, self.isa, B, Q, nblk, attention=att)
                   for att in kinds}
            blobs = {att: self.isa.encode_program(i) for att, i in ins.items()}
            cycles = estimate(self.spec, {p: ins[p < p_att] for p in range(n)}).cycles
            stem.parent.mkdir(parents=True, exist_ok=True)
            files = [(paths[att], blobs[att]) for att in kinds] + [(side, str(cycles).encode())]
            for f, data in files:
                tmp = f.with_name(f.name + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(f)
            log.info("generated program B=%d Q=%d NBLK=%d: %d instructions, %d cycles, "
                     "in %.2f s", B, Q, nblk, len(ins[True]), cycles, time.monotonic() - t0)
        # The cycle model's figure is the run's own (its timing reads no data); the margin
        # covers other contexts' jobs sharing the DRAM channel.
        budget = min(max(self.spec.command.watchdog_cycles, 4 * cycles), 2**32 - 1)
        loaded = {att: self.ctx.load_program(blob) for att, blob in blobs.items()}
        entry = self.programs[key] = ([loaded[p < p_att] for p in range(n)], budget)
        return entry

    def _args(self) -> list[list[int]]:
        """Each PE's ARG registers (fixed once the buffers are uploaded)."""
        p, lay = self.plan, self.shared_lay
        c = self.cfg
        base = self.shared_buf.addr
        dummy = base + lay["dummy"]
        rows = []
        for pe in range(p.num_pes):
            att = pe < p.p_att  # a PE without a KV head runs no attention: ARG 2, 3 unread
            rows.append([
                self.blob_bufs[pe].addr,
                base,
                self.kv_buf.addr + pe * c.head_dim * 2 if att else 0,
                base + lay["attn"] + pe * p.hg * c.head_dim * 2 if att else 0,
                base + lay["h"] + pe * p.ns_h * 2 if pe < p.p_h else dummy,
                base + lay["act"] + pe * p.ns_i * 2 if pe < p.p_i else dummy,
                base + lay["logits"] + pe * p.ns_v * 2 if pe < p.p_v else dummy,
                0,
            ])
        return rows

    # steps

    def execute(self, items: list[StepItem], *, decode: bool) -> np.ndarray:
        """Run one step for `items`; returns fp32 logits [len(items), vocab].

        `decode` items feed one token each and run batched (B a power of two); otherwise
        exactly one item (a prompt chunk) runs.
        """
        bs = self.block_size
        if decode:
            B, Q = bucket(len(items), self.plan.max_seqs), 1
        else:
            if len(items) != 1:
                raise ValueError("a prefill step runs exactly one sequence")
            B, Q = 1, bucket(len(items[0].token_ids), self.plan.max_tokens, 8)
        need = max(-(-(it.start + len(it.token_ids)) // bs) for it in items)
        nblk = bucket(need, self.max_blocks)
        T, M = nblk * bs, B * Q
        ids = np.zeros(M, np.uint32)
        slots = np.full(M, NULL_BLOCK * bs, np.uint32)
        pos = np.zeros(M, np.uint32)
        tables = np.full((B, nblk), NULL_BLOCK, np.uint32)
        mask = np.full((B, Q, T), BF16_LOWEST, np.float32)
        mask[:, :, 0] = 0.0  # padded rows attend to one (null) slot: finite softmax
        rows = np.zeros(B, np.uint32)
        for s, it in enumerate(items):
            n = len(it.token_ids)
            if n > Q:
                raise ValueError(f"{n} tokens do not fit a bucket of {Q}")
            r0 = s * Q
            ids[r0:r0 + n] = it.token_ids
            slots[r0:r0 + n] = it.slots
            pos[r0:r0 + n] = np.arange(it.start, it.start + n)
            tables[s, :len(it.block_table)] = it.block_table
            for i in range(n):
                mask[s, i, :it.start + i + 1] = 0.0
            rows[s] = r0 + n - 1
        lay, buf = self.shared_lay, self.shared_buf
        buf.write(ids, lay["ids"])
        buf.write(slots, lay["slots"])
        buf.write(np.repeat(pos, self.plan.hg), lay["rope_pos"])
        buf.write(tables, lay["block_tables"])
        buf.write(mask.astype(BF16), lay["mask"])
        buf.write(rows, lay["rows"])
        progs, budget = self._program(B, Q, nblk)
        t0 = time.monotonic()
        args = self.args
        if all(p is progs[0] for p in progs):
            cpl = self.ctx.run(progs[0], pe_mask=(1 << self.plan.num_pes) - 1,
                               per_pe_args=args, timeout=600, budget=budget)
        else:
            cpl = self.ctx.run_multi({pe: (prog, args[pe]) for pe, prog in enumerate(progs)},
                                     timeout=600, budget=budget)
        self.device_seconds += time.monotonic() - t0
        self.cycles += int(getattr(cpl, "cycles", 0) or 0)
        self.steps += 1
        V = self.cfg.vocab_size
        logits = buf.numpy(BF16, (B, V), lay["logits"])
        return logits[:len(items)].astype(np.float32)

    def close(self) -> None:
        self.ctx.close()
