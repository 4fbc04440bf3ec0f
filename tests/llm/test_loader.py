import numpy as np
import pytest
import torch
from tiny_models import tiny_llama

from stack.llm.loader import _unpermute, load_model, resolve


def test_unpermute_inverts_the_gguf_converter_permutation():
    # llama.cpp's converter interleaves the two rotary halves of each head's rows
    n_head, hd, cols = 3, 8, 5
    w = np.arange(n_head * hd * cols, dtype=np.float32).reshape(n_head * hd, cols)
    permuted = np.empty_like(w)
    for h in range(n_head):
        rows = w[h * hd:(h + 1) * hd]
        first, second = rows[:hd // 2], rows[hd // 2:]
        inter = np.empty_like(rows)
        inter[0::2], inter[1::2] = first, second
        permuted[h * hd:(h + 1) * hd] = inter
    np.testing.assert_array_equal(_unpermute(permuted, n_head), w)


def test_resolve_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown model"):
        resolve("definitely-not-a-model")
    with pytest.raises(FileNotFoundError, match="neither config.json"):
        resolve(str(tmp_path))


def test_folder_round_trip(tmp_path):
    model = tiny_llama(seed=3, tie_word_embeddings=True)
    model.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.tokenizer is None
    assert lm.config.num_kv_heads == 2 and lm.config.head_dim == 16
    ref = model.model.layers[1].mlp.down_proj.weight.detach().float().numpy()
    np.testing.assert_array_equal(lm.weights["model.layers.1.mlp.down_proj.weight"], ref)
    emb = model.model.embed_tokens.weight.detach().float().numpy()
    np.testing.assert_array_equal(lm.weights["lm_head.weight"], emb)
    assert torch.is_tensor(model.model.embed_tokens.weight)
