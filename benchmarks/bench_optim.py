"""Optimizer step time: tinyqwen.optim's AdamW and Muon against torch.optim's, on a Qwen3's parameters.

Gradients are fixed (one backward pass), then ``optimizer.step()`` alone is timed, ours and
PyTorch's alternately. The learning rate is tiny so the parameters barely move between repeats.
Both run on one CPU thread (restored afterwards): these are many small per-tensor operations, and
on a shared machine OpenMP threads waiting for each other would swamp what is being measured.
"""

from __future__ import annotations

import copy

import torch

from benchmarks.harness import compare, print_rows, torch_threads
from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM
from tinyqwen.optim import AdamW, Muon, param_groups


def _model_with_grads(preset: str) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config.preset(preset, vocab_size=2048))
    ids = torch.randint(0, 2048, (2, 65))
    logits = model(ids[:, :-1]).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    return model


def _twin(model):
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        q.grad = p.grad.clone()  # deepcopy does not copy gradients
    return twin


def _hidden(model):
    return [g for g in param_groups(model, 0.1, muon=True) if g.pop("use_muon")]


def run(quick: bool) -> list[dict]:
    with torch_threads(1):
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    preset = "ci" if quick else "cpu"
    repeats = 40 if quick else 100
    ours_model = _model_with_grads(preset)
    n = sum(p.numel() for p in ours_model.parameters())
    note = f"one step on Qwen3 preset '{preset}' ({n / 1e6:.2f} M parameters), float32, CPU threads {torch.get_num_threads()}"
    rows = []

    ref_model = _twin(ours_model)
    ours = AdamW(param_groups(ours_model, 0.1), lr=1e-6)
    for foreach in (False, True):
        ref = torch.optim.AdamW(param_groups(ref_model, 0.1), lr=1e-6, foreach=foreach)
        rows.append(
            compare(
                "optim: AdamW step",
                ours.step,
                ref.step,
                peer_name=f"torch.optim.AdamW(foreach={foreach})",
                repeats=repeats,
                unit="ms",
                scale=1e3,
                note=note,
            )
        )

    if hasattr(torch.optim, "Muon"):
        ref_model = _twin(ours_model)
        ours = Muon(_hidden(ours_model), lr=1e-6)
        ref = torch.optim.Muon(_hidden(ref_model), lr=1e-6)
        rows.append(
            compare(
                "optim: Muon step (hidden matrices)",
                ours.step,
                ref.step,
                peer_name="torch.optim.Muon",
                repeats=repeats,
                unit="ms",
                scale=1e3,
                note=note + "; Newton-Schulz in bfloat16",
            )
        )
    return rows


if __name__ == "__main__":
    print_rows(run(quick=True))
