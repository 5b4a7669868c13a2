"""Every chapter notebook follows the skeleton of COURSE_DESIGN.md (and the template does too)."""

from __future__ import annotations

import copy

import pytest

from tinyqwen.course import is_graded, is_solution, notebook_problems

from conftest import NOTEBOOKS, book_repository, chapter_notebooks, read_nb

TEMPLATE = NOTEBOOKS / "_template.ipynb"
URL, BRANCH = book_repository()


@pytest.mark.parametrize("path", [TEMPLATE, *chapter_notebooks()], ids=lambda p: p.name)
def test_notebook_follows_the_chapter_skeleton(path):
    problems = notebook_problems(read_nb(path), path.name, URL, BRANCH)
    assert not problems, f"{path.name}:\n- " + "\n- ".join(problems)


def _template_without(predicate):
    nb = copy.deepcopy(read_nb(TEMPLATE))
    nb.cells = [c for c in nb.cells if not predicate(c)]
    return nb


@pytest.mark.parametrize(
    "what, predicate, expected",
    [
        ("summary", lambda c: c.source.startswith("## Summary"), "Summary"),
        ("setup cell", lambda c: "tinyqwen.runtime import setup" in c.source, "setup cell"),
        ("export cells", lambda c: c.source.startswith("#| export"), "'#| export'"),
        (
            "a graded cell",
            lambda c: is_graded(c) and "ex2" in c.metadata.nbgrader.grade_id,
            "not followed by a graded",
        ),
        (
            "a solution cell",
            lambda c: is_solution(c) and "ex3" in c.metadata.nbgrader.grade_id,
            "at least 3",
        ),
        ("the figure", lambda c: "plt." in c.source, "figure"),
    ],
)
def test_structure_check_catches_a_missing(what, predicate, expected):
    problems = notebook_problems(_template_without(predicate), TEMPLATE.name, URL, BRANCH)
    assert any(expected in p for p in problems), f"removing {what} went unnoticed: {problems}"


def test_structure_check_catches_a_wrong_badge():
    nb = copy.deepcopy(read_nb(TEMPLATE))
    nb.cells[0].source = nb.cells[0].source.replace("/blob/student/", "/blob/main/")
    assert any("badge" in p for p in notebook_problems(nb, TEMPLATE.name, URL, BRANCH))


@pytest.mark.parametrize(
    "prose, expected",
    [
        ("so that\n$$a +\nb$$\nholds", "opens mid-paragraph"),
        ("so that\n\n$$a\n+ b$$\n\nholds", "starts like a list item"),
    ],
    ids=["mid-paragraph", "list item"],
)
def test_structure_check_catches_display_math_that_renders_as_raw_tex(prose, expected):
    nb = copy.deepcopy(read_nb(TEMPLATE))
    nb.cells[1].source += "\n\n" + prose
    assert any(expected in p for p in notebook_problems(nb, TEMPLATE.name, URL, BRANCH))
