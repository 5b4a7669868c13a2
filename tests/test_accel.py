"""Chapter 8: FLOP and memory accounting checked against what PyTorch actually counts and allocates."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyqwen.accel import (
    GPU_SPECS,
    LOSSES,
    ThroughputMeter,
    activation_bytes_per_token,
    amp_dtype_for_capability,
    autocast_for,
    flops_breakdown,
    flops_per_token,
    gpu_spec,
    mfu,
    param_counts,
    peak_allocated_bytes,
    peak_flops,
    pick_device,
    saved_tensor_bytes,
    training_memory,
)

transformers = pytest.importorskip("transformers")
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM  # noqa: E402

DENSE = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,
)  # GQA, head_dim != hidden/heads
MOE = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    moe_intermediate_size=32,
    num_experts=8,
    num_experts_per_tok=2,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    decoder_sparse_step=1,
    mlp_only_layers=[1],
    tie_word_embeddings=False,
)


def hf_dense(tied=True, attn="eager", **kw):
    torch.manual_seed(0)
    cfg = Qwen3Config(**{**DENSE, "tie_word_embeddings": tied, **kw})
    return cfg, Qwen3ForCausalLM._from_config(cfg, attn_implementation=attn)


def hf_moe(attn="eager", **kw):
    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(**{**MOE, **kw})
    # the eager expert loop runs F.linear per expert, which FlopCounterMode sees (grouped_mm it may not)
    return cfg, Qwen3MoeForCausalLM._from_config(
        cfg, attn_implementation=attn, experts_implementation="eager"
    )


def counted_flops(model, x, backward=True):
    with FlopCounterMode(display=False) as counter:
        loss = model(x, labels=x).loss
        if backward:
            loss.backward()
    return counter.get_total_flops()


# ---------------------------------------------------------------- FLOPs per token


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("seq_len", [16, 48])
def test_flops_per_token_equals_flop_counter_on_a_dense_training_step(tied, seq_len):
    """Eager attention computes the full (seq x seq) score matrix with matmuls, as our default
    (causal=False) convention counts; every other counted op is a projection matmul. Exact."""
    cfg, model = hf_dense(tied=tied)
    batch = 2
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    assert counted_flops(model, x) == pytest.approx(
        batch * seq_len * flops_per_token(cfg, seq_len), rel=1e-12
    )


def test_flops_per_token_equals_flop_counter_for_experts():
    """MoE: the router and exactly num_experts_per_tok experts per token; mlp_only_layers stay dense."""
    cfg, model = hf_moe()
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    assert counted_flops(model, x) == pytest.approx(64 * flops_per_token(cfg, 32), rel=1e-12)
    parts = flops_breakdown(cfg, 32)
    assert parts["mlp"] == 6 * 1 * 3 * 64 * 96 and parts["experts"] == 6 * 2 * 2 * 3 * 64 * 32


def test_forward_only_flops_are_a_third():
    cfg, model = hf_dense()
    x = torch.randint(0, cfg.vocab_size, (2, 24))
    with torch.no_grad():
        fwd = counted_flops(model, x, backward=False)
    assert fwd == pytest.approx(48 * flops_per_token(cfg, 24, backward=False), rel=1e-12)
    assert flops_per_token(cfg, 24) == pytest.approx(3 * flops_per_token(cfg, 24, backward=False))


def test_flops_formula_is_six_n_plus_attention():
    cfg, _ = hf_dense(tied=False)
    c = param_counts(cfg)
    n_matmul = c["total"] - c["embed_tokens"] - c["norms"]  # every weight one token multiplies
    T = 40
    assert flops_per_token(cfg, T) == 6 * n_matmul + 12 * 2 * 4 * 24 * T
    causal = flops_per_token(cfg, T, causal=True)
    assert causal == 6 * n_matmul + 12 * 2 * 4 * 24 * (T + 1) / 2


def inplace_addmm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs):
    """FlopCounterMode's formula for addmm, for the in-place addmm_ its table lacks."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
@pytest.mark.parametrize("loss", ["fused", "chunked"])
def test_flops_per_token_of_the_course_model_matches_flop_counter(loss, amp):
    """tinyqwen.model (chapter 11) built from chapters 1-5: its matmuls against flops_breakdown.

    The fused lm_head + loss runs the head's three matmuls (logits; per block of rows the hidden
    and weight gradients), 6 * vocab * hidden per token like any weight; in float32 it adds the
    weight gradient with the in-place addmm_, which FlopCounterMode's table lacks, so the counter
    is given addmm's formula for it. The chunked loss recomputes the logits in backward: the
    kernels then run 2 * vocab * hidden per token more than the model FLOPs that MFU counts."""
    model_mod = pytest.importorskip("tinyqwen.model")
    cfg = model_mod.Qwen3Config(**{**DENSE, "tie_word_embeddings": True})
    torch.manual_seed(0)
    model = model_mod.Qwen3ForCausalLM(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: inplace_addmm_flops}) as counter:
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x, targets=x, return_logits=loss == "fused")
        out.loss.backward()
    counts = {str(k).split(".")[-1]: v for k, v in counter.get_flop_counts()["Global"].items()}
    parts = flops_breakdown(cfg, 32)
    recomputed = 64 * 2 * cfg.vocab_size * cfg.hidden_size if loss == "chunked" else 0
    mm = sum(v for k, v in counts.items() if k in ("mm", "addmm", "addmm_"))
    assert mm == 64 * (parts["total"] - parts["attention_scores"]) + recomputed, counts
    attention = counter.get_total_flops() - mm
    # CPU's fused attention kernel is not in FlopCounterMode's table (it then counts 0);
    # a matmul (or registered fused) path must count exactly the full score matrix
    assert attention in (0, pytest.approx(64 * parts["attention_scores"], rel=1e-12)), counts


# ---------------------------------------------------------------- memory


def storage_bytes(tensors):
    seen = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def one_step(model, opt, x):
    model(x, labels=x).loss.backward()
    opt.step()


@pytest.mark.parametrize("build", ["dense_tied", "dense_untied", "moe"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parameter_gradient_and_adamw_bytes_equal_allocated_tensors(build, dtype):
    cfg, model = {
        "dense_tied": lambda: hf_dense(True),
        "dense_untied": lambda: hf_dense(False),
        "moe": hf_moe,
    }[build]()
    model.to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    one_step(model, opt, torch.randint(0, cfg.vocab_size, (2, 8)))
    est = training_memory(cfg, 2, 8, "adamw", param_dtype=dtype)
    params = list(model.parameters())
    assert est["parameters"] == storage_bytes(params)
    assert est["gradients"] == storage_bytes(p.grad for p in params)
    moments = [s[k] for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq")]
    assert est["optimizer"] == storage_bytes(moments)
    assert param_counts(cfg)["total"] == sum(p.numel() for p in params)


def test_sgd_momentum_bytes_equal_allocated_buffers():
    cfg, model = hf_dense(False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    one_step(model, opt, torch.randint(0, cfg.vocab_size, (2, 8)))
    buffers = [s["momentum_buffer"] for s in opt.state.values()]
    assert training_memory(cfg, 2, 8, "sgd")["optimizer"] == storage_bytes(buffers)


def test_muon_state_bytes_equal_allocated_buffers():
    optim = pytest.importorskip("tinyqwen.optim")
    cfg, model = hf_dense(False)
    opt = optim.build_optimizer(model, "muon")
    one_step(model, opt, torch.randint(0, cfg.vocab_size, (2, 8)))
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]
    assert training_memory(cfg, 2, 8, "muon")["optimizer"] == storage_bytes(state)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_activation_estimate_equals_bytes_saved_for_backward(attn, amp, kind):
    """Hugging Face's Qwen3 (whose loss is F.cross_entropy: loss="log_softmax") holds exactly what
    activation_bytes_per_token counts (the loss scalar and nothing else is left over)."""
    cfg, model = hf_dense(True, attn) if kind == "dense" else hf_moe(attn)
    batch, seq = 3, 40
    x = torch.randint(0, cfg.vocab_size, (batch, seq))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return model(x, labels=x).loss

    _, saved = saved_tensor_bytes(step, exclude=model.parameters())
    est = training_memory(
        cfg,
        batch,
        seq,
        autocast_dtype=torch.bfloat16 if amp else None,
        attention=attn,
        loss="log_softmax",
    )
    assert 0 <= saved - (est["activations"] + est["weight_casts"]) <= 16, (saved, est)


def course_model(vocab=1024, **kw):
    """Chapter 11's model, small, with a vocabulary large enough for the loss to matter."""
    model_mod = pytest.importorskip("tinyqwen.model")
    cfg = model_mod.Qwen3Config(**{**DENSE, "vocab_size": vocab, "tie_word_embeddings": True, **kw})
    torch.manual_seed(0)
    return cfg, model_mod.Qwen3ForCausalLM(cfg)


def course_loss(model, x, y, loss):
    """The course model's forward with each way of writing the loss (LOSSES)."""
    if loss == "log_softmax":  # Hugging Face's way, on the course model's logits
        return torch.nn.functional.cross_entropy(model(x).logits.flatten(0, 1).float(), y.flatten())
    return model(x, targets=y, return_logits=loss == "fused").loss


AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("amp", list(AMP))
def test_course_model_holds_what_the_calculator_counts_for_each_loss(loss, amp):
    """What chapter 11's model holds for backward when its forward returns, to the byte (but the
    8-byte count of target tokens), for every way of writing the loss; float16 autocast on a CPU
    stands in for a T4's."""
    cfg, model = course_model()
    batch, seq = 3, 400  # 1,200 tokens: more than one 1,024-token chunk
    x, y = (torch.randint(0, cfg.vocab_size, (batch, seq)) for _ in range(2))

    def forward():
        with torch.autocast("cpu", dtype=AMP[amp] or torch.float32, enabled=AMP[amp] is not None):
            return course_loss(model, x, y, loss)

    _, held = saved_tensor_bytes(forward, exclude=model.parameters())
    est = training_memory(cfg, batch, seq, autocast_dtype=AMP[amp], loss=loss)
    assert 0 <= held - (est["activations"] + est["weight_casts"]) <= 16, (held, est)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("amp", list(AMP))
def test_course_model_peak_is_what_the_calculator_predicts(loss, amp):
    """The peak of a forward and backward pass (parameters and gradients aside) against
    activations + weight casts + the loss's transient tensors, on this CPU (device="cpu": the
    fused loss's blocks of about a million logits, here 1,024 rows, so 1,200 tokens make a full
    block and a partial one)."""
    cfg, model = course_model()
    batch, seq = 3, 400
    x, y = (torch.randint(0, cfg.vocab_size, (batch, seq)) for _ in range(2))

    def step():
        with torch.autocast("cpu", dtype=AMP[amp] or torch.float32, enabled=AMP[amp] is not None):
            out = course_loss(model, x, y, loss)
        out.backward()

    _, peak = peak_allocated_bytes(step)
    est = training_memory(cfg, batch, seq, autocast_dtype=AMP[amp], loss=loss, device="cpu")
    predicted = est["activations"] + est["weight_casts"] + est["logits"]
    assert peak == pytest.approx(predicted, rel=0.01), (peak, est)


def fused_loss_peak_and_prediction(vocab, batch, seq, param_dtype=torch.float32, amp_dtype=None):
    """(peak of the course model's forward and backward on this CPU, the calculator's figure for it)."""
    cfg, model = course_model(vocab=vocab)
    model.to(param_dtype)
    x, y = (torch.randint(0, cfg.vocab_size, (batch, seq)) for _ in range(2))

    def step():
        with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(x, targets=y).loss
        out.backward()

    _, peak = peak_allocated_bytes(step)
    est = training_memory(cfg, batch, seq, param_dtype=param_dtype, autocast_dtype=amp_dtype, device="cpu")
    return peak, est["activations"] + est["weight_casts"] + est["logits"]


@pytest.mark.parametrize("amp", list(AMP))
@pytest.mark.parametrize("vocab, batch, seq", [(4096, 1, 100), (1024, 4, 600)], ids=["one block", "blocks"])
def test_fused_loss_peak_across_blocks(vocab, batch, seq, amp):
    """Fewer tokens than one CPU block (100 rows of 256), and two full blocks before a partial one
    (2,400 rows of 1,024): the peak is the calculator's."""
    peak, predicted = fused_loss_peak_and_prediction(vocab, batch, seq, amp_dtype=AMP[amp])
    assert peak == pytest.approx(predicted, rel=0.01)


def test_fused_loss_peak_with_bfloat16_parameters():
    """bfloat16 parameters, no autocast: the float32 weight gradient is cast back at the end."""
    peak, predicted = fused_loss_peak_and_prediction(1024, 3, 400, param_dtype=torch.bfloat16)
    assert peak == pytest.approx(predicted, rel=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run this test on one)")
def test_fused_loss_peak_on_gpu_is_the_calculators_gpu_figure():
    """On a GPU, in its autocast dtype: blocks of 2**24 logits (here two: 4,096 tokens x 8,192),
    and no float32 copy of a 16-bit block (CUDA kernels convert as they read). Derived from the
    model's code and checked on CPU only so far: run this test on a GPU."""
    device = torch.device("cuda")
    amp, _ = autocast_for(device)
    cfg, model = course_model(vocab=8192)
    model.to(device)
    batch, seq = 8, 512
    x, y = (torch.randint(0, cfg.vocab_size, (batch, seq), device=device) for _ in range(2))

    def step():
        with amp():
            out = model(x, targets=y).loss
        out.backward()

    step()  # warm-up: kernels, cuBLAS workspace
    model.zero_grad(set_to_none=True)
    _, peak = peak_allocated_bytes(step, device)
    est = training_memory(cfg, batch, seq, autocast_dtype=amp.dtype, device=device)
    predicted = est["activations"] + est["weight_casts"] + est["logits"]
    assert 0.95 * predicted <= peak <= 1.05 * predicted, (peak, est)


def test_saved_tensor_bytes_counts_only_what_the_graph_still_holds():
    x = torch.randn(256, 256, requires_grad=True)

    def forward():
        shift = x.amax(dim=-1, keepdim=True).detach()  # amax saved x, but its node is gone
        return (x - shift).exp().sum()  # exp saves its result, 256 KiB

    _, held = saved_tensor_bytes(forward, exclude=[x])
    assert held == 256 * 256 * 4
    _, held = saved_tensor_bytes(forward)
    assert held == 256 * 256 * 4  # x is not held either: amax's node died with its output


def test_peak_allocated_bytes_follows_allocations_and_frees():
    def fn():
        a = torch.empty(2**18)  # 1 MiB
        del a
        b = torch.empty(2**19)  # 2 MiB, the first MiB reused or not: 2 MiB live at most so far
        c = torch.empty(2**18)  # 3 MiB live
        return b, c

    (b, c), peak = peak_allocated_bytes(fn)
    assert peak == 3 * 2**20
    with pytest.raises(ValueError, match="cpu"):
        peak_allocated_bytes(lambda: None, "meta")


def test_memory_scales_as_the_theory_says():
    cfg, _ = hf_dense()
    one, two = training_memory(cfg, 4, 64), training_memory(cfg, 8, 64)
    assert two["parameters"] == one["parameters"] and two["optimizer"] == one["optimizer"]
    rope = 2 * 64 * 24 * 4
    assert two["activations"] - rope == 2 * (one["activations"] - rope)
    per_token = activation_bytes_per_token(cfg, 64)["total"]
    assert one["activations"] == 4 * 64 * per_token + rope  # the default loss: "fused"
    sgd = training_memory(cfg, 4, 64, "sgd")
    assert one["optimizer"] == 2 * sgd["optimizer"] == 2 * one["parameters"]
    amp = training_memory(cfg, 4, 64, autocast_dtype=torch.bfloat16)
    assert (
        amp["activations"] < one["activations"] and amp["weight_casts"] > 0 == one["weight_casts"]
    )
    # the chunked loss's transient blocks stop growing once the tokens exceed one chunk
    big, bigger = (training_memory(cfg, b, 512, loss="chunked") for b in (4, 8))
    assert big["logits"] == bigger["logits"] == 12 * 1024 * 256
    # "log_softmax": two float32 tensors like the logits
    assert training_memory(cfg, 8, 64, loss="log_softmax")["logits"] == 8 * 8 * 64 * 256
    # "fused", float32: the hidden and weight gradients, and its blocks of softmax: on a GPU one
    # block of 2**24 // 256 rows holds all 512 tokens; on a CPU a block holds 2**20 // 256 = 4,096
    # rows, and with more tokens the next block forms while the previous one is still referenced
    d, vocab = 64, 256
    assert two["logits"] == 4 * (512 * d + vocab * d) + 4 * 512 * vocab
    many = 16 * 1024
    cpu = training_memory(cfg, 16, 1024, device="cpu")["logits"]
    assert cpu == 4 * (many * d + vocab * d) + 4 * 2 * 4096 * vocab
    assert training_memory(cfg, 16, 1024, device=torch.device("cpu"))["logits"] == cpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run this test on one)")
def test_gpu_total_is_close_to_max_memory_allocated():
    """On a GPU: the estimate's total against the allocator's peak during a bf16/fp16 AdamW step.

    The peak comes early in backward, when some activations are already freed and some gradients
    not yet allocated, so the sum of all parts is an upper bound; we ask for 70-110 %."""
    device = torch.device("cuda")
    amp, scaler = autocast_for(device)
    cfg = Qwen3Config(
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM._from_config(cfg, attn_implementation="sdpa").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, cfg.vocab_size, (16, 256), device=device)
    for step in range(2):
        if step == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with amp():
            loss = model(x, labels=x).loss
        (scaler.scale(loss) if scaler else loss).backward()
        scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()
        opt.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated()
    est = training_memory(cfg, 16, 256, autocast_dtype=amp.dtype, loss="log_softmax")["total"]
    assert 0.7 * est <= peak <= 1.1 * est, (
        f"peak {peak / 2**20:.0f} MiB, estimate {est / 2**20:.0f} MiB"
    )


# ---------------------------------------------------------------- devices, precision, peaks, MFU


def test_bad_inputs_raise_value_errors():
    cfg, _ = hf_dense()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="seq_len"):
            flops_per_token(cfg, bad)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        flops_per_token(Qwen3Config(**{**DENSE, "num_key_value_heads": 3}), 8)
    with pytest.raises(ValueError, match="hidden_size"):
        flops_per_token(SimpleNamespace(**{**DENSE, "hidden_size": 0}), 8)
    mha = SimpleNamespace(**{**DENSE, "num_key_value_heads": None, "head_dim": None})  # HF defaults
    assert flops_per_token(mha, 8) == flops_per_token(
        SimpleNamespace(**{**DENSE, "num_key_value_heads": 4, "head_dim": 16}), 8
    )
    with pytest.raises(ValueError, match="optimizer"):
        training_memory(cfg, 2, 8, "adagrad")
    with pytest.raises(ValueError, match="batch"):
        training_memory(cfg, 0, 8)
    with pytest.raises(ValueError, match="attention"):
        training_memory(cfg, 2, 8, attention="flash3")
    with pytest.raises(ValueError, match="loss"):
        training_memory(cfg, 2, 8, loss="logits")
    with pytest.raises(ValueError, match="device"):
        training_memory(cfg, 2, 8, device="tpu")
    with pytest.raises(ValueError, match="chunk_size"):
        training_memory(cfg, 2, 8, loss="chunked", chunk_size=0)
    with pytest.raises(ValueError, match="dtype"):
        training_memory(cfg, 2, 8, param_dtype=torch.int8)
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        flops_per_token(Qwen3MoeConfig(**{**MOE, "num_experts_per_tok": 9}), 8)
    with pytest.raises(ValueError, match="tokens_per_s"):
        mfu(-1.0, cfg, 8, peak=1e12)
    with pytest.raises(ValueError, match="device"):
        mfu(1.0, cfg, 8)
    with pytest.raises(ValueError, match="bf16"):
        peak_flops("Tesla T4", torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        gpu_spec("H100").peak(torch.float64)
    with pytest.raises(ValueError, match="tf32"):
        peak_flops("cpu", "tf32")
    with pytest.raises(ValueError, match="not a device|not supported"):
        pick_device("tpu")
    with pytest.raises(ValueError, match="float16"):
        autocast_for("cpu", torch.float16)
    with pytest.raises(ValueError, match="smoothing"):
        ThroughputMeter(smoothing=1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_asking_for_cuda_without_it_is_an_error():
    with pytest.raises(ValueError, match="CUDA"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="CUDA"):
        autocast_for("cuda")


def test_autocast_choice():
    assert amp_dtype_for_capability((7, 5)) == torch.float16  # T4
    assert amp_dtype_for_capability((7, 0)) == torch.float16  # V100
    assert amp_dtype_for_capability((8, 0)) == torch.bfloat16  # A100
    assert amp_dtype_for_capability((9, 0)) == torch.bfloat16  # H100
    amp, scaler = autocast_for("cpu")
    assert amp.dtype == torch.float32 and not amp.enabled and scaler is None
    a = torch.randn(4, 4)
    with amp():
        assert (a @ a).dtype == torch.float32
    amp, scaler = autocast_for("cpu", torch.bfloat16)
    with amp():
        assert (a @ a).dtype == torch.bfloat16
    assert scaler is None and pick_device().type in ("cpu", "cuda", "mps")


def test_gpu_table_matches_device_names_and_datasheets():
    expect = {
        "Tesla T4": ("T4", 65e12),
        "Tesla V100-SXM2-16GB": ("V100 SXM2", 125e12),
        "Tesla V100-PCIE-32GB": ("V100 PCIe", 112e12),
        "NVIDIA A10G": ("A10G", 70e12),
        "NVIDIA L4": ("L4", 121e12),
        "NVIDIA A100-SXM4-40GB": ("A100 40GB", 312e12),
        "NVIDIA A100-SXM4-80GB": ("A100 80GB SXM", 312e12),
        "NVIDIA A100 80GB PCIe": ("A100 80GB PCIe", 312e12),
        "NVIDIA H100 80GB HBM3": ("H100 SXM", 989.5e12),
        "NVIDIA H100 PCIe": ("H100 PCIe", 756.5e12),
        "NVIDIA H100 NVL": ("H100 NVL", 835.5e12),
        "NVIDIA H200": ("H200 SXM", 989.5e12),
    }
    for name, (short, fp16) in expect.items():
        spec = gpu_spec(name)
        assert spec is not None and spec.name == short, (name, spec)
        assert spec.peak(torch.float16) == pytest.approx(fp16)
    assert gpu_spec("NVIDIA L40S") is None and gpu_spec("NVIDIA GeForce RTX 4090") is None
    assert peak_flops("A100") == 312e12 and peak_flops("T4") == 65e12  # default: bf16, else fp16
    assert gpu_spec("A100").peak("tf32") == 156e12 and gpu_spec("H100").peak(torch.float32) == 67e12
    assert all(s.source.startswith(("http", "AWS")) for s in GPU_SPECS)


def test_mfu_counts_the_attention_term_in_full_unless_asked():
    """PaLM's convention everywhere: 6N + 12 L h d_h T per token; causal=True gives a lower MFU."""
    cfg, _ = hf_dense()
    full = mfu(1e5, cfg, 64, peak=1e12)
    assert full == pytest.approx(1e5 * flops_per_token(cfg, 64) / 1e12)
    assert mfu(1e5, cfg, 64, peak=1e12, causal=True) < full
    meter = ThroughputMeter(flops_per_token(cfg, 64), 1e12)
    assert meter.flops_per_token == flops_per_token(cfg, 64, causal=False)


def test_cpu_peak_is_measured_and_mfu_divides_by_it():
    peak = peak_flops("cpu", sizes=(64, 128))
    assert math.isfinite(peak) and peak > 0
    cfg, _ = hf_dense()
    assert mfu(1000.0, cfg, 32, "cpu") == pytest.approx(
        1000.0 * flops_per_token(cfg, 32) / peak_flops("cpu")
    )
    assert mfu(2e4, cfg, 32, peak=1e12) == pytest.approx(2e4 * flops_per_token(cfg, 32) / 1e12)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throughput_meter_smooths_tokens_per_second_and_reports_mfu():
    clock = FakeClock()
    meter = ThroughputMeter(flops_per_token=6e6, peak_flops=1e12, smoothing=0.5, clock=clock)
    assert meter.tokens_per_s == 0.0 and meter.postfix()["tok/s"] == "0"
    for _ in range(3):
        clock.now += 0.5
        meter.update(1000)
    assert meter.tokens_per_s == pytest.approx(
        2000.0
    ) and meter.average_tokens_per_s == pytest.approx(2000.0)
    assert meter.mfu == pytest.approx(2000.0 * 6e6 / 1e12)
    assert meter.postfix() == {"tok/s": "2,000", "MFU": "1.2%"}
    clock.now += 1.5  # one slow step: the ratio of the moving averages of tokens and of seconds
    meter.update(1000)
    ema_tokens, ema_seconds = (
        0.5 * 875 + 0.5 * 1000,
        0.5 * 0.4375 + 0.5 * 1.5,
    )  # 875 = 1000 * (1 - 0.5**3)
    assert meter.tokens_per_s == pytest.approx(ema_tokens / ema_seconds)
    assert meter.average_tokens_per_s == pytest.approx(4000 / 3.0)
    meter.reset()
    assert meter.total_tokens == 0 and meter.tokens_per_s == 0.0
    assert ThroughputMeter().mfu is None and "MFU" not in ThroughputMeter().postfix()
