"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import copy
from dataclasses import dataclass
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
VARIANTS = ROOT / "tests" / "exercise_variants"


@dataclass
class Probe:
    """One run of an exercise's graded cell against one version of the learner's code."""

    grade_id: str  # the solution cell's grade_id
    kind: str  # "reference", "stub", "wrapper" or "wrong: <what is wrong>"
    source: str  # the solution cell's replacement
    check: str  # the instructor's graded cell, hidden tests included
    expect: str  # "pass" or the exception the check must raise
    outputs: tuple = ()  # (definition cell outputs, check cell outputs) after the run

    @property
    def error(self) -> tuple[str, str] | None:
        """(where, "Name: message") of the first error, or None when both cells ran clean."""
        for where, outs in zip(("definition", "check"), self.outputs, strict=True):
            for o in outs:
                if o.get("output_type") == "error":
                    return where, f"{o['ename']}: {o['evalue']}"[:300]
        return None


def exercise_variants(path: Path) -> dict:
    """The wrapper and wrong-answer variants of a chapter's exercises (tests/exercise_variants)."""
    spec = VARIANTS / f"{path.stem}.py"
    if not spec.exists():
        return {}
    namespace: dict = {}
    exec(compile(spec.read_text(), str(spec), "exec"), namespace)
    return namespace["VARIANTS"]


def stub_source(cell) -> str:
    """The solution cell as the student edition shows it (nbgrader's ClearSolutions)."""
    from nbformat.v4 import new_notebook

    from tinyqwen.course import student_edition

    return student_edition(new_notebook(cells=[copy.deepcopy(cell)])).cells[0].source


def exercise_probes(path: Path) -> list[Probe]:
    """Every exercise of ``path`` against its stub, wrapper, wrong answers and reference (last,
    so the kernel ends with the reference definitions)."""
    from tinyqwen.course import is_graded, is_solution, nbgrader_meta

    cells, variants, probes = read_nb(path).cells, exercise_variants(path), []
    for i, cell in enumerate(cells):
        if not (is_solution(cell) and i + 1 < len(cells) and is_graded(cells[i + 1])):
            continue
        gid, check = nbgrader_meta(cell)["grade_id"], cells[i + 1].source
        spec = variants.get(gid, {})
        probes.append(Probe(gid, "stub", stub_source(cell), check, "NotImplementedError"))
        if "wrapper" in spec:
            probes.append(Probe(gid, "wrapper", spec["wrapper"], check, "ForbiddenCall"))
        for label, wrong in spec.get("wrong", {}).items():
            src, expect = wrong if isinstance(wrong, tuple) else (wrong, "AssertionError")
            probes.append(Probe(gid, f"wrong: {label}", src, check, expect))
        probes.append(Probe(gid, "reference", cell.source, check, "pass"))
    return probes


@dataclass
class Executed:
    nb: object
    seconds: float
    probes: list


_executed: dict[Path, Executed] = {}


def executed(path: Path) -> Executed:
    """``path`` executed once per test session under the ci profile, then its exercise probes
    run in the same kernel.

    The executed copy is also written to _build/executed/, where the book-in-a-browser test
    builds the book from it instead of executing every notebook a second time.
    """
    from nbformat.v4 import new_code_cell

    from tinyqwen.course import execute

    if path not in _executed:
        nb = read_nb(path)
        probes = exercise_probes(path)
        extra = [new_code_cell(src) for p in probes for src in (p.source, p.check)]
        seconds = execute(nb, path.parent, timeout=300, extra=extra)
        for k, p in enumerate(probes):
            p.outputs = (extra[2 * k].outputs, extra[2 * k + 1].outputs)
        EXECUTED.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, EXECUTED / path.name)
        _executed[path] = Executed(nb, seconds, probes)
    return _executed[path]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
