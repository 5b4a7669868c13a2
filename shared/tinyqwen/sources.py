# Hand-written support module (teaches nothing): where the course's text comes from.
"""Text sources for the course: TinyStories, a local file, or offline synthetic stories.

* ``"tinystories"``: the TinyStories corpus (Eldan & Li, 2023) through Hugging Face ``datasets``,
  streamed, so only the stories asked for are downloaded.
* a path: a UTF-8 text file of your own; documents are separated by ``<|endoftext|>`` lines or,
  failing that, by blank lines.
* ``"synthetic"``: a deterministic generator of TinyStories-like stories. Characters and objects
  introduced early in a story recur later, so a model has to use its context to predict them.
* ``"auto"``: TinyStories when the Hugging Face Hub answers quickly (never under the ``ci``
  profile), otherwise synthetic stories.

Whatever is chosen is printed, never silent.
"""

from __future__ import annotations

import os
import random
import socket
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

    def events(self) -> list[str]:
        r = self
        options = [
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
        picks = r.rng.sample(range(len(options)), k=r.rng.choice([1, 2, 2, 3]))
        return [s for i in picks for s in options[i]()]

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


def synthetic_stories(n: int, seed: int = 0) -> list[str]:
    """``n`` TinyStories-like stories, the same ones for the same ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        s = _Story(rng)
        stories.append(" ".join(s.opening() + s.events() + s.ending()))
    return stories


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_text_file(path: str | os.PathLike, n_docs: int | None = None) -> list[str]:
    """Documents from a UTF-8 file: split on ``<|endoftext|>`` if present, else on blank lines."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"text source {str(p)!r} is not a file")
    text = p.read_text(encoding="utf-8")
    parts = text.split(EOT) if EOT in text else text.split("\n\n")
    docs = [d.strip() for d in parts if d.strip()]
    return docs[:n_docs] if n_docs is not None else docs


def tinystories(n_docs: int, split: str = "train") -> list[str]:
    """The first ``n_docs`` TinyStories of ``split`` ("train" or "validation"), streamed."""
    from datasets import load_dataset

    ds = load_dataset(TINYSTORIES, split=split, streaming=True)
    docs = []
    for row in ds:
        text = row["text"].strip()
        if text:
            docs.append(text)
        if len(docs) >= n_docs:
            break
    return docs


def load_stories(
    source: str = "auto",
    n_docs: int = 1000,
    *,
    split: str = "train",
    seed: int = 0,
    verbose: bool = True,
) -> list[str]:
    """Load ``n_docs`` stories from ``source`` ("auto", "tinystories", "synthetic" or a path).

    The source actually used is printed. ``split`` applies to TinyStories; synthetic stories use a
    different seed stream for "validation" so the two splits never share a story.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    chosen = source
    if source == "auto":
        chosen = "tinystories" if hub_reachable() else "synthetic"
    if chosen == "tinystories":
        docs = tinystories(n_docs, split)
        where = f"TinyStories ({TINYSTORIES}, {split}) from the Hugging Face Hub"
    elif chosen == "synthetic":
        docs = synthetic_stories(n_docs, seed=seed if split == "train" else seed + 1_000_003)
        why = " (the Hub is not reachable or the profile is offline)" if source == "auto" else ""
        where = f"synthetic TinyStories-like stories, seed {seed}{why}"
    else:
        docs = read_text_file(chosen, n_docs)
        where = f"local file {chosen}"
    if verbose:
        n_chars = sum(len(d) for d in docs)
        print(f"Text source: {where}: {len(docs):,} documents, {n_chars:,} characters")
    return docs
