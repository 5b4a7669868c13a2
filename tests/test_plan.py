"""Chapter 8's plan for chapter 11's runs: derived from the trainer's presets, and rehearsed.

The rehearsal runs one training step of the ``t4`` preset's real model and batch shape on this
CPU (float32: a CPU has no float16 autocast training worth the name) with the trainer's own
``train_step``, measures the peak of the bytes allocated (PyTorch's profiler) and checks
``training_memory`` against it (told ``device="cpu"``: the fused loss forms its softmax in smaller
blocks on a CPU than on a GPU). The float16 prediction for the T4 uses the same accounting with
2-byte matmul tensors, which tests/test_accel.py checks byte for byte under float16 autocast at a
small size.
"""

from __future__ import annotations

import time

import pytest
import torch

from tinyqwen.accel import (
    ASSUMED_MFU,
    autocast_for,
    flops_per_token,
    gpu_spec,
    peak_allocated_bytes,
    training_memory,
    training_plan,
)
from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM
from tinyqwen.optim import build_optimizer
from tinyqwen.train import TRAIN_PRESETS, apply_update, train_config, train_step


def storage_bytes(tensors) -> int:
    return sum(
        {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values()
    )


@pytest.mark.parametrize("preset", ["t4", "a100", "h100", "qwen3-283m"])
def test_plan_reads_every_number_from_the_trainer_presets(preset):
    tc = train_config(preset)
    model = Qwen3Config.preset(tc.preset)
    gpu = "T4" if preset == "t4" else "H100" if preset in ("h100", "qwen3-283m") else "A100"
    plan = training_plan(
        model,
        gpu,
        batch_size=tc.batch_size,
        seq_len=tc.seq_len,
        steps=tc.max_steps,
        grad_accum=tc.grad_accum,
        optimizer=tc.optimizer,
        loss="chunked" if tc.chunked_loss else "fused",
    )
    spec = gpu_spec(gpu)
    dtype = torch.bfloat16 if spec.bf16 else torch.float16
    assert plan["dtype"] == dtype and plan["tokens_per_step"] == tc.tokens_per_step
    assert plan["tokens"] == tc.max_steps * tc.batch_size * tc.grad_accum * tc.seq_len
    assert plan["memory"] == training_memory(
        model,
        tc.batch_size,
        tc.seq_len,
        tc.optimizer,
        autocast_dtype=dtype,
        loss="chunked" if tc.chunked_loss else "fused",
    )
    assert plan["assumed_mfu"] == ASSUMED_MFU["T4" if preset == "t4" else gpu]
    expected_seconds = (
        plan["tokens"]
        * flops_per_token(model, tc.seq_len)
        / (plan["assumed_mfu"] * spec.peak(dtype))
    )
    assert plan["seconds"] == pytest.approx(expected_seconds, rel=1e-12)
    assert plan["memory_share"] < 0.9, (
        f"{preset} does not fit the {spec.name}: {plan['memory_share']:.0%} of its memory"
    )


def test_plan_refuses_what_it_cannot_estimate():
    model = Qwen3Config.preset("t4")
    with pytest.raises(ValueError, match="GPU_SPECS"):
        training_plan(model, "RTX 4090", batch_size=8, seq_len=256, steps=10)
    with pytest.raises(ValueError, match="assumed MFU"):
        training_plan(model, "L4", batch_size=8, seq_len=256, steps=10)
    with pytest.raises(ValueError, match="assumed_mfu"):
        training_plan(model, "T4", batch_size=8, seq_len=256, steps=10, assumed_mfu=1.5)
    with pytest.raises(ValueError, match="grad_accum"):
        training_plan(model, "T4", batch_size=8, seq_len=256, steps=10, grad_accum=0)
    assert (
        training_plan(model, "L4", batch_size=8, seq_len=256, steps=10, assumed_mfu=0.3)[
            "assumed_mfu"
        ]
        == 0.3
    )


def rehearse_step(preset: str, seed: int = 0) -> tuple[int, dict, float]:
    """One step of a training preset's model and micro-batch on this CPU, float32.

    Returns (bytes allocated at the peak, training_memory's prediction, seconds of the step)."""
    tc = train_config(preset)
    model_cfg = Qwen3Config.preset(tc.preset)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(model_cfg)
    optimizer = build_optimizer(model, tc.optimizer, lr=tc.lr, weight_decay=tc.weight_decay)
    amp, scaler = autocast_for("cpu")

    def step(batch_size):
        x = torch.randint(0, model_cfg.vocab_size, (batch_size, tc.seq_len))
        y = torch.randint(0, model_cfg.vocab_size, (batch_size, tc.seq_len))
        train_step(
            model,
            optimizer,
            scaler,
            [(x, y)],
            autocast=amp,
            grad_clip=tc.grad_clip,
            chunked_loss=tc.chunked_loss,
        )
        apply_update(optimizer, scaler)

    step(1)  # one sequence: the optimizer creates its state, as in every step after the first
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    before = storage_bytes([*model.parameters(), *model.buffers(), *state])
    start = time.perf_counter()
    _, peak = peak_allocated_bytes(lambda: step(tc.batch_size))
    seconds = time.perf_counter() - start
    predicted = training_memory(
        model_cfg,
        tc.batch_size,
        tc.seq_len,
        tc.optimizer,
        loss="chunked" if tc.chunked_loss else "fused",
        device="cpu",
    )
    return before + peak, predicted, seconds


def test_rehearsal_of_a_ci_step_matches_the_memory_calculator():
    allocated, predicted, _ = rehearse_step("ci")
    assert abs(predicted["total"] / allocated - 1) <= 0.15, (allocated, predicted)


def test_rehearsal_of_the_t4_step_on_cpu_matches_the_memory_calculator():
    """The t4 preset's model (23M parameters) and micro-batch (64 x 256 tokens), float32 on CPU:
    one step with the trainer's train_step and apply_update, within 15 % of the prediction."""
    assert TRAIN_PRESETS["t4"]["preset"] == "t4"
    allocated, predicted, seconds = rehearse_step("t4")
    ratio = predicted["total"] / allocated
    print(
        f"t4 step on CPU: allocated {allocated / 2**30:.2f} GiB at the peak, predicted "
        f"{predicted['total'] / 2**30:.2f} GiB ({ratio:.3f}), {seconds:.0f} s"
    )
    assert abs(ratio - 1) <= 0.15, f"allocated {allocated:,} B, predicted {predicted}"
