"""Every exercise's check tests the learner's code, and only that.

For each exercise the suite runs its graded cell (hidden tests included) against four kinds of
learner code, in the kernel that just executed the chapter:

* the reference solution, which must pass;
* the stub of the student edition, which must fail with NotImplementedError;
* a wrapper around the finished component in ``tinyqwen`` (or the built-in the exercise
  forbids), which must fail with ForbiddenCall;
* plausible wrong answers (off by one, a missing scale, the wrong axis), which must fail.

Wrappers and wrong answers live in ``tests/exercise_variants/<notebook>.py`` as
``VARIANTS = {grade_id: {"wrapper": source, "wrong": {label: source or (source, exception)}}}``.
"""

from __future__ import annotations

import pytest

from tinyqwen.course import is_graded, is_solution, nbgrader_meta

from conftest import chapter_notebooks, executed, exercise_probes, exercise_variants, read_nb


def _exercises(path):
    cells = read_nb(path).cells
    return [
        nbgrader_meta(c)["grade_id"]
        for i, c in enumerate(cells)
        if is_solution(c) and i + 1 < len(cells) and is_graded(cells[i + 1])
    ]


@pytest.mark.parametrize("path", chapter_notebooks(), ids=lambda p: p.name)
def test_every_exercise_has_a_wrapper_and_a_wrong_answer(path):
    variants = exercise_variants(path)
    missing = [
        gid
        for gid in _exercises(path)
        if not variants.get(gid, {}).get("wrapper") or not variants.get(gid, {}).get("wrong")
    ]
    assert not missing, (
        f"{path.name}: exercises without a wrapper and a wrong answer in "
        f"tests/exercise_variants/{path.stem}.py: {missing}"
    )
    stale = sorted(set(variants) - set(_exercises(path)))
    assert not stale, f"{path.name}: variants for exercises that do not exist: {stale}"


PROBES = [
    (path, k, p.grade_id, p.kind)
    for path in chapter_notebooks()
    for k, p in enumerate(exercise_probes(path))
]


@pytest.mark.notebook
@pytest.mark.parametrize(
    "path, index, grade_id, kind", PROBES, ids=[f"{p.stem[:2]}-{g}-{k}" for p, _, g, k in PROBES]
)
def test_exercise_check_judges_the_learners_code(path, index, grade_id, kind):
    probe = executed(path).probes[index]
    error = probe.error
    if probe.expect == "pass":
        assert error is None, f"the reference solution fails its own check: {error}"
        return
    assert error is not None, f"{kind} passes the check of {grade_id}: the check cannot tell"
    where, message = error
    assert where == "check", f"the {kind} variant does not even define cleanly: {message}"
    assert message.startswith(probe.expect), f"expected {probe.expect}, got {message}"
