# Hand-written support module (teaches nothing): course tooling for authors and instructors.
"""Course tooling: the chapter-notebook structure check.

``python -m tinyqwen.course check notebooks/01_tokenization.ipynb`` prints what a chapter
notebook lacks (nothing when it follows the skeleton of COURSE_DESIGN.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

# The skeleton's sections, in order; each must be a Markdown heading containing the word.
SECTIONS = ("Build", "Verify", "See", "Measure", "Exercises", "Summary")
MIN_EXERCISES = 3
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"


def colab_url(repo_url: str, branch: str, notebook: str) -> str:
    """Colab's address for ``notebooks/<notebook>`` of a GitHub repository at ``branch``."""
    owner_repo = repo_url.rstrip("/").removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{notebook}"


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def is_graded(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def _headings(nb) -> list[tuple[int, str]]:
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            out += [(i, m.group(1)) for m in re.finditer(r"^#{1,4}\s+(.+)$", cell.source, re.M)]
    return out


def notebook_problems(nb, name: str, repo_url: str, branch: str) -> list[str]:
    """Everything in chapter notebook ``nb`` (file name ``name``) that breaks the skeleton."""
    problems = []
    cells = nb.cells
    code = [c for c in cells if c.cell_type == "code"]
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        problems.append("the first cell must be Markdown starting with a '# Title'")
    elif colab_url(repo_url, branch, name) not in cells[0].source:
        problems.append(f"the first cell must carry an Open-in-Colab badge to {colab_url(repo_url, branch, name)}")

    heads = _headings(nb)
    if not any(re.search(r"objectives", h, re.I) for _, h in heads):
        problems.append("no 'Learning objectives' heading")
    pos = -1
    for section in SECTIONS:
        found = [i for i, h in heads if re.search(rf"\b{section}", h, re.I) and i > pos]
        if not found:
            problems.append(f"no '{section}' section heading after the previous section")
        else:
            pos = found[0]

    setup = [c for c in code if "from tinyqwen.runtime import setup" in c.source]
    if not setup:
        problems.append("no setup cell (from tinyqwen.runtime import setup; rt = setup(...))")
    elif f"git+{repo_url}@{branch}" not in setup[0].source:
        problems.append(f"the setup cell must install 'tinyqwen @ git+{repo_url}@{branch}' in Colab")
    if not any(c.source.startswith("#| default_exp ") for c in code):
        problems.append("no '#| default_exp <module>' cell")
    if not any(c.source.startswith("#| export") for c in code):
        problems.append("no '#| export' cell")
    if not any(re.search(r"\bplt\.(subplots|figure|show|imshow|plot)\(", c.source) for c in code):
        problems.append("no figure (matplotlib) cell")
    if not any(re.search(r"assert|testing\.assert_close", c.source) for c in code):
        problems.append("no verification cell (assert / torch.testing.assert_close)")

    ids = [nbgrader_meta(c).get("grade_id") for c in cells if nbgrader_meta(c)]
    if len(ids) != len(set(ids)):
        problems.append("nbgrader grade_id values are not unique")
    n_ok = 0
    for i, cell in enumerate(code):
        if not is_solution(cell):
            continue
        meta = nbgrader_meta(cell)
        if meta.get("grade") or meta.get("locked") or meta.get("schema_version") != 3:
            problems.append(f"solution cell {meta.get('grade_id')}: must be grade=false, locked=false, schema_version=3")
        if BEGIN_SOLUTION not in cell.source or END_SOLUTION not in cell.source:
            problems.append(f"solution cell {meta.get('grade_id')}: missing {BEGIN_SOLUTION} / {END_SOLUTION}")
        nxt = code[i + 1] if i + 1 < len(code) else None
        if nxt is None or not is_graded(nxt):
            problems.append(f"solution cell {meta.get('grade_id')} is not followed by a graded test cell")
            continue
        g = nbgrader_meta(nxt)
        if not g.get("locked") or not g.get("points", 0) > 0 or g.get("solution"):
            problems.append(f"graded cell {g.get('grade_id')}: must be locked, solution=false, points > 0")
            continue
        n_ok += 1
    if n_ok < MIN_EXERCISES:
        problems.append(f"{n_ok} exercise(s) with a graded check; at least {MIN_EXERCISES} are required")
    return problems


def _repo_from_config(root: Path) -> tuple[str, str]:
    import yaml

    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"], repo.get("branch", "main")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyqwen.course", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="check chapter notebooks against the skeleton")
    chk.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    bad = 0
    for path in args.notebooks:
        url, branch = _repo_from_config(path.resolve().parent.parent)
        problems = notebook_problems(nbformat.read(path, as_version=4), path.name, url, branch)
        print(f"{path}: {'ok' if not problems else ''}")
        for p in problems:
            print(f"  - {p}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
