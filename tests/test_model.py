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
    with pytest.raises(ValueError, match="logits_to_keep"):
        ours(ids, targets, logits_to_keep=1)


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


# ---- save_pretrained / from_pretrained into a folder that already holds a checkpoint ---------


def _weights_files(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith("model")}


@pytest.mark.parametrize("first_shard, second_shard", [(20_000, "5GB"), ("5GB", 20_000)])
def test_saving_over_an_older_checkpoint_leaves_no_stale_files(first_shard, second_shard, tmp_path):
    """Sharded then single file (and the reverse): both loaders must see only the second save."""
    kw = DENSE["mha-untied"]
    ids = tokens(kw, seed=21)
    ours_model(kw, seed=19).save_pretrained(tmp_path, max_shard_size=first_shard)
    (tmp_path / "tokenizer.json").write_text("{}")  # a file that saving does not write survives
    second = ours_model(kw, seed=20)
    second.save_pretrained(tmp_path, max_shard_size=second_shard)
    sharded = second_shard != "5GB"
    assert (tmp_path / "model.safetensors").exists() != sharded
    assert (tmp_path / "model.safetensors.index.json").exists() == sharded
    index = tmp_path / "model.safetensors.index.json"
    shards = set(json.loads(index.read_text())["weight_map"].values()) if sharded else set()
    assert _weights_files(tmp_path) == (shards | {index.name} if sharded else {"model.safetensors"})
    assert (tmp_path / "tokenizer.json").read_text() == "{}"
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = second(ids).logits
        torch.testing.assert_close(
            Qwen3ForCausalLM.from_pretrained(tmp_path)(ids).logits, expected, atol=0, rtol=0
        )
        torch.testing.assert_close(hf(ids).logits, expected, **TOL)


def test_loading_prefers_model_safetensors_like_transformers(tmp_path):
    """A folder left by another writer with a new model.safetensors beside stale shards."""
    kw = DENSE["mha-untied"]
    ours_model(kw, seed=22).save_pretrained(tmp_path, max_shard_size=20_000)  # old: shards + index
    new = ours_model(kw, seed=23)
    state = {k: v.contiguous() for k, v in new.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert (tmp_path / "model.safetensors.index.json").exists()
    ids = tokens(kw, seed=24)
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = new(ids).logits
        torch.testing.assert_close(
            Qwen3ForCausalLM.from_pretrained(tmp_path)(ids).logits, expected, atol=0, rtol=0
        )
        torch.testing.assert_close(hf(ids).logits, expected, **TOL)


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failure_while_saving_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    import tinyqwen.model as model_module

    kw = DENSE["mha-untied"]
    folder = tmp_path / "ckpt"
    old = ours_model(kw, seed=25)
    old.save_pretrained(folder, max_shard_size=20_000)
    before = _snapshot(folder)
    real_save_file, calls = model_module.save_file, []

    def failing_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the second shard: the disk is full
            raise OSError(28, "No space left on device")
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(model_module, "save_file", failing_save_file)
    with pytest.raises(OSError, match="No space"):
        ours_model(kw, seed=26).save_pretrained(folder, max_shard_size=20_000)
    assert len(calls) == 2 and _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left
    # the swap itself fails after the old folder was moved aside: it is moved back
    monkeypatch.setattr(model_module, "save_file", real_save_file)
    real_rename = model_module.os.rename

    def failing_rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename interrupted")
        real_rename(src, dst)

    monkeypatch.setattr(model_module.os, "rename", failing_rename)
    with pytest.raises(OSError, match="interrupted"):
        ours_model(kw, seed=26).save_pretrained(folder)
    monkeypatch.undo()
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    ids = tokens(kw, seed=27)
    with torch.no_grad():
        torch.testing.assert_close(
            Qwen3ForCausalLM.from_pretrained(folder)(ids).logits, old(ids).logits, atol=0, rtol=0
        )


def test_save_pretrained_refuses_a_file_in_place_of_the_folder(tmp_path):
    target = tmp_path / "model"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="not a directory"):
        ours_model(DENSE["mha-untied"]).save_pretrained(target)
    assert target.read_text() == "not a folder"


# ---- the fast paths against the chapters' readable references -------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab, tokens", [(97, 23), (4096, 600)])  # 600 rows: several CPU blocks
def test_linear_cross_entropy_equals_lm_head_and_chapter_9(dtype, vocab, tokens):
    from tinyqwen.loss import cross_entropy
    from tinyqwen.model import linear_cross_entropy

    g = torch.Generator().manual_seed(vocab + tokens)
    hidden = torch.randn(tokens, 32, generator=g).to(dtype)
    weight = (torch.randn(vocab, 32, generator=g) / 2).to(dtype)
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    targets[::7] = -100  # ignored positions get no loss and no gradient
    probe = torch.randn(tokens, vocab, generator=g).to(dtype)  # a gradient reaching the logits too
    leaves = [[t.clone().requires_grad_() for t in (hidden, weight)] for _ in range(2)]
    (h1, w1), (h2, w2) = leaves
    logits, loss = linear_cross_entropy(h1, w1, targets)
    ref_logits = h2 @ w2.T
    ref_loss = cross_entropy(ref_logits.float(), targets)  # what the model computed before
    assert loss.dtype == torch.float32 and logits.dtype == dtype
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(loss, ref_loss)
    (2.5 * loss + (logits * probe).sum()).backward()
    (2.5 * ref_loss + (ref_logits * probe).sum()).backward()
    # the weight's gradient sums over tokens block by block: another order of additions (and in
    # bfloat16 one rounding per block), so the tolerance is relative to the gradient's size
    eps = torch.finfo(dtype).eps
    for mine, ref in ((h1, h2), (w1, w2)):
        assert mine.grad.dtype == dtype
        scale = ref.grad.float().abs().max().item()
        torch.testing.assert_close(mine.grad, ref.grad, atol=8 * eps * scale, rtol=0)
    # only the loss, only the logits: a gradient that does not arrive is not needed
    h, w = hidden.float().requires_grad_(), weight.float().requires_grad_()
    linear_cross_entropy(h, w, targets)[1].backward()
    assert h.grad[::7].abs().max() == 0  # ignored rows
    h.grad = None
    linear_cross_entropy(h, w, targets)[0].sum().backward()
    torch.testing.assert_close(h.grad, w.detach().sum(0).expand(tokens, -1), atol=1e-4, rtol=1e-4)
    # batch-shaped inputs, and what chapter 9 refuses this refuses too
    shaped_logits, shaped = linear_cross_entropy(
        hidden.float()[:20].view(4, 5, 32), weight.float(), targets[:20].view(4, 5)
    )
    assert shaped_logits.shape == (4, 5, vocab)
    torch.testing.assert_close(
        shaped, cross_entropy(hidden.float()[:20] @ weight.float().T, targets[:20])
    )
    with pytest.raises(ValueError, match="outside the vocabulary"):
        linear_cross_entropy(hidden, weight, torch.full((tokens,), vocab))
    with pytest.raises(ValueError, match="targets shape"):
        linear_cross_entropy(hidden, weight, targets[:-1])


def test_linear_cross_entropy_under_autocast():
    """Under CPU autocast the logits come out in bfloat16, as from nn.Linear, and so do the matmuls' gradients."""
    from tinyqwen.loss import cross_entropy
    from tinyqwen.model import linear_cross_entropy

    g = torch.Generator().manual_seed(5)
    hidden, weight = torch.randn(300, 32, generator=g), torch.randn(4096, 32, generator=g) / 2
    targets = torch.randint(0, 4096, (300,), generator=g)
    (h1, w1), (h2, w2) = [[t.clone().requires_grad_() for t in (hidden, weight)] for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = linear_cross_entropy(h1, w1, targets)
        ref_logits = torch.nn.functional.linear(h2, w2)
        ref_loss = cross_entropy(ref_logits.float(), targets)
    assert logits.dtype == ref_logits.dtype == torch.bfloat16
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    ref_loss.backward()
    assert (h1.grad.dtype, w1.grad.dtype) == (torch.float32, torch.float32)
    bf16 = dict(atol=1e-3, rtol=2e-2)  # products rounded to bfloat16 on both sides
    torch.testing.assert_close(h1.grad, h2.grad, **bf16)
    torch.testing.assert_close(w1.grad, w2.grad, **bf16)


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_kv_attention_equals_chapter_3(seed):
    """Same outputs and gradients as GroupedQueryAttention, with and without a cache or a mask."""
    from functools import partial

    from tinyqwen.attention import GroupedQueryAttention
    from tinyqwen.context import KVCache
    from tinyqwen.model import SharedKVAttention
    from tinyqwen.norm import RMSNorm

    torch.manual_seed(seed)
    kw = dict(hidden_size=48, num_heads=6, num_kv_heads=2, head_dim=8, qk_norm=partial(RMSNorm))
    reference, fast = GroupedQueryAttention(**kw), SharedKVAttention(**kw)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, 9, 48)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_ref = fast(xa), reference(xb)
    torch.testing.assert_close(out_fast, out_ref, **TOL)
    out_fast.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)
    for (name, p), q in zip(fast.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=name)
    mask = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(seed)) > 0.3
    mask |= torch.eye(9, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, attn_mask=mask), reference(x, attn_mask=mask), **TOL)
        caches = KVCache(1, max_seq_len=12), KVCache(1, max_seq_len=12)
        for chunk in (x[:, :5], x[:, 5:6], x[:, 6:9]):  # prefill, one token, then three at once
            torch.testing.assert_close(
                fast(chunk, kv_cache=caches[0]), reference(chunk, kv_cache=caches[1]), **TOL
            )


def test_training_step_gradients_match_transformers_dense(tmp_path):
    """The fused head and loss and the shared-kv attention inside the whole model, against transformers."""
    kw = DENSE["gqa-tied"]
    hf = hf_model(kw, seed=28).train()
    hf.save_pretrained(tmp_path)
    ours = Qwen3ForCausalLM.from_pretrained(tmp_path).train()
    ids = tokens(kw, seed=29)
    ref, out = hf(ids, labels=ids), ours(ids, labels=ids)
    torch.testing.assert_close(out.loss, ref.loss, **TOL)
    ref.loss.backward()
    out.loss.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, **TOL, msg=name)
