"""Shared paths and helpers for the test suite."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def chapter_notebooks() -> list[Path]:
    """Chapter notebooks: notebooks/NN_name.ipynb."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def toc_files() -> list[str]:
    """Every file named in _toc.yml, in order (without extension, as Jupyter Book writes them)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                out.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return out


def toc_notebooks() -> list[Path]:
    return [ROOT / f"{f}.ipynb" for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


def book_repository() -> tuple[str, str]:
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return repo["url"], repo["branch"]


def read_nb(path: Path):
    return nbformat.read(path, as_version=4)


EXECUTED = ROOT / "_build" / "executed"
_executed: dict[Path, tuple[object, float]] = {}


def executed(path: Path):
    """``path`` executed once per test session under the ci profile: (notebook, seconds).

    The executed copy is also written to _build/executed/, where the book-in-a-browser test
    builds the book from it instead of executing every notebook a second time.
    """
    from tinyqwen.course import execute

    if path not in _executed:
        nb = read_nb(path)
        seconds = execute(nb, path.parent, timeout=300)
        EXECUTED.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, EXECUTED / path.name)
        _executed[path] = (nb, seconds)
    return _executed[path]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
