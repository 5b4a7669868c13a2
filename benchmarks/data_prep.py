"""Data preparation at full count: time per stage and peak memory, against a free Colab VM's budget.

    python -m benchmarks.data_prep --docs 2200000     # the t4/a100/h100 presets' count (make bench)
    python -m benchmarks.data_prep --docs 20000 --out /tmp/x.json   # a quick look

Runs ``tinyqwen.data.prepare_corpus`` in a child process on synthetic stories with TinyStories'
length distribution (``"synthetic:tinystories"``) and the presets' tokenizer settings (100,000
tokenizer documents, a 10,240-token vocabulary), and records to ``benchmarks/results/data-prep.json``
what it measured (seconds per stage, the child's peak resident memory from
``getrusage(RUSAGE_CHILDREN)``, document and token counts, the near-duplicate estimate) with its
provenance (date, machine, load average, command, commit). The budget (issue 22): under 6 GB and
under 10 minutes on 2 CPU cores. On a shared machine the wall time is pessimistic; the load
average before and after the run and the child's CPU time (user + system) are recorded, so a reader
can tell how much of the wall time was waiting for a core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "data-prep.json"
BUDGET = {"seconds": 600, "peak_rss_gb": 6.0, "cpus": 2}
PRESET = {"source": "synthetic:tinystories", "vocab_size": 10_240, "tokenizer_docs": 100_000}


def child(docs: int, out_dir: str, meta_path: str, progress: bool) -> None:
    """The measured process: one prepare_corpus call, its meta.json copied to `meta_path`."""
    from tinyqwen.data import prepare_corpus

    meta = prepare_corpus(
        PRESET["source"],
        docs,
        out_dir=out_dir,
        vocab_size=PRESET["vocab_size"],
        tokenizer_docs=min(PRESET["tokenizer_docs"], docs),
        progress=progress,
    )
    Path(meta_path).write_text(json.dumps(meta))


# the code that decides what is measured: an uncommitted change to it makes the record say so
MEASURED_CODE = [
    "shared/tinyqwen/data.py",
    "shared/tinyqwen/sources.py",
    "shared/tinyqwen/tokenizer.py",
    "benchmarks/data_prep.py",
]


def commit() -> str | None:
    """HEAD, marked when the measured code has uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *MEASURED_CODE],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + (" with uncommitted changes to the measured code" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def measure(docs: int = 2_200_000, *, progress: bool = True) -> dict:
    """Prepare `docs` stories in a child process; the record written to data-prep.json."""
    from benchmarks.run import machine

    load_before, made_at = os.getloadavg(), commit()
    with tempfile.TemporaryDirectory(prefix="tinyqwen-data-prep-") as tmp:
        meta_path = Path(tmp) / "meta-copy.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.data_prep",
            "--child",
            "--docs",
            str(docs),
            "--data-dir",
            str(Path(tmp) / "data"),
            "--meta",
            str(meta_path),
        ] + ([] if progress else ["--quiet"])
        start = time.perf_counter()
        subprocess.run(cmd, cwd=HERE.parent, check=True)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kb, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime  # KiB on Linux; CPU seconds
        meta = json.loads(meta_path.read_text())
    peak_gb = peak_kb * 1024 / 1e9
    return {
        "what": "tinyqwen.data.prepare_corpus at full count: read, clean, dedup, tokenizer training, "
        "split, tokenize, write (one child process)",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m benchmarks.data_prep --docs {docs}",
        "commit": made_at,
        "machine": machine(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        # a 1-minute load average of one core's worth or more at the start: other work was running
        **(
            {
                "shared_machine_note": "timed on a machine shared with other jobs: the time is pessimistic"
            }
            if load_before[0] >= 1.0
            else {}
        ),
        "docs": docs,
        "preset": PRESET,
        "budget": BUDGET,
        "wall_seconds": round(wall, 1),
        "stage_seconds": meta["seconds"],
        "cpu_seconds": round(
            cpu, 1
        ),  # user + system time of the child: what a quiet machine must spend
        "peak_rss_gb": round(peak_gb, 3),
        "within_budget": wall < BUDGET["seconds"] and peak_gb < BUDGET["peak_rss_gb"],
        "docs_in": meta["docs_in"],
        "docs_kept": meta["docs_kept"],
        "removed": meta["removed"],
        "near_duplicates": meta["near_duplicates"],
        "train_tokens": meta["train_tokens"],
        "val_tokens": meta["val_tokens"],
        "text_bytes": sum(f["text_bytes"] for f in meta["files"].values()),
        "vocab_size": meta["vocab_size"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=2_200_000)
    ap.add_argument("--out", type=Path, default=RESULT, help="where the record goes")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--meta", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.docs, args.data_dir, args.meta, progress=not args.quiet)
        return 0
    record = measure(args.docs, progress=not args.quiet)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{record['docs']:,} documents: {record['wall_seconds']:.0f} s, peak {record['peak_rss_gb']:.2f} GB "
        f"(budget {BUDGET['seconds']} s, {BUDGET['peak_rss_gb']} GB); stages {record['stage_seconds']}; "
        f"wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
