"""Instructor tooling: student edition, grading, nbgrader compatibility."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tinyqwen.course import (
    BEGIN_SOLUTION,
    END_SOLUTION,
    execute,
    is_graded,
    is_solution,
    nbgrader_meta,
    student_edition,
)
from tinyqwen.grading import scores

from conftest import NOTEBOOKS, chapter_notebooks, read_nb

TEMPLATE = NOTEBOOKS / "_template.ipynb"
ALL = [TEMPLATE, *chapter_notebooks()]
# Executing a student edition costs a full notebook run; the template and the cheapest chapter
# (when it exists) stand in for the rest, whose exercise cells follow the same rules.
STUDENT_RUNS = [p for p in (TEMPLATE, NOTEBOOKS / "09_loss_functions.ipynb") if p.exists()]


def _region(source: str, begin: str, end: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_nbgrader_metadata_validates(path):
    from nbgrader.nbgraderformat import MetadataValidator

    MetadataValidator().validate_nb(read_nb(path))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_student_edition_has_no_solutions_or_hidden_tests(path):
    nb = read_nb(path)
    student = student_edition(nb)
    assert len(student.cells) == len(nb.cells), "the student edition must keep every cell"
    for orig, stu in zip(nb.cells, student.cells, strict=True):
        if is_solution(orig):
            leaked = [
                ln for ln in _region(orig.source, BEGIN_SOLUTION, END_SOLUTION) if ln in stu.source
            ]
            assert not leaked, f"{nbgrader_meta(orig)['grade_id']}: solution lines leak: {leaked}"
            assert "raise NotImplementedError()" in stu.source
        elif is_graded(orig):
            hidden = _region(orig.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
            assert not [ln for ln in hidden if ln in stu.source and ln not in _visible(orig.source)]
            assert stu.source.strip(), "graded check cells stay in the student edition"
        else:
            assert stu.source == orig.source
        if stu.cell_type == "code":
            assert not stu.outputs and stu.execution_count is None


def _visible(source: str) -> str:
    head, _, rest = source.partition("### BEGIN HIDDEN TESTS")
    return head + rest.partition("### END HIDDEN TESTS")[2]


@pytest.mark.notebook
@pytest.mark.parametrize("path", STUDENT_RUNS, ids=lambda p: p.name)
def test_student_edition_runs_with_failures_only_in_check_cells(path, tmp_path):
    nb = student_edition(read_nb(path))
    execute(nb, path.parent, allow_errors=True)
    failed = [
        c
        for c in nb.cells
        if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)
    ]
    assert failed, "no check cell failed: are the solutions really gone?"
    wrong = [c.source[:80] for c in failed if not is_graded(c)]
    assert not wrong, f"cells other than exercise checks fail in the student edition: {wrong}"
    assert all(s["points"] == 0 for s in scores(nb))


def test_nbgrader_generate_assignment_accepts_a_chapter(tmp_path):
    import sys
    from pathlib import Path

    exe = shutil.which("nbgrader", path=str(Path(sys.executable).parent)) or shutil.which(
        "nbgrader"
    )
    if exe is None:
        pytest.skip("nbgrader is not installed (pip install -e .[instructor])")
    source = tmp_path / "source" / "chapter"
    source.mkdir(parents=True)
    shutil.copy(TEMPLATE, source / "template.ipynb")
    subprocess.run(
        [
            exe,
            "generate_assignment",
            "chapter",
            "--force",
            "--CourseDirectory.root=" + str(tmp_path),
            "--CourseDirectory.db_url=sqlite:///" + str(tmp_path / "gradebook.db"),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    released = read_nb(tmp_path / "release" / "chapter" / "template.ipynb")
    assert not any("### BEGIN SOLUTION" in c.source for c in released.cells)


def test_instructor_guide_lists_every_exercise_with_its_points():
    from conftest import ROOT

    table = (ROOT / "book" / "instructors.md").read_text()
    listed = set(re.findall(r"^\| `(\d\d_[\w]+\.ipynb)` \| `([\w-]+)` \| (\d+) \|", table, re.M))
    actual = {
        (p.name, nbgrader_meta(c)["grade_id"], str(nbgrader_meta(c)["points"]))
        for p in chapter_notebooks()
        for c in read_nb(p).cells
        if is_graded(c)
    }
    assert listed == actual, (
        f"book/instructors.md is out of date: missing {sorted(actual - listed)[:5]}, "
        f"stale {sorted(listed - actual)[:5]} (regenerate it: python -m tinyqwen.course exercise-table notebooks/[0-9][0-9]_*.ipynb)"
    )
