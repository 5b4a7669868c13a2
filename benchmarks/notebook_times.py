"""How long each chapter takes: ``make notebook-times PROFILE=cpu`` (or ``ci``, ``gpu``).

Executes every chapter of ``_toc.yml`` under the profile, one after the other, and records per
chapter its wall time and its slowest cells, with the machine, the date, the command and the
commit, in ``benchmarks/results/notebook-times-<profile>.json``. Each chapter's setup cell
prints its time from that file (``tinyqwen.records.chapter_time``).

``PROFILE=gpu`` on a machine with a CUDA GPU measures. Without one it *estimates* a T4: the
notebooks run here under the ``gpu`` profile with every ``rt.progress`` loop cut to its first
iterations (a rehearsal, ``tinyqwen.runtime.progress``), which log their size, FLOPs and PyTorch
operations per iteration. A loop's time on the T4 is its iterations times the larger of its FLOPs
at the T4's datasheet peak times an assumed utilisation and its operations times an assumed
per-operation overhead; every other cell is CPU work (tokenizing, data preparation, plotting)
and counts with the time it took here, on 2 cores like a Colab VM. Assumptions are recorded with
the estimate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BUDGET_SECONDS = (
    600  # every chapter, every profile (chapter 11 part 2's training: its preset's time)
)

# The T4 estimate's assumptions (a rehearsal counts FLOPs and operations; these turn them into time).
# The chapters' experiments run in float32 without autocast, so the float32 peak applies; a small
# experiment reaches less of it than a tuned training run (tinyqwen.accel.ASSUMED_MFU, float16).
T4_ASSUMED = {"utilisation": 0.4, "seconds_per_op": 20e-6, "precision": "float32"}


# Loops whose T4 time a chapter states itself: chapter 11 part 2's training is the `t4` preset's
# run, whose time is its plan (tinyqwen.train.preset_plan: chapter 8's training_plan in float16 at
# ASSUMED_MFU), not a float32 estimate of the rehearsal.
STATED_LOOPS = {"11_train_on_gpu": {"training": "t4"}}


def stated_seconds(chapter: str) -> dict[str, float]:
    """desc -> stated T4 seconds of the loops of `chapter` listed in STATED_LOOPS."""
    from tinyqwen.train import preset_plan

    return {
        desc: preset_plan(preset, "T4")["seconds"]
        for desc, preset in STATED_LOOPS.get(chapter, {}).items()
    }


def t4_peak(precision: str) -> float:
    """The T4's datasheet peak FLOP/s (tinyqwen.accel.GPU_SPECS) for float32 or float16."""
    import torch

    from tinyqwen.accel import gpu_spec

    return gpu_spec("T4").peak(getattr(torch, precision))


def chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part.get("chapters", [])]
    return [ROOT / f"{f}.ipynb" for f in files if f.startswith("notebooks/")]


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor()
    return info


def cell_seconds(cell) -> float:
    """Wall time of an executed cell, from nbclient's timing metadata (0 if it did not run)."""
    t = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in t or "shell.execute_reply" not in t:
        return 0.0
    start, end = (
        dt.datetime.fromisoformat(t[k].replace("Z", "+00:00"))
        for k in ("iopub.execute_input", "shell.execute_reply")
    )
    return (end - start).total_seconds()


def cell_window(cell) -> tuple[float, float] | None:
    t = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in t or "shell.execute_reply" not in t:
        return None
    return tuple(
        dt.datetime.fromisoformat(t[k].replace("Z", "+00:00")).timestamp()
        for k in ("iopub.execute_input", "shell.execute_reply")
    )


def loop_estimates(records: list[dict], assumed: dict = T4_ASSUMED) -> list[dict]:
    """Outermost rehearsed loops with their estimated GPU seconds (nested loops folded in).

    records: rehearsal log lines in the order they were written (an inner loop finishes, and is
    logged, before the outer loop around it). A loop's per-iteration GPU time is the larger of
    its own FLOPs at the assumed utilisation of the peak and its own operations at the assumed
    overhead each, plus the estimates of the inner loops one of its iterations ran.
    """
    peak = t4_peak(assumed["precision"]) * assumed["utilisation"]
    done: list[tuple[dict, float]] = []  # (record, estimated seconds of the whole loop)
    for rec in records:
        children = []
        while done and done[-1][0]["depth"] > rec["depth"]:
            children.append(done.pop())
        runs = rec["iterations_run"]
        inner_flops = (
            sum(c["flops_per_iteration"] * c["iterations_run"] for c, _ in children) / runs
        )
        inner_ops = sum(c["ops_per_iteration"] * c["iterations_run"] for c, _ in children) / runs
        inner_seconds = sum(est for _, est in children) / runs
        own = max(
            (rec["flops_per_iteration"] - inner_flops) / peak,
            (rec["ops_per_iteration"] - inner_ops) * assumed["seconds_per_op"],
            0.0,
        )
        total = rec["total"] if rec["total"] is not None else runs
        done.append((rec, total * (own + inner_seconds)))
    return [{**rec, "estimated_gpu_seconds": est} for rec, est in done]


def estimate_notebook(nb, records: list[dict], stated: dict[str, float] | None = None) -> dict:
    """A chapter's T4 time from its rehearsal: CPU cells as measured, loops as estimated, or as
    the chapter states them (`stated`: loop desc -> seconds)."""
    loops = [
        {**lp, "estimated_gpu_seconds": stated[lp["desc"]], "stated": True}
        if lp["desc"] in (stated or {})
        else lp
        for lp in loop_estimates(records)
    ]
    cells = []
    for i, cell in enumerate(nb.cells):
        window = cell_window(cell) if cell.cell_type == "code" else None
        if window is None:
            continue
        mine = [lp for lp in loops if window[0] <= lp["finished"] <= window[1] + 1e-3]
        rehearsed = sum(lp["seconds_per_iteration"] * lp["iterations_run"] for lp in mine)
        gpu = sum(lp["estimated_gpu_seconds"] for lp in mine)
        cpu = max(cell_seconds(cell) - rehearsed, 0.0)
        cells.append(
            {
                "index": i,
                "first_line": cell.source.strip().splitlines()[0][:80]
                if cell.source.strip()
                else "",
                "seconds": cpu + gpu,
                "cpu_seconds": cpu,
                "gpu_seconds": gpu,
                "loops": [
                    {
                        k: lp[k]
                        for k in ("desc", "total", "estimated_gpu_seconds", "stated")
                        if k in lp
                    }
                    for lp in mine
                ],
            }
        )
    return {
        "seconds": sum(c["seconds"] for c in cells),
        "cpu_stage_seconds": sum(c["cpu_seconds"] for c in cells),
        "gpu_stage_seconds": sum(c["gpu_seconds"] for c in cells),
        "slowest_cells": sorted(cells, key=lambda c: -c["seconds"])[:3],
    }


def run_notebook(path: Path, profile: str, *, rehearse: bool, timeout: int) -> dict:
    from tinyqwen.course import execute
    from tinyqwen.runtime import REHEARSAL_ENV

    nb = nbformat.read(path, as_version=4)
    scratch = Path(tempfile.mkdtemp(prefix="tinyqwen-times-"))
    log = scratch / "rehearsal.jsonl"
    if rehearse:
        os.environ[REHEARSAL_ENV] = str(log)
    try:  # in an empty folder: a first run, never one that resumes what an earlier run left
        (scratch / "cwd").mkdir()
        seconds = execute(
            nb, scratch / "cwd", profile=profile, timeout=timeout, allow_errors=rehearse
        )
        records = (
            [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        )
    finally:
        os.environ.pop(REHEARSAL_ENV, None)
        shutil.rmtree(scratch, ignore_errors=True)
    errors = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        and any(o.get("output_type") == "error" for o in c.get("outputs", []))
    ]
    if rehearse:
        return {
            **estimate_notebook(nb, records, stated_seconds(path.stem)),
            "rehearsal_wall_seconds": seconds,
            "cells_with_errors": errors,
        }
    slowest = sorted(
        (
            (cell_seconds(c), i, c.source.strip().splitlines()[0][:80] if c.source.strip() else "")
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code"
        ),
        reverse=True,
    )[:3]
    return {
        "seconds": seconds,
        "cells_with_errors": errors,
        "slowest_cells": [{"index": i, "seconds": s, "first_line": line} for s, i, line in slowest],
    }


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", choices=("ci", "cpu", "gpu"), required=True)
    ap.add_argument("--notebooks", nargs="*", type=Path, help="a subset (default: every chapter)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    import torch

    estimate = args.profile == "gpu" and not torch.cuda.is_available()
    target = args.out / f"notebook-times-{args.profile}.json"
    record = (
        json.loads(target.read_text()) if args.notebooks and target.exists() else {"notebooks": {}}
    )
    # chapters this run leaves alone keep their provenance
    for entry in record["notebooks"].values():
        entry.setdefault("date", record.get("date"))
        entry.setdefault("commit", record.get("commit"))
    record.update(
        {
            "profile": args.profile,
            "kind": "estimate" if estimate else "measurement",
            "device": "a Colab T4 (estimated from a rehearsal on this machine)"
            if estimate
            else (
                torch.cuda.get_device_name(0)
                if args.profile == "gpu"
                else f"{os.cpu_count()} CPU cores"
            ),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m benchmarks.notebook_times "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "commit": _commit(),
            "machine": machine(),
            "budget_seconds": BUDGET_SECONDS,
            "working_folder": "a fresh empty folder per chapter (a first run: nothing to resume)",
        }
    )
    if estimate:
        record["assumptions"] = {
            **T4_ASSUMED,
            "peak_flops": t4_peak(T4_ASSUMED["precision"]),
            "cpu_cells": "timed on this machine",
            "loops": "rehearsed: first iterations",
            "stated_loops": {
                ch: {d: f"tinyqwen.train.preset_plan({p!r}, 'T4')" for d, p in loops.items()}
                for ch, loops in STATED_LOOPS.items()
            },
        }
    for path in args.notebooks or chapters():
        began = time.perf_counter()
        print(
            f"== {path.name} ({args.profile}{', estimating a T4' if estimate else ''})", flush=True
        )
        entry = run_notebook(path.resolve(), args.profile, rehearse=estimate, timeout=args.timeout)
        # each chapter says when and at which commit it was timed (a partial run updates some)
        entry.update(date=record["date"], commit=record["commit"])
        record["notebooks"][path.stem] = entry
        print(
            f"   {entry['seconds']:.0f} s ({time.perf_counter() - began:.0f} s here)"
            + (
                f"; cells with errors: {entry['cells_with_errors']}"
                if entry["cells_with_errors"]
                else ""
            ),
            flush=True,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(record, indent=1)
        )  # after every chapter: a long run keeps what it did
    return 0


if __name__ == "__main__":
    sys.exit(main())
