"""tinyqwen.tokenizer (chapter 1) against independent implementations: tiktoken, tokenizers."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from tinyqwen.sources import synthetic_stories
from tinyqwen.tokenizer import (
    EOT,
    GPT2_PATTERN,
    QWEN3_PATTERN,
    BPETokenizer,
    bytes_to_unicode,
    merge_pair,
    pair_counts,
    pretokenize,
    read_tiktoken_file,
    train_bpe,
)

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Varied text: other scripts, emoji (4-byte UTF-8, ZWJ sequences), digits, odd whitespace, code.
VARIED = [
    "Hello world! It's 2025; they'll say: we've 3.14159 reasons.",
    "naïve café — “quoted” façade, Ærøskøbing, straße",
    "Привет, мир! Ελληνικά κείμενα. שלום עולם. مرحبا بالعالم",
    "中文分词测试：今天天气很好。日本語のテキスト、한국어 텍스트",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️ and symbols ∑∫√∞ ≠ ≤",
    "   leading spaces\n\n\ttabs\t\tand\r\nCRLF  \n   trailing   ",
    "numbers 1234567890 12,345.67 0x1F 1e-9 -42 ٣٤٥ ²³",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "ALLCAPS CamelCase snake_case kebab-case I'M YOU'RE WE'LL",
    "",
    " ",
    "\n",
    "x",
]
MIXED = [*synthetic_stories(300, seed=1), *VARIED * 3]


def docs(n=300, seed=0):
    return synthetic_stories(n, seed=seed) + VARIED * 2


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(docs(), 700, progress=False)


# ---- the toy helpers -----------------------------------------------------------------------


def test_pair_counts_and_merge_pair_by_hand():
    assert pair_counts([1, 2, 1, 2, 3]) == Counter({(1, 2): 2, (2, 1): 1, (2, 3): 1})
    assert pair_counts([5]) == Counter()
    assert merge_pair([1, 2, 1, 2, 3], (1, 2), 9) == [9, 9, 3]
    assert merge_pair([7, 7, 7], (7, 7), 9) == [9, 7]  # left to right, no overlaps
    assert merge_pair([1, 3], (1, 2), 9) == [1, 3]


def test_pretokenize_splits_like_qwen():
    counts = pretokenize(["I'm 1234 years  old!\n\n<|endoftext|>Hi"], special_tokens=[EOT])
    assert counts == Counter(
        {
            "I": 1,
            "'m": 1,
            " ": 2,
            "1": 1,
            "2": 1,
            "3": 1,
            "4": 1,
            " years": 1,
            " old": 1,
            "!\n\n": 1,
            "Hi": 1,
        }
    ), counts
    assert not any(EOT in k for k in counts)


# ---- training ------------------------------------------------------------------------------


def naive_bpe(word_counts, n_merges):
    """Textbook BPE: recount every pair after every merge; ties go to the smallest pair."""
    words = {tuple(w.encode()): n for w, n in word_counts.items()}
    merges = []
    for k in range(n_merges):
        counts = Counter()
        for w, n in words.items():
            for p in pairwise(w):
                counts[p] += n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        words = {tuple(merge_pair(list(w), best, 256 + k)): n for w, n in words.items()}
    return merges


def test_incremental_training_equals_naive_bpe():
    counts = pretokenize(docs(150, seed=3))
    assert train_bpe(counts, 400) == naive_bpe(counts, 400)


def test_training_stops_when_pairs_run_out():
    with pytest.warns(UserWarning, match="ran out of pairs"):
        small = BPETokenizer.train(["ab ab ab"], 400, progress=False)
    # pre-tokens "ab" (once) and " ab" (twice): merges (a, b) -> 256, then (" ", 256) -> 257
    assert small.merges == [(97, 98), (32, 256)] and small.vocab_size == 256 + 2 + 1
    assert small.encode("ab ab") == [256, 257]


def test_training_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(["abc"], 200, progress=False)
    with pytest.raises(ValueError, match="special_tokens"):
        BPETokenizer.train(["abc"], 300, special_tokens=["<a>", "<a>"], progress=False)


def hf_train(texts, vocab_size, *, pattern=QWEN3_PATTERN):
    """tokenizers' byte-level BPE with the same pre-tokenization as ours (Qwen2/3 style)."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    return tk


def test_compression_matches_tokenizers_training():
    texts = docs(400, seed=5)
    ours = BPETokenizer.train(texts, 600, progress=False)
    theirs = hf_train(texts, 600)
    n_bytes = sum(len(t.encode()) for t in texts)
    ours_bpt = n_bytes / sum(map(len, ours.encode_batch(texts)))
    theirs_bpt = n_bytes / sum(len(e.ids) for e in theirs.encode_batch(texts))
    assert abs(ours_bpt / theirs_bpt - 1) < 0.01, (ours_bpt, theirs_bpt)


# ---- encoding ------------------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(codec="utf-8")), st.just(EOT), st.sampled_from(VARIED)
        ),
        max_size=5,
    )
)
def test_decode_encode_round_trip(tok, parts):
    text = "".join(parts)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_python_encoder_equals_tiktoken_on_random_text(tok, text):
    assert tok.encode(text) == tok.to_tiktoken().encode(text, allowed_special="all")


def test_python_encoder_equals_tiktoken_on_the_whole_corpus(tok):
    corpus = docs() + synthetic_stories(200, seed=9)
    enc = tok.to_tiktoken()
    ours = [tok.encode(t) for t in corpus]
    assert ours == enc.encode_batch(corpus, allowed_special="all")
    assert ours == tok.encode_batch(corpus)  # the fast path
    assert tok.encode_batch(corpus, fast=False) == ours


def test_special_tokens(tok):
    text = f"one{EOT}two"
    assert tok.eot_id == tok.vocab_size - 1
    ids = tok.encode(text)
    assert ids.count(tok.eot_id) == 1 and tok.decode(ids) == text
    assert tok.encode(text, allowed_special={EOT}) == ids
    plain = tok.encode(text, allowed_special="none")
    assert tok.eot_id not in plain and tok.decode(plain) == text
    assert plain == tok.to_tiktoken().encode(text, disallowed_special=())
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text, allowed_special="some")


def test_bad_input_raises_value_error(tok):
    with pytest.raises(ValueError, match="unknown token id 99999"):
        tok.decode([1, 99999])
    with pytest.raises(ValueError, match="must be a str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="not byte-level"):
        BPETokenizer({0: b"a"}, [])


# ---- bad input: one clear error, the same on every path -------------------------------------

LONE_SURROGATE = "emoji half \ud83d here"  # half of a UTF-16 pair at position 11: no UTF-8 form


def test_lone_surrogate_is_refused_alike_by_encode_and_encode_batch(tok):
    # encode used to raise a raw UnicodeEncodeError while encode_batch (tiktoken) silently
    # replaced the surrogate by U+FFFD, breaking decode(encode(s)) == s.
    with pytest.raises(ValueError, match=r"text has a lone surrogate '\\ud83d' at position 11"):
        tok.encode(LONE_SURROGATE)
    for fast in (True, False):
        with pytest.raises(
            ValueError, match=r"texts\[1\] has a lone surrogate '\\ud83d' at position 11"
        ):
            tok.encode_batch(["fine", LONE_SURROGATE], fast=fast)
    with pytest.raises(ValueError, match=r"texts\[0\] has a lone surrogate"):
        BPETokenizer.train([LONE_SURROGATE], 300, progress=False)
    assert tok.decode(tok.encode("\U0001f600")) == "\U0001f600"  # the whole emoji is fine


def test_a_single_string_is_not_a_list_of_documents(tok):
    with pytest.raises(ValueError, match="list of documents, got a single str of length 8"):
        BPETokenizer.train("ab ab ab", 300, progress=False)
    with pytest.raises(ValueError, match="list of documents"):
        tok.encode_batch("hello")  # used to return one list of ids per character
    with pytest.raises(ValueError, match="list of documents"):
        pretokenize("hello")
    with pytest.raises(ValueError, match=r"texts\[1\] must be a str, got bytes"):
        BPETokenizer.train(["ok", b"bytes"], 300, progress=False)
    from_generator = BPETokenizer.train((d for d in docs(50)), 300, progress=False)
    assert from_generator.merges == BPETokenizer.train(docs(50), 300, progress=False).merges


def _broken(spec):
    spec["model"].pop("vocab")
    return spec


@pytest.mark.parametrize(
    "change, field",
    [
        (_broken, "model.vocab is missing"),
        (
            lambda s: {**s, "model": {**s["model"], "vocab": list(s["model"]["vocab"])}},
            "model.vocab must be an object",
        ),
        (
            lambda s: {**s, "model": {**s["model"], "merges": {"a": "b"}}},
            "model.merges must be a list",
        ),
        (lambda s: {**s, "model": {**s["model"], "merges": ["a b c"]}}, "model.merges[0] must be"),
        (lambda s: {**s, "model": [s["model"]]}, "model must be an object"),
        (lambda s: {k: v for k, v in s.items() if k != "model"}, "model is missing"),
        (lambda s: {**s, "added_tokens": {"<|endoftext|>": 1}}, "added_tokens must be a list"),
        (lambda s: {**s, "added_tokens": [{"content": EOT}]}, "added_tokens[0].id is missing"),
        (
            lambda s: {**s, "model": {**s["model"], "vocab": {"a": "97"}}},
            "model.vocab['a'] must be an integer",
        ),
        (lambda s: {**s, "pre_tokenizer": [s["pre_tokenizer"]]}, "pre_tokenizer must be an object"),
        (lambda s: [s], "whole file"),
    ],
)
def test_malformed_tokenizer_json_names_the_file_and_the_field(tok, tmp_path, change, field):
    # These used to surface as KeyError, AttributeError or TypeError from deep inside the parser.
    good = tmp_path / "good.json"
    tok.save(good)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(change(json.loads(good.read_text(encoding="utf-8")))), encoding="utf-8"
    )
    with pytest.raises(ValueError, match=f"{bad}: .*{re.escape(field)}"):
        BPETokenizer.from_hf_tokenizer_json(bad)


def test_unreadable_tokenizer_json_names_the_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        BPETokenizer.load(path)


def test_qwen3_vocabulary_numbers_of_chapter_1():
    """Chapter 1 explains why Qwen3's embedding has 151,936 rows for 151,669 tokens."""
    from transformers import Qwen3Config

    assert Qwen3Config().vocab_size == 151_936 and 151_936 % 128 == 0
    nb = json.loads(
        (Path(__file__).parent.parent / "notebooks" / "01_tokenization.ipynb").read_text()
    )
    source = "".join("".join(c["source"]) for c in nb["cells"])
    assert "qwen3_tokens = 151_643 + 26" in source and "qwen3_rows = 151_936" in source


def test_merges_are_applied_in_rank_order():
    # merges: (a b) -> 256, (b c) -> 257, (256 c) -> 258 ; "abc" -> [258], "bcd" -> [257, d]
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab", 257: b"bc", 258: b"abc"}
    t = BPETokenizer(vocab, [(97, 98), (98, 99), (256, 99)], {})
    assert t.encode("abc") == [258]
    assert t.encode("bcd") == [257, ord("d")]
    assert t.encode("abbc") == [256, 257]


# ---- file formats --------------------------------------------------------------------------


def test_save_load_is_human_readable_and_exact(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    spec = json.loads(path.read_text(encoding="utf-8"))
    space = bytes_to_unicode()[ord(" ")]
    assert space == "Ġ" and any(k.startswith("Ġ") and len(k) > 2 for k in spec["model"]["vocab"])
    back = BPETokenizer.load(path)
    assert back.vocab == tok.vocab and back.merges == tok.merges
    assert back.special_tokens == tok.special_tokens and back.pattern == tok.pattern
    for t in MIXED:
        assert back.encode(t) == tok.encode(t)
    # and Hugging Face tokenizers reads the same file and agrees
    hf = Tokenizer.from_file(str(path))
    for t in MIXED:
        assert hf.encode(t).ids == tok.encode(t), t
        assert hf.decode(hf.encode(t).ids, skip_special_tokens=False) == t


@pytest.mark.parametrize("style", ["qwen-split", "gpt2-bytelevel"])
def test_loads_a_tokenizer_json_trained_by_tokenizers(tmp_path, style):
    texts = docs(300, seed=7)
    if style == "qwen-split":
        hf = hf_train(texts, 700)
    else:  # the classic GPT-2 setup: ByteLevel does the regex split itself
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.train_from_iterator(
            texts,
            trainers.BpeTrainer(
                vocab_size=700,
                special_tokens=[EOT],
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            ),
        )
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    ours = BPETokenizer.from_hf_tokenizer_json(path)
    assert ours.pattern == (QWEN3_PATTERN if style == "qwen-split" else GPT2_PATTERN)
    assert ours.vocab_size == hf.get_vocab_size() and ours.eot_id == hf.token_to_id(EOT)
    for t in MIXED + [f"a{EOT}b"]:
        assert ours.encode(t) == hf.encode(t).ids, t
        assert ours.decode(ours.encode(t)) == t
    assert ours.encode_batch(MIXED) == [e.ids for e in hf.encode_batch(MIXED)]


def test_nfc_normalizer_from_tokenizer_json(tmp_path):
    hf = hf_train(docs(100), 400)
    hf.normalizer = __import__("tokenizers").normalizers.NFC()
    hf.save(str(tmp_path / "t.json"))
    ours = BPETokenizer.from_hf_tokenizer_json(tmp_path / "t.json")
    decomposed = "cafe\u0301 n\u0303 A\u030a"  # combining accents compose under NFC
    assert ours.normalizer == "NFC"
    assert ours.encode(decomposed) == hf.encode(decomposed).ids == ours.encode("café ñ Å")


@pytest.mark.parametrize("ignore_merges", [True, False])
def test_ignore_merges_from_tokenizer_json(tmp_path, ignore_merges):
    # "abc" is in the vocabulary but no merge makes it: only ignore_merges turns the pre-token
    # "abc" into that one token (tiktoken's rule, used by Llama-3-style tokenizer.json files).
    char = bytes_to_unicode()
    vocab = {char[b]: b for b in range(256)} | {"ab": 256, "abc": 257}
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], ignore_merges=ignore_merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.save(str(tmp_path / "t.json"))
    ours = BPETokenizer.from_hf_tokenizer_json(tmp_path / "t.json")
    assert ours.ignore_merges is ignore_merges
    for text in ["abc", "abc abcd", "xabc"]:
        assert ours.encode(text) == hf.encode(text).ids, text
    assert ours.encode("abc") == ([257] if ignore_merges else [256, ord("c")])


def test_unsupported_tokenizer_json_is_refused(tmp_path):
    hf = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    hf.save(str(tmp_path / "wl.json"))
    with pytest.raises(ValueError, match="not BPE"):
        BPETokenizer.from_hf_tokenizer_json(tmp_path / "wl.json")


def test_from_tiktoken_file(tok, tmp_path):
    path = tmp_path / "ours.tiktoken"
    lines = [f"{base64.b64encode(b).decode()} {i}" for i, b in sorted(tok.vocab.items())]
    path.write_text("\n".join(lines) + "\n")
    assert read_tiktoken_file(path) == tiktoken.load.load_tiktoken_bpe(str(path)) == tok.id_of
    back = BPETokenizer.from_tiktoken(path, QWEN3_PATTERN, {EOT: tok.eot_id})
    assert back.merges == tok.merges  # the merges are recovered from the ranks alone
    reference = tiktoken.Encoding(
        "file",
        pat_str=QWEN3_PATTERN,
        mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(path)),
        special_tokens={EOT: tok.eot_id},
    )
    for t in MIXED:
        assert back.encode(t) == tok.encode(t) == reference.encode(t, allowed_special="all")


def test_to_tiktoken_refuses_ids_out_of_merge_order():
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"bc", 257: b"ab"}
    t = BPETokenizer(vocab, [(97, 98), (98, 99)], {})  # merge 0 makes id 257, merge 1 makes 256
    with pytest.raises(ValueError, match="do not increase"):
        t.to_tiktoken()
    assert t.encode_batch(["abc"]) == [t.encode("abc")] == [[257, 99]]


def _openai_reachable() -> bool:
    if os.environ.get("TINYQWEN_PROFILE") == "ci":
        return False
    try:
        with socket.create_connection(("openaipublic.blob.core.windows.net", 443), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base"])
def test_openai_encodings_load_and_agree(name):
    """Needs the network (tiktoken downloads the rank file); skipped offline and under ci."""
    if not _openai_reachable():
        pytest.skip(
            "tiktoken's rank files need the network (skipped offline / TINYQWEN_PROFILE=ci)"
        )
    enc = tiktoken.get_encoding(name)
    ours = BPETokenizer.from_tiktoken(enc._mergeable_ranks, enc._pat_str, enc._special_tokens)
    for t in MIXED:
        assert ours.encode(t) == enc.encode(t, allowed_special="all"), t
