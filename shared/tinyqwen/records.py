# Hand-written support module (teaches nothing): the recorded results chapters quote.
"""Recorded results: what a chapter shows that its profile cannot measure live.

They live in the repository's ``benchmarks/results/`` (installed with the package as
``tinyqwen.results``), as small JSON files that each say where, when and how they were
measured:

* ``latest.json``: the benchmarks (``make bench`` / ``make bench-quick``), one row per
  comparison of ours against a peer;
* ``notebook-times-<profile>.json``: wall time per chapter (``make notebook-times``);
* ``runs/<name>.json``: recorded training runs (history, samples, provenance);
* ``gpu-<device>.json``: the GPU check (``make gpu-check``).

Prose never types a measured number: it prints it from here, or from the cell above.
"""

from __future__ import annotations

import json
from pathlib import Path

_REPO_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def results_dir() -> Path:
    """``benchmarks/results`` of a source checkout, else the copy installed with the package."""
    return _REPO_RESULTS if _REPO_RESULTS.is_dir() else Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    """The recorded JSON file ``name`` (relative to :func:`results_dir`), or None if absent."""
    path = results_dir() / name
    return json.loads(path.read_text()) if path.is_file() else None


def provenance(record: dict) -> str:
    """'measured on <machine> on <date> with `<command>`' from a record's own fields."""
    machine = record.get("machine", {})
    if isinstance(machine, dict):
        where = machine.get("gpu") or (
            f"{machine.get('cpus', '?')} CPU cores ({machine.get('cpu_model') or machine.get('processor', 'CPU')})"
        )
        if machine.get("torch"):
            where += f", torch {machine['torch']}"
    else:
        where = str(machine)
    parts = [f"measured on {where}", f"on {record.get('date', 'an unrecorded date')}"]
    if record.get("command"):
        parts.append(f"with `{record['command']}`")
    if record.get("commit"):
        parts.append(f"at commit {str(record['commit'])[:10]}")
    return " ".join(parts)


def benchmark(
    benchmark: str, *, ours: str | None = None, peer: str | None = None, metric: str | None = None
) -> dict:
    """The row of ``latest.json`` whose benchmark name starts with ``benchmark`` (and whose
    ours_name / peer_name / metric contain ``ours`` / ``peer`` / ``metric``); ValueError unless
    exactly one matches."""
    record = load("latest.json") or {"rows": []}
    rows = [
        r
        for r in record["rows"]
        if r["benchmark"].startswith(benchmark)
        and (ours is None or ours in r["ours_name"])
        and (peer is None or peer in r["peer_name"])
        and (metric is None or metric in r["metric"])
    ]
    if len(rows) != 1:
        raise ValueError(
            f"{len(rows)} recorded benchmark rows match {benchmark!r} "
            f"(ours={ours!r}, peer={peer!r}, metric={metric!r})"
        )
    made_by = record.get("modules", {}).get(rows[0].get("module"), record)
    return {**rows[0], "provenance": provenance(made_by)}


def format_seconds(seconds: float) -> str:
    """12 s, 3.4 min, 1.2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def chapter_time(chapter: str, profile: str) -> str:
    """One line for the top of a chapter: how long it takes under each profile, from the
    records, marking the learner's own; 'not measured yet' where nothing was recorded."""
    parts = []
    for name in ("ci", "cpu", "gpu"):
        record = load(f"notebook-times-{name}.json")
        entry = (record or {}).get("notebooks", {}).get(chapter)
        if entry is None:
            text = f"{name}: not measured yet"
        else:
            when = (entry.get("date") or record.get("date") or "?")[:10]
            where = (  # make notebook-times estimates only a Colab T4 (benchmarks/notebook_times.py)
                "estimated for a Colab T4"
                if record.get("kind") == "estimate"
                else f"measured on {record.get('device', '?')}"
            )
            text = f"{name}: {format_seconds(entry['seconds'])} ({where}, {when})"
        parts.append(f"[{text}]" if name == profile else text)
    return f"Time to run this chapter (yours in brackets): {'; '.join(parts)}"
