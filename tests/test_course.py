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


# --------------------------------------------------------------------------------------------
# Staging: a command replaces only a folder it made itself, and only once the new one is complete
# --------------------------------------------------------------------------------------------


def _siblings(folder):
    """Temporary folders a staging run left beside ``folder``."""
    return sorted(p.name for p in folder.parent.glob(f".{folder.name}.*"))


def test_staging_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    """The old stage-student-book emptied --out before checking anything: a user's folder was
    lost. Now the folder and its files survive and the message names the folder."""
    from tinyqwen.course import main

    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.md").write_text("weeks of work")
    for cmd in ("stage-student-book", "stage-book", "stage-student-branch"):
        assert main([cmd, "--out", str(mine)]) == 2
        err = capsys.readouterr().err
        assert str(mine) in err and "not made by tinyqwen.course" in err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.md"]
    assert (mine / "thesis.md").read_text() == "weeks of work"
    assert not _siblings(mine)


def test_staging_replaces_only_its_own_folder_once_the_new_one_is_complete(tmp_path):
    from tinyqwen.course import STAGE_MARKER, made_by_course, stage_folder

    dest = tmp_path / "stage"

    def fill(text):
        def write(folder):
            (folder / "page.txt").write_text(text)

        return write

    stage_folder(dest, fill("first"))
    assert made_by_course(dest) and (dest / "page.txt").read_text() == "first"
    (dest / "leftover.txt").write_text("from the first run")

    def broken(folder):
        (folder / "page.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stage_folder(dest, broken)
    assert (dest / "page.txt").read_text() == "first", "a failed stage must not touch the old one"
    assert not _siblings(dest), "a failed stage removes its own half-made folder"

    stage_folder(dest, fill("second"))
    assert sorted(p.name for p in dest.iterdir()) == sorted([STAGE_MARKER, "page.txt"])
    assert (dest / "page.txt").read_text() == "second"
    assert not _siblings(dest)

    (dest / STAGE_MARKER).unlink()  # no longer ours: refused from now on
    from tinyqwen.course import StagingRefused

    with pytest.raises(StagingRefused, match=str(dest)):
        stage_folder(dest, fill("third"))
    assert (dest / "page.txt").read_text() == "second"


def test_staging_never_copies_a_folder_into_itself(tmp_path):
    from tinyqwen.course import StagingRefused, stage_book, stage_student_branch

    from conftest import ROOT

    with pytest.raises(StagingRefused, match="copied into it"):
        stage_book(ROOT, ROOT / "book" / "staged")
    with pytest.raises(StagingRefused, match="holds"):
        stage_student_branch(ROOT, ROOT.parent)
    assert not (ROOT / "book" / "staged").exists()


def test_staged_book_editions(tmp_path):
    """The published book keeps solutions and drops hidden tests; the student book drops both."""
    import yaml

    from tinyqwen.course import BEGIN_HIDDEN, made_by_course, stage_book

    from conftest import ROOT

    reader = stage_book(ROOT, tmp_path / "reader")
    student = stage_book(ROOT, tmp_path / "student", student=True)
    for folder in (reader, student):
        assert made_by_course(folder)
        assert sorted(p.name for p in (folder / "notebooks").glob("*.ipynb")) == [
            p.name for p in chapter_notebooks()
        ]
        config = yaml.safe_load((folder / "_config.yml").read_text())
        assert config["execute"]["cache"] == str(ROOT / "_build" / ".jupyter_cache")
        assert config["sphinx"]["config"]["offline_vendor_dir"] == str(ROOT / "_build" / "vendor")
    for path in chapter_notebooks():
        original = read_nb(path)
        shown, unsolved = (
            read_nb(reader / "notebooks" / path.name),
            read_nb(student / "notebooks" / path.name),
        )
        assert not any(BEGIN_HIDDEN in c.source for c in shown.cells + unsolved.cells)
        for orig, r, s in zip(original.cells, shown.cells, unsolved.cells, strict=True):
            if is_solution(orig):
                assert r.source == orig.source and "hide-input" in r.metadata.get("tags", [])
                assert BEGIN_SOLUTION not in s.source
            if is_graded(orig):
                assert "raises-exception" in s.metadata["tags"]
    assert not yaml.safe_load((reader / "_config.yml").read_text())["sphinx"]["config"][
        "hide_solutions"
    ]
    assert yaml.safe_load((student / "_config.yml").read_text())["sphinx"]["config"][
        "hide_solutions"
    ]


def test_extra_cells_leave_the_executed_notebook_alone():
    """execute(..., extra=...) used to store every extra cell over the notebook's last cell."""
    from pathlib import Path

    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell("## Summary")])
    extra = [new_code_cell("print(x + 1)"), new_code_cell("raise ValueError('probe')")]
    execute(nb, Path.cwd(), extra=extra)
    assert [c.source for c in nb.cells] == ["x = 1", "## Summary"]
    assert extra[0].outputs[0]["text"] == "2\n" and extra[1].outputs[0]["ename"] == "ValueError"


def test_execute_saves_the_state_of_widgets():
    """A progress bar (a widget) shows in the book only with its state saved in the notebook."""
    from pathlib import Path

    from nbformat.v4 import new_code_cell, new_notebook

    pytest.importorskip("ipywidgets")
    nb = new_notebook(
        cells=[new_code_cell("import ipywidgets\ndisplay(ipywidgets.IntProgress(value=3, max=5))")]
    )
    execute(nb, Path.cwd())
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(m["state"].get("value") == 3 for m in state.values())
