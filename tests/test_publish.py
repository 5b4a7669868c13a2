"""What publishing needs: the book's workflow, the student branch (its workflow, its tree, its
push), scripts shipped with the book instead of a CDN, and notebooks that ask Colab for a GPU
where it helps."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tinyqwen.course import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    STAGE_MARKER,
    STUDENT_BRANCH,
    main,
    student_edition,
)

from conftest import ROOT, chapter_notebooks, read_nb

# Chapters whose cpu/gpu profiles train or time models, and so benefit from a GPU runtime.
GPU_CHAPTERS = {"03", "05", "06", "08", "10", "11"}


def _workflow(name):
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as True
    return data, data.get("on", data.get(True))


def test_book_workflow_builds_and_deploys_pages_on_main():
    wf, on = _workflow("book.yml")
    assert on["push"]["branches"] == ["main"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    runs = " ".join(s.get("run", "") for s in build["steps"])
    uses = [s.get("uses", "") for s in build["steps"]] + [
        s.get("uses", "") for s in deploy["steps"]
    ]
    assert "make book" in runs
    assert any(u.startswith("actions/cache") for u in uses), (
        "the executed notebooks should be cached"
    )
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert deploy["needs"] == "build" and wf["permissions"]["pages"] == "write"


def test_test_workflow_runs_make_test():
    wf, on = _workflow("test.yml")
    assert "push" in on
    runs = " ".join(s.get("run", "") for j in wf["jobs"].values() for s in j["steps"])
    assert "make test" in runs


def test_gpu_chapters_ask_colab_for_a_gpu():
    for path in chapter_notebooks():
        if path.name[:2] in GPU_CHAPTERS:
            meta = read_nb(path).metadata
            assert meta.get("accelerator") == "GPU", (
                f"{path.name}: metadata.accelerator should be 'GPU'"
            )
            assert meta.get("colab", {}).get("gpuType"), (
                f"{path.name}: metadata.colab.gpuType missing"
            )


# --------------------------------------------------------------------------------------------
# The student branch
# --------------------------------------------------------------------------------------------


def test_student_workflow_publishes_the_student_branch_on_push_to_main():
    wf, on = _workflow("student.yml")
    assert on["push"]["branches"] == ["main"]
    assert wf["env"]["STUDENT_BRANCH"] == STUDENT_BRANCH, (
        "the workflow must fill the branch that the Colab badges open (tinyqwen.course.STUDENT_BRANCH)"
    )
    assert wf["permissions"]["contents"] == "write"
    steps = wf["jobs"]["publish"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'make student-branch DIR="$STAGE"' in runs
    assert 'refs/heads/$STUDENT_BRANCH"' in runs and "git push --force origin" in runs


def test_make_student_branch_runs_the_staging_command():
    proc = subprocess.run(
        ["make", "-n", "student-branch", "DIR=some/dir", "STAMP=Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m tinyqwen.course stage-student-branch --out some/dir" in proc.stdout


@pytest.fixture(scope="module")
def student_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "repo" / "_build" / "student-branch"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["stage-student-branch", "--out", str(out)]) == 0
    finally:
        os.chdir(cwd)
    return out


def test_student_tree_has_every_chapter_unsolved_and_the_same_package(student_tree):
    tree = student_tree
    for path in chapter_notebooks():
        staged = tree / "notebooks" / path.name
        assert staged.exists(), f"{path.name} is missing from the student branch"
        text = staged.read_text()
        assert BEGIN_SOLUTION not in text and BEGIN_HIDDEN not in text, path.name
        # exactly the student edition, whose solution removal tests/test_course.py checks; lines
        # that also appear outside the solutions are `course check`'s business (solution_leaks)
        expected = student_edition(read_nb(path))
        assert [c.source for c in read_nb(staged).cells] == [c.source for c in expected.cells]
        assert all(not c.get("outputs") for c in read_nb(staged).cells if c.cell_type == "code"), (
            path.name
        )
    package, ours = tree / "shared" / "tinyqwen", ROOT / "shared" / "tinyqwen"
    modules = sorted(p.relative_to(ours) for p in ours.rglob("*.py"))
    assert modules and modules == sorted(p.relative_to(package) for p in package.rglob("*.py"))
    _, mismatch, errors = filecmp.cmpfiles(ours, package, [str(m) for m in modules], shallow=False)
    assert not mismatch and not errors, f"the package differs on the student branch: {mismatch}"
    assert filecmp.cmp(ROOT / "pyproject.toml", tree / "pyproject.toml", shallow=False)
    assert not (tree / ".github").exists(), "workflows stay on main"
    assert "Student edition" in (tree / "README.md").read_text()


def test_workflow_force_pushes_the_staged_tree(student_tree, tmp_path):
    """Run the workflow's push step against a local bare repository, twice."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    wf, _ = _workflow("student.yml")
    (push,) = [s["run"] for s in wf["jobs"]["publish"]["steps"] if "git push" in s.get("run", "")]
    repo, remote = student_tree.parent.parent, tmp_path / "remote.git"
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", str(remote)], check=True)
    env = {
        **os.environ,
        **wf["env"],
        "STAGE": str(student_tree.relative_to(repo)),
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_SHA": "0123abc",
    }
    for _ in range(2):  # the second push replaces the branch
        proc = subprocess.run(
            ["bash", "-c", push], cwd=repo, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    log = subprocess.run(
        ["git", f"--git-dir={remote}", "log", "--format=%s", STUDENT_BRANCH],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert log == ["Student edition of main at 0123abc"], "one commit, replaced on each publish"
    pushed = subprocess.run(
        ["git", f"--git-dir={remote}", "ls-tree", "-r", "--name-only", STUDENT_BRANCH],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    staged = sorted(
        str(p.relative_to(student_tree)) for p in student_tree.rglob("*") if p.is_file()
    )
    assert sorted(pushed) == [p for p in staged if p != STAGE_MARKER]


# --------------------------------------------------------------------------------------------
# Scripts ship with the book (book/_ext/offline_assets.py)
# --------------------------------------------------------------------------------------------

MATH_PAGE = """Math
====

.. math::

   \\mathrm{RMSNorm}(x) = \\frac{x}{\\sqrt{\\tfrac{1}{d}\\sum_i x_i^2 + \\epsilon}}
"""


def _sphinx_math_page(tmp_path, vendor, env=None):
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['offline_assets']\n"
        f"offline_vendor_dir = {str(vendor)!r}\n"
    )
    (src / "index.rst").write_text(MATH_PAGE)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(src), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / "html" / "index.html").read_text(), proc.stderr


def test_mathjax_ships_with_the_book(tmp_path):
    vendor = ROOT / "_build" / "vendor"  # shared with make book: fetched once
    if shutil.which("npm") is None and not vendor.exists():
        pytest.skip("npm is needed once to fetch MathJax")
    page, _ = _sphinx_math_page(tmp_path, vendor)
    assert 'src="_static/mathjax/tex-mml-chtml.js' in page
    assert "cdn.jsdelivr.net" not in page
    static = tmp_path / "html" / "_static" / "mathjax"
    assert (static / "tex-mml-chtml.js").is_file() and (static / "LICENSE").is_file()
    assert any((static / "output" / "chtml" / "fonts").rglob("*.woff")), "MathJax's fonts"


def test_without_npm_mathjax_falls_back_to_the_cdn_and_says_so(tmp_path):
    bare_path = tmp_path / "bin"
    bare_path.mkdir()  # a PATH without npm
    page, stderr = _sphinx_math_page(tmp_path, tmp_path / "vendor", env={"PATH": str(bare_path)})
    assert "https://cdn.jsdelivr.net/npm/mathjax@3" in page
    assert "warning:" in stderr and "npm is not installed" in stderr
