# Hand-written support module (teaches nothing): where the course's text comes from.
"""Text sources for the course: TinyStories, a local file, or offline synthetic stories.

* ``"tinystories"``: the TinyStories corpus (Eldan & Li, 2023) through Hugging Face ``datasets``:
  streamed for small counts, memory-mapped from the Arrow cache for large ones.
* a path: a UTF-8 text file of your own, read incrementally; documents are separated by
  ``<|endoftext|>`` or, failing that, by blank lines. A binary, Latin-1 or empty file is refused
  with a message that names the file and the byte offset.
* ``"synthetic"``: a deterministic generator of TinyStories-like stories. Characters and objects
  introduced early in a story recur later, so a model has to use its context to predict them.
  ``"synthetic:tinystories"`` draws their lengths from TinyStories' length distribution.
* ``"auto"``: TinyStories when the Hugging Face Hub answers quickly (never under the ``ci``
  profile), otherwise synthetic stories.

:func:`open_source` returns a lazy :class:`TextSource` (an iterable of documents that knows its
identity, for the provenance of prepared data); :func:`load_stories` loads a small list.
Whatever is chosen is printed, never silent.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os
import random
import re
import socket
from collections.abc import Iterator
from pathlib import Path

from tinyqwen.runtime import current_profile

EOT = "<|endoftext|>"
HUB_HOST = "huggingface.co"
TINYSTORIES = "roneneldan/TinyStories"


def hub_reachable(timeout: float = 1.5) -> bool:
    """One quick TCP connect to the Hub; False offline, under ``ci`` or with ``HF_HUB_OFFLINE=1``."""
    if current_profile() == "ci" or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Synthetic stories
# --------------------------------------------------------------------------------------------

_GIRLS = "Lily Mia Sara Emma Zoe Anna Lucy Ella Maya Rosa Nina Ruby Amy Daisy Chloe Ivy".split()
_BOYS = "Tom Ben Max Sam Leo Jack Tim Finn Noah Eli Jake Ollie Ryan Theo Adam Luke".split()
_ANIMALS = [
    ("cat", "Whiskers"),
    ("dog", "Buddy"),
    ("bunny", "Hop"),
    ("bird", "Tweety"),
    ("frog", "Hopper"),
    ("duck", "Quack"),
    ("bear", "Teddy"),
    ("fox", "Rusty"),
    ("mouse", "Pip"),
    ("turtle", "Shelly"),
    ("puppy", "Spot"),
    ("kitten", "Mittens"),
    ("owl", "Hoot"),
    ("pig", "Pinky"),
    ("lamb", "Fluffy"),
]
_COLORS = "red blue green yellow pink purple orange shiny little big soft tiny".split()
_OBJECTS = [
    "ball",
    "kite",
    "teddy bear",
    "toy car",
    "hat",
    "book",
    "cup",
    "box",
    "drum",
    "doll",
    "boat",
    "balloon",
    "crayon",
    "shoe",
    "blanket",
    "truck",
    "flower",
    "shell",
    "key",
    "spoon",
    "train",
    "bucket",
    "rock",
    "stick",
    "bell",
    "cake",
    "apple",
    "cookie",
    "sock",
    "map",
    "star",
    "robot",
]
_PLACES = [
    ("park", "at the park"),
    ("garden", "in the garden"),
    ("beach", "at the beach"),
    ("forest", "in the forest"),
    ("farm", "on the farm"),
    ("pond", "by the pond"),
    ("kitchen", "in the kitchen"),
    ("yard", "in the yard"),
    ("school", "at school"),
    ("hill", "on the hill"),
    ("river", "by the river"),
    ("library", "at the library"),
    ("zoo", "at the zoo"),
    ("playground", "at the playground"),
    ("meadow", "in the meadow"),
]
_FEELINGS_GOOD = "happy glad proud excited cheerful".split()
_FEELINGS_BAD = "sad worried scared upset grumpy".split()
_WEATHER = [
    "The sun was bright and warm.",
    "It was a windy day.",
    "The sky was gray and it started to rain.",
    "Snow covered the ground.",
    "It was a sunny morning.",
    "The clouds were fluffy and white.",
]
_MORALS = [
    "Sharing makes everyone happy.",
    "It is good to help your friends.",
    "Being kind is the best thing you can do.",
    "Saying sorry can fix a lot.",
    "Friends make every day better.",
    "Trying again is how you learn.",
    "It is good to tell the truth.",
    "Being brave is not the same as not being scared.",
]


class _Story:
    """One story under construction: the cast and props it keeps coming back to."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        girl = rng.random() < 0.5
        self.hero = rng.choice(_GIRLS if girl else _BOYS)
        self.he, self.him, self.his = ("she", "her", "her") if girl else ("he", "him", "his")
        friend_girl = rng.random() < 0.5
        self.friend = rng.choice([n for n in (_GIRLS if friend_girl else _BOYS) if n != self.hero])
        self.fhe = "she" if friend_girl else "he"
        self.animal, self.pet = rng.choice(_ANIMALS)
        self.color = rng.choice(_COLORS)
        self.obj = rng.choice(_OBJECTS)
        self.obj2 = rng.choice([o for o in _OBJECTS if o != self.obj])
        self.place, self.at_place = rng.choice(_PLACES)

    def pick(self, options):
        return self.rng.choice(options)

    def opening(self) -> list[str]:
        r = self
        intro = r.pick(
            [
                f"Once upon a time, there was a little {'girl' if r.he == 'she' else 'boy'} named {r.hero}.",
                f"One day, a {r.pick(['kind', 'curious', 'happy', 'brave', 'shy'])} "
                f"{'girl' if r.he == 'she' else 'boy'} named {r.hero} went to the {r.place}.",
                f"{r.hero} was a {r.pick(['little', 'curious', 'cheerful', 'clever'])} "
                f"{'girl' if r.he == 'she' else 'boy'} who lived near a {r.place}.",
                f"There once was a {r.animal} named {r.pet}.",
            ]
        )
        have = r.pick(
            [
                f"{r.hero} had a {r.color} {r.obj}. {r.he.capitalize()} loved it very much.",
                f"{r.he.capitalize()} had a {r.color} {r.obj} that {r.he} took everywhere.",
                f"{r.hero} liked to play with {r.his} {r.color} {r.obj} {r.at_place}.",
            ]
        )
        if intro.startswith("There once"):
            have = (
                f"{r.pet} lived with a {'girl' if r.he == 'she' else 'boy'} named {r.hero}. " + have
            )
        elif r.rng.random() < 0.5:
            have += f" {r.hero} also had a {r.animal} called {r.pet}."
        return [intro, have]

    def event_options(self) -> list:
        """The story's possible episodes, each a function that writes its sentences."""
        r = self
        return [
            lambda: [
                f"One day, {r.hero} lost {r.his} {r.obj}.",
                f"{r.he.capitalize()} looked under the bed and behind the door, but the {r.obj} was not there.",
                f"{r.hero} felt {r.pick(_FEELINGS_BAD)}.",
                f"Then {r.pet} the {r.animal} ran off and came back with the {r.color} {r.obj}.",
                f'"Thank you, {r.pet}!" said {r.hero}.',
            ],
            lambda: [
                f"{r.hero} met {r.friend} {r.at_place}.",
                f"{r.friend} wanted to play with the {r.obj}, but {r.hero} did not want to share.",
                f"{r.friend} was {r.pick(_FEELINGS_BAD)} and walked away.",
                f'{r.hero} thought about it and said, "{r.friend}, you can play with my {r.obj} too."',
                f"{r.friend} smiled, and they played with the {r.obj} all afternoon.",
            ],
            lambda: [
                r.pick(_WEATHER),
                f"{r.hero} and {r.friend} went to the {r.place} to find a {r.obj2}.",
                f"They looked and looked. At last, {r.friend} found a {r.obj2} under a tree.",
                f'"Look what I found!" {r.fhe} said. {r.hero} was {r.pick(_FEELINGS_GOOD)}.',
            ],
            lambda: [
                f"{r.hero} wanted to climb the {r.pick(['big tree', 'tall hill', 'old fence', 'high wall'])}.",
                f'{r.his.capitalize()} mom said, "Be careful, {r.hero}!"',
                f"{r.hero} climbed up, but {r.he} dropped {r.his} {r.obj}.",
                f"The {r.obj} fell down and {r.pet} caught it. {r.hero} laughed.",
            ],
            lambda: [
                f"{r.hero} saw a {r.pick(['big', 'small', 'strange', 'sparkly'])} {r.obj2} {r.at_place}.",
                f'"What is that?" asked {r.hero}.',
                f'{r.friend} said, "It is a {r.obj2}. We can play with it together."',
                f"So {r.hero} put {r.his} {r.obj} down and played with the {r.obj2}.",
                f"When it was time to go home, {r.hero} picked up {r.his} {r.obj} again.",
            ],
            lambda: [
                f"{r.pet} the {r.animal} was {r.pick(_FEELINGS_BAD)} because it could not find food.",
                f"{r.hero} gave {r.pet} some {r.pick(['bread', 'milk', 'seeds', 'carrots', 'fish'])}.",
                f"{r.pet} ate it all and jumped around. {r.hero} and {r.pet} became best friends.",
            ],
            lambda: [
                f"{r.hero} and {r.friend} built a {r.pick(['castle', 'fort', 'tower', 'house'])} "
                f"out of {r.pick(['blocks', 'sand', 'boxes', 'pillows'])}.",
                f"They put the {r.color} {r.obj} on top.",
                f'Then the wind blew and the {r.obj} fell. {r.friend} said, "Let\'s build it again!"',
            ],
        ]

    def events(self, min_chars: int | None = None) -> list[str]:
        """One to three distinct episodes; or, with ``min_chars``, episodes until the sentences
        reach that many characters (each episode once before any repeats)."""
        options = self.event_options()
        if min_chars is None:
            picks = self.rng.sample(range(len(options)), k=self.rng.choice([1, 2, 2, 3]))
            return [s for i in picks for s in options[i]()]
        out, order, length = [], [], 0
        while not out or length < min_chars:
            if not order:
                order = self.rng.sample(range(len(options)), k=len(options))
            for sentence in options[order.pop()]():
                out.append(sentence)
                length += len(sentence) + 1
        return out

    def ending(self) -> list[str]:
        r = self
        end = r.pick(
            [
                f"At the end of the day, {r.hero} went home with {r.his} {r.obj}. {r.he.capitalize()} was very {r.pick(_FEELINGS_GOOD)}.",
                f"From that day on, {r.hero} and {r.friend} played together every day.",
                f"{r.hero} hugged {r.pet} and went to sleep, holding the {r.color} {r.obj}.",
                f"{r.hero} smiled. It was the best day ever.",
            ]
        )
        out = [end]
        if r.rng.random() < 0.4:
            out.append(r.pick(_MORALS))
        return out


# How long TinyStories' stories are. Hugging Face's dataset_info for roneneldan/TinyStories (revision
# 691b0d9) gives the train split as 2,119,719 stories in 1,911,420,483 bytes of Arrow data: about 900
# bytes, almost all ASCII, per story (TinyStories-valid.txt: 19.4 MB for 21,990 stories, about 880).
# Only the mean is published; the spread is our assumption: log-normal with sigma 0.35, so that
# 95 % of stories fall between about half and about twice the median (roughly 100-500 tokens).
TINYSTORIES_MEAN_CHARS = 900
TINYSTORIES_LENGTH_SIGMA = 0.35
SYNTHETIC_LENGTHS = ("short", "tinystories")
SYNTHETIC_VERSION = 2  # bump when the generator's output for a given seed changes


def iter_synthetic_stories(n: int, seed: int = 0, *, lengths: str = "short") -> Iterator[str]:
    """``n`` TinyStories-like stories, one at a time, the same ones for the same ``seed``.

    lengths="short": one to three episodes, about 580 characters on average (the course's default).
    lengths="tinystories": episodes until a length drawn from TinyStories' length distribution
    (log-normal, mean ``TINYSTORIES_MEAN_CHARS``) is reached, about 1.5 times as long.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if lengths not in SYNTHETIC_LENGTHS:
        raise ValueError(f"lengths must be one of {SYNTHETIC_LENGTHS}, got {lengths!r}")
    rng = random.Random(seed)
    sigma = TINYSTORIES_LENGTH_SIGMA
    mu = (
        math.log(TINYSTORIES_MEAN_CHARS) - sigma**2 / 2
    )  # so that the mean is TINYSTORIES_MEAN_CHARS
    for _ in range(n):
        target = rng.lognormvariate(mu, sigma) if lengths == "tinystories" else None
        s = _Story(rng)
        opening = s.opening()
        # leave room for the ending (about 70 characters) and the half episode (about 100) by
        # which the last episode overshoots on average, so the mean length is the target's
        middle = s.events(None if target is None else int(target) - len(" ".join(opening)) - 170)
        yield " ".join(opening + middle + s.ending())


def synthetic_stories(n: int, seed: int = 0, *, lengths: str = "short") -> list[str]:
    """``n`` TinyStories-like stories, the same ones for the same ``seed`` (see iter_synthetic_stories)."""
    return list(iter_synthetic_stories(n, seed, lengths=lengths))


# --------------------------------------------------------------------------------------------
# Local text files: read incrementally, with clear errors for what is not UTF-8 text
# --------------------------------------------------------------------------------------------

_CHUNK = 1 << 20  # bytes read at a time
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")


def _decode_error(path: Path, data: bytes, offset: int, err: UnicodeDecodeError) -> ValueError:
    bad = data[err.start : err.start + 1].hex()
    return ValueError(
        f"{path} is not UTF-8 text: the byte 0x{bad} at byte offset {offset + err.start:,} cannot be "
        f"decoded ({err.reason}). If the file is Latin-1 or Windows-1252 text, convert it first "
        f"(e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`); if it is not text, choose another file."
    )


def _decoded_chunks(path: Path) -> Iterator[tuple[bytes, str]]:
    """(raw bytes, decoded text) per chunk of ``path``; ValueError naming the byte offset of the
    first byte that is not UTF-8, or of a NUL byte (a binary file)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            final = not chunk
            held = decoder.getstate()[0]  # bytes of an unfinished character from the last chunk
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise ValueError(
                    f"{path} looks binary, not text: a NUL byte at byte offset {offset + nul:,}"
                )
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:
                raise _decode_error(path, held + chunk, offset - len(held), err) from None
            yield chunk, text
            if final:
                return
            offset += len(chunk)


def scan_text_file(path: str | os.PathLike) -> dict:
    """One pass over a text file: its identity (path, size, mtime, sha256) and how it separates
    documents (``<|endoftext|>`` or blank lines). Raises ValueError for a missing, empty, binary
    or non-UTF-8 file, naming the file and the byte offset of the problem."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"text source {str(p)!r} is not a file")
    stat = p.stat()
    if stat.st_size == 0:
        raise ValueError(f"text source {str(p)!r} is empty (0 bytes): there are no documents in it")
    sha, has_eot, tail = hashlib.sha256(), False, ""
    for chunk, text in _decoded_chunks(p):
        sha.update(chunk)
        has_eot = has_eot or EOT in tail + text
        tail = (tail + text)[-len(EOT) :]
    return {
        "kind": "file",
        "path": str(p.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha.hexdigest(),
        "separator": "<|endoftext|>" if has_eot else "blank lines",
    }


def iter_text_file(
    path: str | os.PathLike, n_docs: int | None = None, *, separator: str | None = None
) -> Iterator[str]:
    """Documents of a UTF-8 file, read 1 MiB at a time: split on ``<|endoftext|>`` if the file has
    one (``separator="<|endoftext|>"``), else on blank lines; stripped, empty ones skipped."""
    p = Path(path)
    if separator is None:
        separator = scan_text_file(p)["separator"]
    split = (lambda t: t.split(EOT)) if separator == EOT else _BLANK_LINE.split
    pending, count = "", 0
    for chunk, text in _decoded_chunks(p):
        parts = split(pending + text) if chunk else [pending + text, ""]  # no chunk: end of file
        pending = parts.pop()  # the last part may continue in the next chunk
        for doc in parts:
            doc = doc.strip()
            if doc:
                if n_docs is not None and count >= n_docs:
                    return
                count += 1
                yield doc


def read_text_file(path: str | os.PathLike, n_docs: int | None = None) -> list[str]:
    """Documents from a UTF-8 file: split on ``<|endoftext|>`` if present, else on blank lines.
    ValueError for a file that is missing, empty, binary, not UTF-8 or without any document."""
    docs = list(iter_text_file(path, n_docs))
    if not docs:
        raise ValueError(
            f"text source {str(path)!r} holds only whitespace: there are no documents in it"
        )
    return docs


# --------------------------------------------------------------------------------------------
# TinyStories through Hugging Face datasets
# --------------------------------------------------------------------------------------------

STREAM_BELOW = 100_000  # fewer stories than this are streamed; more come from the cached Arrow copy


def _dataset_provenance(ds) -> dict:
    """Revision and fingerprint of a loaded dataset, where `datasets` records them."""
    out = {}
    checksums = getattr(getattr(ds, "info", None), "download_checksums", None) or {}
    revisions = {
        m.group(1) for url in checksums for m in [re.search(r"@([0-9a-f]{40})/", url)] if m
    }
    if len(revisions) == 1:
        out["revision"] = revisions.pop()
    if getattr(ds, "_fingerprint", None):
        out["fingerprint"] = ds._fingerprint
    if hasattr(ds, "num_rows") and ds.num_rows is not None:
        out["num_rows"] = int(ds.num_rows)
    return out


def iter_dataset_texts(ds, n_docs: int | None = None, batch_size: int = 1_000) -> Iterator[str]:
    """The stripped, non-empty ``text`` of the first ``n_docs`` rows of a `datasets` dataset;
    a memory-mapped ``Dataset`` is read in batches, an ``IterableDataset`` row by row."""
    rows = (
        (t for b in ds.iter(batch_size=batch_size) for t in b["text"])
        if hasattr(ds, "num_rows")
        else (r["text"] for r in ds)
    )
    count = 0
    for text in rows:
        text = text.strip()
        if text:
            if n_docs is not None and count >= n_docs:
                return
            count += 1
            yield text


def tinystories(n_docs: int, split: str = "train") -> list[str]:
    """The first ``n_docs`` TinyStories of ``split`` ("train" or "validation")."""
    return list(TinyStoriesSource(n_docs, split))


# --------------------------------------------------------------------------------------------
# Sources: an iterable of documents that knows what it is
# --------------------------------------------------------------------------------------------


class TextSource:
    """Documents to prepare, read lazily, plus what they are made from.

    ``iter(source)`` yields up to ``n_docs`` documents (str) without holding the corpus in memory;
    ``identity()`` is what a prepared folder records and compares (equal identities, equal
    documents); ``provenance()`` adds what is known only once reading started (e.g. a dataset's
    fingerprint); ``description`` is one line for people.
    """

    kind = "source"

    def __init__(self, n_docs: int | None):
        if n_docs is not None and (not isinstance(n_docs, int) or n_docs < 0):
            raise ValueError(f"n_docs must be an int >= 0, got {n_docs!r}")
        self.n_docs = n_docs

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError

    def identity(self, known: dict | None = None) -> dict:
        raise NotImplementedError

    def provenance(self) -> dict:
        return self.identity()

    def __repr__(self):
        return f"{type(self).__name__}({self.description})"


class SyntheticSource(TextSource):
    """The course's offline story generator (``iter_synthetic_stories``)."""

    kind = "synthetic"

    def __init__(self, n_docs: int, seed: int = 0, *, split: str = "train", lengths: str = "short"):
        super().__init__(n_docs)
        if lengths not in SYNTHETIC_LENGTHS:
            raise ValueError(f"lengths must be one of {SYNTHETIC_LENGTHS}, got {lengths!r}")
        self.seed, self.split, self.lengths = seed, split, lengths
        # the validation split draws from another seed stream, so the two never share a story
        self.stream_seed = seed if split == "train" else seed + 1_000_003
        self.description = (
            f"synthetic TinyStories-like stories ({lengths} lengths), seed {seed}, {split}"
        )

    def __iter__(self):
        return iter_synthetic_stories(self.n_docs, self.stream_seed, lengths=self.lengths)

    def identity(self, known=None):
        return {
            "kind": "synthetic",
            "generator": SYNTHETIC_VERSION,
            "seed": self.seed,
            "split": self.split,
            "lengths": self.lengths,
        }


class FileSource(TextSource):
    """A local UTF-8 text file, read incrementally (``iter_text_file``)."""

    kind = "file"

    def __init__(self, path: str | os.PathLike, n_docs: int | None = None):
        super().__init__(n_docs)
        self.path = Path(path)
        self._scan = None
        if not self.path.is_file():
            raise ValueError(f"text source {str(self.path)!r} is not a file")
        self.description = f"local file {self.path}"

    def identity(self, known: dict | None = None) -> dict:
        """path, size, mtime and sha256. With ``known`` (an identity recorded earlier) whose path,
        size and mtime are the file's, its sha256 is trusted instead of reading the file again."""
        stat = self.path.stat()
        now = {
            "kind": "file",
            "path": str(self.path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        if (
            self._scan is None
            and known
            and all(known.get(k) == v for k, v in now.items())
            and "sha256" in known
        ):
            return {**now, "sha256": known["sha256"]}
        if self._scan is None or self._scan["mtime_ns"] != stat.st_mtime_ns:
            self._scan = scan_text_file(self.path)
        return {k: self._scan[k] for k in ("kind", "path", "size", "mtime_ns", "sha256")}

    def __iter__(self):
        if self._scan is None:
            self._scan = scan_text_file(self.path)
        return iter_text_file(self.path, self.n_docs, separator=self._scan["separator"])


class TinyStoriesSource(TextSource):
    """TinyStories (Eldan & Li, 2023) through Hugging Face ``datasets``.

    Fewer than ``STREAM_BELOW`` stories are streamed (only what is read is downloaded); more come
    from ``load_dataset``'s Arrow cache, memory-mapped (the corpus is never in RAM) and kept on
    disk, so a restarted Colab runtime does not download it again. ``dataset`` replaces the
    download (any ``datasets`` dataset with a ``text`` column; used by the tests).
    """

    kind = "tinystories"

    def __init__(
        self, n_docs: int, split: str = "train", *, streaming: bool | None = None, dataset=None
    ):
        super().__init__(n_docs)
        self.split = split
        self.streaming = (
            (n_docs is not None and n_docs < STREAM_BELOW) if streaming is None else streaming
        )
        self._ds = dataset
        self.description = f"TinyStories ({TINYSTORIES}, {split}) from the Hugging Face Hub"

    def dataset(self):
        if self._ds is None:
            from datasets import load_dataset

            self._ds = load_dataset(TINYSTORIES, split=self.split, streaming=self.streaming)
        return self._ds

    def __iter__(self):
        return iter_dataset_texts(self.dataset(), self.n_docs)

    def identity(self, known=None):
        return {"kind": "tinystories", "dataset": TINYSTORIES, "split": self.split}

    def provenance(self):
        return {
            **self.identity(),
            **(_dataset_provenance(self._ds) if self._ds is not None else {}),
        }


class DocumentsSource(TextSource):
    """Documents already in memory (a list of str): the chapters' small examples."""

    kind = "documents"

    def __init__(self, docs):
        if isinstance(docs, (str, bytes)):
            raise ValueError(
                f"documents must be a list of str, got a single {type(docs).__name__} of "
                f"{len(docs):,} characters: wrap it in a list"
            )
        self.docs = list(docs)
        super().__init__(len(self.docs))
        self.description = f"{len(self.docs):,} documents in memory"

    def __iter__(self):
        return iter(self.docs)

    def identity(self, known=None):
        sha = hashlib.sha256()
        for doc in self.docs:
            sha.update(
                doc.encode("utf-8", "surrogatepass") if isinstance(doc, str) else repr(doc).encode()
            )
            sha.update(b"\x00")
        return {"kind": "documents", "count": len(self.docs), "sha256": sha.hexdigest()}


def open_source(
    source: str | os.PathLike | TextSource = "auto",
    n_docs: int | None = 1000,
    *,
    split: str = "train",
    seed: int = 0,
    verbose: bool = True,
) -> TextSource:
    """The documents ``source`` names, as a lazy :class:`TextSource` (nothing is read yet).

    source: "auto" (TinyStories when the Hub answers, else synthetic), "tinystories", "synthetic"
    (short stories), "synthetic:tinystories" (synthetic stories of TinyStories' lengths), a path,
    a TextSource (returned as it is) or a list of str. The choice is printed unless verbose=False.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    if isinstance(source, TextSource):
        return source
    if isinstance(source, (list, tuple)):
        chosen = DocumentsSource(source)
    else:
        name = str(source)
        resolved = ("tinystories" if hub_reachable() else "synthetic") if name == "auto" else name
        if resolved == "tinystories":
            chosen = TinyStoriesSource(n_docs, split)
        elif resolved == "synthetic" or resolved.startswith("synthetic:"):
            lengths = resolved.partition(":")[2] or "short"
            chosen = SyntheticSource(n_docs, seed, split=split, lengths=lengths)
            if name == "auto":
                chosen.description += " (the Hub is not reachable or the profile is offline)"
        else:
            chosen = FileSource(resolved, n_docs)
    if verbose:
        print(f"Text source: {chosen.description}")
    return chosen


def load_stories(
    source: str = "auto",
    n_docs: int = 1000,
    *,
    split: str = "train",
    seed: int = 0,
    verbose: bool = True,
) -> list[str]:
    """Load ``n_docs`` stories from ``source`` (see :func:`open_source`) into a list.

    For the chapters' small examples; to prepare a large corpus, iterate ``open_source(...)``
    instead (``tinyqwen.data.prepare_corpus`` does), so the corpus never sits in memory.
    """
    chosen = open_source(source, n_docs, split=split, seed=seed, verbose=False)
    docs = list(chosen)
    if isinstance(chosen, FileSource) and not docs:
        raise ValueError(
            f"text source {str(chosen.path)!r} holds only whitespace: there are no documents in it"
        )
    if verbose:
        n_chars = sum(len(d) for d in docs)
        print(f"Text source: {chosen.description}: {len(docs):,} documents, {n_chars:,} characters")
    return docs
