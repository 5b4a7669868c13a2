"""tinyqwen.norm against torch.nn.RMSNorm and Hugging Face Qwen3 (chapter 4)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3Attention,
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
)

from tinyqwen.attention import GroupedQueryAttention
from tinyqwen.norm import RMSNorm


def random_gain(norm: nn.Module, seed: int = 0) -> None:
    """Give a norm a gain that is not all ones, so a missing or misapplied weight shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=g))


def test_weight_starts_at_ones_and_has_one_parameter_per_feature():
    norm = RMSNorm(48)
    assert torch.equal(norm.weight, torch.ones(48))
    assert sum(p.numel() for p in norm.parameters()) == 48
    assert list(norm.state_dict()) == ["weight"]


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_equals_torch_rmsnorm_float32(eps):
    torch.manual_seed(0)
    ours, ref = RMSNorm(64, eps=eps), nn.RMSNorm(64, eps=eps)
    random_gain(ours)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 17, 64) * 3
    assert (ours(x) - ref(x)).abs().max() <= 1e-6 * 3


def test_equals_transformers_qwen3_rmsnorm_float32():
    torch.manual_seed(0)
    ours, hf = RMSNorm(128, eps=1e-6), Qwen3RMSNorm(128, eps=1e-6)
    random_gain(ours, seed=1)
    hf.load_state_dict(ours.state_dict())
    x = torch.randn(2, 9, 128)
    assert (ours(x) - hf(x)).abs().max() <= 1e-6
    # eps matters: tiny inputs are dominated by it
    tiny = torch.full((1, 128), 1e-4)
    torch.testing.assert_close(ours(tiny), hf(tiny), rtol=1e-6, atol=1e-9)
    assert ours(tiny).abs().max() < 0.2 * ours.weight.abs().max()


@pytest.mark.parametrize("weight_dtype", [torch.bfloat16, torch.float32])
def test_bfloat16_input_is_bit_identical_to_transformers(weight_dtype):
    torch.manual_seed(0)
    ours, hf = RMSNorm(256), Qwen3RMSNorm(256)
    random_gain(ours, seed=2)
    hf.load_state_dict(ours.state_dict())
    ours, hf = ours.to(weight_dtype), hf.to(weight_dtype)
    x = (torch.randn(4, 33, 256) * 20).to(torch.bfloat16)
    got, expected = ours(x), hf(x)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)
    if weight_dtype == torch.bfloat16:  # a model cast to bf16 keeps bf16 activations
        assert got.dtype == torch.bfloat16


def test_statistic_is_computed_in_float32():
    """In float16, squaring 300 overflows (300**2 > 65504); the float32 statistic does not."""
    x = torch.full((2, 64), 300.0, dtype=torch.float16)
    out = RMSNorm(64).half()(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.ones_like(out), rtol=1e-3, atol=1e-3)
    naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # all in float16
    assert (naive == 0).all()  # rsqrt(inf) = 0: the naive float16 norm wipes the signal out


def test_output_has_unit_rms_and_is_scale_invariant():
    x = torch.randn(5, 32)
    norm = RMSNorm(32, eps=0.0)
    y = norm(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(5))
    torch.testing.assert_close(norm(7.5 * x), y)


def test_gradients_match_torch_rmsnorm():
    torch.manual_seed(0)
    ours, ref = RMSNorm(16), nn.RMSNorm(16, eps=1e-6)
    random_gain(ours, seed=3)
    ref.load_state_dict(ours.state_dict())
    x1 = torch.randn(4, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    (ours(x1) * torch.arange(16.0)).sum().backward()
    (ref(x2) * torch.arange(16.0)).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: RMSNorm(0), "dim"),
        (lambda: RMSNorm(8.0), "dim"),
        (lambda: RMSNorm(8, eps=-1e-6), "eps"),
        (lambda: RMSNorm(8)(torch.randn(2, 7)), "last dimension"),
    ],
)
def test_bad_input_raises_a_clear_value_error(make, words):
    with pytest.raises(ValueError, match=words):
        make()


# --- QK-norm inside chapter 3's attention ------------------------------------------------------


def hf_attention(heads, kv_heads, hidden=64, head_dim=16, eps=1e-6):
    config = Qwen3Config(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=eps,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        attention_dropout=0.0,
        attn_implementation="eager",
    )
    return Qwen3Attention(config, layer_idx=0).eval(), Qwen3RotaryEmbedding(config)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (8, 2)])
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_qk_norm_attention_equals_transformers_qwen3_attention(heads, kv_heads, eps):
    torch.manual_seed(0)
    hf, rotary = hf_attention(heads, kv_heads, eps=eps)
    random_gain(hf.q_norm, seed=4)
    random_gain(hf.k_norm, seed=5)
    qk_norm = RMSNorm if eps == 1e-6 else functools.partial(RMSNorm, eps=eps)
    ours = GroupedQueryAttention(64, heads, kv_heads, 16, qk_norm=qk_norm, rope_theta=1_000_000.0)
    assert isinstance(ours.q_norm, RMSNorm) and ours.q_norm.eps == eps
    # strict: q_norm.weight and k_norm.weight of shape (head_dim,)
    ours.load_state_dict(hf.state_dict())
    assert ours.q_norm.weight.shape == (16,)
    x = torch.randn(2, 13, 64) * 4
    seq = x.shape[1]
    cos, sin = rotary(x, torch.arange(seq)[None])
    causal = torch.full((seq, seq), torch.finfo(torch.float32).min).triu(1)[None, None]
    with torch.no_grad():
        expected, _ = hf(x, (cos, sin), causal)
        got = ours.eval()(x)
    assert (got - expected).abs().max() <= 1e-5
    # the norms really act: without them the output differs
    plain = GroupedQueryAttention(64, heads, kv_heads, 16)
    plain.load_state_dict({k: v for k, v in hf.state_dict().items() if "norm" not in k})
    with torch.no_grad():
        assert (plain(x) - expected).abs().max() > 1e-2
