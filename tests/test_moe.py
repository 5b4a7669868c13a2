"""tinyqwen.moe against Hugging Face transformers' Qwen3-MoE block and a naive per-token loop."""

from __future__ import annotations

import pytest
import torch

from tinyqwen.moe import (
    MoE,
    SwiGLU,
    TopKRouter,
    fuse_experts,
    grouped_expert_forward,
    load_balancing_loss,
    unfuse_experts,
)

hf_moe = pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe")
from transformers import Qwen3MoeConfig  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)


def hf_block(hidden=32, inter=16, experts=8, k=2, norm=True, seed=0):
    """A Hugging Face Qwen3MoeSparseMoeBlock with random (not zero) weights."""
    torch.manual_seed(seed)
    config = Qwen3MoeConfig(
        hidden_size=hidden,
        moe_intermediate_size=inter,
        num_experts=experts,
        num_experts_per_tok=k,
        norm_topk_prob=norm,
    )
    block = hf_moe.Qwen3MoeSparseMoeBlock(config)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return block


def ours_like(block, **kw):
    c = block.experts.config
    return MoE(
        c.hidden_size,
        c.moe_intermediate_size,
        c.num_experts,
        c.num_experts_per_tok,
        c.norm_topk_prob,
        **kw,
    )


def official_layout(block) -> dict:
    """The per-expert keys of official Qwen3-MoE checkpoints, cut out of HF's fused tensors by hand."""
    inter = block.experts.config.moe_intermediate_size
    sd = {"gate.weight": block.gate.weight.detach().clone()}
    for i in range(block.experts.config.num_experts):
        sd[f"experts.{i}.gate_proj.weight"] = block.experts.gate_up_proj[i, :inter].detach().clone()
        sd[f"experts.{i}.up_proj.weight"] = block.experts.gate_up_proj[i, inter:].detach().clone()
        sd[f"experts.{i}.down_proj.weight"] = block.experts.down_proj[i].detach().clone()
    return sd


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The textbook definition, one token at a time: softmax, top-k, (renormalise), weighted sum."""
    out = torch.zeros_like(x.reshape(-1, x.shape[-1]))
    for t, token in enumerate(x.reshape(-1, x.shape[-1])):
        probs = torch.softmax(moe.gate.weight @ token, dim=-1)
        weights, chosen = torch.topk(probs, moe.gate.top_k)
        if moe.gate.norm_topk_prob:
            weights = weights / weights.sum()
        for w, e in zip(weights, chosen.tolist(), strict=True):
            out[t] += w * moe.experts[e](token)
    return out.view(x.shape)


@pytest.mark.parametrize(
    "hidden, inter, experts, k, norm",
    [(32, 16, 8, 2, True), (24, 40, 6, 1, False), (16, 8, 4, 4, True), (32, 16, 16, 3, False)],
)
def test_moe_equals_hf_sparse_block_fused_layout(hidden, inter, experts, k, norm):
    block = hf_block(hidden, inter, experts, k, norm)
    ours = ours_like(block)
    ours.load_state_dict(block.state_dict())  # fused 3-D tensors of transformers 5.x, strict
    x = torch.randn(3, 11, hidden)
    out, logits = ours(x)
    torch.testing.assert_close(out, block(x), **TOL)
    torch.testing.assert_close(logits, block.gate(x)[0], **TOL)
    assert logits.shape == (3 * 11, experts)


def test_moe_loads_official_per_expert_layout():
    block = hf_block(experts=6, k=2)
    sd = official_layout(block)
    ours = ours_like(block)
    ours.load_state_dict(sd)  # strict: exactly the keys official checkpoints use
    assert set(ours.state_dict()) == set(sd)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(ours(x)[0], block(x), **TOL)


def test_fuse_experts_feeds_hf_and_unfuse_inverts_it():
    ours = MoE(32, 16, 5, 2)
    fused = fuse_experts(ours.state_dict())
    assert set(fused) == {"gate.weight", "experts.gate_up_proj", "experts.down_proj"}
    block = hf_block(experts=5, k=2)
    block.load_state_dict(fused)  # strict
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(block(x), ours(x)[0], **TOL)
    back = unfuse_experts(fused)
    assert set(back) == set(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(back[key], value), key
    # prefixes of a whole model survive, and an incomplete set of experts is refused
    prefixed = fuse_experts({f"model.layers.3.mlp.{k}": v for k, v in ours.state_dict().items()})
    assert "model.layers.3.mlp.experts.gate_up_proj" in prefixed
    incomplete = {k: v for k, v in ours.state_dict().items() if k != "experts.2.up_proj.weight"}
    with pytest.raises(ValueError, match="experts.2.up_proj"):
        fuse_experts(incomplete)


def test_fused_keys_load_inside_a_parent_module():
    """The load hook must respect prefixes, as in model.layers.{i}.mlp of the assembled model."""
    block = hf_block(experts=4, k=2)
    parent = torch.nn.ModuleDict({"mlp": ours_like(block)})
    parent.load_state_dict({f"mlp.{k}": v for k, v in block.state_dict().items()})
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(parent["mlp"](x)[0], block(x), **TOL)


def test_gradients_equal_hf():
    block = hf_block(experts=8, k=2)
    ours = ours_like(block)
    ours.load_state_dict(block.state_dict())
    x1 = torch.randn(2, 13, 32, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    (block(x1) ** 2).sum().backward()
    (ours(x2)[0] ** 2).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, **TOL)
    grads = fuse_experts({k: p.grad for k, p in ours.named_parameters()})
    for k, p in block.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, **TOL, msg=k)


def test_router_equals_hf_router():
    for norm in (True, False):
        block = hf_block(experts=8, k=3, norm=norm)
        router = TopKRouter(32, 8, 3, norm_topk_prob=norm)
        router.load_state_dict(block.gate.state_dict())
        x = torch.randn(20, 32)
        for a, b in zip(router(x), block.gate(x), strict=True):
            torch.testing.assert_close(a, b, **TOL)
        weights = router(x)[1]
        if norm:
            torch.testing.assert_close(weights.sum(-1), torch.ones(20))
        else:
            assert (weights.sum(-1) < 1).all()


def test_swiglu_equals_hf_mlp_and_the_formula():
    config = Qwen3MoeConfig(hidden_size=32, intermediate_size=48)
    mlp = hf_moe.Qwen3MoeMLP(config)
    ours = SwiGLU(32, 48)
    ours.load_state_dict(mlp.state_dict())
    x = torch.randn(4, 5, 32)
    torch.testing.assert_close(ours(x), mlp(x), **TOL)
    g, u, d = ours.gate_proj.weight, ours.up_proj.weight, ours.down_proj.weight
    manual = ((x @ g.T) * torch.sigmoid(x @ g.T) * (x @ u.T)) @ d.T
    torch.testing.assert_close(ours(x), manual, **TOL)
    assert all(m.bias is None for m in (ours.gate_proj, ours.up_proj, ours.down_proj))


@pytest.mark.parametrize(
    "experts, k, norm", [(8, 2, True), (5, 1, False), (4, 4, True), (16, 3, False)]
)
def test_dispatch_equals_naive_per_token_loop(experts, k, norm):
    torch.manual_seed(experts + k)
    moe = MoE(16, 24, experts, k, norm)
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(moe(x)[0], naive_moe(moe, x), **TOL)


def test_dispatch_with_idle_experts_and_repeated_tokens():
    """Experts that receive no token must be skipped without shifting the others' rows."""
    torch.manual_seed(1)
    moe = MoE(16, 24, 6, 2)
    with torch.no_grad():
        moe.gate.weight[[1, 4]] = (
            -100.0 * moe.gate.weight[[1, 4]].sign()
        )  # large, but not for every token
        moe.gate.weight[2] = 0.0
        moe.gate.weight[2, 0] = -1e4  # expert 2 is never chosen when x[..., 0] > 0
    x = torch.randn(40, 16)
    x[:, 0] = x[:, 0].abs() + 0.1
    x[20:] = x[:20]  # duplicated tokens
    chosen = moe.gate(x)[2]
    assert 2 not in chosen
    torch.testing.assert_close(moe(x)[0], naive_moe(moe, x), **TOL)
    # the grouped function itself, with hand-made routing that leaves experts 0 and 5 idle
    experts = [torch.nn.Linear(16, 16, bias=False) for _ in range(6)]
    sel = torch.tensor([[3, 1], [1, 2], [4, 3], [2, 4]])
    w = torch.rand(4, 2)
    expected = torch.stack(
        [sum(w[t, j] * experts[sel[t, j]](x[t]) for j in range(2)) for t in range(4)]
    )
    torch.testing.assert_close(grouped_expert_forward(x[:4], w, sel, experts), expected, **TOL)


def test_load_balancing_loss_equals_transformers():
    torch.manual_seed(0)
    layers = tuple(torch.randn(2 * 9, 8) * s for s in (0.5, 1.0, 3.0))
    for k in (1, 2, 3):
        torch.testing.assert_close(
            load_balancing_loss(layers, 8, k), hf_moe.load_balancing_loss_func(layers, 8, k), **TOL
        )
        torch.testing.assert_close(
            load_balancing_loss(list(layers), 8, k), load_balancing_loss(layers, 8, k)
        )
    mask = torch.ones(2, 9)
    mask[0, 6:] = 0
    mask[1, :2] = 0
    torch.testing.assert_close(
        load_balancing_loss(layers, 8, 2, mask),
        hf_moe.load_balancing_loss_func(layers, 8, 2, mask),
        **TOL,
    )
    # one tensor is one layer (transformers only takes tuples)
    torch.testing.assert_close(
        load_balancing_loss(layers[1], 8, 2),
        hf_moe.load_balancing_loss_func(layers[1:2], 8, 2),
        **TOL,
    )


def test_load_balancing_loss_values_and_gradient():
    """Balanced routing gives top_k; collapse onto k experts gives about num_experts; only P_e carries a gradient."""
    E, k = 8, 2
    eye = torch.eye(E)
    # token t prefers experts t and t+1 (mod E) equally: every expert gets the same share
    balanced = torch.stack([10 * (eye[t % E] + eye[(t + 1) % E]) for t in range(64)])
    assert abs(load_balancing_loss(balanced, E, k).item() - k) < 1e-3
    collapsed = (10 * (eye[0] + eye[1])).expand(64, E)
    assert abs(load_balancing_loss(collapsed, E, k).item() - E) < 1e-2
    logits = torch.randn(30, E, requires_grad=True)
    load_balancing_loss(logits, E, k).backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MoE(32, 16, 4, 5), "num_experts_per_tok=5 exceeds num_experts=4"),
        (lambda: MoE(32, 16, 0, 1), "num_experts"),
        (lambda: MoE(32, 0, 4, 2), "moe_intermediate_size"),
        (lambda: MoE(-1, 16, 4, 2), "hidden_size"),
        (lambda: MoE(32, 16, 4, 0), "num_experts_per_tok"),
        (lambda: MoE(32, 16, 4, 2.0), "num_experts_per_tok"),
        (lambda: SwiGLU(32, 0), "intermediate_size"),
        (lambda: TopKRouter(8, 3, 4), "exceeds"),
        (lambda: MoE(32, 16, 4, 2)(torch.randn(2, 3, 31)), "hidden_size=32"),
        (lambda: load_balancing_loss(torch.randn(6, 4), 8, 2), "num_experts=8"),
        (lambda: load_balancing_loss(torch.randn(6, 4), 4, 5), "top_k=5"),
        (lambda: load_balancing_loss((), 4, 2), "empty"),
        (lambda: load_balancing_loss(torch.randn(6, 4), 4, 2, torch.ones(2, 4)), "attention_mask"),
        (lambda: unfuse_experts({"experts.gate_up_proj": torch.zeros(2, 3, 4)}), "gate_up_proj"),
    ],
)
def test_bad_configs_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---- the grouped-GEMM fast path against the readable loop ------------------------------------

from tinyqwen.moe import (  # noqa: E402
    grouped_mm_expert_forward,
    grouped_mm_supported,
    stack_expert_weights,
)

needs_grouped_mm = pytest.mark.skipif(
    not grouped_mm_supported("cpu", torch.float32, 16), reason="no torch.nn.functional.grouped_mm"
)


def _grads(module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient; an expert that received no token has none in the loop: zeros."""
    return {
        k: p.grad if p.grad is not None else torch.zeros_like(p)
        for k, p in module.named_parameters()
    }


def _run_both(hidden, inter, experts, k, norm, seed, x, dtype=torch.float32, tol=TOL):
    torch.manual_seed(seed)
    loop = MoE(hidden, inter, experts, k, norm, experts_implementation="loop").to(dtype)
    fast = MoE(hidden, inter, experts, k, norm, experts_implementation="grouped_mm").to(dtype)
    fast.load_state_dict(loop.state_dict())
    xa, xb = x.to(dtype).requires_grad_(), x.to(dtype).requires_grad_()
    (out_loop, logits_loop), (out_fast, logits_fast) = loop(xa), fast(xb)
    torch.testing.assert_close(out_fast, out_loop, **tol)
    torch.testing.assert_close(logits_fast, logits_loop, **tol)
    probe = torch.randn(out_loop.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    (out_loop * probe).sum().backward()
    (out_fast * probe).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, **tol)
    fast_grads, loop_grads = _grads(fast), _grads(loop)
    for name, g in loop_grads.items():
        torch.testing.assert_close(fast_grads[name], g, **tol, msg=name)
    return loop, fast


@needs_grouped_mm
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "hidden, inter, experts, k, norm",
    [(32, 16, 8, 2, True), (24, 40, 6, 1, False), (16, 8, 4, 4, True), (32, 24, 16, 3, False)],
)
def test_grouped_mm_path_equals_the_loop(hidden, inter, experts, k, norm, seed):
    x = torch.randn(3, 11, hidden, generator=torch.Generator().manual_seed(100 + seed))
    _run_both(hidden, inter, experts, k, norm, seed, x)


@needs_grouped_mm
def test_grouped_mm_with_idle_and_crowded_experts():
    """Hand-made routing: experts 0 and 5 get no row, expert 3 most of them; idle experts get zero gradients."""
    torch.manual_seed(3)
    experts = torch.nn.ModuleList(SwiGLU(16, 8) for _ in range(6))
    weights = [t.detach().requires_grad_() for t in stack_expert_weights(experts, torch.float32)]
    x = torch.randn(7, 16)
    sel = torch.tensor([[3, 1], [3, 2], [4, 3], [2, 3], [3, 4], [1, 3], [3, 2]])
    w = torch.rand(7, 2)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference = grouped_expert_forward(xa, w, sel, experts)
    fast = grouped_mm_expert_forward(xb, w, sel, *weights)
    torch.testing.assert_close(fast, reference, **TOL)
    reference.square().sum().backward()
    fast.square().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, **TOL)
    gate_up, down = weights  # (experts, 2 * 8, 16): gate rows, then up rows; (experts, 16, 8)
    for e, expert in enumerate(experts):
        got = {
            "gate_proj": gate_up.grad[e, :8],
            "up_proj": gate_up.grad[e, 8:],
            "down_proj": down.grad[e],
        }
        for name, grad in got.items():
            expected = getattr(expert, name).weight.grad
            if e in (0, 5):
                assert expected is None and grad.abs().max() == 0
            else:
                torch.testing.assert_close(grad, expected, **TOL)
    # an expanded (stride-0) output gradient, as from .sum(), reaches the grouped kernels too
    xa.grad = xb.grad = None
    grouped_expert_forward(xa, w, sel, experts).sum().backward()
    grouped_mm_expert_forward(xb, w, sel, *weights).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, **TOL)
    # every token routed to the same two experts: two groups hold all rows
    two = torch.tensor([[4, 2]]).expand(7, 2)
    torch.testing.assert_close(
        grouped_mm_expert_forward(x, w, two, *weights),
        grouped_expert_forward(x, w, two, experts),
        **TOL,
    )


@needs_grouped_mm
@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_mm_in_bfloat16_and_under_autocast(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 13, 32, generator=g)
    bf16 = dict(atol=2e-2, rtol=2e-2)
    _run_both(32, 16, 8, 2, True, seed, x, dtype=torch.bfloat16, tol=bf16)
    torch.manual_seed(seed)
    loop = MoE(32, 16, 8, 2, experts_implementation="loop")
    fast = MoE(32, 16, 8, 2, experts_implementation="grouped_mm")
    fast.load_state_dict(loop.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fast, out_loop = fast(x)[0], loop(x)[0]
    assert out_fast.dtype == out_loop.dtype == torch.float32
    torch.testing.assert_close(out_fast, out_loop, **bf16)


def test_experts_implementation_choice_and_fallback():
    x = torch.randn(2, 5, 6)
    auto = MoE(6, 10, 4, 2)  # 6 float32s = 24 bytes per row: not a multiple of 16, the loop runs
    assert not grouped_mm_supported("cpu", torch.float32, 6, 10)
    forced = MoE(6, 10, 4, 2, experts_implementation="grouped_mm")
    forced.load_state_dict(auto.state_dict())
    torch.testing.assert_close(auto(x)[0], naive_moe(auto, x), **TOL)
    with pytest.raises(ValueError, match="grouped_mm cannot run"):
        forced(x)
    with pytest.raises(ValueError, match="experts_implementation"):
        MoE(32, 16, 4, 2, experts_implementation="fast")
    assert not grouped_mm_supported("cpu", torch.float64, 16)


@needs_grouped_mm
def test_auto_picks_grouped_mm_for_many_busy_experts_on_a_cpu(monkeypatch):
    """auto: the grouped kernels for a batch over 64+ experts; the loop for a token or few experts."""
    import tinyqwen.moe as moe_module

    calls = []
    real = moe_module.grouped_mm_expert_forward

    def counting(*args):
        calls.append(len(args[0]))
        return real(*args)

    monkeypatch.setattr(moe_module, "grouped_mm_expert_forward", counting)
    many, few = MoE(16, 8, 64, 2), MoE(16, 8, 8, 2)
    many(torch.randn(40, 16))  # 80 routed rows for 64 experts
    many(torch.randn(1, 16))  # one token decoding: 2 experts busy
    few(torch.randn(40, 16))
    assert calls == [40]


@needs_grouped_mm
def test_grouped_mm_under_torch_compile_takes_bfloat16_only(monkeypatch):
    """The compiler's grouped_mm accepts bfloat16 only; float32 then falls back to the loop."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not grouped_mm_supported("cpu", torch.float32, 16)
    assert grouped_mm_supported("cpu", torch.bfloat16, 16)
