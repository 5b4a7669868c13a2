# Hand-written support module (teaches nothing): course tooling for authors and instructors.
"""Course tooling for authors and instructors.

    python -m tinyqwen.course check notebooks/01_tokenization.ipynb   # what a chapter lacks
    python -m tinyqwen.course student notebooks/*.ipynb --out dist/student
    python -m tinyqwen.course grade submissions/*.ipynb --csv grades.csv --json grades.json

``student`` writes the student edition with nbgrader's own preprocessors (solutions replaced by
``raise NotImplementedError()``, hidden tests removed, outputs cleared). ``grade`` executes each
submission offline under the ``ci`` profile (a timeout per cell, errors do not stop the run),
restores every graded cell from the instructor's notebook of the same name (so hidden tests run
and edited checks do not count), and awards an exercise's points when its graded cell runs
without error.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat

# The skeleton's sections, in order; each must be a Markdown heading containing the word.
SECTIONS = ("Build", "Verify", "See", "Measure", "Exercises", "Summary")
MIN_EXERCISES = 3
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"


def colab_url(repo_url: str, branch: str, notebook: str) -> str:
    """Colab's address for ``notebooks/<notebook>`` of a GitHub repository at ``branch``."""
    owner_repo = repo_url.rstrip("/").removeprefix("https://github.com/")
    return (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{notebook}"
    )


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
        problems.append(
            f"the first cell must carry an Open-in-Colab badge to {colab_url(repo_url, branch, name)}"
        )

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
        problems.append(
            f"the setup cell must install 'tinyqwen @ git+{repo_url}@{branch}' in Colab"
        )
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
            problems.append(
                f"solution cell {meta.get('grade_id')}: must be grade=false, locked=false, schema_version=3"
            )
        if BEGIN_SOLUTION not in cell.source or END_SOLUTION not in cell.source:
            problems.append(
                f"solution cell {meta.get('grade_id')}: missing {BEGIN_SOLUTION} / {END_SOLUTION}"
            )
        nxt = code[i + 1] if i + 1 < len(code) else None
        if nxt is None or not is_graded(nxt):
            problems.append(
                f"solution cell {meta.get('grade_id')} is not followed by a graded test cell"
            )
            continue
        g = nbgrader_meta(nxt)
        if not g.get("locked") or not g.get("points", 0) > 0 or g.get("solution"):
            problems.append(
                f"graded cell {g.get('grade_id')}: must be locked, solution=false, points > 0"
            )
            continue
        n_ok += 1
    if n_ok < MIN_EXERCISES:
        problems.append(
            f"{n_ok} exercise(s) with a graded check; at least {MIN_EXERCISES} are required"
        )
    return problems


# --------------------------------------------------------------------------------------------
# Student edition
# --------------------------------------------------------------------------------------------


def student_edition(nb):
    """A copy of instructor notebook ``nb`` with solutions, hidden tests and outputs removed.

    Uses nbgrader's own preprocessors, so the result is what ``nbgrader generate_assignment``
    would release (minus its checksums and database bookkeeping).
    """
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    nb = copy.deepcopy(nb)
    resources: dict = {}
    for pre in (ClearSolutions(), ClearHiddenTests(), ClearOutput()):
        nb, resources = pre.preprocess(nb, resources)
    return nb


def write_student_editions(paths: list[Path], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out_dir / path.name
        nbformat.write(student_edition(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


def stage_student_book(root: Path, dest: Path) -> Path:
    """Copy the book's sources to ``dest`` with every chapter replaced by its student edition.

    Graded check cells are tagged ``raises-exception`` (they fail without solutions) and
    ``remove-output``, and sphinx-exercise's ``hide_solutions`` is switched on. Build the result
    with ``jupyter-book build dest`` (``make book-student`` does both).
    """
    import shutil

    import yaml

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("_toc.yml", "book", "benchmarks/results"):
        src = root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["title"] = config["title"] + " (student edition)"
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (dest / "notebooks").mkdir()
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = student_edition(nbformat.read(path, as_version=4))
        for cell in nb.cells:
            if is_graded(cell):
                tags = cell.metadata.setdefault("tags", [])
                tags += [t for t in ("raises-exception", "remove-output") if t not in tags]
        nbformat.write(nb, dest / "notebooks" / path.name)
    return dest


# --------------------------------------------------------------------------------------------
# Executing and grading
# --------------------------------------------------------------------------------------------

# No MPLBACKEND here: the kernel's inline backend is what puts figures into executed notebooks.
# OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while waiting multiply run time on a busy machine.
OFFLINE_ENV = {
    "TINYQWEN_PROFILE": "ci",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def execute(nb, cwd: Path, *, timeout: int = 300, allow_errors: bool = False):
    """Execute ``nb`` in place in a fresh kernel, offline under the ``ci`` profile; returns seconds.

    With ``allow_errors`` a failing or timed-out cell is recorded and execution goes on.
    """
    from nbclient import NotebookClient

    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    try:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=allow_errors,
            interrupt_on_timeout=allow_errors,
            resources={"metadata": {"path": str(cwd)}},
        )
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def restore_graded_cells(submission, instructor) -> int:
    """Replace every graded cell of ``submission`` by the instructor's cell with the same grade_id.

    Returns how many were restored; raises ValueError if a graded cell is missing.
    """
    originals = {nbgrader_meta(c)["grade_id"]: c for c in instructor.cells if is_graded(c)}
    seen = set()
    for i, cell in enumerate(submission.cells):
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in originals:
            submission.cells[i] = copy.deepcopy(originals[gid])
            seen.add(gid)
    missing = set(originals) - seen
    if missing:
        raise ValueError(
            f"the submission lacks graded cells {sorted(missing)} (were they deleted?)"
        )
    return len(seen)


def scores(executed_nb) -> list[dict]:
    """Points per graded cell of an executed notebook: full points when the cell raised nothing."""
    out = []
    for cell in executed_nb.cells:
        if not is_graded(cell):
            continue
        meta = nbgrader_meta(cell)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        ran = cell.get("execution_count") is not None
        ok = ran and not errors
        reason = (
            ""
            if ok
            else (f"{errors[0]['ename']}: {errors[0]['evalue']}"[:200] if errors else "not run")
        )
        out.append(
            {
                "grade_id": meta["grade_id"],
                "max_points": meta.get("points", 0),
                "points": meta.get("points", 0) if ok else 0,
                "error": reason,
            }
        )
    return out


def grade(path: Path, source_dir: Path | None, *, timeout: int = 120) -> dict:
    """Execute submission ``path`` and score it; see the module docstring."""
    nb = nbformat.read(path, as_version=4)
    restored = False
    if source_dir is not None and (source_dir / path.name).exists():
        restore_graded_cells(nb, nbformat.read(source_dir / path.name, as_version=4))
        restored = True
    seconds = execute(nb, path.resolve().parent, timeout=timeout, allow_errors=True)
    rows = scores(nb)
    return {
        "notebook": path.name,
        "restored_from_source": restored,
        "seconds": round(seconds, 1),
        "points": sum(r["points"] for r in rows),
        "max_points": sum(r["max_points"] for r in rows),
        "exercises": rows,
    }


def report_table(results: list[dict]) -> str:
    lines = [f"{'notebook':<34} {'exercise':<28} {'points':>9}  note"]
    for res in results:
        for r in res["exercises"]:
            lines.append(
                f"{res['notebook']:<34} {r['grade_id']:<28} {r['points']:>4}/{r['max_points']:<4}  {r['error']}"
            )
        lines.append(
            f"{res['notebook']:<34} {'TOTAL':<28} {res['points']:>4}/{res['max_points']:<4}"
        )
    return "\n".join(lines)


def report_csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["notebook", "grade_id", "points", "max_points", "error"])
    for res in results:
        for r in res["exercises"]:
            w.writerow([res["notebook"], r["grade_id"], r["points"], r["max_points"], r["error"]])
    return buf.getvalue()


def exercise_table(paths: list[Path]) -> str:
    """Markdown table of every graded exercise (notebook, grade_id, points, first sentence)."""
    rows = []
    for path in paths:
        cells = nbformat.read(path, as_version=4).cells
        for i, cell in enumerate(cells):
            if not is_graded(cell):
                continue
            j = i - 1
            while j >= 0 and not is_solution(cells[j]):
                j -= 1
            k = j - 1
            while k >= 0 and cells[k].cell_type != "markdown":
                k -= 1
            text = cells[k].source if k >= 0 else ""
            m = re.search(r"\*\*Exercise[^*]*\*\*\s*(.*)", text, re.S)
            body = re.sub(r"\s+", " ", (m.group(1) if m else text).strip())
            first = re.split(r"(?<=[.?])\s", body, maxsplit=1)[0]
            if len(first) > 120:
                first = first[:117].rsplit(" ", 1)[0] + " …"
            meta = nbgrader_meta(cell)
            rows.append((path.name, meta["grade_id"], meta["points"], first.replace("|", "\\|")))
    lines = ["| notebook | graded cell | points | what it asks |", "|---|---|---|---|"]
    lines += [f"| `{n}` | `{g}` | {pt} | {w} |" for n, g, pt, w in rows]
    lines += ["", f"In total {sum(r[2] for r in rows)} points in {len(rows)} exercises."]
    return "\n".join(lines)


def _repo_from_config(root: Path) -> tuple[str, str]:
    import yaml

    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"], repo.get("branch", "main")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyqwen.course", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="check chapter notebooks against the skeleton")
    chk.add_argument("notebooks", nargs="+", type=Path)
    stu = sub.add_parser("student", help="write student editions (nbgrader preprocessors)")
    stu.add_argument("notebooks", nargs="+", type=Path)
    stu.add_argument("--out", type=Path, default=Path("dist/student"))
    tab = sub.add_parser("exercise-table", help="the exercises table of book/instructors.md")
    tab.add_argument("notebooks", nargs="+", type=Path)
    stb = sub.add_parser("stage-student-book", help="copy the book sources with student editions")
    stb.add_argument("--out", type=Path, default=Path("_build/student-src"))
    grd = sub.add_parser("grade", help="execute and grade submissions")
    grd.add_argument("submissions", nargs="+", type=Path)
    grd.add_argument(
        "--source",
        type=Path,
        default=Path("notebooks"),
        help="instructor notebooks whose graded cells are restored (default: notebooks/)",
    )
    grd.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    grd.add_argument("--csv", type=Path, help="also write points per exercise as CSV")
    grd.add_argument("--json", type=Path, help="also write the full report as JSON")
    args = parser.parse_args(argv)
    if args.cmd == "student":
        for p in write_student_editions(args.notebooks, args.out):
            print(f"wrote {p}")
        return 0
    if args.cmd == "exercise-table":
        print(exercise_table(args.notebooks))
        return 0
    if args.cmd == "stage-student-book":
        print(f"staged the student book in {stage_student_book(Path.cwd(), args.out)}")
        return 0
    if args.cmd == "grade":
        source = args.source if args.source.is_dir() else None
        if source is None:
            print(
                f"warning: no instructor notebooks at {args.source}; graded cells are used as submitted"
            )
        results = [grade(p, source, timeout=args.timeout) for p in args.submissions]
        print(report_table(results))
        if args.csv:
            args.csv.write_text(report_csv(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return 0
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
