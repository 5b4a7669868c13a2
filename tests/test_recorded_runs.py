"""The recorded training runs the book shows (benchmarks/results/runs/*.json): complete and honest.

Chapter 11 part 2 plots every record beside its live run, labelled with the record's own
provenance, so each record must say where, when and how it was made, and must be what it claims
(a preset's run to completion, samples from several steps).
"""

from __future__ import annotations

import json

import pytest

from tinyqwen.records import results_dir
from tinyqwen.train import TRAIN_PRESETS

RECORDS = sorted((results_dir() / "runs").glob("*.json"))


def test_the_cpu_preset_is_recorded_to_completion():
    runs = [json.loads(p.read_text()) for p in RECORDS]
    cpu = [
        r
        for r in runs
        if r["preset"] == "cpu" and r["config"]["max_steps"] == TRAIN_PRESETS["cpu"]["max_steps"]
    ]
    assert cpu, (
        "no run of the full cpu preset in benchmarks/results/runs/ (python -m tinyqwen.train --preset cpu --record ...)"
    )
    assert any(r["history"][-1]["step"] == r["config"]["max_steps"] - 1 for r in cpu), (
        "no cpu run reached its last step"
    )


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_a_recorded_run_says_where_when_and_how(path):
    record = json.loads(path.read_text())
    assert record["format"] == "tinyqwen-run-1"
    p = record["provenance"]
    for key in ("device", "date", "command", "commit", "wall_seconds", "data", "torch"):
        assert p.get(key), f"{path.name}: provenance lacks {key}"
    assert p["command"].startswith(("python -m tinyqwen.train", "torchrun")), p["command"]
    assert f"--preset {record['preset']}" in p["command"], (
        "the command must be the one that ran this preset"
    )
    steps = [h["step"] for h in record["history"]]
    assert steps == sorted(steps) and record["final"]["step"] == steps[-1]
    assert len({s["step"] for s in record["samples"]}) >= 2, "samples from several steps"
    assert record["final"]["val_loss"] < record["unigram_entropy"], (
        "the run did not learn beyond unigram statistics"
    )


def test_a_benchmark_is_found_by_the_start_of_its_name(tmp_path, monkeypatch):
    """'model train step (cpu preset' must not also find 'norm choice: model train step (cpu preset'."""
    from tinyqwen import records

    rows = [
        {"benchmark": name, "ours_name": "ours", "peer_name": "peer", "metric": "time", "module": m}
        for name, m in (
            ("model train step (cpu preset, 8x256 tokens)", "model"),
            ("norm choice: model train step (cpu preset, 8x256 tokens)", "norm"),
        )
    ]
    (tmp_path / "latest.json").write_text(json.dumps({"rows": rows, "date": "d", "command": "c"}))
    monkeypatch.setattr(records, "results_dir", lambda: tmp_path)
    assert records.benchmark("model train step (cpu preset")["module"] == "model"
    assert records.benchmark("norm choice")["module"] == "norm"
    with pytest.raises(ValueError, match="0 recorded benchmark rows"):
        records.benchmark("train step")
