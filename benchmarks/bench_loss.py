"""Chunked vs plain cross-entropy over an lm_head: peak memory and time (forward + backward).

Peak memory is measured two ways: (1) ``TensorMemoryTracker`` counts the bytes of every tensor
PyTorch creates during forward and backward (exact, allocator-independent); (2) on Linux, the
growth of the process's peak resident set size (VmHWM) in a fresh subprocess, with glibc told to
return large blocks to the OS at once (MALLOC_MMAP_THRESHOLD_) so freed memory is not hidden.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F

from benchmarks.harness import compare, print_rows, row, torch_threads
from tinyqwen.loss import TensorMemoryTracker, chunked_cross_entropy, cross_entropy

MiB = 2**20


def sizes(quick: bool) -> dict:
    # tokens = batch * seq positions; vocab 151,936 is Qwen3's
    if quick:
        return dict(tokens=1024, hidden=64, vocab=32_768, chunk=128)
    return dict(tokens=2048, hidden=256, vocab=151_936, chunk=512)


def make_inputs(tokens, hidden, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g).requires_grad_(True)
    w = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).requires_grad_(True)
    t = torch.randint(0, vocab, (tokens,), generator=g)
    return h, w, t


def step(loss_fn, h, w, t):
    h.grad = w.grad = None
    loss_fn(h, w, t).backward()


def plain_torch(h, w, t):
    return F.cross_entropy(h @ w.T, t)


def plain_ours(h, w, t):
    return cross_entropy(h @ w.T, t)


def chunked(chunk):
    return lambda h, w, t: chunked_cross_entropy(h, w, t, chunk_size=chunk)


def tracked_peak(loss_fn, h, w, t) -> int:
    h.grad = w.grad = None
    with TensorMemoryTracker() as mem:
        loss_fn(h, w, t).backward()
    return mem.peak_bytes


RSS_SCRIPT = textwrap.dedent("""
    import sys, torch
    from benchmarks.bench_loss import make_inputs, plain_torch, chunked
    tokens, hidden, vocab, chunk = map(int, sys.argv[2:6])
    fn = plain_torch if sys.argv[1] == "plain" else chunked(chunk)
    h, w, t = make_inputs(tokens, hidden, vocab)
    fn(h[:4].detach().requires_grad_(), w[:8].detach().requires_grad_(), t[:4] % 8).backward()
    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
    open("/proc/self/clear_refs", "w").write("5")
    base = status("VmRSS:")
    fn(h, w, t).backward()
    print(status("VmHWM:") - base)
""")


def peak_rss(which: str, s: dict) -> int | None:
    """Peak RSS growth of one forward+backward in a fresh process (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    args = [str(s[k]) for k in ("tokens", "hidden", "vocab", "chunk")]
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, which, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return int(out.stdout.split()[-1]) if out.returncode == 0 else None


def run(quick: bool) -> list[dict]:
    s = sizes(quick)
    h, w, t = make_inputs(s["tokens"], s["hidden"], s["vocab"])
    shape = f"{s['tokens']} tokens x vocab {s['vocab']:,}, hidden {s['hidden']}, chunk {s['chunk']}"
    rows = []
    ours_peak = tracked_peak(chunked(s["chunk"]), h, w, t)
    peer_peak = tracked_peak(plain_torch, h, w, t)
    rows.append(
        row(
            "cross-entropy peak tensor memory",
            ours_name="chunked",
            peer_name="F.cross_entropy(h @ W.T)",
            metric="memory",
            unit="MiB",
            ours=ours_peak / MiB,
            peer=peer_peak / MiB,
            note=f"{shape}; TensorMemoryTracker, fwd+bwd",
        )
    )
    rss_ours, rss_peer = peak_rss("chunked", s), peak_rss("plain", s)
    if rss_ours is not None and rss_peer is not None:
        rows.append(
            row(
                "cross-entropy peak RSS growth",
                ours_name="chunked",
                peer_name="F.cross_entropy(h @ W.T)",
                metric="memory",
                unit="MiB",
                ours=rss_ours / MiB,
                peer=rss_peer / MiB,
                note=f"{shape}; VmHWM - VmRSS in a fresh process",
            )
        )
    repeats = 3 if quick else 5
    threads = torch.get_num_threads()
    # Each chunk is a series of small operations, so the chunked loss is sensitive to the cost of
    # coordinating threads (worst on a shared machine): time it with all threads and with one.
    # Every row has its own benchmark name, so chapter 9 can quote it with records.benchmark.
    for label, n_threads in (("all threads", threads), ("one thread", 1)):
        with torch_threads(n_threads):
            rows.append(
                compare(
                    f"cross-entropy fwd+bwd time, {label}",
                    lambda: step(chunked(s["chunk"]), h, w, t),
                    lambda: step(plain_torch, h, w, t),
                    ours_name="chunked",
                    peer_name="F.cross_entropy(h @ W.T)",
                    repeats=repeats,
                    unit="ms",
                    scale=1e3,
                    note=f"{shape}; {n_threads} torch thread{'s' if n_threads > 1 else ''}",
                )
            )
    rows.append(
        compare(
            "cross-entropy fwd+bwd time, all threads",
            lambda: step(plain_ours, h, w, t),
            lambda: step(plain_torch, h, w, t),
            ours_name="tinyqwen cross_entropy(h @ W.T)",
            peer_name="F.cross_entropy(h @ W.T)",
            repeats=repeats,
            unit="ms",
            scale=1e3,
            note=f"{shape}; {threads} torch thread{'s' if threads > 1 else ''}",
        )
    )
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
