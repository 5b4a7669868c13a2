"""Chapter 11 (part 1): the assembled Qwen3 against transformers' Qwen3 / Qwen3-MoE.

Every check builds tiny random models, moves weights through safetensors directories in both
directions and compares float32 outputs to 1e-4.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")

from tinyqwen.model import (  # noqa: E402
    PRESETS,
    Qwen3Config,
    Qwen3ForCausalLM,
    parameter_counts,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

TOL = dict(atol=1e-4, rtol=1e-4)

DENSE = {
    # GQA (4 query heads share 2 kv heads), head_dim 24 != 48 / 4, tied embeddings
    "gqa-tied": dict(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        tie_word_embeddings=True,
    ),
    # multi-head attention, untied output head, another RoPE base and eps
    "mha-untied": dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=56,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=8,
        tie_word_embeddings=False,
        rope_theta=10_000.0,
        rms_norm_eps=1e-5,
    ),
    # YaRN-scaled RoPE (chapter 10), as Qwen3 enables for long contexts
    "yarn": dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        max_position_embeddings=32,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    ),
}
MOE = {
    # every layer sparse, renormalised top-k
    "moe-all": dict(
        vocab_size=80,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=False,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=24,
        norm_topk_prob=True,
    ),
    # sparse every 2nd layer, layer 3 forced dense, raw top-k weights, tied
    "moe-mixed": dict(
        vocab_size=80,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=12,
        tie_word_embeddings=True,
        num_experts=6,
        num_experts_per_tok=3,
        moe_intermediate_size=20,
        norm_topk_prob=False,
        decoder_sparse_step=2,
        mlp_only_layers=[3],
    ),
}


def hf_config(kw: dict):
    kw = {"rope_theta": Qwen3Config.rope_theta, **kw}  # transformers' default base is 10,000
    if kw.get("rope_scaling"):  # transformers 5 spells RoPE settings as rope_parameters
        kw["rope_parameters"] = {**kw.pop("rope_scaling"), "rope_theta": kw.pop("rope_theta")}
    if "num_experts" in kw:
        return transformers.Qwen3MoeConfig(**kw, attn_implementation="sdpa")
    return transformers.Qwen3Config(**kw, attn_implementation="sdpa")


def hf_class(kw: dict):
    return (
        transformers.Qwen3MoeForCausalLM if "num_experts" in kw else transformers.Qwen3ForCausalLM
    )


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Make every weight matter: matrices N(0, 0.1^2), norm weights around 1 (not exactly 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.2 * noise if p.ndim == 1 else 0.1 * noise)


def hf_model(kw: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = hf_class(kw)(hf_config(kw)).eval()
    randomize_(model, seed)
    return model


def ours_model(kw: dict, seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**kw)).eval()
    randomize_(model, seed)
    return model


def tokens(kw: dict, batch: int = 2, seq: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(
        0, kw["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(seed)
    )


ALL = {**DENSE, **MOE}


@pytest.mark.parametrize("name", list(ALL))
def test_logits_match_transformers_loading_hf_checkpoint(name, tmp_path):
    kw = ALL[name]
    hf = hf_model(kw)
    hf.save_pretrained(tmp_path)
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path)
    ids = tokens(kw)
    with torch.no_grad():
        ref = hf(ids, labels=ids, output_router_logits="num_experts" in kw)
        out = ours(ids, labels=ids)
    torch.testing.assert_close(out.logits, ref.logits, **TOL)
    torch.testing.assert_close(out.loss, ref.loss, **TOL)
    if "num_experts" in kw:
        torch.testing.assert_close(out.aux_loss, ref.aux_loss, **TOL)
        sparse = [i for i in range(kw["num_hidden_layers"]) if ours.config.is_sparse_layer(i)]
        assert len(out.router_logits) == len(ref.router_logits) == len(sparse)
    else:
        assert out.aux_loss is None


@pytest.mark.parametrize("name", list(ALL))
def test_transformers_loads_what_we_save(name, tmp_path):
    kw = ALL[name]
    ours = ours_model(kw, seed=3)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == ("qwen3_moe" if "num_experts" in kw else "qwen3")
    hf = hf_class(kw).from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = tokens(kw, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)
    if kw["tie_word_embeddings"]:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("name", list(MOE))
def test_fused_expert_layout_loads_both_ways(name, tmp_path):
    """transformers 5 holds experts as fused 3-D tensors; a checkpoint in that layout loads too."""
    kw = MOE[name]
    hf = hf_model(kw, seed=5)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    if kw["tie_word_embeddings"]:
        state.pop("lm_head.weight")
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(hf.config.to_json_string())
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path)
    ids = tokens(kw, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)
    # and we can write the fused layout ourselves
    out = tmp_path / "fused"
    ours.save_pretrained(out, expert_layout="fused")
    back = Qwen3ForCausalLM.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, **TOL)


def test_sharded_checkpoint_round_trip(tmp_path):
    kw = DENSE["mha-untied"]
    ours = ours_model(kw, seed=7)
    ours.save_pretrained(tmp_path, max_shard_size=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((tmp_path / s).is_file() for s in shards)
    assert not (tmp_path / "model.safetensors").exists()
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    back = Qwen3ForCausalLM.from_pretrained(tmp_path)
    ids = tokens(kw, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, atol=0, rtol=0)
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, **TOL)


@pytest.mark.parametrize("name", ["gqa-tied", "moe-mixed"])
def test_greedy_generation_equals_transformers(name, tmp_path):
    kw = ALL[name]
    hf = hf_model(kw, seed=9)
    hf.save_pretrained(tmp_path)
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path)
    prompt = tokens(kw, batch=2, seq=5, seed=10)
    ref = hf.generate(
        prompt,
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=0,
        attention_mask=torch.ones_like(prompt),
    )
    streamed = []
    out = ours.generate(prompt, max_new_tokens=12, callback=streamed.append)
    assert torch.equal(out, ref), f"\nours {out.tolist()}\nhf   {ref.tolist()}"
    assert torch.equal(torch.stack(streamed, dim=1), out[:, prompt.shape[1] :])
    assert torch.equal(ours.generate(prompt, max_new_tokens=12, use_cache=False), out)


def test_generation_stops_at_eos():
    kw = DENSE["gqa-tied"]
    ours = ours_model(kw, seed=11)
    prompt = tokens(kw, batch=1, seq=4, seed=12)
    free = ours.generate(prompt, max_new_tokens=8)
    eos = int(free[0, 6])  # the third generated token
    out = ours.generate(prompt, max_new_tokens=8, eos_token_id=[eos, kw["vocab_size"] - 1])
    first = (out[0, 4:] == eos).nonzero()[0].item()
    assert out.shape[1] == 4 + first + 1 and out[0, -1].item() == eos


def test_training_gradients_match_transformers(tmp_path):
    kw = MOE["moe-mixed"]
    hf = hf_model(kw, seed=13).train()
    hf.save_pretrained(tmp_path)
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path).train()
    ids = tokens(kw, seed=14)
    hf(ids, labels=ids, output_router_logits=True).loss.backward()
    ours(ids, labels=ids).loss.backward()
    ref = dict(hf.named_parameters())
    mine = dict(ours.named_parameters())
    for name in (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_norm.weight",
        "model.layers.1.mlp.gate.weight",
        "model.layers.2.self_attn.o_proj.weight",
        "model.norm.weight",
    ):
        torch.testing.assert_close(mine[name].grad, ref[name].grad, **TOL)


def test_chunked_loss_equals_full_loss():
    kw = DENSE["mha-untied"]
    ours = ours_model(kw, seed=15)
    ids = tokens(kw, seq=9, seed=16)
    targets = tokens(kw, seq=9, seed=17)
    targets[0, :3] = -100
    full = ours(ids, targets)
    chunked = ours(ids, targets, return_logits=False)
    assert chunked.logits is None
    torch.testing.assert_close(chunked.loss, full.loss, **TOL)
    with pytest.raises(ValueError, match="not both"):
        ours(ids, targets, labels=ids)


def test_config_round_trips_through_transformers():
    for kw in ALL.values():
        ours = Qwen3Config(**kw)
        assert Qwen3Config.from_hf(hf_config(kw)) == ours
        assert Qwen3Config.from_dict(json.loads(json.dumps(ours.to_dict()))) == ours


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_key_value_heads=3), "multiple of num_key_value_heads"),
        (dict(head_dim=None, hidden_size=30), "not divisible"),
        (dict(head_dim=7), "even"),
        (dict(hidden_act="gelu"), "silu"),
        (dict(vocab_size=0), "vocab_size"),
        (
            dict(num_experts=4, num_experts_per_tok=5, moe_intermediate_size=8),
            "num_experts_per_tok",
        ),
        (
            dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=0),
            "moe_intermediate_size",
        ),
        (dict(mlp_only_layers=[7]), "mlp_only_layers"),
        (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "not supported"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 0.5}), "factor >= 1"),
    ],
)
def test_bad_configs_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        Qwen3Config(**{**DENSE["gqa-tied"], **change})


def test_bad_model_type_and_unknown_preset_raise():
    with pytest.raises(ValueError, match="llama"):
        Qwen3Config.from_dict({**DENSE["gqa-tied"], "model_type": "llama"})
    with pytest.raises(ValueError, match="unknown preset"):
        Qwen3Config.preset("t5")


@pytest.mark.parametrize("name", ["qwen3-0.6b", "qwen3-8b", "qwen3-30b-a3b", "qwen3-283m", "t4"])
def test_parameter_counts_equal_transformers(name):
    config = Qwen3Config.preset(name)
    with torch.device("meta"):
        hf = hf_class(PRESETS[name])(hf_config(config.to_dict()))
    assert parameter_counts(config)["total"] == sum(p.numel() for p in hf.parameters())


def test_parameter_counts_equal_our_model_and_model_cards():
    for name in ("ci", "cpu"):
        config = Qwen3Config.preset(name)
        model = Qwen3ForCausalLM(config)
        assert parameter_counts(config)["total"] == sum(p.numel() for p in model.parameters())
    assert 283e6 <= parameter_counts(Qwen3Config.preset("qwen3-283m"))["total"] < 284e6
    moe = parameter_counts(
        Qwen3Config.preset("qwen3-30b-a3b")
    )  # model card: 30.5B total, 3.3B active
    assert round(moe["total"] / 1e9, 1) == 30.5 and 3.3e9 < moe["active"] < 3.4e9
    assert round(parameter_counts(Qwen3Config.preset("qwen3-8b"))["non_embedding"] / 1e9, 2) == 6.95


def test_tying_and_initialisation():
    config = Qwen3Config.preset("cpu")
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    layer = model.model.layers[0]
    std = config.initializer_range
    assert abs(layer.self_attn.q_proj.weight.std().item() - std) < 0.1 * std
    residual = std / (2 * config.num_hidden_layers) ** 0.5
    assert abs(layer.mlp.down_proj.weight.std().item() - residual) < 0.1 * residual
    assert torch.equal(layer.self_attn.q_norm.weight, torch.ones(config.head_dim))


def test_top_k_and_top_p_equal_transformers_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(18)) * 3
    for k in (1, 5, 50):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits.clone()))
    for p in (0.05, 0.5, 0.9, 1.0):
        assert torch.equal(
            top_p_filter(logits, p).isinf(), TopPLogitsWarper(p)(None, logits.clone()).isinf()
        )
    # four equally likely tokens (exactly 0.25 each): p = 0.5 is reached by two of them, not three
    assert torch.isfinite(top_p_filter(torch.zeros(1, 4), 0.5)).sum() == 2
    assert torch.equal(sample_next_token(logits), logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    picks = sample_next_token(logits.repeat(200, 1), temperature=1.0, top_k=3, generator=g).view(
        200, 4
    )
    allowed = logits.topk(3).indices
    assert all((picks[:, r, None] == allowed[r]).any(-1).all() for r in range(4))
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(logits, temperature=-1.0)
