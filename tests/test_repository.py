"""Guards for the repository's single sources of truth: dependencies, URLs, exported modules."""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

from tinyqwen.course import STUDENT_BRANCH, colab_url

from conftest import NOTEBOOKS, ROOT, book_repository, chapter_notebooks, read_nb, toc_files

LAYOUT = [
    "README.md",
    "environment.yml",
    "pyproject.toml",
    "_config.yml",
    "_toc.yml",
    "Makefile",
    "book",
    "notebooks",
    "shared/tinyqwen",
    "tests",
    "benchmarks",
    ".ci/run",
]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_layout_exists():
    missing = [p for p in LAYOUT if not (ROOT / p).exists()]
    assert not missing, f"missing from the layout of COURSE_DESIGN.md: {missing}"


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(map(_norm, project["dependencies"]))
    extras = project["optional-dependencies"]
    for extra in ("book", "test"):
        wanted |= set(map(_norm, extras[extra]))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e .[book,test]" in pip, (
        "environment.yml must install the package itself: -e .[book,test]"
    )
    listed = {_norm(p) for p in pip if not p.startswith("-e")}
    assert listed == wanted, (
        f"environment.yml and pyproject.toml disagree. Only in pyproject: {sorted(wanted - listed)}; "
        f"only in environment.yml: {sorted(listed - wanted)}"
    )
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda


def test_repository_url_has_one_source():
    url, branch = book_repository()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Repository"] == url, (
        "pyproject's Repository URL differs from _config.yml"
    )
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        text = path.read_text()
        # the badge opens the student edition, which the publish workflow keeps on its own branch
        colab = colab_url(url, STUDENT_BRANCH, path.name)
        assert colab in text, f"{path.name}: no Colab badge pointing at {colab}"
        for found in re.findall(r"colab\.research\.google\.com/github/[^)\s\"']+", text):
            assert "https://" + found == colab, (
                f"{path.name}: Colab link {found} disagrees with _config.yml"
            )
        for found in re.findall(r"git\+(https://[^\s\"'@]+)@([\w.-]+)", text):
            assert found == (url, branch), (
                f"{path.name}: installs from {found}, _config.yml says {(url, branch)}"
            )
    for page in (ROOT / "book").glob("*.md"):
        for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", page.read_text()):
            assert found == url, f"{page.name}: repository link {found} disagrees with _config.yml"


def test_notebooks_are_committed_without_outputs():
    dirty = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for i, cell in enumerate(read_nb(path).cells):
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                dirty.append(f"{path.name} cell {i}")
    assert not dirty, f"clear outputs and execution counts before committing: {dirty[:10]}"


def test_every_chapter_notebook_is_in_the_toc():
    listed = set(toc_files())
    missing = [p.name for p in chapter_notebooks() if f"notebooks/{p.stem}" not in listed]
    assert not missing, f"chapter notebooks missing from _toc.yml: {missing}"


def _tree(path):
    return sorted(p.relative_to(path) for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def test_committed_modules_equal_a_fresh_nbdev_export(tmp_path):
    """Copy notebooks + package + config, export there, and compare with the committed modules."""
    exporter = shutil.which("nbdev-export", path=str(Path(sys.executable).parent)) or shutil.which(
        "nbdev-export"
    )
    if exporter is None:
        pytest.skip("nbdev is not installed (pip install -e .[book])")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    shutil.copytree(
        ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run([exporter], cwd=tmp_path / "notebooks", check=True, capture_output=True)
    ours, fresh = ROOT / "shared" / "tinyqwen", tmp_path / "shared" / "tinyqwen"
    assert _tree(ours) == _tree(fresh), (
        "a fresh export creates or removes modules: run `make export`"
    )
    differ = [str(p) for p in _tree(ours) if not filecmp.cmp(ours / p, fresh / p, shallow=False)]
    if (NOTEBOOKS / "llms.txt").exists() or (tmp_path / "notebooks" / "llms.txt").exists():
        if not filecmp.cmp(
            NOTEBOOKS / "llms.txt", tmp_path / "notebooks" / "llms.txt", shallow=False
        ):
            differ.append("notebooks/llms.txt")
    assert not differ, (
        f"committed modules differ from a fresh export of the notebooks: {differ}; run `make export`"
    )


def test_package_installs_as_a_wheel(tmp_path):
    """`pip install .` (not editable) ships every module in shared/tinyqwen."""
    src = tmp_path / "src"  # build from a copy: setuptools leaves build/ in the source tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "shared", src / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "benchmarks" / "results", src / "benchmarks" / "results")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tinyqwen-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    ours = {f"tinyqwen/{p}" for p in map(str, _tree(ROOT / "shared" / "tinyqwen"))}
    assert ours <= shipped, f"the wheel lacks {sorted(ours - shipped)}"
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    modules = sorted(
        p.stem for p in (target / "tinyqwen").glob("*.py") if not p.stem.startswith("_")
    )
    code = (
        "import importlib, tinyqwen, pathlib, sys; "
        f"assert pathlib.Path(tinyqwen.__file__).is_relative_to({str(target)!r}), tinyqwen.__file__; "
        f"[importlib.import_module('tinyqwen.' + m) for m in {modules!r}]; "
        "from tinyqwen.records import load, results_dir; "
        f"assert results_dir().is_relative_to({str(target)!r}), results_dir(); "
        "assert load('latest.json')['rows'], 'the recorded benchmarks are not in the wheel'"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=tmp_path, env={"PYTHONPATH": str(target)}
    )
