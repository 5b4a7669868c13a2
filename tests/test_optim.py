"""tinyqwen.optim (chapter 6) against torch.optim: AdamW, Muon, schedules, groups, resuming."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler

from tinyqwen.optim import (
    NS_COEFFICIENTS,
    AdamW,
    Muon,
    build_optimizer,
    classify_parameters,
    lr_schedule,
    muon_lr_scale,
    newton_schulz,
    optimizer_state_bytes,
    param_groups,
    set_lr,
)

VOCAB, DIM = 48, 16
KELLER_JORDAN_NS = (3.4445, -4.7750, 2.0315)  # the published quintic, independent of our constant


class TinyLM(nn.Module):
    """Embedding -> RMSNorm -> MLP (with a bias) -> lm_head: every parameter role appears once."""

    def __init__(self, tie: bool = False):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)
        self.norm = nn.RMSNorm(DIM)
        self.up_proj = nn.Linear(DIM, 4 * DIM)  # tall weight (64, 16) with a bias
        self.down_proj = nn.Linear(4 * DIM, DIM, bias=False)  # wide weight (16, 64)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        if tie:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, ids):
        x = self.embed_tokens(ids)
        x = x + self.down_proj(F.gelu(self.up_proj(self.norm(x))))
        return self.lm_head(x)


def batches(n, batch=4, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (batch, seq + 1), generator=g) for _ in range(n)]


def lm_loss(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def train(model, opts, data, schedule=None, start=0):
    """Plain training loop over ``data``; ``schedule(step, opt)`` may set learning rates first."""
    for i, ids in enumerate(data):
        for opt in opts:
            if schedule:
                schedule(start + i, opt)
            opt.zero_grad(set_to_none=True)
        lm_loss(model, ids).backward()
        for opt in opts:
            opt.step()


def twin_models(cls=TinyLM, **kw):
    torch.manual_seed(0)
    a = cls(**kw)
    return a, copy.deepcopy(a)


def assert_same_params(ours, ref, atol):
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


# --------------------------------------------------------------------------------------------
# AdamW
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch_adamw_over_100_steps(weight_decay):
    ours_model, ref_model = twin_models()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    ours = AdamW(param_groups(ours_model, weight_decay), **kw)
    ref = torch.optim.AdamW(param_groups(ref_model, weight_decay), amsgrad=False, **kw)

    def warm_cosine(step, opt):  # the lr changes every step, so a stale group["lr"] would show
        for g in opt.param_groups:
            g["lr"] = lr_schedule(step, max_lr=1e-2, warmup_steps=10, total_steps=100)

    data = batches(100)
    before = [p.detach().clone() for p in ours_model.parameters()]
    train(ours_model, [ours], data, warm_cosine)
    train(ref_model, [ref], data, warm_cosine)
    assert_same_params(ours_model, ref_model, atol=1e-6)
    moved = min(
        (p - b).abs().max().item() for p, b in zip(ours_model.parameters(), before, strict=True)
    )
    assert moved > 1e-3, "some parameter barely moved: the comparison would be vacuous"
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        s, r = ours.state[p], ref.state[q]
        assert s["step"] == int(r["step"]) == 100
        torch.testing.assert_close(s["exp_avg"], r["exp_avg"], atol=1e-6, rtol=0)
        torch.testing.assert_close(s["exp_avg_sq"], r["exp_avg_sq"], atol=1e-7, rtol=1e-5)


def test_adamw_first_step_is_lr_times_sign():
    """With bias correction the first Adam step is lr * g / (|g| + eps): about lr * sign(g)."""
    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    p.grad = torch.tensor([0.5, -1e-3, 40.0])
    AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0).step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 2.9]), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Newton–Schulz
# --------------------------------------------------------------------------------------------


def svd_polynomial_reference(G, steps=5, coefficients=KELLER_JORDAN_NS):
    """U p(S / ||G||_F) V^T in float64, p = the quintic applied ``steps`` times to each singular value."""
    a, b, c = coefficients
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    s = S / G.double().norm()
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return U @ torch.diag(s) @ Vh


def check_newton_schulz_against_svd():
    torch.manual_seed(1)
    for shape in [(24, 40), (40, 24), (32, 32)]:
        G = torch.randn(shape, dtype=torch.float64)
        ours = newton_schulz(G, 5, dtype=torch.float64)
        torch.testing.assert_close(ours, svd_polynomial_reference(G), atol=1e-9, rtol=1e-9)
        # bfloat16 (the default) is the same map up to bfloat16 rounding
        torch.testing.assert_close(
            newton_schulz(G.float()).double(), svd_polynomial_reference(G), atol=0.03, rtol=0
        )


def test_newton_schulz_is_the_singular_value_polynomial():
    check_newton_schulz_against_svd()


@pytest.mark.parametrize("shape", [(64, 64), (32, 128), (128, 32)])
def test_newton_schulz_pushes_singular_values_into_a_band_around_one(shape):
    torch.manual_seed(2)
    rows, cols = shape
    k = min(shape)
    U, _ = torch.linalg.qr(torch.randn(rows, k))
    V, _ = torch.linalg.qr(torch.randn(cols, k))
    s_in = torch.logspace(-1.5, 0, k)  # a spread of about 30x, like a real gradient's
    G = U @ torch.diag(s_in) @ V.T
    s_out = torch.linalg.svdvals(newton_schulz(G).float())
    assert s_in.max() / s_in.min() > 30
    assert 0.6 < s_out.min() and s_out.max() < 1.25, (
        f"singular values {s_out.min():.3f}..{s_out.max():.3f}"
    )
    # and the singular vectors are G's: U^T O V is (nearly) diagonal
    core = U.T @ newton_schulz(G, dtype=torch.float64).float() @ V
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-4
    if hasattr(torch.optim, "_muon"):
        from torch.optim._muon import _zeropower_via_newtonschulz

        theirs = _zeropower_via_newtonschulz(G, KELLER_JORDAN_NS, 5, 1e-7)
        torch.testing.assert_close(newton_schulz(G), theirs.float(), atol=0, rtol=0)


def test_coefficients_are_the_published_ones():
    assert NS_COEFFICIENTS == KELLER_JORDAN_NS
    if hasattr(torch.optim, "_muon"):
        from torch.optim import _muon

        assert NS_COEFFICIENTS == (_muon.DEFAULT_A, _muon.DEFAULT_B, _muon.DEFAULT_C)


def test_muon_defaults_are_the_published_ones():
    """Jordan's recipe, also torch.optim.Muon's defaults: momentum 0.95 with Nesterov, 5 quintic
    Newton-Schulz steps, lr scaled by sqrt(max(1, rows / cols)) (Moonshot's variant: 0.2 sqrt(max))."""
    defaults = Muon([nn.Parameter(torch.randn(4, 4))]).defaults
    assert (defaults["momentum"], defaults["nesterov"], defaults["ns_steps"]) == (0.95, True, 5)
    assert defaults["ns_coefficients"] == KELLER_JORDAN_NS
    assert muon_lr_scale((3072, 1024)) == pytest.approx(math.sqrt(3))
    assert muon_lr_scale((1024, 3072)) == 1.0
    assert muon_lr_scale((64, 256), "match_rms_adamw") == pytest.approx(0.2 * 16)
    if hasattr(torch.optim, "Muon"):
        theirs = torch.optim.Muon([nn.Parameter(torch.randn(4, 4))]).defaults
        assert (theirs["momentum"], theirs["nesterov"], theirs["ns_steps"]) == (0.95, True, 5)


def test_newton_schulz_zero_steps_only_normalises():
    G = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(newton_schulz(G, 0, dtype=torch.float64), G / G.norm())


# --------------------------------------------------------------------------------------------
# Muon
# --------------------------------------------------------------------------------------------


class Matrices(nn.Module):
    """Only 2-D weights (what torch.optim.Muon accepts): wide, square and tall."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)  # fixed: not trained here
        self.embed_tokens.weight.requires_grad_(False)
        self.w1 = nn.Linear(DIM, 48, bias=False)  # (48, 16): tall, lr scaled by sqrt(3)
        self.w2 = nn.Linear(48, 48, bias=False)
        self.w3 = nn.Linear(48, VOCAB // 2, bias=False)  # (24, 48): wide
        self.out = nn.Linear(VOCAB // 2, VOCAB, bias=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        return self.out(torch.tanh(self.w3(torch.tanh(self.w2(torch.tanh(self.w1(x)))))))


@pytest.mark.parametrize(
    "nesterov, adjust_lr_fn, torch_has_muon",
    [
        (True, "original", True),
        (False, "original", True),
        (True, "match_rms_adamw", True),
        (True, "original", False),
    ],
    ids=["nesterov", "plain-momentum", "match-rms-adamw", "pretend-torch-lacks-Muon"],
)
def test_muon_matches_torch_optim_muon_over_50_steps(
    nesterov, adjust_lr_fn, torch_has_muon, monkeypatch
):
    if not torch_has_muon:
        monkeypatch.delattr(torch.optim, "Muon", raising=False)
    if not hasattr(torch.optim, "Muon"):
        warnings.warn(
            f"torch {torch.__version__} has no torch.optim.Muon (added in PyTorch 2.9)"
            + ("" if torch_has_muon else " [simulated]")
            + ": comparing the Newton-Schulz step alone with its SVD definition",
            stacklevel=1,
        )
        check_newton_schulz_against_svd()
        return
    ours_model, ref_model = twin_models(Matrices)
    kw = dict(
        lr=0.02,
        momentum=0.95,
        nesterov=nesterov,
        weight_decay=0.1,
        ns_steps=5,
        adjust_lr_fn=adjust_lr_fn,
    )
    trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    ours = Muon(trainable(ours_model), **kw)
    ref = torch.optim.Muon(trainable(ref_model), **kw)  # torch's own default coefficients and eps
    data = batches(50, seed=3)
    before = [p.detach().clone() for p in trainable(ours_model)]
    train(ours_model, [ours], data)
    train(ref_model, [ref], data)
    assert_same_params(ours_model, ref_model, atol=1e-6)
    assert (
        min((p - b).abs().max().item() for p, b in zip(trainable(ours_model), before, strict=True))
        > 1e-2
    )
    for p, q in zip(trainable(ours_model), trainable(ref_model), strict=True):
        torch.testing.assert_close(
            ours.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"], atol=1e-6, rtol=0
        )


def test_muon_with_adamw_groups_matches_torch_muon_plus_torch_adamw():
    """build_optimizer(kind="muon") == torch.optim.Muon on hidden matrices + torch.optim.AdamW on the rest."""
    if not hasattr(torch.optim, "Muon"):
        pytest.skip(f"torch {torch.__version__} has no torch.optim.Muon (PyTorch >= 2.9)")
    ours_model, ref_model = twin_models()
    ours = build_optimizer(
        ours_model, "muon", lr=3e-3, muon_lr=0.02, weight_decay=0.1, betas=(0.9, 0.95)
    )
    groups = param_groups(ref_model, 0.1, muon=True)
    muon_groups = [g for g in groups if g.pop("use_muon")]
    adam_groups = [g for g in groups if g not in muon_groups]
    ref = [
        torch.optim.Muon(muon_groups, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True),
        torch.optim.AdamW(adam_groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8),
    ]
    data = batches(30, seed=4)
    train(ours_model, [ours], data)
    train(ref_model, ref, data)
    assert_same_params(ours_model, ref_model, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Parameter groups
# --------------------------------------------------------------------------------------------


def _ids(params):
    return {id(p) for p in params}


@pytest.mark.parametrize("tie", [False, True])
def test_param_groups_follow_the_convention(tie):
    model = TinyLM(tie=tie)
    roles = classify_parameters(model)
    assert _ids(roles["embedding"]) == {id(model.embed_tokens.weight)}
    assert _ids(roles["head"]) == (set() if tie else {id(model.lm_head.weight)})
    assert _ids(roles["vector"]) == {id(model.norm.weight), id(model.up_proj.bias)}
    assert _ids(roles["matrix"]) == {id(model.up_proj.weight), id(model.down_proj.weight)}

    for muon in (False, True):
        groups = param_groups(model, 0.1, muon=muon)
        every = [id(p) for g in groups for p in g["params"]]
        assert sorted(every) == sorted(_ids(model.parameters())), "each parameter exactly once"
        decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert decayed == _ids(roles["matrix"] + roles["head"])
        if muon:
            on_muon = {id(p) for g in groups if g["use_muon"] for p in g["params"]}
            assert on_muon == _ids(roles["matrix"])


def test_param_groups_on_hf_qwen3():
    """On transformers' own Qwen3: every projection on Muon; embeddings, head, norms on AdamW."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen3Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=False,
    )
    model = transformers.Qwen3ForCausalLM(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {
        g["role"]: {names[id(p)] for p in g["params"]} for g in param_groups(model, 0.1, muon=True)
    }
    assert groups["hidden matrices"] == {n for n in names.values() if n.endswith("proj.weight")}
    assert groups["decayed (AdamW)"] == {"lm_head.weight"}
    assert groups["not decayed (AdamW)"] == {n for n in names.values() if "norm" in n} | {
        "model.embed_tokens.weight"
    }
    opt = build_optimizer(model, "muon")
    assert isinstance(opt, Muon) and sum(len(g["params"]) for g in opt.param_groups) == len(names)


def test_param_groups_on_tinyqwen_qwen3_with_tied_head():
    """The course's own model (chapter 11), tied embeddings: the shared tensor is not decayed, not on Muon."""
    model_module = pytest.importorskip("tinyqwen.model")
    torch.manual_seed(0)
    model = model_module.Qwen3ForCausalLM(model_module.Qwen3Config.preset("ci", vocab_size=64))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {
        g["role"]: {names[id(p)] for p in g["params"]} for g in param_groups(model, 0.1, muon=True)
    }
    assert set(groups) == {"hidden matrices", "not decayed (AdamW)"}, (
        "tied head: no separate decayed group"
    )
    assert groups["hidden matrices"] == {n for n in names.values() if n.endswith("proj.weight")}
    assert "model.embed_tokens.weight" in groups["not decayed (AdamW)"]
    opt = build_optimizer(model, "muon")
    ids = torch.randint(0, 64, (2, 9))
    before = [p.detach().clone() for p in model.parameters()]
    logits = model(ids[:, :-1]).logits
    F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)), (
        "every tensor was updated"
    )


def test_optimizer_state_memory():
    model = TinyLM()
    n_bytes = {k: sum(p.numel() * 4 for p in v) for k, v in classify_parameters(model).items()}
    total = sum(n_bytes.values())
    for kind, expected in [
        ("adamw", 2 * total),
        ("muon", n_bytes["matrix"] + 2 * (total - n_bytes["matrix"])),
        ("sgd", total),
    ]:
        opt = build_optimizer(model, kind)
        lm_loss(model, batches(1)[0]).backward()
        opt.step()
        assert optimizer_state_bytes(opt) == expected, kind
        model.zero_grad()


# --------------------------------------------------------------------------------------------
# Resuming from a checkpoint
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["adamw", "muon", "sgd"])
def test_state_dict_round_trip_resumes_bit_identically(kind):
    schedule = dict(warmup_steps=3, total_steps=20, kind="wsd")
    lr = 0.1 if kind == "sgd" else 3e-3
    data = batches(20, seed=5)

    def step_fn(step, opt):
        set_lr(opt, step, **schedule)

    torch.manual_seed(0)
    model = TinyLM()
    opt = build_optimizer(model, kind, lr=lr)
    train(model, [opt], data[:10], step_fn)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(model, [opt], data[10:], step_fn, start=10)  # the uninterrupted run

    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    resumed = TinyLM()
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(resumed, kind, lr=lr)
    opt2.load_state_dict(ckpt["opt"])
    train(resumed, [opt2], data[10:], step_fn, start=10)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), f"{kind}: {name} differs after resuming"


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------


def torch_schedule(kind, max_lr, warmup, total, min_ratio, decay_fraction):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=max_lr)
    warm = lr_scheduler.LinearLR(
        opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1
    )
    if kind == "cosine":
        rest = [
            lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_ratio * max_lr)
        ]
        milestones = [warmup]
    else:
        decay = round(decay_fraction * total)
        rest = [
            lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
            lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=min_ratio, total_iters=decay),
        ]
        milestones = [warmup, total - decay]
    sched = lr_scheduler.SequentialLR(opt, [warm, *rest], milestones=milestones)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_lr_schedule_matches_torch_schedulers(kind):
    kw = dict(max_lr=3e-3, warmup_steps=10, total_steps=100, min_lr_ratio=0.1, decay_fraction=0.2)
    ours = [lr_schedule(s, kind=kind, **kw) for s in range(100)]
    theirs = torch_schedule(kind, 3e-3, 10, 100, 0.1, 0.2)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_lr_schedule_shapes():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    cos = [lr_schedule(s, kind="cosine", **kw) for s in range(120)]
    wsd = [lr_schedule(s, kind="wsd", decay_fraction=0.2, **kw) for s in range(120)]
    for lrs in (cos, wsd):
        assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
        assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True)), "warmup rises linearly"
        assert max(lrs) == pytest.approx(1.0)
        assert lrs[100:] == [pytest.approx(0.1)] * 20, "after total_steps the minimum"
    assert all(a > b for a, b in zip(cos[10:99], cos[11:100], strict=True)), (
        "cosine decreases after warmup"
    )
    assert cos[55] == pytest.approx(0.55), "halfway down, the cosine is halfway between max and min"
    assert wsd[10:80] == [1.0] * 70, "WSD is flat until the last 20 %"
    assert wsd[90] == pytest.approx(1.0 - 0.9 * 10 / 20), "then linear"


@pytest.mark.parametrize(
    "call",
    [
        lambda: lr_schedule(0, max_lr=1.0, warmup_steps=5, total_steps=10, kind="linear"),
        lambda: lr_schedule(-1, max_lr=1.0, warmup_steps=5, total_steps=10),
        lambda: lr_schedule(0, max_lr=1.0, warmup_steps=20, total_steps=10),
        lambda: lr_schedule(
            9, max_lr=1.0, warmup_steps=5, total_steps=10, kind="wsd", decay_fraction=0.9
        ),
        lambda: newton_schulz(torch.randn(2, 3, 4)),
        lambda: Muon([nn.Parameter(torch.randn(5))]),
        lambda: Muon([{"params": [nn.Parameter(torch.randn(5))], "use_muon": False}]),
        lambda: Muon([nn.Parameter(torch.randn(3, 3))], momentum=1.0),
        lambda: Muon([nn.Parameter(torch.randn(3, 3))], ns_coefficients=(3.4445, -4.775)),
        lambda: Muon([nn.Parameter(torch.randn(3, 3))], adjust_lr_fn="spectral"),
        lambda: AdamW([nn.Parameter(torch.randn(3))], betas=(0.9, 1.5)),
        lambda: build_optimizer(TinyLM(), "lion"),
        lambda: set_lr(
            torch.optim.SGD([nn.Parameter(torch.randn(2))], lr=0.1),
            0,
            warmup_steps=1,
            total_steps=2,
        ),
    ],
    ids=[
        "kind",
        "step",
        "warmup",
        "wsd-overlap",
        "ns-3d",
        "muon-1d",
        "adamw-group-no-lr",
        "muon-momentum",
        "muon-coefficients",
        "muon-adjust-lr-fn",
        "betas",
        "opt-kind",
        "no-max-lr",
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_first_cosine_step_after_warmup_is_the_peak():
    assert lr_schedule(10, max_lr=2.0, warmup_steps=10, total_steps=50) == 2.0
    assert math.isclose(
        lr_schedule(49, max_lr=2.0, warmup_steps=10, total_steps=50, min_lr_ratio=0.0),
        2.0 * 0.5 * (1 + math.cos(math.pi * 39 / 40)),
    )
