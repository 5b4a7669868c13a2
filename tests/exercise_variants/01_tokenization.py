"""Chapter 1's exercises against code that must fail their checks (tests/test_exercises.py).

"wrapper": a solution cell that hands the work to a finished component (it must raise
ForbiddenCall); "wrong": plausible mistakes (each must raise AssertionError, or the exception
named next to it).
"""

VARIANTS = {
    "ch01-ex1-predict": {
        "wrapper": """
def predict_counts():
    when = "2024-01-15 10:30"
    return len(tok.encode(when)), len(regex.findall(GPT2_PATTERN, when))
""",
        "wrong": {
            # the chapter's own BPETokenizer (the notebook's class, not tinyqwen's) is switched off too
            "the chapter's tokenizer, tok": (
                """
def predict_counts():
    return len(tok.encode("2024-01-15 10:30")), 8
""",
                "ForbiddenCall",
            ),
            "numbers kept whole, as GPT-2 does": """
def predict_counts():
    return 9, 8
""",
            "the space glued to the number after it": """
def predict_counts():
    return 15, 8
""",
            "GPT-2's space as a pre-token of its own": """
def predict_counts():
    return 16, 9
""",
        },
    },
    "ch01-ex2-split-specials": {
        "wrapper": """
def split_on_specials(text, specials):
    return _special_splitter(specials)(text) if specials else [text]
""",
        "wrong": {
            "specials tried in the order given, not the longest first": """
def split_on_specials(text, specials):
    pieces, start, i = [], 0, 0
    while i < len(text):
        found = next((s for s in specials if text.startswith(s, i)), None)
        if found is None:
            i += 1
            continue
        pieces += [text[start:i], found]
        i = start = i + len(found)
    return pieces + [text[start:]]
""",
            "empty pieces dropped": """
def split_on_specials(text, specials):
    by_length = sorted(specials, key=len, reverse=True)
    pieces, start, i = [], 0, 0
    while i < len(text):
        found = next((s for s in by_length if text.startswith(s, i)), None)
        if found is None:
            i += 1
            continue
        pieces += [text[start:i], found]
        i = start = i + len(found)
    return [p for p in pieces + [text[start:]] if p]
""",
            "str.split by one special after another (not leftmost first)": """
def split_on_specials(text, specials):
    pieces = [text]
    for special in sorted(specials, key=len, reverse=True):
        out = []
        for k, piece in enumerate(pieces):
            if k % 2:
                out.append(piece)
                continue
            for j, part in enumerate(piece.split(special)):
                out += [special, part] if j else [part]
        pieces = out
    return pieces
""",
        },
    },
    "ch01-ex3-byte-fallback": {
        "wrapper": """
def encode_char_bpe(text, vocab, merges):
    from tokenizers import Tokenizer, models
    return Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True)).encode(text).ids
""",
        "wrong": {
            "the chapter's own bpe_merge_ids on ids": (
                """
def encode_char_bpe(text, vocab, merges):
    symbols = []
    for ch in text:
        symbols += [ch] if ch in vocab else [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
    ranks = {(vocab[a], vocab[b]): (r, vocab[a + b]) for r, (a, b) in reversed(list(enumerate(merges)))}
    return bpe_merge_ids([vocab[s] for s in symbols], ranks)
""",
                "ForbiddenCall",
            ),
            "one pass over the merges in list order": """
def encode_char_bpe(text, vocab, merges):
    symbols = []
    for ch in text:
        symbols += [ch] if ch in vocab else [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
    for left, right in merges:
        k = 0
        while k < len(symbols) - 1:
            if symbols[k] == left and symbols[k + 1] == right:
                symbols[k : k + 2] = [left + right]
            k += 1
    return [vocab[s] for s in symbols]
""",
            "lower-case hex in the byte tokens": (
                """
def encode_char_bpe(text, vocab, merges):
    rank_of = {pair: r for r, pair in enumerate(merges)}
    symbols = []
    for ch in text:
        symbols += [ch] if ch in vocab else [f"<0x{b:02x}>" for b in ch.encode("utf-8")]
    while True:
        candidates = [(rank_of[p], k) for k, p in enumerate(zip(symbols, symbols[1:])) if p in rank_of]
        if not candidates:
            break
        _, k = min(candidates)
        symbols[k : k + 2] = [symbols[k] + symbols[k + 1]]
    return [vocab[s] for s in symbols]
""",
                "KeyError",
            ),
            "bytes for every non-ASCII character, even one in the vocabulary": """
def encode_char_bpe(text, vocab, merges):
    rank_of = {pair: r for r, pair in enumerate(merges)}
    symbols = []
    for ch in text:
        symbols += [ch] if ch.isascii() else [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
    while True:
        candidates = [(rank_of[p], k) for k, p in enumerate(zip(symbols, symbols[1:])) if p in rank_of]
        if not candidates:
            break
        _, k = min(candidates)
        symbols[k : k + 2] = [symbols[k] + symbols[k + 1]]
    return [vocab[s] for s in symbols]
""",
        },
    },
    "ch01-ex4-stream-decode": {
        "wrapper": """
def stream_decode(ids, vocab):
    import codecs
    decoder = codecs.getincrementaldecoder("utf-8")()
    return [decoder.decode(vocab[i]) for i in ids]
""",
        "wrong": {
            "each token decoded on its own": """
def stream_decode(ids, vocab):
    return [vocab[i].decode("utf-8", errors="replace") for i in ids]
""",
            "holds back only a first byte at the very end": """
def stream_decode(ids, vocab):
    pieces, pending = [], b""
    for i in ids:
        pending += vocab[i]
        if pending[-1] >= 0xC0:  # a first byte: wait for the rest
            pieces.append("")
            continue
        pieces.append(pending.decode("utf-8", errors="replace"))
        pending = b""
    return pieces
""",
            "everything shown with the last token": """
def stream_decode(ids, vocab):
    text = b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore")
    return [""] * (len(ids) - 1) + [text] if ids else []
""",
        },
    },
}
