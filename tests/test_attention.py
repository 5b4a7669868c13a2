"""tinyqwen.attention against PyTorch's fused kernel and Hugging Face Qwen3 attention (chapter 3)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3RotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import repeat_kv as hf_repeat_kv

from tinyqwen.attention import (
    GroupedQueryAttention,
    attention_weights,
    causal_mask,
    repeat_kv,
    scaled_dot_product_attention,
)
from tinyqwen.rope import rope_cos_sin

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_attention.ipynb"


class SmallRMSNorm(nn.Module):
    """Stand-in for chapter 4's tinyqwen.norm.RMSNorm (HF order of operations), so this file
    tests QK-norm wiring without depending on a later chapter."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class ListCache:
    """The smallest object with the KV-cache protocol GroupedQueryAttention relies on."""

    def __init__(self):
        self.keys, self.values = {}, {}

    def update(self, k, v, layer_idx):
        if layer_idx in self.keys:
            k = torch.cat([self.keys[layer_idx], k], dim=-2)
            v = torch.cat([self.values[layer_idx], v], dim=-2)
        self.keys[layer_idx], self.values[layer_idx] = k, v
        return k, v

    def get_seq_length(self, layer_idx=0):
        return self.keys[layer_idx].shape[-2] if layer_idx in self.keys else 0


def qkv(batch=2, heads=3, q_len=7, k_len=7, d=16, d_v=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, q_len, d, generator=g),
        torch.randn(batch, heads, k_len, d, generator=g),
        torch.randn(batch, heads, k_len, d_v, generator=g),
    )


# --- reference attention ---------------------------------------------------------------------


def test_reference_equals_fused_kernel_without_mask():
    q, k, v = qkv(q_len=5, k_len=9, d_v=12)
    ours = scaled_dot_product_attention(q, k, v)
    assert ours.shape == (2, 3, 5, 12)
    assert (ours - F.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-6


def test_reference_equals_fused_kernel_causal():
    q, k, v = qkv(q_len=33, k_len=33)
    ours = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (ours - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max() <= 1e-6
    # the first query sees only the first key: its output is exactly the first value
    torch.testing.assert_close(ours[..., 0, :], v[..., 0, :])


def test_reference_equals_fused_kernel_with_a_boolean_mask_and_scale():
    q, k, v = qkv(q_len=6, k_len=10)
    mask = torch.rand(2, 1, 6, 10, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[..., 0] = True  # every query may see at least one key
    ours = scaled_dot_product_attention(q, k, v, mask, scale=0.3)
    assert (
        ours - F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    ).abs().max() <= 1e-6


def test_causal_with_cached_prefix_is_bottom_right_aligned():
    q, k, v = qkv(q_len=3, k_len=8)
    expected_mask = torch.ones(8, 8, dtype=torch.bool).tril()[
        -3:
    ]  # last 3 rows of a full causal mask
    assert torch.equal(causal_mask(3, 8), expected_mask)
    ours = scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(
        ours, F.scaled_dot_product_attention(q, k, v, attn_mask=expected_mask), rtol=0, atol=1e-6
    )


def test_masked_keys_get_zero_weight_and_rows_sum_to_one():
    q, k, _ = qkv(q_len=4, k_len=6)
    mask = torch.tensor([True, False, True, True, False, True])
    w = attention_weights(q, k, mask)
    assert torch.all(w[..., ~mask] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4))


def test_reference_handles_low_precision_like_the_fused_kernel():
    q, k, v = (t.to(torch.bfloat16) for t in qkv(q_len=16, k_len=16))
    ours = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(
        ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=2e-2, atol=2e-2
    )


# --- repeat_kv ------------------------------------------------------------------------------


def test_repeat_kv_equals_repeat_interleave_and_transformers():
    x = torch.randn(2, 3, 5, 4)
    for n_rep in (1, 2, 4):
        out = repeat_kv(x, n_rep)
        assert out.shape == (2, 3 * n_rep, 5, 4)
        assert torch.equal(out, torch.repeat_interleave(x, n_rep, dim=1))
        assert torch.equal(out, hf_repeat_kv(x, n_rep))


# --- GroupedQueryAttention --------------------------------------------------------------------


def hf_attention(hidden=64, heads=4, kv_heads=2, head_dim=16, theta=1_000_000.0, impl="eager"):
    config = Qwen3Config(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        attention_dropout=0.0,
        attn_implementation=impl,
    )
    return Qwen3Attention(config, layer_idx=0).eval(), Qwen3RotaryEmbedding(config)


QK_NORM = functools.partial(SmallRMSNorm, eps=1e-6)


def ours_like(hf, qk_norm=QK_NORM):
    cfg = hf.config
    ours = GroupedQueryAttention(
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        qk_norm=qk_norm,
        rope_theta=cfg.rope_parameters["rope_theta"],
    )
    ours.load_state_dict(hf.state_dict())  # strict: identical parameter names and shapes
    return ours.eval()


def hf_forward(hf, rotary, x, positions, mask=None, cache=None):
    """HF attention with an additive float mask (None -> no mask)."""
    cos, sin = rotary(x, positions[None])
    additive = None
    if mask is not None:
        additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)[
            None, None
        ]
    out, _ = hf(x, (cos, sin), additive, cache=cache)
    return out


def randomize_norms(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (4, 4), (4, 1)])
def test_gqa_matches_transformers_qwen3_attention(heads, kv_heads):
    torch.manual_seed(0)
    hf, rotary = hf_attention(heads=heads, kv_heads=kv_heads)
    randomize_norms(hf)
    ours = ours_like(hf)
    x = torch.randn(2, 11, 64)
    expected = hf_forward(hf, rotary, x, torch.arange(11), mask=causal_mask(11, 11))
    with torch.no_grad():
        got = ours(x)  # RoPE computed inside, causal by default
        got_given = ours(x, rope_cos_sin(16, 11, 1_000_000.0))
    assert (got - expected).abs().max() <= 1e-5
    assert (got_given - expected).abs().max() <= 1e-5


def test_state_dict_names_follow_transformers_and_qk_norm_is_optional():
    hf, _ = hf_attention()
    ours = GroupedQueryAttention(64, 4, 2, 16, qk_norm=SmallRMSNorm)
    assert sorted(ours.state_dict()) == sorted(hf.state_dict())
    assert all(p.bias is None for p in (ours.q_proj, ours.k_proj, ours.v_proj, ours.o_proj))
    plain = GroupedQueryAttention(64, 4, 2)
    assert isinstance(plain.q_norm, nn.Identity) and isinstance(plain.k_norm, nn.Identity)
    assert "q_norm.weight" not in plain.state_dict()
    assert plain.head_dim == 16 and plain.num_groups == 2


def test_without_qk_norm_matches_transformers_with_identity_norms():
    hf, rotary = hf_attention()
    hf.q_norm, hf.k_norm = nn.Identity(), nn.Identity()
    ours = ours_like(hf, qk_norm=None)
    x = torch.randn(1, 9, 64)
    with torch.no_grad():
        assert (
            ours(x) - hf_forward(hf, rotary, x, torch.arange(9), mask=causal_mask(9, 9))
        ).abs().max() <= 1e-5


def test_explicit_mask_wins_over_the_causal_default():
    hf, rotary = hf_attention()
    randomize_norms(hf, seed=1)
    ours = ours_like(hf)
    x = torch.randn(1, 8, 64)
    # a padding-style mask: the first two tokens are padding, invisible to everyone else
    mask = causal_mask(8, 8).clone()
    mask[2:, :2] = False
    with torch.no_grad():
        got = ours(x, attn_mask=mask)
        plain = ours(x)
    expected = hf_forward(hf, rotary, x, torch.arange(8), mask=mask)
    assert (got - expected).abs().max() <= 1e-5
    assert not torch.allclose(got, plain, atol=1e-3)
    # full (non-causal) attention: every token sees the whole sequence
    full = torch.ones(8, 8, dtype=torch.bool)
    with torch.no_grad():
        assert (
            ours(x, attn_mask=full) - hf_forward(hf, rotary, x, torch.arange(8), mask=full)
        ).abs().max() <= 1e-5


def test_kv_cache_decoding_equals_one_full_pass():
    """Prefill 5 tokens, then a chunk of 3 (bottom-right causal), then 4 single tokens."""
    torch.manual_seed(0)
    ours = GroupedQueryAttention(64, 4, 2, 16, qk_norm=SmallRMSNorm, layer_idx=3).eval()
    randomize_norms(ours)
    x = torch.randn(2, 12, 64)
    cache = ListCache()
    with torch.no_grad():
        full = ours(x)
        pieces = [ours(x[:, :5], kv_cache=cache), ours(x[:, 5:8], kv_cache=cache)]
        pieces += [ours(x[:, t : t + 1], kv_cache=cache) for t in range(8, 12)]
    assert cache.get_seq_length(3) == 12 and cache.get_seq_length(0) == 0
    assert cache.keys[3].shape == (
        2,
        2,
        12,
        16,
    )  # the cache holds kv heads only: (batch, kv_heads, seq, head_dim)
    assert (torch.cat(pieces, dim=1) - full).abs().max() <= 1e-5


def test_kv_cache_decoding_matches_transformers_dynamic_cache():
    hf, rotary = hf_attention()
    randomize_norms(hf, seed=2)
    ours = ours_like(hf)
    x = torch.randn(1, 7, 64)
    ours_cache, hf_cache = ListCache(), DynamicCache(config=hf.config)
    with torch.no_grad():
        got = [ours(x[:, :4], kv_cache=ours_cache)] + [
            ours(x[:, t : t + 1], kv_cache=ours_cache) for t in range(4, 7)
        ]
        hf_out = [
            hf_forward(
                hf, rotary, x[:, :4], torch.arange(4), mask=causal_mask(4, 4), cache=hf_cache
            )
        ]
        hf_out += [
            hf_forward(hf, rotary, x[:, t : t + 1], torch.tensor([t]), cache=hf_cache)
            for t in range(4, 7)
        ]
    assert (torch.cat(got, 1) - torch.cat(hf_out, 1)).abs().max() <= 1e-5
    # our module also works with HF's own cache object (same update/get_seq_length protocol)
    cache = DynamicCache(config=hf.config)
    with torch.no_grad():
        again = [ours(x[:, :4], kv_cache=cache)] + [
            ours(x[:, t : t + 1], kv_cache=cache) for t in range(4, 7)
        ]
    assert (torch.cat(again, 1) - torch.cat(hf_out, 1)).abs().max() <= 1e-5


def test_gradients_flow_to_every_parameter():
    ours = GroupedQueryAttention(32, 4, 2, qk_norm=SmallRMSNorm)
    ours(torch.randn(2, 5, 32)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(hidden_size=64, num_heads=6, num_kv_heads=4), "multiple of num_kv_heads"),
        (dict(hidden_size=64, num_heads=4, num_kv_heads=0), "num_kv_heads"),
        (dict(hidden_size=64, num_heads=0, num_kv_heads=1), "num_heads"),
        (dict(hidden_size=66, num_heads=4, num_kv_heads=2), "not divisible"),
        (dict(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=15), "even"),
        (dict(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=-2), "head_dim"),
        (dict(hidden_size=64, num_heads=4, num_kv_heads=2, rope_theta=0.0), "rope_theta"),
        (dict(hidden_size=64, num_heads=4, num_kv_heads=2, layer_idx=-1), "layer_idx"),
    ],
)
def test_bad_configuration_raises_a_clear_value_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        GroupedQueryAttention(**kwargs)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda m: m(torch.randn(2, 5, 48)), "batch, seq, 64"),
        (lambda m: m(torch.randn(5, 64)), "batch, seq, 64"),
        (lambda m: m(torch.randn(1, 5, 64), attn_mask=torch.ones(5, 5)), "boolean"),
        (lambda m: m(torch.randn(1, 5, 64), rope_cos_sin(16, 4)), "do not fit"),
        (
            lambda m: scaled_dot_product_attention(*qkv(d=8)[:2], torch.randn(2, 3, 6, 8)),
            "same length",
        ),
        (
            lambda m: scaled_dot_product_attention(
                torch.randn(2, 4, 8), torch.randn(2, 4, 6), torch.randn(2, 4, 8)
            ),
            "feature size",
        ),
        (
            lambda m: scaled_dot_product_attention(*qkv(), torch.ones(7, 7, dtype=torch.int64)),
            "boolean",
        ),
        (lambda m: causal_mask(5, 3), "q_len <= k_len"),
        (lambda m: repeat_kv(torch.randn(1, 2, 3, 4), 0), "n_rep"),
        (lambda m: repeat_kv(torch.randn(2, 3, 4), 2), "num_kv_heads"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, words):
    with pytest.raises(ValueError, match=words):
        call(GroupedQueryAttention(64, 4, 2))


def test_attention_probs_are_the_weights_forward_uses():
    """Rebuild forward's output from attention_probs: weights @ values, heads concatenated, o_proj."""
    torch.manual_seed(4)
    ours = GroupedQueryAttention(32, 4, 2, qk_norm=SmallRMSNorm).eval()
    randomize_norms(ours)
    x = torch.randn(2, 6, 32)
    for mask in (None, torch.ones(6, 6, dtype=torch.bool)):
        probs = ours.attention_probs(x, attn_mask=mask)
        assert probs.shape == (2, 4, 6, 6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 6))
        if mask is None:
            assert torch.all(probs.triu(1) == 0), "causal: no weight on future tokens"
        v = repeat_kv(ours.v_proj(x).view(2, 6, 2, 8).transpose(1, 2), 2)
        rebuilt = ours.o_proj((probs @ v).transpose(1, 2).reshape(2, 6, 32))
        with torch.no_grad():
            torch.testing.assert_close(rebuilt, ours(x, attn_mask=mask), rtol=1e-5, atol=1e-5)


# --- the module's shape and the chapter's numbers -----------------------------------------------


def test_public_api_and_the_methods_added_cell_by_cell():
    """The chapter builds the class in steps with fastcore's @patch: same API as one class body."""
    import tinyqwen.attention as module

    assert module.__all__ == [
        "causal_mask",
        "attention_weights",
        "scaled_dot_product_attention",
        "repeat_kv",
        "GroupedQueryAttention",
    ]
    for method in ("__init__", "_project", "_attend", "forward", "attention_probs", "extra_repr"):
        assert method in vars(GroupedQueryAttention), method
    assert GroupedQueryAttention.forward.__qualname__ == "GroupedQueryAttention.forward"
    assert "(batch, seq, hidden)" in GroupedQueryAttention.forward.__doc__


def test_chapter_table_of_released_qwen3_shapes_matches_their_configs():
    """The chapter's KV-cache table types the released models' config.json values; the presets of
    tinyqwen.model were copied from the same files."""
    from tinyqwen.model import PRESETS

    cell = next(
        c for c in nbformat.read(NOTEBOOK, as_version=4).cells if "released = {" in c.source
    )
    table = next(
        ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "released"
    )
    checked = 0
    for name, shape in table.items():
        preset = PRESETS.get(name.lower())
        if preset is None:
            continue
        keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        assert shape == tuple(preset[k] for k in keys), name
        assert preset["head_dim"] == 128, name  # the table's stated head_dim
        checked += 1
    assert checked >= 3, f"only {checked} of the chapter's models have a preset to compare with"
