"""Tokenization pipeline throughput: the pure-Python reference encoder vs the tiktoken fast path.

Both encode the same documents with the same chapter-1 tokenizer (identical ids: see
tests/test_data.py); `encode_documents` batches them, and the fast path runs tiktoken's Rust
encoder on several threads. Also reported: the whole `prepare_token_files` pipeline (clean,
dedup, split, tokenize, write) and the bytes on disk of the token file vs the UTF-8 text.

The full run (make bench, not --quick) also prepares 2,200,000 stories of TinyStories' length the
way the t4/a100/h100 presets do (benchmarks/data_prep.py, in a child process), records it with its
provenance in benchmarks/results/data-prep.json, and reports its wall time and peak memory against
a free Colab VM's budget (10 minutes, 6 GB).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import data_prep
from benchmarks.harness import compare, print_rows, row
from tinyqwen.data import encode_documents, prepare_token_files
from tinyqwen.sources import synthetic_stories
from tinyqwen.tokenizer import BPETokenizer


def setup(quick: bool):
    docs = synthetic_stories(2_000 if quick else 20_000, seed=1)
    # the synthetic stories run out of merges at about 1,000 tokens
    tok = BPETokenizer.train(docs[:1_000], 1_000, progress=False)
    return docs, tok


def encode_all(docs, tok, fast: bool) -> int:
    return sum(len(a) for a in encode_documents(docs, tok, fast=fast, progress=False))


def run(quick: bool) -> list[dict]:
    docs, tok = setup(quick)
    n_tokens = encode_all(docs, tok, fast=True)
    assert n_tokens == encode_all(docs, tok, fast=False)
    fresh = lambda: BPETokenizer(tok.vocab, tok.merges, tok.special_tokens, tok.pattern)  # noqa: E731
    note = f"{len(docs):,} synthetic stories, {n_tokens:,} tokens, vocab {tok.vocab_size:,}"
    repeats = 3 if quick else 5
    # a fresh tokenizer each time, so the reference encoder's word cache starts cold, as in a real run
    t = compare(
        "tokenize corpus (encode_documents)",
        lambda: encode_all(docs, fresh(), True),
        lambda: encode_all(docs, fresh(), False),
        ours_name="tiktoken fast path",
        peer_name="Python reference encoder",
        repeats=repeats,
        note=note,
    )
    rows = [
        t,
        row(
            "tokenize corpus (encode_documents)",
            ours_name="tiktoken fast path",
            peer_name="Python reference encoder",
            metric="throughput",
            unit="tokens/s",
            ours=n_tokens / t["ours"],
            peer=n_tokens / t["peer"],
            note=note,
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for fast in (True, False):
            start = time.perf_counter()
            meta = prepare_token_files(
                docs, fresh(), Path(tmp) / str(fast), fast=fast, progress=False
            )
            times[fast] = time.perf_counter() - start
        rows.append(
            row(
                "prepare_token_files (whole pipeline)",
                ours_name="tiktoken fast path",
                peer_name="Python reference encoder",
                metric="time",
                unit="s",
                ours=times[True],
                peer=times[False],
                note=note + "; clean, exact + near dedup, split, tokenize, write (one run each)",
            )
        )
        disk = sum((Path(tmp) / "True" / n).stat().st_size for n in ("train.bin", "val.bin"))
        text = sum(f["text_bytes"] for f in meta["files"].values())
        rows.append(
            row(
                "bytes on disk",
                ours_name=f"token files ({meta['dtype']})",
                peer_name="UTF-8 text",
                metric="size",
                unit="MB",
                ours=disk / 1e6,
                peer=text / 1e6,
                note=note,
            )
        )
    if not quick:
        rows += full_count_rows()
    return rows


def full_count_rows(docs: int = 2_200_000) -> list[dict]:
    """Prepare `docs` stories as the presets do; record data-prep.json; rows against the budget."""
    record = data_prep.measure(docs, progress=False)
    data_prep.RESULT.write_text(json.dumps(record, indent=1) + "\n")
    note = (
        f"{docs:,} synthetic stories of TinyStories' lengths, vocab {data_prep.PRESET['vocab_size']:,}, "
        f"{data_prep.PRESET['tokenizer_docs']:,} tokenizer documents; stages {record['stage_seconds']}; "
        f"load average {record['load_average_before_after']}"
    )
    budget = data_prep.BUDGET
    return [
        row(
            "prepare_corpus at 2.2M stories",
            ours_name="tinyqwen (2 CPU cores)",
            peer_name="free Colab VM budget",
            metric="time",
            unit="s",
            ours=record["wall_seconds"],
            peer=budget["seconds"],
            note=note,
        ),
        row(
            "prepare_corpus at 2.2M stories",
            ours_name="tinyqwen (peak RSS)",
            peer_name="free Colab VM budget",
            metric="memory",
            unit="GB",
            ours=record["peak_rss_gb"],
            peer=budget["peak_rss_gb"],
            note=note,
        ),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
