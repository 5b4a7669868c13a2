"""`make gpu-check` in its dry form: the same script, on the CPU, with the ci preset."""

from __future__ import annotations

import json

from benchmarks import gpu_check


def test_dry_gpu_check_measures_and_writes_its_table(tmp_path):
    assert gpu_check.main(["--dry", "--out", str(tmp_path), "--data", str(tmp_path / "data")]) == 0
    record = json.loads((tmp_path / "gpu-dry.json").read_text())
    (run,) = record["runs"]
    assert run["preset"] == "ci" and run["steps_timed"] == 3 and run["tokens_per_s"] > 0
    assert 0 < run["mfu"] < 1 and run["predicted_memory_bytes"] > 0
    assert run["host_syncs_per_step"] == 0
    for key in ("date", "command", "commit", "machine", "seconds", "generation"):
        assert key in record, key
    assert record["generation"]["ours_tokens_per_s"] > 0
    table = (tmp_path / "gpu.md").read_text()
    assert "| ci | no | float32 |" in table and "transformers" in table


def test_the_appendix_table_says_when_nothing_was_recorded():
    assert "No GPU check has been recorded yet" in gpu_check.markdown([])
