"""The Colab setup cell installs what every notebook imports (tinyqwen[notebooks])."""

from __future__ import annotations

import pytest
import tomllib
from nbformat.v4 import new_code_cell, new_notebook

from tinyqwen.course import installed_by_colab_cell, uncovered_imports

from conftest import ROOT, chapter_notebooks, read_nb

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("path", chapter_notebooks(), ids=lambda p: p.name)
def test_colab_cell_covers_every_import(path):
    missing = uncovered_imports(read_nb(path), PYPROJECT)
    assert not missing, (
        f"{path.name} imports {missing}, which `pip install tinyqwen[notebooks]` does not install "
        "and Colab does not preinstall (tinyqwen.runtime.COLAB_PREINSTALLED): add it to the "
        "`notebooks` extra in pyproject.toml"
    )


def test_the_import_check_can_fail():
    nb = new_notebook(cells=[new_code_cell("import seaborn as sns\nfrom plotly import express")])
    assert [m.split()[0] for m in uncovered_imports(nb, PYPROJECT)] == ["plotly", "seaborn"]


def test_notebooks_extra_holds_what_the_chapters_compare_against():
    assert {"transformers", "tokenizers"} <= installed_by_colab_cell(PYPROJECT)
