"""RMSNorm speed: tinyqwen's RMSNorm against torch.nn.RMSNorm and torch.nn.LayerNorm (chapter 4).

Forward passes on a (rows, dim) float32 tensor, timed alternately in one process; the ratio is
ours / peer (below 1: ours is faster). A normalisation layer is memory-bound, so a fused kernel
can beat a formula that does less arithmetic: this reports what happens, not what should.

"norm choice" times a whole training step (forward, backward, AdamW) of one Qwen3-shaped model
built twice, once with tinyqwen's RMSNorm everywhere and once with every norm replaced by
nn.LayerNorm of the same size: chapter 4's experiment at a course preset's size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.harness import compare, print_rows
from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM
from tinyqwen.norm import RMSNorm


def with_layer_norm(model: nn.Module) -> nn.Module:
    """Replace every RMSNorm in `model` by an nn.LayerNorm of the same size and eps (in place)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, RMSNorm):
                setattr(module, name, nn.LayerNorm(child.weight.shape[0], eps=child.eps))
    return model


def train_step(model: nn.Module, ids: torch.Tensor):
    """A closure running one forward, backward and AdamW step of `model` on ids: (batch, seq + 1)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = model(ids[:, :-1], ids[:, 1:]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def norm_choice_row(quick: bool, device: str, sync) -> dict:
    preset = "cpu" if quick or device == "cpu" else "t4"
    batch, seq = (4, 128) if quick else (8, 256)
    config = Qwen3Config.preset(preset)
    torch.manual_seed(0)
    rms_model = Qwen3ForCausalLM(config).to(device)
    ln_model = with_layer_norm(copy.deepcopy(rms_model)).to(device)
    ids = torch.randint(0, config.vocab_size, (batch, seq + 1), device=device)
    return compare(
        f"norm choice: model train step ({preset} preset, {batch}x{seq} tokens, fp32, {device})",
        train_step(rms_model, ids),
        train_step(ln_model, ids),
        ours_name="RMSNorm (tinyqwen)",
        peer_name="nn.LayerNorm",
        repeats=10 if quick else 20,
        warmup=2,
        sync=sync,
        unit="ms",
        scale=1e3,
    )


def run(quick: bool) -> list[dict]:
    rows_, dim = (4096, 1024) if quick else (16384, 2048)
    repeats = 15 if quick else 30
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else None
    x = torch.randn(rows_, dim, device=device)
    ours = RMSNorm(dim).to(device)
    peers = {
        "torch.nn.RMSNorm": nn.RMSNorm(dim, eps=1e-6).to(device),
        "torch.nn.LayerNorm": nn.LayerNorm(dim, eps=1e-6).to(device),
    }
    out = []
    with torch.no_grad():
        for peer_name, peer in peers.items():
            out.append(
                compare(
                    f"norm forward {rows_}x{dim} fp32 ({device})",
                    lambda: ours(x),
                    lambda peer=peer: peer(x),
                    ours_name="tinyqwen RMSNorm",
                    peer_name=peer_name,
                    repeats=repeats,
                    warmup=2,
                    sync=sync,
                    unit="ms",
                    scale=1e3,
                )
            )
    out.append(norm_choice_row(quick, device, sync))
    return out


if __name__ == "__main__":
    print_rows(run(quick=True))
