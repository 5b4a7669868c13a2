"""Chapter 7: cleaning, deduplication, the train/val split, token files and the batch sampler."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

from tinyqwen.data import (
    FORMAT,
    SEPARATOR,
    DocumentFilter,
    MinHasher,
    NearDuplicateSample,
    TokenDataset,
    TokenWriter,
    clean_text,
    corpus_settings,
    dedup_hash,
    encode_documents,
    exact_dedup,
    get_batch,
    jaccard,
    lone_surrogate,
    near_dedup,
    prepare_corpus,
    prepare_token_files,
    prepared_status,
    read_tokens,
    split_documents,
    split_of,
    token_dtype,
    tokenizer_hash,
    write_json_atomic,
    write_tokens_atomic,
)
from tinyqwen.sources import TextSource, open_source, synthetic_stories
from tinyqwen.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def stories():
    return synthetic_stories(240, seed=7)


@pytest.fixture(scope="module")
def tok(stories):
    return BPETokenizer.train(stories[:80], 400, progress=False)


def without_date(meta: dict) -> dict:
    """meta.json without its creation time: what two runs on the same input must agree on."""
    return {k: v for k, v in meta.items() if k != "created"}


def _decode_docs(tok, path):
    """Decode a token file and cut it at the separators: (full text, [documents])."""
    ids = read_tokens(path)
    text = tok.decode(ids.tolist())
    assert text.endswith(SEPARATOR), "every document, the last one too, ends with the separator"
    return text, text.split(SEPARATOR)[:-1]


def _dirty(doc: str, k: int) -> str:
    """The same document wrapped in the kinds of mess clean_text removes."""
    variants = [
        lambda d: (
            "  "
            + d.replace(". ", ".\r\n", 1)
            + "\n\n\n\nCopyright 2024 Story Site. All rights reserved."
        ),
        lambda d: "Click here to subscribe!\n" + d.replace(" ", "\u00a0", 2) + "\ufeff",
        lambda d: d + "\x07\nhttps://example.com/story",
        lambda d: d.replace(" ", "   ", 3) + SEPARATOR,
    ]
    return variants[k % len(variants)](doc)


def _expected_clean(doc: str, k: int) -> str:
    return doc.replace(". ", ".\n", 1) if k % 4 == 0 else doc


def test_clean_text():
    assert (
        clean_text("Cafe\u0301  au\u00a0lait\r\n\r\n\r\n\r\nnext\x00 line   \n")
        == "Café au lait\n\nnext line"
    )
    assert (
        clean_text("Copyright (c) 2020 Foo\nA story.\nAll rights reserved.\nRead more at our site")
        == "A story."
    )
    assert clean_text(f"one{SEPARATOR}two") == "onetwo"
    with pytest.raises(ValueError, match="bytes"):
        clean_text(b"bytes")


def test_round_trip_decodes_to_cleaned_documents_joined_by_separator(tmp_path, stories, tok):
    clean = stories[:60]
    dirty = [_dirty(d, k) for k, d in enumerate(clean)]
    expected = [_expected_clean(d, k) for k, d in enumerate(clean)]
    assert [clean_text(d) for d in dirty] == expected, (
        "test premise: the planted mess is what clean_text removes"
    )
    meta = prepare_token_files(iter(dirty), tok, tmp_path, val_fraction=0.2, seed=3, progress=False)
    train_idx, val_idx = split_documents(expected, 0.2, seed=3)
    for name, idx in (("train.bin", train_idx), ("val.bin", val_idx)):
        docs = [expected[i] for i in idx]
        text, _ = _decode_docs(tok, tmp_path / name)
        assert text == SEPARATOR.join(docs) + SEPARATOR
        # the fast path wrote exactly the pure-Python reference encoding
        ref = [t for d in docs for t in (*tok.encode(d, allowed_special="none"), tok.eot_id)]
        assert read_tokens(tmp_path / name).tolist() == ref
        assert meta["files"][name] == {
            "tokens": len(ref),
            "docs": len(docs),
            "text_bytes": sum(len(d.encode()) for d in docs),
        }
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    assert meta["dtype"] == "uint16" and meta["tokenizer_hash"] == tokenizer_hash(tok)
    assert meta["format"] == FORMAT and meta["settings"]["seed"] == 3


def test_fast_and_reference_paths_write_identical_files(tmp_path, stories, tok):
    docs = stories[:40] + ["Ünïcödé 🙂 数字 12345 — tabs\tand  spaces"]
    fast = prepare_token_files(
        docs, tok, tmp_path / "fast", progress=False, batch_docs=3, num_threads=3
    )
    slow = prepare_token_files(docs, tok, tmp_path / "slow", progress=False, fast=False)
    assert without_date(fast) == without_date(slow)
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "slow" / name).read_bytes()


def test_encode_documents_refuses_a_document_that_contains_the_separator(tok):
    with pytest.raises(ValueError, match="contains the separator"):
        list(encode_documents(["fine", f"a{SEPARATOR}b"], tok, progress=False))
    with pytest.raises(ValueError, match="batch_docs"):
        list(encode_documents(["fine"], tok, batch_docs=0, progress=False))


def test_a_lone_surrogate_is_refused_clearly_and_dropped_by_the_pipeline(tmp_path, stories, tok):
    # Half of a UTF-16 pair (here from a JSON escape that split an emoji) has no UTF-8 form. Chapter
    # 1's tokenizer refuses it naming the position; the data pipeline must not crash on it deep inside
    # a hash (UnicodeEncodeError) or repair it silently: clean_text and the encoders refuse it with
    # the position, and DocumentFilter drops the document and counts it.
    broken = json.loads('"A dog saw the moon \\ud83d and barked at it all night long."')
    assert lone_surrogate(broken) == 19 and lone_surrogate(stories[0]) is None
    assert lone_surrogate("caf\u00e9 \U0001f600") is None, (
        "a whole emoji is one code point, not a pair"
    )
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud83d' at position 19"):
        clean_text(broken)
    for fast in (True, False):
        with pytest.raises(
            ValueError,
            match=r"document 1 of the batch has a lone surrogate '\\ud83d' at position 19",
        ):
            list(encode_documents([stories[0], broken], tok, fast=fast, progress=False))
    doc_filter = DocumentFilter(near_dup="off")
    assert doc_filter(broken) is None and doc_filter.removed["invalid_unicode"] == 1
    assert "1 with a lone surrogate" in doc_filter.summary()
    docs = stories[:60] + [broken] + stories[60:120]
    meta = prepare_token_files(docs, tok, tmp_path, near_dup="off", progress=False)
    assert meta["removed"]["invalid_unicode"] == 1 and meta["docs_kept"] == 120
    written = (
        _decode_docs(tok, tmp_path / "train.bin")[1] + _decode_docs(tok, tmp_path / "val.bin")[1]
    )
    assert Counter(written) == Counter(stories[:120])


def _planted(stories):
    """Distinct stories plus planted exact and near duplicates of some of them."""
    base = stories[:150]
    exact = [base[3].upper(), "  " + base[10].replace(" ", "  \n "), base[20]]
    near = [
        base[5].replace(" the ", " a ", 1),  # one word changed
        base[30] + " The end.",  # a few words appended
        base[40].replace(base[40].split()[-1], "again.", 1),
        base[50][: len(base[50]) - 12] + "...",  # the last words cut
    ]
    assert all(
        0.8 <= jaccard(n, b) < 1
        for n, b in zip(near, [base[5], base[30], base[40], base[50]], strict=False)
    ), [jaccard(n, b) for n, b in zip(near, [base[5], base[30], base[40], base[50]], strict=False)]
    return base, exact, near


def test_dedup_removes_planted_exact_and_near_duplicates_and_keeps_distinct_docs(
    tmp_path, stories, tok
):
    base, exact, near = _planted(stories)
    docs = base[:75] + exact + base[75:] + near
    assert [docs[i] for i in exact_dedup(docs)] == base + near
    without_exact = docs[:75] + docs[78:]
    kept = [without_exact[i] for i in near_dedup(without_exact)]
    assert kept == base, (
        "near_dedup must drop exactly the planted near-duplicates and keep every distinct story"
    )
    meta = prepare_token_files(docs, tok, tmp_path, progress=False)
    assert meta["removed"] == {
        "invalid_unicode": 0,
        "too_short": 0,
        "too_long": 0,
        "exact_duplicates": len(exact),
        "near_duplicates": len(near),
    }
    written = (
        _decode_docs(tok, tmp_path / "train.bin")[1] + _decode_docs(tok, tmp_path / "val.bin")[1]
    )
    assert Counter(written) == Counter(base)


def test_minhash_estimates_jaccard(stories):
    hasher = MinHasher(num_perm=256, seed=1)
    words = stories[0].split()
    for cut in (0, 5, 20, 40):
        a, b = stories[0], " ".join(words[cut:] + stories[1].split()[:cut])
        est = float((hasher(a) == hasher(b)).mean())
        assert abs(est - jaccard(a, b)) < 0.1, (cut, est, jaccard(a, b))


def test_no_validation_document_appears_in_train(tmp_path, stories, tok):
    base, exact, near = _planted(stories)
    prepare_token_files(
        base + exact + near, tok, tmp_path, val_fraction=0.2, seed=1, progress=False
    )
    train = _decode_docs(tok, tmp_path / "train.bin")[1]
    val = _decode_docs(tok, tmp_path / "val.bin")[1]
    assert val == [base[i] for i in split_documents(base, 0.2, seed=1)[1]]
    assert len(train) + len(val) == len(base) and 0.1 < len(val) / len(base) < 0.3
    assert not set(train) & set(val)
    hasher = MinHasher()
    train_sigs = np.stack([hasher(d) for d in train])
    for doc in val:  # no near-copy leaks either
        assert (train_sigs == hasher(doc)).mean(axis=1).max() < 0.8


def test_split_documents_is_a_seeded_partition(stories):
    train, val = split_documents(stories, 0.1, seed=5)
    assert sorted([*train, *val]) == list(range(len(stories))) and 10 <= len(val) <= 40
    assert np.array_equal(val, split_documents(stories, 0.1, seed=5)[1])
    assert not np.array_equal(val, split_documents(stories, 0.1, seed=6)[1])
    assert len(split_documents(stories, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(stories, 1.0)
    with pytest.raises(ValueError, match="seed"):
        split_of("a story", 0.1, seed=-1)


def test_hash_split_streams_each_document_decides_alone(stories):
    """A document's side depends on its text and the seed only: not on its neighbours, their
    order or how many there are, so the split is decided on the fly and is the same every time."""
    sides = {d: split_of(d, 0.2, seed=3) for d in stories}
    shuffled = list(reversed(stories[:50])) + synthetic_stories(30, seed=99)
    assert all(split_of(d, 0.2, seed=3) == sides[d] for d in shuffled if d in sides)
    assert set(sides.values()) == {"train", "val"}
    assert [split_of(d, 0.2, seed=4) for d in stories] != list(sides.values())
    many = synthetic_stories(4_000, seed=11)
    share = np.mean([split_of(d, 0.05, seed=0) == "val" for d in many])
    assert 0.04 < share < 0.06, share


def test_token_dtype_and_wide_ids(tmp_path):
    assert token_dtype(400) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(151_936) == np.uint32
    ids = np.array([0, 65_535, 65_536, 151_935])
    assert write_tokens_atomic(tmp_path / "x.bin", [ids], np.uint32) == 4
    assert np.fromfile(tmp_path / "x.bin", dtype=np.uint32).tolist() == ids.tolist()
    with pytest.raises(ValueError, match="does not fit in uint16"):
        write_tokens_atomic(tmp_path / "y.bin", [ids], np.uint16)
    assert not (tmp_path / "y.bin").exists() and not (tmp_path / "y.bin.tmp").exists()


def test_an_exception_mid_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "train.bin"
    write_tokens_atomic(target, [np.arange(10)], np.uint16)

    def chunks():
        yield np.arange(100)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_tokens_atomic(target, chunks(), np.uint16)
    assert np.fromfile(target, dtype=np.uint16).tolist() == list(range(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin"]


CRASH = textwrap.dedent("""
    import os, signal, sys
    from tinyqwen.data import prepare_token_files
    from tinyqwen.sources import synthetic_stories
    from tinyqwen.tokenizer import BPETokenizer

    docs = synthetic_stories(60, seed=7)
    tok = BPETokenizer.train(docs[:20], 300, progress=False)

    class KilledMidway:  # a tiktoken encoding that kills the process on its second batch
        def __init__(self, enc):
            self.enc, self.calls = enc, 0
        def __getattr__(self, name):
            return getattr(self.enc, name)
        def encode_to_numpy(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.enc.encode_to_numpy(*args, **kwargs)

    if sys.argv[2] == "crash":
        enc = KilledMidway(tok.to_tiktoken())
        tok.to_tiktoken = lambda: enc
    prepare_token_files(docs, tok, sys.argv[1], batch_docs=10, progress=False)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_run_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "data"

    def run(mode):
        return subprocess.run(
            [sys.executable, "-c", CRASH, str(out), mode], capture_output=True, text=True
        )

    assert run("ok").returncode == 0  # a complete earlier run is in the directory
    old_meta = (out / "meta.json").read_text()
    result = run("crash")
    assert result.returncode == -9, result.stderr
    names = {p.name for p in out.iterdir()}
    assert "meta.json" not in names, (
        "meta.json must go first, so the directory does not look complete"
    )
    assert "train.bin.tmp" in names, "test premise: the crash happened in the middle of train.bin"
    with pytest.raises(ValueError, match="unfinished"):
        read_tokens(out / "train.bin")
    with pytest.raises(ValueError, match="unfinished"):
        TokenDataset(out / "train.bin", 8, 2)
    assert run("ok").returncode == 0  # running again repairs the directory
    assert {p.name for p in out.iterdir()} == {"train.bin", "val.bin", "meta.json"}
    assert without_date(json.loads((out / "meta.json").read_text())) == without_date(
        json.loads(old_meta)
    )


def test_read_tokens_rejects_a_file_that_disagrees_with_meta(tmp_path, stories, tok):
    prepare_token_files(stories[:20], tok, tmp_path, val_fraction=0.3, progress=False)
    with open(tmp_path / "train.bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match="promises"):
        read_tokens(tmp_path / "train.bin")


def test_get_batch_targets_are_inputs_shifted_by_one():
    tokens = np.arange(100, dtype=np.uint16) * 3
    x, y = get_batch(tokens, [0, 10, 89], seq_len=10)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (3, 10)
    assert x[1].tolist() == list(range(30, 60, 3)) and y[1].tolist() == list(range(33, 63, 3))
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="overrun"):
        get_batch(tokens, [90], seq_len=10)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, stories, tok):
    out = tmp_path_factory.mktemp("tokens")
    prepare_token_files(stories, tok, out, progress=False)
    return out / "train.bin"


@pytest.fixture()
def arange_file(tmp_path):
    """A token file whose token i is i, so a window tells where it starts."""
    n = 5_000
    write_tokens_atomic(tmp_path / "train.bin", [np.arange(n)], np.uint16)
    write_json_atomic(
        tmp_path / "meta.json", {"dtype": "uint16", "files": {"train.bin": {"tokens": n}}}
    )
    return tmp_path / "train.bin"


def test_dataset_epoch_visits_every_window_once(arange_file):
    ds = TokenDataset(arange_file, seq_len=32, batch_size=5, seed=0)
    assert ds.n_windows == 4_999 // 32 == 156 and ds.batches_per_epoch == 31
    assert ds.tokens_per_epoch == 31 * 5 * 32
    for epoch in range(2):
        starts = []
        for _ in range(ds.batches_per_epoch):
            x, y = ds.next_batch()
            assert ds.epoch == epoch
            assert torch.equal(y, x + 1), "targets are the inputs shifted by one token"
            assert torch.equal(x - x[:, :1], torch.arange(32).expand(5, 32)), (
                "windows are contiguous"
            )
            starts += x[:, 0].tolist()
        assert len(set(starts)) == len(starts) == 155, "no window twice in one epoch"
        assert all(s % 32 == 0 for s in starts)
        if epoch == 0:
            first = starts
    assert starts != first, "each epoch has its own order"


def test_dataset_is_deterministic_under_a_seed(token_file):
    a, b, c = (TokenDataset(token_file, 16, 3, seed=s) for s in (1, 1, 2))
    for _ in range(5):
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.next_batch()[0], c.next_batch()[0])


def test_dataset_resumes_mid_epoch_and_across_epochs(token_file):
    ds = TokenDataset(token_file, seq_len=64, batch_size=8, seed=4)
    n = ds.batches_per_epoch
    for _ in range(n - 2):
        ds.next_batch()
    state = json.loads(json.dumps(ds.state_dict()))  # it survives a checkpoint file
    expected = [ds.next_batch() for _ in range(5)]  # crosses into epoch 1
    assert ds.epoch == 1
    resumed = TokenDataset(token_file, seq_len=64, batch_size=8, seed=4)
    resumed.load_state_dict(state)
    for (x, y), (ex, ey) in zip((resumed.next_batch() for _ in range(5)), expected, strict=False):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    fresh = TokenDataset(token_file, seq_len=64, batch_size=8, seed=4)
    assert not torch.equal(fresh.next_batch()[0], expected[0][0])
    other = TokenDataset(token_file, seq_len=32, batch_size=8, seed=4)
    with pytest.raises(ValueError, match="seq_len"):
        other.load_state_dict(state)


def test_dataset_rejects_too_small_files_and_bad_sizes(token_file):
    with pytest.raises(ValueError, match="fewer than one batch"):
        TokenDataset(token_file, seq_len=10_000, batch_size=1_000)
    with pytest.raises(ValueError, match="seq_len"):
        TokenDataset(token_file, seq_len=0, batch_size=2)


def test_tokenizer_hash_identifies_the_tokenizer(stories, tok):
    other = BPETokenizer.train(stories[:80], 401, progress=False)
    assert tokenizer_hash(tok) == tokenizer_hash(
        BPETokenizer(tok.vocab, tok.merges, tok.special_tokens, tok.pattern)
    )
    assert tokenizer_hash(tok) != tokenizer_hash(other)


def test_length_filters(tmp_path, stories, tok):
    docs = ["too short", "x" * 50_000] + stories[:10]
    meta = prepare_token_files(
        docs, tok, tmp_path, min_chars=20, max_chars=20_000, val_fraction=0.3, progress=False
    )
    assert meta["removed"]["too_short"] == 1 and meta["removed"]["too_long"] == 1
    assert meta["files"]["train.bin"]["docs"] + meta["files"]["val.bin"]["docs"] == 10


def test_environment_has_no_leftover_temp_files(tmp_path, stories, tok):
    (tmp_path / "train.bin.tmp").write_bytes(b"junk from a crashed run")
    prepare_token_files(stories[:10], tok, tmp_path, val_fraction=0.3, progress=False)
    assert not list(tmp_path.glob("*.tmp"))
    assert os.path.getsize(tmp_path / "val.bin") > 0


# --- prepare_corpus: streaming preparation, provenance, reuse and refusal ----------------------

CORPUS = dict(vocab_size=300, tokenizer_docs=40, progress=False)


class CountingSource(TextSource):
    """Synthetic stories that count how often they are read, and how far."""

    kind = "counting"

    def __init__(self, n_docs, seed=7):
        super().__init__(n_docs)
        self.seed, self.passes, self.read = seed, 0, 0
        self.description = f"{n_docs} counted stories"

    def __iter__(self):
        self.passes += 1
        for doc in synthetic_stories(self.n_docs + 50, seed=self.seed):  # more than asked for
            self.read += 1
            yield doc

    def identity(self, known=None):
        return {"kind": "counting", "seed": self.seed}


def test_prepare_corpus_streams_once_and_records_where_the_data_came_from(tmp_path, capsys):
    src = CountingSource(120)
    meta = prepare_corpus(
        src, 120, out_dir=tmp_path, vocab_size=300, tokenizer_docs=40, val_fraction=0.2
    )
    out = capsys.readouterr().out
    assert (
        "[1/3]" in out and "[2/3]" in out and "[3/3]" in out and "near duplicates (estimate" in out
    )
    assert src.passes == 1 and src.read == 120, "one pass, stopping at n_docs"
    assert meta["docs_in"] == 120 and meta["settings"]["source"] == {"kind": "counting", "seed": 7}
    assert meta["settings"]["tokenizer"]["vocab_size"] == 300 and meta["settings"]["n_docs"] == 120
    assert set(meta["seconds"]) >= {
        "read_tokenizer_docs",
        "train_tokenizer",
        "clean_tokenize_write",
        "total",
    }
    tok = BPETokenizer.load(tmp_path / "tokenizer.json")
    assert (
        meta["tokenizer_hash"] == tokenizer_hash(tok)
        and meta["tokenizer_file"]["name"] == "tokenizer.json"
    )
    docs = synthetic_stories(120, seed=7)
    _, val_idx = split_documents(docs, 0.2, seed=0)
    assert _decode_docs(tok, tmp_path / "val.bin")[1] == [docs[i] for i in val_idx]
    assert {p.name for p in tmp_path.iterdir()} == {
        "train.bin",
        "val.bin",
        "meta.json",
        "tokenizer.json",
    }


def test_a_matching_folder_is_reused_and_a_different_request_is_refused(tmp_path, capsys):
    first = prepare_corpus("synthetic", 100, out_dir=tmp_path, **CORPUS)
    src = CountingSource(100)
    assert (
        prepared_status(
            tmp_path,
            corpus_settings(
                open_source("synthetic", 100, verbose=False), 100, vocab_size=300, tokenizer_docs=40
            ),
        )[0]
        == "match"
    )
    again = prepare_corpus("synthetic", 100, out_dir=tmp_path, **{**CORPUS, "progress": True})
    assert again == first and "Reusing the prepared data" in capsys.readouterr().out
    with pytest.raises(
        ValueError,
        match=r"other settings:\n  - n_docs: prepared 100, requested 120\n"
        r"  - tokenizer\.trained_on_docs: prepared 40, requested 30",
    ):
        prepare_corpus(
            "synthetic", 120, out_dir=tmp_path, vocab_size=300, tokenizer_docs=30, progress=False
        )
    with pytest.raises(
        ValueError, match=r"source\.kind: prepared 'synthetic', requested 'counting'"
    ):
        prepare_corpus(src, 100, out_dir=tmp_path, **CORPUS)
    assert src.passes == 0, "refused before reading anything"
    rebuilt = prepare_corpus(src, 100, out_dir=tmp_path, on_mismatch="rebuild", **CORPUS)
    assert rebuilt["settings"]["source"]["kind"] == "counting" and src.passes == 1
    with pytest.raises(ValueError, match="rank 0 prepares"):
        prepare_corpus("synthetic", 100, out_dir=tmp_path / "other", must_exist=True, **CORPUS)


def test_pointing_at_another_or_a_changed_file_is_noticed(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n\n".join(synthetic_stories(80, seed=1)))
    b.write_text("\n\n".join(synthetic_stories(80, seed=2)))
    out = tmp_path / "data"
    meta = prepare_corpus(str(a), 80, out_dir=out, **CORPUS)
    assert meta["settings"]["source"]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    with pytest.raises(
        ValueError, match=r"source\.path: prepared '.*a\.txt', requested '.*b\.txt'"
    ):
        prepare_corpus(str(b), 80, out_dir=out, **CORPUS)
    os.utime(a)  # touched, same content: still the same data
    assert prepare_corpus(str(a), 80, out_dir=out, **CORPUS) == meta
    a.write_text("\n\n".join(synthetic_stories(80, seed=3)))
    with pytest.raises(ValueError, match=r"source\.sha256: prepared"):
        prepare_corpus(str(a), 80, out_dir=out, **CORPUS)


def test_a_too_small_validation_split_is_refused_while_preparing(tmp_path, stories, tok):
    need = 8 * 4 * (64 + 1)  # eval_batches x batch_size x (seq_len + 1)
    with pytest.raises(
        ValueError,
        match=r"validation split has [\d,]+ tokens .* fewer than the 2,080 .* raise val_fraction",
    ):
        prepare_corpus("synthetic", 150, out_dir=tmp_path, min_val_tokens=need, **CORPUS)
    assert not (tmp_path / "meta.json").exists() and not list(tmp_path.glob("*.tmp"))
    assert prepared_status(tmp_path, {})[0] == "missing"
    with pytest.raises(ValueError, match="training split has"):
        prepare_token_files(stories[:30], tok, tmp_path, min_train_tokens=10**7, progress=False)
    meta = prepare_corpus(
        "synthetic", 150, out_dir=tmp_path, val_fraction=0.3, min_val_tokens=need, **CORPUS
    )
    assert meta["val_tokens"] >= need
    with pytest.raises(
        ValueError, match="prepared with the requested settings, but the validation split"
    ):
        prepare_corpus(
            "synthetic", 150, out_dir=tmp_path, val_fraction=0.3, min_val_tokens=10**7, **CORPUS
        )


def test_a_corpus_where_everything_is_dropped_says_why(tmp_path, tok):
    one_long = tmp_path / "one.txt"
    one_long.write_text("word " * 30_000)  # one document of 150,000 characters
    with pytest.raises(
        ValueError,
        match=r"every one of the 1 documents was dropped .* 1 too long .* the longest is "
        r"149,999 characters: raise max_chars",
    ):
        prepare_corpus(str(one_long), 10, out_dir=tmp_path / "a", **CORPUS)
    with pytest.raises(
        ValueError, match=r"every one of the 3 documents was dropped .* 3 too short"
    ):
        prepare_token_files(["Hi!", "Ok", "The end."], tok, tmp_path / "b", progress=False)


def test_a_single_str_where_documents_belong_is_refused(tmp_path, tok):
    story = "Once upon a time there was a cat."
    for call in (
        lambda: prepare_token_files(story, tok, tmp_path, progress=False),
        lambda: exact_dedup(story),
        lambda: near_dedup(story),
        lambda: list(encode_documents(story, tok, progress=False)),
        lambda: split_documents(story),
    ):
        with pytest.raises(ValueError, match=f"single str of {len(story)} characters"):
            call()
    assert not (tmp_path / "train.bin.tmp").exists()


def test_a_failure_while_tokenizing_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    prepare_corpus("synthetic", 200, out_dir=tmp_path, val_fraction=0.2, **CORPUS)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".bin"}
    calls = {"n": 0}
    encode = TokenWriter._encode

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:  # the training batch is written, the validation batch fails
            raise OSError("disk full")
        return encode(self, batch)

    monkeypatch.setattr(TokenWriter, "_encode", failing)
    with pytest.raises(OSError, match="disk full"):
        prepare_corpus(
            "synthetic",
            300,
            out_dir=tmp_path,
            on_mismatch="rebuild",
            val_fraction=0.2,
            num_threads=1,
            **{**CORPUS, "tokenizer_docs": 20},
        )
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "meta.json").exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".bin"} == before, (
        "the old token files are untouched (and unusable without meta.json)"
    )
    with pytest.raises(ValueError, match="unfinished"):
        read_tokens(tmp_path / "train.bin")
    monkeypatch.setattr(TokenWriter, "_encode", encode)
    assert (
        prepare_corpus(
            "synthetic", 300, out_dir=tmp_path, val_fraction=0.2, **{**CORPUS, "tokenizer_docs": 20}
        )["docs_in"]
        == 300
    )


def test_a_corrupted_tokenizer_or_token_file_makes_the_folder_incomplete(tmp_path):
    settings_args = dict(vocab_size=300, tokenizer_docs=40)
    prepare_corpus("synthetic", 100, out_dir=tmp_path, val_fraction=0.2, **CORPUS)
    settings = corpus_settings(
        open_source("synthetic", 100, verbose=False), 100, val_fraction=0.2, **settings_args
    )
    assert prepared_status(tmp_path, settings)[0] == "match"
    (tmp_path / "tokenizer.json").write_text("{}")
    status, meta, why = prepared_status(tmp_path, settings)
    assert status == "missing" and "tokenizer" in why[0]
    assert (
        prepare_corpus("synthetic", 100, out_dir=tmp_path, val_fraction=0.2, **CORPUS)["docs_in"]
        == 100
    )
    with open(tmp_path / "val.bin", "ab") as f:
        f.write(b"\x00\x00")
    assert prepared_status(tmp_path, settings)[0] == "missing"


def test_dedup_counts_and_the_sampled_near_duplicate_estimate(tmp_path, stories):
    base, exact, near = _planted(stories)
    docs = base + exact + near
    meta = prepare_corpus(
        docs, len(docs), out_dir=tmp_path / "all", near_dup="estimate", val_fraction=0.2, **CORPUS
    )
    assert meta["removed"] == {
        "invalid_unicode": 0,
        "too_short": 0,
        "too_long": 0,
        "exact_duplicates": 3,
        "near_duplicates": 0,
    }
    nd = meta["near_duplicates"]
    assert nd["sample_fraction"] == 1.0 and nd["sample_docs"] == len(base) + len(near)
    assert nd["pairs_in_sample"] == nd["estimated_pairs"] == len(near), (
        "every planted pair, nothing else"
    )
    assert all(s >= 0.8 for *_, s in nd["examples"])
    half = NearDuplicateSample(0.5)
    for doc in base + near:
        half.offer(doc, dedup_hash(doc))
    report = half.report()
    assert 0.3 < report["sample_docs"] / len(base + near) < 0.7
    assert report["estimated_pairs"] == round(report["pairs_in_sample"] / 0.25)
    assert (
        report["estimated_pairs_95"][0]
        <= report["estimated_pairs"]
        <= report["estimated_pairs_95"][1]
    )
    removed = prepare_corpus(
        docs, len(docs), out_dir=tmp_path / "rm", near_dup="remove", val_fraction=0.2, **CORPUS
    )
    assert removed["removed"]["near_duplicates"] == len(near) and removed["near_duplicates"] is None


def test_the_ci_sized_trainer_request_fits(tmp_path):
    """What the trainer asks for under ci: min_val_tokens from eval_batches x batch_size x (seq_len + 1)."""
    meta = prepare_corpus(
        "synthetic",
        1_200,
        out_dir=tmp_path,
        vocab_size=512,
        tokenizer_docs=1_200,
        min_val_tokens=4 * 16 * 129,
        min_train_tokens=16 * 128 + 1,
        progress=False,
    )
    assert meta["val_tokens"] >= 4 * 16 * 129
    ds = TokenDataset(tmp_path / "val.bin", 128, 16)
    assert ds.n_windows >= 16


def test_a_folder_from_the_previous_format_is_named_as_such(tmp_path, stories, tok):
    prepare_token_files(stories[:40], tok, tmp_path, val_fraction=0.3, progress=False)
    meta = json.loads((tmp_path / "meta.json").read_text())
    old = {k: v for k, v in meta.items() if k != "settings"} | {"format": "tinyqwen-tokens-1"}
    write_json_atomic(tmp_path / "meta.json", old)
    with pytest.raises(
        ValueError, match=r"format: prepared 'tinyqwen-tokens-1' \(no settings recorded\)"
    ):
        prepare_corpus("synthetic", 100, out_dir=tmp_path, **CORPUS)
