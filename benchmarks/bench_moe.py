"""MoE block forward+backward: tinyqwen.moe.MoE vs Hugging Face Qwen3MoeSparseMoeBlock and a naive loop.

Same weights, same input, float32, timed alternately in one process (benchmarks/harness.py).
Ours runs with its default ``experts_implementation="auto"`` (one ``grouped_mm`` per projection
where PyTorch has it) and, at 128 experts, also as the chapter's readable loop over experts.
Peers: transformers' default (eager) expert loop, its ``grouped_mm`` experts implementation
(``torch.nn.functional.grouped_mm`` on 3-D fused weights), and the textbook per-token loop (on
fewer tokens, because it is slow).

    python -m benchmarks.run --quick --only moe

Everything runs on one thread (torch.set_num_threads(1), restored afterwards): on a CPU shared
with other jobs that gives far steadier ratios than several, and both sides get the same core.
"""

from __future__ import annotations

import torch

from benchmarks.bench_model import compare_wall_and_cpu
from benchmarks.harness import compare, print_rows, torch_threads
from tinyqwen.moe import MoE


def _hf_block(hidden, inter, experts, k, implementation=None):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    config = Qwen3MoeConfig(
        hidden_size=hidden,
        moe_intermediate_size=inter,
        num_experts=experts,
        num_experts_per_tok=k,
        norm_topk_prob=True,
    )
    config._experts_implementation = implementation  # None = the eager loop over experts
    block = Qwen3MoeSparseMoeBlock(config)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return block


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: route, then run its k experts and add their weighted outputs."""
    rows = []
    for token in x.reshape(-1, x.shape[-1]):
        _, weights, chosen = moe.gate(token[None])
        rows.append(
            sum(
                w * moe.experts[e](token)
                for w, e in zip(weights[0], chosen[0].tolist(), strict=True)
            )
        )
    return torch.stack(rows).view(x.shape)


def _fwd_bwd(fn, x):
    def step():
        out = fn(x)
        out = out[0] if isinstance(out, tuple) else out
        out.square().mean().backward()

    return step


def run(quick: bool) -> list[dict]:
    with torch_threads(1):
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    repeats = 5 if quick else 15
    # (name, hidden, moe_intermediate, experts, top_k, tokens)
    shapes = [
        ("8 experts top-2", 256, 512, 8, 2, 1024 if quick else 4096),
        ("128 experts top-8 (Qwen3-30B-A3B routing)", 128, 96, 128, 8, 1024 if quick else 4096),
    ]
    rows = []
    for name, hidden, inter, experts, k, tokens in shapes:
        block = _hf_block(hidden, inter, experts, k)
        ours = MoE(hidden, inter, experts, k)
        ours.load_state_dict(block.state_dict())
        x = torch.randn(4, tokens // 4, hidden, requires_grad=True)
        torch.testing.assert_close(ours(x)[0], block(x), atol=1e-5, rtol=1e-5)
        note = f"hidden {hidden}, moe_inter {inter}, {tokens} tokens, fp32, {torch.get_num_threads()} threads"
        rows.append(
            compare(
                f"moe fwd+bwd, {name}",
                _fwd_bwd(ours, x),
                _fwd_bwd(block, x),
                peer_name="HF Qwen3MoeSparseMoeBlock (eager)",
                repeats=repeats,
                unit="ms",
                scale=1e3,
                note=note,
            )
        )
        grouped = _hf_block(hidden, inter, experts, k, "grouped_mm")
        grouped.load_state_dict(block.state_dict())
        variants = [("tinyqwen", ours)]
        if experts > 8:  # the chapter's loop over experts, the reference of the grouped path
            loop = MoE(hidden, inter, experts, k, experts_implementation="loop")
            loop.load_state_dict(block.state_dict())
            variants.append(("loop over experts (reference)", loop))
        for ours_name, module in variants:
            rows += compare_wall_and_cpu(
                f"moe fwd+bwd, {name}",
                f"moe fwd+bwd CPU time, {name}",
                _fwd_bwd(module, x),
                _fwd_bwd(grouped, x),
                ours_name=ours_name,
                peer_name="HF block, grouped_mm experts",
                repeats=repeats,
                unit="ms",
                scale=1e3,
                note=note + f", ours: {module.experts_implementation}",
            )
    # the naive per-token loop, on the first shape with fewer tokens
    _, hidden, inter, experts, k, _ = shapes[0]
    tokens = 64 if quick else 256
    ours = MoE(hidden, inter, experts, k)
    x = torch.randn(1, tokens, hidden, requires_grad=True)
    torch.testing.assert_close(ours(x)[0], naive_moe(ours, x), atol=1e-5, rtol=1e-5)
    rows.append(
        compare(
            f"moe fwd+bwd, {shapes[0][0]}",
            _fwd_bwd(ours, x),
            _fwd_bwd(lambda t: naive_moe(ours, t), x),
            peer_name="naive per-token loop",
            repeats=3 if quick else 5,
            unit="ms",
            scale=1e3,
            note=f"hidden {hidden}, moe_inter {inter}, {tokens} tokens, fp32, {torch.get_num_threads()} threads",
        )
    )
    return rows


if __name__ == "__main__":
    print_rows(run(quick=True))
