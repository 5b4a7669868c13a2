# Hand-written support module (teaches nothing): grading submissions a class handed in.
"""Grade untrusted submissions: ``python -m tinyqwen.course grade SUBMISSIONS --source notebooks``.

This is the first version, moved out of tinyqwen.course; it is being rebuilt for hostile
submissions (see book/instructors.md for the guarantees once it is).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import sys
from pathlib import Path

import nbformat

from tinyqwen.course import execute, is_graded, nbgrader_meta


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyqwen.course grade")
    parser.add_argument("submissions", nargs="+", type=Path)
    parser.add_argument(
        "--source",
        type=Path,
        default=Path("notebooks"),
        help="instructor notebooks whose graded cells are restored (default: notebooks/)",
    )
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    parser.add_argument("--csv", type=Path, help="also write points per exercise as CSV")
    parser.add_argument("--json", type=Path, help="also write the full report as JSON")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
