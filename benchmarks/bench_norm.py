"""RMSNorm speed: tinyqwen's RMSNorm against torch.nn.RMSNorm and torch.nn.LayerNorm (chapter 4).

Forward passes on a (rows, dim) float32 tensor, timed alternately in one process; the ratio is
ours / peer (below 1: ours is faster). A normalisation layer is memory-bound, so a fused kernel
can beat a formula that does less arithmetic: this reports what happens, not what should.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.harness import compare, print_rows
from tinyqwen.norm import RMSNorm


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
    return out


if __name__ == "__main__":
    print_rows(run(quick=True))
