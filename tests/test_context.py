"""tinyqwen.context: KV cache, masks and RoPE scaling (chapter 10)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from transformers import DynamicCache, Qwen3Config
from transformers.masking_utils import (
    and_masks,
    causal_mask_function,
    find_packed_sequence_indices,
    packed_sequence_mask_function,
    sliding_window_causal_mask_function,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tinyqwen.attention import GroupedQueryAttention
from tinyqwen.context import (
    KVCache,
    causal_mask,
    document_ids,
    document_mask,
    document_positions,
    kv_cache_bytes,
    linear_scaled_inv_freq,
    ntk_scaled_inv_freq,
    sliding_window_mask,
    yarn_inv_freq,
)
from tinyqwen.norm import RMSNorm
from tinyqwen.rope import rope_cos_sin

# --- a small decoder assembled here from chapters 2-4 -------------------------------------------


class Block(nn.Module):
    def __init__(self, hidden, heads, kv_heads, layer_idx):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden)
        self.self_attn = GroupedQueryAttention(
            hidden, heads, kv_heads, qk_norm=RMSNorm, layer_idx=layer_idx
        )
        self.post_attention_layernorm = RMSNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden)
        )

    def forward(self, x, position_embeddings=None, attn_mask=None, kv_cache=None):
        x = x + self.self_attn(
            self.input_layernorm(x), position_embeddings, attn_mask=attn_mask, kv_cache=kv_cache
        )
        return x + self.mlp(self.post_attention_layernorm(x))


class Stack(nn.Module):
    def __init__(self, vocab=50, hidden=32, heads=4, kv_heads=2, layers=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(hidden, heads, kv_heads, i) for i in range(layers))
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        with torch.no_grad():  # gains away from 1 so every norm matters
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(1 + 0.3 * torch.randn(p.shape))

    def forward(self, ids, position_embeddings=None, attn_mask=None, kv_cache=None):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, position_embeddings, attn_mask, kv_cache)
        return self.lm_head(self.norm(x))


def decode_in_pieces(model, ids, cache, cuts):
    """Feed ids through the model in chunks ending at `cuts`, then one token at a time."""
    logits, start = [], 0
    for end in [*cuts, *range(cuts[-1] + 1, ids.shape[1] + 1)]:
        logits.append(model(ids[:, start:end], kv_cache=cache))
        start = end
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["dense", "gqa", "mqa"])
@pytest.mark.parametrize("max_seq_len", [None, 40], ids=["growing", "preallocated"])
def test_cached_decoding_equals_the_full_forward_pass(kv_heads, max_seq_len):
    model = Stack(kv_heads=kv_heads).eval()
    ids = torch.randint(0, 50, (2, 23), generator=torch.Generator().manual_seed(1))
    cache = KVCache(num_layers=3, max_seq_len=max_seq_len)
    with torch.no_grad():
        full = model(ids)
        stepped = decode_in_pieces(model, ids, cache, cuts=[7, 12])
    assert stepped.shape == full.shape
    assert (stepped - full).abs().max() <= 1e-5
    assert [cache.get_seq_length(i) for i in range(3)] == [23, 23, 23]
    assert cache.keys[0].shape[:2] == (2, kv_heads)  # kv heads are cached, not query heads
    # a fresh sequence after reset gives the same answer again
    cache.reset()
    assert cache.get_seq_length() == 0
    with torch.no_grad():
        again = decode_in_pieces(model, ids[:, :10], cache, cuts=[4])
    assert (again - full[:, :10]).abs().max() <= 1e-5


def test_without_the_rope_offset_decoding_would_differ():
    """The cache length is the RoPE offset: a cache that always reports 0 breaks decoding."""

    class NoOffset(KVCache):
        def get_seq_length(self, layer_idx=0):
            return 0

    model = Stack().eval()
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        wrong = decode_in_pieces(model, ids, NoOffset(3), cuts=[6])
    assert (wrong - full).abs().max() > 1e-3


def test_cache_holds_what_transformers_dynamic_cache_holds():
    torch.manual_seed(0)
    ours, theirs = KVCache(2, max_seq_len=16), DynamicCache(config=Qwen3Config(num_hidden_layers=2))
    for n in (5, 1, 3):
        for layer in range(2):
            k, v = torch.randn(2, 2, n, 8), torch.randn(2, 2, n, 8)
            got, expected = ours.update(k, v, layer), theirs.update(k, v, layer)
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
            assert ours.get_seq_length(layer) == theirs.get_seq_length(layer)


def test_memory_equals_the_formula_and_preallocation_writes_in_place():
    model = Stack(hidden=32, heads=4, kv_heads=2, layers=3).eval()
    ids = torch.randint(0, 50, (2, 9))
    growing, fixed = KVCache(3), KVCache(3, max_seq_len=20)
    with torch.no_grad():
        model(ids, kv_cache=growing)
        model(ids, kv_cache=fixed)
        storage = fixed.keys[0].data_ptr()
        model(ids[:, :1], kv_cache=fixed)
    assert fixed.keys[0].data_ptr() == storage  # no reallocation
    expected = kv_cache_bytes(3, 2, 8, 9, batch_size=2, bytes_per_value=4)
    assert growing.memory_bytes() == expected == 2 * 3 * 2 * 8 * 9 * 2 * 4
    assert fixed.memory_bytes() == kv_cache_bytes(3, 2, 8, 20, batch_size=2, bytes_per_value=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        fixed.update(torch.zeros(2, 2, 11, 8), torch.zeros(2, 2, 11, 8), 0)


def test_kv_cache_bytes_for_qwen3_0_6b():
    # Qwen3-0.6B: 28 layers, 16 query heads, 8 kv heads, head_dim 128; bfloat16
    assert kv_cache_bytes(28, 8, 128, 1) == 114_688
    assert kv_cache_bytes(28, 16, 128, 1) == 2 * kv_cache_bytes(28, 8, 128, 1)
    assert kv_cache_bytes(28, 8, 128, 32_768) == 114_688 * 32_768


# --- masks ------------------------------------------------------------------------------------


def brute_force(q_len, k_len, allowed):
    return torch.tensor(
        [[allowed(k_len - q_len + i, j) for j in range(k_len)] for i in range(q_len)]
    )


@pytest.mark.parametrize("q_len, k_len", [(9, 9), (3, 9), (1, 6)])
@pytest.mark.parametrize("window", [1, 3, 4, 20])
def test_sliding_window_mask_equals_brute_force(q_len, k_len, window):
    expected = brute_force(q_len, k_len, lambda p, j: p - window < j <= p)
    assert torch.equal(sliding_window_mask(q_len, window, k_len), expected)
    # and Hugging Face's mask function, evaluated at the same absolute positions
    hf = sliding_window_causal_mask_function(window)
    assert torch.equal(
        expected,
        brute_force(q_len, k_len, lambda p, j: bool(hf(0, 0, torch.tensor(p), torch.tensor(j)))),
    )


def test_causal_mask_equals_brute_force():
    assert torch.equal(causal_mask(4, 7), brute_force(4, 7, lambda p, j: j <= p))


def test_a_window_as_long_as_the_sequence_is_causal_attention():
    assert torch.equal(sliding_window_mask(8, 8), causal_mask(8, 8))


def test_document_ids_positions_and_mask_equal_brute_force():
    eot = 0
    ids = torch.tensor([[5, 6, 0, 7, 8, 9, 0, 4], [0, 3, 3, 3, 3, 0, 2, 2]])
    docs = document_ids(ids, eot)
    assert docs.tolist() == [[0, 0, 0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1, 2, 2]]
    pos = document_positions(docs)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 2, 3, 0], [0, 0, 1, 2, 3, 4, 0, 1]]
    # Hugging Face recovers the documents from the restarted positions
    assert torch.equal(find_packed_sequence_indices(pos), docs)
    mask = document_mask(docs)
    assert mask.shape == (2, 1, 8, 8)
    hf = and_masks(causal_mask_function, packed_sequence_mask_function(docs))
    for b in range(2):
        expected = torch.tensor(
            [[docs[b, i] == docs[b, j] and j <= i for j in range(8)] for i in range(8)]
        )
        assert torch.equal(mask[b, 0], expected)
        assert torch.equal(
            expected,
            torch.tensor(
                [
                    [bool(hf(b, 0, torch.tensor(i), torch.tensor(j))) for j in range(8)]
                    for i in range(8)
                ]
            ),
        )
    assert torch.equal(document_mask(docs[0]), mask[0, 0])


@pytest.mark.parametrize("restart_positions", [False, True])
def test_packed_documents_with_a_document_mask_equal_separate_forward_passes(restart_positions):
    model = Stack().eval()
    g = torch.Generator().manual_seed(3)
    lengths = [5, 9, 4]
    pieces = [torch.randint(1, 50, (1, n), generator=g) for n in lengths]
    packed = torch.cat(pieces, dim=1)
    docs = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))[None]
    positions = (
        document_positions(docs) if restart_positions else torch.arange(packed.shape[1])[None]
    )
    head_dim = model.layers[0].self_attn.head_dim
    with torch.no_grad():
        together = model(packed, rope_cos_sin(head_dim, positions), attn_mask=document_mask(docs))
        alone = torch.cat([model(p) for p in pieces], dim=1)
        leaky = model(packed)  # plain causal attention lets documents see each other
    # RoPE is relative: restarting the positions at each document is optional
    assert (together - alone).abs().max() <= 1e-5
    assert (leaky[:, lengths[0] :] - alone[:, lengths[0] :]).abs().max() > 1e-3


def test_sliding_window_decoding_with_a_cache_equals_the_full_pass():
    model = Stack(kv_heads=2).eval()
    ids = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(4))
    window = 5
    cache = KVCache(3, max_seq_len=20)
    with torch.no_grad():
        full = model(ids, attn_mask=sliding_window_mask(20, window))
        steps = [model(ids[:, :8], attn_mask=sliding_window_mask(8, window), kv_cache=cache)]
        for t in range(8, 20):
            steps.append(
                model(
                    ids[:, t : t + 1],
                    attn_mask=sliding_window_mask(1, window, t + 1),
                    kv_cache=cache,
                )
            )
        causal = model(ids)
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5
    assert (causal[:, window:] - full[:, window:]).abs().max() > 1e-3


# --- RoPE scaling against transformers' ROPE_INIT_FUNCTIONS ------------------------------------


def hf_config(head_dim, rope_parameters, max_position_embeddings=4096):
    return Qwen3Config(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=rope_parameters,
    )


@pytest.mark.parametrize(
    "head_dim, factor, theta", [(64, 4.0, 1_000_000.0), (128, 2.5, 10_000.0), (16, 8, 500.0)]
)
def test_linear_scaling_equals_transformers(head_dim, factor, theta):
    config = hf_config(head_dim, {"rope_type": "linear", "factor": factor, "rope_theta": theta})
    expected, attention_factor = ROPE_INIT_FUNCTIONS["linear"](config, "cpu")
    torch.testing.assert_close(
        linear_scaled_inv_freq(head_dim, factor, theta), expected, rtol=1e-6, atol=0
    )
    assert attention_factor == 1.0


@pytest.mark.parametrize(
    "head_dim, factor, original, theta, extra",
    [
        (128, 4.0, 32_768, 1_000_000.0, {}),  # Qwen3's long-context setting
        (64, 8.0, 2048, 10_000.0, {}),
        (16, 4.0, 64, 10_000.0, {"beta_fast": 16.0, "beta_slow": 2.0}),
        (64, 2.0, 4096, 500_000.0, {"truncate": False}),
        (32, 4.0, 256, 10_000.0, {"attention_factor": 1.3}),
    ],
)
def test_yarn_equals_transformers(head_dim, factor, original, theta, extra):
    params = {
        "rope_type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": original,
        "rope_theta": theta,
        **extra,
    }
    config = hf_config(head_dim, params, max_position_embeddings=int(factor * original))
    expected, expected_factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    got, got_factor = yarn_inv_freq(head_dim, factor, original, theta, **extra)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    assert got_factor == pytest.approx(expected_factor, rel=1e-12)
    # the fastest pair keeps its speed, the slowest is interpolated
    base = linear_scaled_inv_freq(head_dim, 1.0, theta)
    assert got[0] == base[0] and torch.isclose(got[-1], base[-1] / factor)


def test_yarn_plugs_into_rope_cos_sin_like_transformers_rotary_embedding():
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    params = {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "rope_theta": 10_000.0,
    }
    config = hf_config(16, params, max_position_embeddings=256)
    positions = torch.arange(200)
    cos_hf, sin_hf = Qwen3RotaryEmbedding(config)(
        torch.zeros(1, dtype=torch.float32), positions[None]
    )
    inv_freq, factor = yarn_inv_freq(16, 4.0, 64, 10_000.0)
    cos, sin = rope_cos_sin(16, positions, inv_freq=inv_freq, attention_factor=factor)
    torch.testing.assert_close(cos, cos_hf[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sin, sin_hf[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("head_dim, factor", [(64, 4.0), (16, 2.0)])
def test_ntk_scaling_equals_transformers_dynamic_ntk_at_its_fixed_point(head_dim, factor):
    """Dynamic NTK at sequence length s uses base * (factor*s/L - (factor-1))**(d/(d-2)); at
    s = L (2 factor - 1) / factor that is exactly base * factor**(d/(d-2))."""
    L = 64
    s = L * (2 * factor - 1) / factor
    config = hf_config(
        head_dim,
        {"rope_type": "dynamic", "factor": factor, "rope_theta": 10_000.0},
        max_position_embeddings=L,
    )
    expected, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, "cpu", seq_len=s)
    torch.testing.assert_close(
        ntk_scaled_inv_freq(head_dim, factor, 10_000.0), expected, rtol=1e-5, atol=0
    )


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: KVCache(0), "num_layers"),
        (lambda: KVCache(2, max_seq_len=0), "max_seq_len"),
        (
            lambda: KVCache(2).update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 2),
            "layer_idx",
        ),
        (
            lambda: KVCache(2).update(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 0),
            "batch, kv_heads",
        ),
        (lambda: KVCache(2).get_seq_length(-1), "layer_idx"),
        (lambda: sliding_window_mask(4, 0), "window"),
        (lambda: sliding_window_mask(5, 2, 3), "q_len <= k_len"),
        (lambda: document_mask(torch.zeros(1, 2, 3)), "doc_ids"),
        (lambda: kv_cache_bytes(2, -1, 4, 5), "num_kv_heads"),
        (lambda: linear_scaled_inv_freq(16, 0.5), "factor"),
        (lambda: yarn_inv_freq(16, 4.0, 0), "original_max_position_embeddings"),
        (lambda: yarn_inv_freq(16, 4.0, 64, beta_fast=1.0, beta_slow=2.0), "beta_slow"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_cache_rejects_keys_of_another_shape():
    cache = KVCache(1)
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="layer 0 caches"):
        cache.update(torch.zeros(1, 4, 1, 4), torch.zeros(1, 4, 1, 4), 0)


def test_partial_rmsnorm_factory_works_with_the_cache():
    attn = GroupedQueryAttention(32, 4, 2, qk_norm=functools.partial(RMSNorm, eps=1e-5)).eval()
    x = torch.randn(1, 6, 32)
    cache = KVCache(1)
    with torch.no_grad():
        full = attn(x)
        steps = torch.cat(
            [attn(x[:, :3], kv_cache=cache)]
            + [attn(x[:, t : t + 1], kv_cache=cache) for t in range(3, 6)],
            1,
        )
    assert (steps - full).abs().max() <= 1e-5
