"""Tiny random Llama models and a byte tokenizer for engine and server tests."""

from __future__ import annotations

import torch


def tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1,
               eos_token_id=2, initializer_range=0.25, attn_implementation="eager")
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16).eval()
    return model




def hf_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    """n greedy tokens from transformers, never stopping at (nor suppressing) EOS."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer():
    """A byte-level tokenizer: ids 0-255 are bytes, then <s>, </s>, <|im_start|>, <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny(folder, seed: int = 0):
    """A tiny Llama with a byte tokenizer saved as a Hugging Face folder."""
    tok = tiny_tokenizer()
    model = tiny_llama(seed, vocab_size=264, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, max_position_embeddings=512)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok
