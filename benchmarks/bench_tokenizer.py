"""Byte-level BPE (chapter 1): training time and compression against Hugging Face `tokenizers`
(one thread, same text, same pre-tokenization regex, same vocabulary size), and encoding
throughput of the pure-Python reference encoder against its `to_tiktoken()` fast path.

The text is English: the docstrings of the Python standard library (the same on every machine
with the same Python version), topped up to the target size with the course's synthetic stories.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import statistics
import sysconfig
import time

import regex

from benchmarks.harness import compare, print_rows, row
from tinyqwen.sources import synthetic_stories
from tinyqwen.tokenizer import EOT, QWEN3_PATTERN, BPETokenizer, pretokenize

_DOCSTRING = regex.compile(r'"""(.*?)"""', regex.S)


def english_corpus(n_bytes: int) -> tuple[list[str], int]:
    """At least ``n_bytes`` of English: stdlib docstrings first, then synthetic stories.

    Returns the documents and how many of them (the first ones) are docstrings.
    """
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    docs, size = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages", "test", "idlelib") or "tests" in rel:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for doc in _DOCSTRING.findall(source):
            if len(doc.split()) > 5:
                docs.append(inspect.cleandoc(doc))  # without the code's indentation
                size += len(docs[-1].encode()) + 1
        if size >= n_bytes:
            return docs, len(docs)
    n_docstrings, seed = len(docs), 0
    while size < n_bytes:
        for story in synthetic_stories(1000, seed=seed):
            docs.append(story)
            size += len(story.encode()) + 1
            if size >= n_bytes:
                break
        seed += 1
    return docs, n_docstrings


def hf_train(texts: list[str], vocab_size: int):
    """Hugging Face `tokenizers` byte-level BPE with Qwen's pre-tokenization (Split + ByteLevel)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def run(quick: bool) -> list[dict]:
    # One thread for tokenizers (its Rust thread pool reads these when it first starts).
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    n_bytes, vocab, repeats = (1_000_000, 4096, 2) if quick else (5_000_000, 8192, 3)
    texts, n_docstrings = english_corpus(n_bytes)
    size = sum(len(t.encode()) for t in texts)
    docstring_bytes = sum(len(t.encode()) for t in texts[:n_docstrings])
    distinct = len(pretokenize(texts, QWEN3_PATTERN, [EOT]))
    # Each row's name is unique, so a chapter can quote it: tinyqwen.records.benchmark("tokenizer: ...").
    name = f"tokenizer: train wall time, {size / 1e6:.1f} MB to vocab {vocab}"
    note = (
        f"{len(texts)} docs: {docstring_bytes / 1e6:.1f} MB stdlib docstrings + "
        f"{(size - docstring_bytes) / 1e6:.1f} MB synthetic stories; "
        f"{distinct:,} distinct pre-tokens (Qwen3 regex)"
    )
    result, cpu = {}, {"ours": [], "peer": []}

    def timed(key, train):
        start = time.process_time()  # CPU seconds of this process: robust on a busy machine
        result[key] = train(texts, vocab)
        cpu[key].append(time.process_time() - start)

    def ours():
        timed("ours", lambda t, v: BPETokenizer.train(t, v, progress=False))

    def peer():
        timed("peer", hf_train)

    warmup = 0 if quick else 1
    rows = [
        compare(
            name,
            ours,
            peer,
            peer_name="HF tokenizers, 1 thread",
            repeats=repeats,
            warmup=warmup,
            note=note,
        )
    ]
    ours_cpu, peer_cpu = cpu["ours"][warmup:], cpu["peer"][warmup:]
    rows.append(
        row(
            f"tokenizer: train CPU time, {size / 1e6:.1f} MB to vocab {vocab}",
            peer_name="HF tokenizers, 1 thread",
            metric="cpu time",
            unit="s",
            ours=statistics.median(ours_cpu),
            peer=statistics.median(peer_cpu),
            ours_range=(min(ours_cpu), max(ours_cpu)),
            peer_range=(min(peer_cpu), max(peer_cpu)),
            repeats=repeats,
            note="process CPU seconds (all threads)",
        )
    )
    tok, hf = result["ours"], result["peer"]
    ours_ids = tok.encode_batch(texts)
    n_ours = sum(map(len, ours_ids))
    n_hf = sum(len(e.ids) for e in hf.encode_batch(texts))
    rows.append(
        row(
            f"tokenizer: compression, {size / 1e6:.1f} MB at vocab {vocab}",
            peer_name="HF tokenizers",
            metric="bytes/token",
            unit="bytes/token",
            ours=size / n_ours,
            peer=size / n_hf,
            note="on the training text",
        )
    )

    enc = tok.to_tiktoken()
    encode_cpu = {"ours": [], "peer": []}

    def cpu_timed(key, fn):
        start = time.process_time()
        out = fn()
        encode_cpu[key].append(time.process_time() - start)
        return out

    def python_encode():
        tok._cache.clear()  # no help from earlier runs: each run starts with an empty cache
        return cpu_timed("ours", lambda: [tok.encode(t) for t in texts])

    def tiktoken_encode():  # a plain loop: encode_batch(num_threads=1) adds thread-pool overhead
        return cpu_timed("peer", lambda: [enc.encode(t, allowed_special="all") for t in texts])

    assert python_encode() == tiktoken_encode() == ours_ids, (
        "the fast path disagrees with the reference"
    )
    for times in encode_cpu.values():  # forget the run of the check above
        times.clear()
    t = compare("encode", python_encode, tiktoken_encode, peer_name="x", repeats=repeats, warmup=0)
    rows.append(
        row(
            f"tokenizer: encode throughput, {size / 1e6:.1f} MB",
            ours_name="tinyqwen Python encode()",
            peer_name="to_tiktoken().encode",
            metric="throughput",
            unit="tokens/s",
            ours=n_ours / t["ours"],
            peer=n_ours / t["peer"],
            ours_range=(n_ours / t["ours_range"][1], n_ours / t["ours_range"][0]),
            peer_range=(n_ours / t["peer_range"][1], n_ours / t["peer_range"][0]),
            repeats=repeats,
            note="same ids; Python caches repeated pre-tokens",
        )
    )
    ours_rate = [n_ours / c for c in encode_cpu["ours"]]
    peer_rate = [n_ours / c for c in encode_cpu["peer"]]
    rows.append(
        row(
            f"tokenizer: encode CPU throughput, {size / 1e6:.1f} MB",
            ours_name="tinyqwen Python encode()",
            peer_name="to_tiktoken().encode",
            metric="cpu throughput",
            unit="tokens/CPU s",
            ours=statistics.median(ours_rate),
            peer=statistics.median(peer_rate),
            ours_range=(min(ours_rate), max(ours_rate)),
            peer_range=(min(peer_rate), max(peer_rate)),
            repeats=repeats,
            note="tokens per process CPU second (one thread)",
        )
    )
    return rows


if __name__ == "__main__":
    import sys

    print_rows(run(quick="--quick" in sys.argv))
