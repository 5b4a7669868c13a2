"""The grader: submissions are untrusted (see book/instructors.md, "Grading")."""

from __future__ import annotations

import copy
import shutil
import subprocess

import nbformat

from tinyqwen.course import is_graded, is_solution, nbgrader_meta, student_edition
from tinyqwen.grading import grade

from conftest import NOTEBOOKS, read_nb

TEMPLATE = NOTEBOOKS / "_template.ipynb"


def test_grading_instructor_student_and_one_solved(tmp_path):
    instructor = read_nb(TEMPLATE)
    student = student_edition(instructor)
    one_solved = copy.deepcopy(student)
    first = next(i for i, c in enumerate(instructor.cells) if is_solution(c))
    one_solved.cells[first] = copy.deepcopy(instructor.cells[first])
    tampered = copy.deepcopy(student)
    for cell in tampered.cells:  # a learner who "fixes" the checks gains nothing
        if is_graded(cell):
            cell.source = "pass"
    for name, nb in [
        ("instructor", instructor),
        ("student", student),
        ("one", one_solved),
        ("tampered", tampered),
    ]:
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    # grade() restores graded cells from a source notebook of the same name
    src = tmp_path / "src"
    src.mkdir()
    points = {}
    for name in ("instructor", "student", "one", "tampered"):
        shutil.copy(TEMPLATE, src / f"{name}.ipynb")
        points[name] = grade(tmp_path / f"{name}.ipynb", src, timeout=60)
    maxp = points["instructor"]["max_points"]
    first_points = nbgrader_meta(next(c for c in instructor.cells if is_graded(c)))["points"]
    assert points["instructor"]["points"] == maxp > 0
    assert points["student"]["points"] == 0
    assert points["tampered"]["points"] == 0
    assert points["one"]["points"] == first_points
    assert [e["points"] for e in points["one"]["exercises"]][1:] == [0] * (
        len(points["one"]["exercises"]) - 1
    )


def test_grade_cli_writes_table_csv_and_json(tmp_path):
    import json
    import sys

    sub = tmp_path / "_template.ipynb"
    nbformat.write(student_edition(read_nb(TEMPLATE)), sub)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinyqwen.course",
            "grade",
            str(sub),
            "--source",
            str(NOTEBOOKS),
            "--csv",
            str(tmp_path / "g.csv"),
            "--json",
            str(tmp_path / "g.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "TOTAL" in out.stdout
    assert (tmp_path / "g.csv").read_text().startswith("notebook,grade_id,points,max_points,error")
    assert json.loads((tmp_path / "g.json").read_text())[0]["points"] == 0
