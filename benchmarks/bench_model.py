"""The assembled model vs transformers' Qwen3ForCausalLM: same config, same weights, CPU, float32.

* training step: forward + backward + AdamW step (torch.optim.AdamW for both), time per step,
  as wall-clock time and as process CPU time (the second is robust on a busy machine, where
  waiting for a core inflates the first);
* cached greedy generation: our `generate` (chapter 10's KV cache) vs transformers' `generate`,
  tokens per second.

Both run single-threaded (torch.set_num_threads(1), restored afterwards): on a shared 2-core machine
small models give steadier ratios that way, and both sides get the same single core.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.harness import compare, print_rows, row, torch_threads
from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM


def _pair(config: Qwen3Config):
    """Our model and transformers', holding the same weights."""
    import transformers

    torch.manual_seed(0)
    ours = Qwen3ForCausalLM(config)
    hf_cfg = transformers.Qwen3Config(**config.to_dict(), attn_implementation="sdpa")
    hf = transformers.Qwen3ForCausalLM(hf_cfg)
    hf.load_state_dict(ours.state_dict())
    return ours, hf


def _train_step(model, optimizer, ids):
    optimizer.zero_grad(set_to_none=True)
    model(ids, labels=ids).loss.backward()
    optimizer.step()


def compare_wall_and_cpu(
    benchmark: str, cpu_benchmark: str, ours, peer, *, warmup: int = 1, **kw
) -> list[dict]:
    """`compare` (wall-clock time) plus a row named `cpu_benchmark` with the process CPU time of
    the same runs. Neither name may contain the other (records.benchmark matches substrings).

    On a machine shared with other jobs, waiting for a core inflates wall-clock times at random;
    CPU time counts only the work (page faults included), so its ratio is the steadier one.
    """
    if benchmark in cpu_benchmark or cpu_benchmark in benchmark:
        raise ValueError(f"{cpu_benchmark!r} and {benchmark!r}: one name contains the other")
    cpu = {"ours": [], "peer": []}

    def timed(key, fn):
        def run():
            start = time.process_time()
            fn()
            cpu[key].append(1e3 * (time.process_time() - start))

        return run

    wall = compare(benchmark, timed("ours", ours), timed("peer", peer), warmup=warmup, **kw)
    ours_ms, peer_ms = cpu["ours"][warmup:], cpu["peer"][warmup:]
    return [
        wall,
        row(
            cpu_benchmark,
            ours_name=wall["ours_name"],
            peer_name=wall["peer_name"],
            metric="cpu time",
            unit="ms",
            ours=statistics.median(ours_ms),
            peer=statistics.median(peer_ms),
            ours_range=(min(ours_ms), max(ours_ms)),
            peer_range=(min(peer_ms), max(peer_ms)),
            repeats=wall["repeats"],
            note=wall["note"] + "; process CPU time of the same runs",
        ),
    ]


def _train_rows(preset: str, batch: int, seq: int, repeats: int) -> list[dict]:
    config = Qwen3Config.preset(preset)
    ours, hf = _pair(config)
    ids = torch.randint(
        0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1)
    )
    ours.train()
    hf.train()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    return compare_wall_and_cpu(
        f"model train step ({preset} preset, {batch}x{seq} tokens)",
        f"model train step, CPU time ({preset} preset, {batch}x{seq} tokens)",
        lambda: _train_step(ours, opt_ours, ids),
        lambda: _train_step(hf, opt_hf, ids),
        peer_name="transformers Qwen3ForCausalLM",
        repeats=repeats,
        warmup=2,
        unit="ms",
        scale=1e3,
        note="forward+backward+AdamW, float32, 1 thread",
    )


def run(quick: bool) -> list[dict]:
    with torch_threads(1):
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    rows = _train_rows("ci", 4, 64, repeats=7 if quick else 15)  # 0.13M parameters: overhead-bound
    batch, seq = (4, 128) if quick else (8, 256)  # cpu preset, 4.2M parameters: matmul-bound
    rows += _train_rows("cpu", batch, seq, repeats=5 if quick else 10)

    config = Qwen3Config.preset("cpu")
    ours, hf = _pair(config)
    ids = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    ours.eval()
    hf.eval()
    new = 48 if quick else 256
    prompt = ids
    with torch.no_grad():
        assert torch.equal(
            ours.generate(prompt, 8),
            hf.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0),
        ), "greedy generations differ; the timing below would compare different work"
    gen = compare(
        f"model cached generation (cpu preset, {new} new tokens)",
        lambda: ours.generate(prompt, max_new_tokens=new),
        lambda: hf.generate(
            prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
        ),
        peer_name="transformers generate",
        repeats=3 if quick else 5,
        warmup=1,
    )
    throughput = row(
        gen["benchmark"],
        peer_name=gen["peer_name"],
        metric="throughput",
        unit="tokens/s",
        ours=new / gen["ours"],
        peer=new / gen["peer"],
        ours_range=(new / gen["ours_range"][1], new / gen["ours_range"][0]),
        peer_range=(new / gen["peer_range"][1], new / gen["peer_range"][0]),
        repeats=gen["repeats"],
        note="greedy, batch 1, 16-token prompt, 1 thread; ratio > 1 means ours is faster",
    )
    return [*rows, throughput]


if __name__ == "__main__":
    print_rows(run(quick=True))
