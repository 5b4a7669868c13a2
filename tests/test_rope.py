"""tinyqwen.rope against Hugging Face transformers' Qwen3 rotary embedding (chapter 2)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3RotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.qwen3.modeling_qwen3 import rotate_half as hf_rotate_half

from tinyqwen.rope import apply_rope, rope_cos_sin, rope_inv_freq, rotate_half

HEAD_DIM, THETA = 128, 1_000_000.0


def hf_rotary(head_dim=HEAD_DIM, theta=THETA):
    config = Qwen3Config(
        hidden_size=2 * head_dim,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=head_dim,
        max_position_embeddings=40_960,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
    )
    return Qwen3RotaryEmbedding(config)


@pytest.mark.parametrize("seq", [1, 1024, 40_960])
def test_cos_sin_and_rotation_match_transformers(seq):
    torch.manual_seed(seq)
    batch, heads, kv_heads = 1, 2, 1
    q = torch.randn(batch, heads, seq, HEAD_DIM)
    k = torch.randn(batch, kv_heads, seq, HEAD_DIM)
    position_ids = torch.arange(seq)[None]
    hf_cos, hf_sin = hf_rotary()(q, position_ids)  # (batch, seq, head_dim)
    cos, sin = rope_cos_sin(HEAD_DIM, seq, THETA)
    assert cos.shape == sin.shape == (seq, HEAD_DIM) and cos.dtype == torch.float32
    assert (cos - hf_cos[0]).abs().max() <= 1e-6
    assert (sin - hf_sin[0]).abs().max() <= 1e-6
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert (apply_rope(q, cos, sin) - hf_q).abs().max() <= 1e-6
    assert (apply_rope(k, cos, sin) - hf_k).abs().max() <= 1e-6


def test_inv_freq_matches_transformers_for_other_thetas():
    for theta, head_dim in [(10_000.0, 64), (1_000_000.0, 128), (500_000.0, 16)]:
        torch.testing.assert_close(
            rope_inv_freq(head_dim, theta), hf_rotary(head_dim, theta).inv_freq, rtol=0, atol=0
        )


def test_batched_positions_with_an_offset_match_transformers():
    """2-D positions (e.g. continuing after cached tokens, or left padding) as HF's position_ids."""
    torch.manual_seed(0)
    position_ids = torch.stack([torch.arange(100, 107), torch.arange(3, 10)])  # (2, 7)
    x = torch.randn(2, 4, 7, HEAD_DIM)
    hf_cos, hf_sin = hf_rotary()(x, position_ids)
    cos, sin = rope_cos_sin(HEAD_DIM, position_ids, THETA)
    assert cos.shape == (2, 7, HEAD_DIM)
    torch.testing.assert_close(cos, hf_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        apply_rope(x, cos, sin), apply_rotary_pos_emb(x, x, hf_cos, hf_sin)[0], rtol=0, atol=1e-6
    )
    # a 1-D offset range equals the tail of the full table
    full_cos, full_sin = rope_cos_sin(HEAD_DIM, 107, THETA)
    tail_cos, tail_sin = rope_cos_sin(HEAD_DIM, torch.arange(100, 107), THETA)
    torch.testing.assert_close(tail_cos, full_cos[100:], rtol=0, atol=0)
    torch.testing.assert_close(tail_sin, full_sin[100:], rtol=0, atol=0)


def test_rotate_half_matches_transformers_and_is_a_quarter_turn():
    x = torch.randn(3, 2, 5, 8)
    torch.testing.assert_close(rotate_half(x), hf_rotate_half(x), rtol=0, atol=0)
    torch.testing.assert_close(rotate_half(rotate_half(x)), -x, rtol=0, atol=0)
    assert torch.equal(
        rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0])
    )


def test_rotation_preserves_norms_and_is_identity_at_position_zero():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 50, 64)
    cos, sin = rope_cos_sin(64, 50, 10_000.0)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0], rtol=0, atol=0)
    assert not torch.allclose(y[:, :, 1:], x[:, :, 1:], atol=1e-3)


@pytest.mark.parametrize("theta", [10_000.0, 1_000_000.0])
def test_score_depends_only_on_relative_position(theta):
    """<R_m q, R_n k> is the same for every (m, n) with the same offset m - n."""
    torch.manual_seed(2)
    head_dim = 64
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)
    cos, sin = rope_cos_sin(head_dim, 2_000, theta, dtype=torch.float64)

    def rotated(vec, pos):
        return apply_rope(vec.view(1, 1, 1, -1), cos[pos : pos + 1], sin[pos : pos + 1]).flatten()

    for offset in [0, 1, 7, 300]:
        scores = torch.stack([rotated(q, n + offset) @ rotated(k, n) for n in [0, 5, 123, 1_500]])
        torch.testing.assert_close(scores, scores[:1].expand_as(scores), rtol=0, atol=1e-4)
    # ... but the score does change with the offset, so the property above is not vacuous
    assert abs(rotated(q, 10) @ rotated(k, 0) - rotated(q, 0) @ rotated(k, 0)) > 1e-3


def test_attention_factor_and_custom_inv_freq_plug_in():
    inv_freq = rope_inv_freq(32, 10_000.0) / 4  # e.g. linear scaling by 4 (chapter 10)
    cos, sin = rope_cos_sin(32, 16, inv_freq=inv_freq, attention_factor=1.5)
    ref_cos, ref_sin = rope_cos_sin(32, torch.arange(16) / 4, 10_000.0)
    torch.testing.assert_close(cos, 1.5 * ref_cos)
    torch.testing.assert_close(sin, 1.5 * ref_sin)


def test_dtype_and_device_arguments():
    cos, sin = rope_cos_sin(16, 5, dtype=torch.bfloat16, device="cpu")
    assert cos.dtype == sin.dtype == torch.bfloat16
    x = torch.randn(1, 1, 5, 16, dtype=torch.bfloat16)
    assert apply_rope(x, cos, sin).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: rope_inv_freq(7), "head_dim"),
        (lambda: rope_inv_freq(0), "head_dim"),
        (lambda: rope_inv_freq(8, theta=-1.0), "theta"),
        (lambda: rope_cos_sin(15, 4), "head_dim"),
        (lambda: rope_cos_sin(16, -3), "length"),
        (lambda: rope_cos_sin(16, torch.zeros(2, 3, 4)), "positions"),
        (lambda: rope_cos_sin(16, 4, inv_freq=torch.ones(3)), "inv_freq"),
        (lambda: rotate_half(torch.ones(2, 5)), "even"),
        (
            lambda: apply_rope(torch.ones(2, 5, 16), *rope_cos_sin(16, 5)),
            "batch, heads, seq, head_dim",
        ),
        (lambda: apply_rope(torch.ones(1, 2, 5, 16), *rope_cos_sin(16, 6)), "do not fit"),
        (lambda: apply_rope(torch.ones(1, 2, 5, 16), *rope_cos_sin(8, 5)), "do not fit"),
        (
            lambda: apply_rope(torch.ones(1, 2, 5, 16), torch.ones(5, 16), torch.ones(4, 16)),
            "differ",
        ),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_chapter_never_calls_max_position_embeddings_qwen3s_context():
    """Qwen3 is pre-trained on 32,768 tokens (its "native" context); 40,960 is only the
    max_position_embeddings of its config.json. A sentence of chapter 2 that puts 40,960 next to
    the word "context" must say it is max_position_embeddings."""
    path = Path(__file__).resolve().parents[1] / "notebooks" / "02_positional_embeddings.ipynb"
    for cell in nbformat.read(path, as_version=4).cells:
        for sentence in re.split(r"(?<=[.;])\s", cell.source):
            if re.search(r"40[,_]?960", sentence) and re.search(r"\bcontext\b", sentence, re.I):
                assert "max_position_embeddings" in sentence, sentence
