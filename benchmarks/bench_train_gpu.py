"""Training throughput and MFU of the GPU presets, with and without torch.compile (CUDA only).

For each preset: build the model, run `warmup` optimizer steps on random tokens (the timing of
a training step does not depend on which tokens), then time `steps` steps with the same
micro-batch, mixed precision and optimizer as `tinyqwen.train`. Reports tokens/s and MFU
against the GPU's datasheet peak (tinyqwen.accel.GPU_SPECS). Without CUDA it returns no rows
and says so: GPU results are only ever recorded as measured on a real GPU.
"""

from __future__ import annotations

import time

import torch

from benchmarks.harness import print_rows, row
from tinyqwen.accel import autocast_for, flops_per_token, peak_flops
from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM
from tinyqwen.optim import build_optimizer
from tinyqwen.train import train_config


def _tokens_per_s(preset: str, compile_model: bool, steps: int, warmup: int) -> float:
    cfg = train_config(preset)
    model_cfg = Qwen3Config.preset(cfg.preset)
    model = Qwen3ForCausalLM(model_cfg).cuda()
    optimizer = build_optimizer(model, cfg.optimizer, lr=cfg.lr)
    autocast, scaler = autocast_for("cuda")
    step_model = torch.compile(model) if compile_model else model
    x = torch.randint(0, model_cfg.vocab_size, (cfg.batch_size, cfg.seq_len), device="cuda")

    def step():
        for _ in range(cfg.grad_accum):
            with autocast():
                loss = (
                    step_model(x, targets=x, return_logits=not cfg.chunked_loss).loss
                    / cfg.grad_accum
                )
            (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * cfg.tokens_per_step / (time.perf_counter() - start)


def run(quick: bool) -> list[dict]:
    if not torch.cuda.is_available():
        print("no CUDA device: GPU training throughput is measured only on a GPU")
        return []
    rows = []
    gpu = torch.cuda.get_device_name(0)
    presets = ["t4", "h100"] if quick else ["t4", "a100", "h100", "qwen3-283m"]
    for preset in presets:
        cfg = train_config(preset)
        model_cfg = Qwen3Config.preset(cfg.preset)
        eager = _tokens_per_s(preset, False, steps=10 if quick else 30, warmup=3)
        compiled = _tokens_per_s(preset, True, steps=10 if quick else 30, warmup=5)
        peak = peak_flops("cuda")
        fpt = flops_per_token(model_cfg, cfg.seq_len, causal=True)
        note = f"{gpu}; MFU eager {eager * fpt / peak:.1%}, compiled {compiled * fpt / peak:.1%}"
        rows.append(
            row(
                f"train step tokens/s, preset {preset}",
                ours_name="torch.compile",
                peer_name="eager",
                metric="throughput",
                unit="tokens/s",
                ours=compiled,
                peer=eager,
                note=note,
            )
        )
    return rows


if __name__ == "__main__":
    print_rows(run(quick=False))
