"""Chapter time budgets: the record, the tool that makes it, and the gpu-profile estimate."""

from __future__ import annotations

import json

import nbformat
import pytest

from benchmarks import notebook_times as nt
from tinyqwen.records import chapter_time, load

from conftest import ROOT, chapter_notebooks, toc_notebooks


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_every_chapter_is_recorded_within_its_budget(profile):
    record = load(f"notebook-times-{profile}.json")
    assert record is not None, (
        f"no benchmarks/results/notebook-times-{profile}.json: make notebook-times PROFILE={profile}"
    )
    for key in ("date", "command", "machine", "device", "kind"):
        assert key in record, f"the record does not say its {key}"
    missing = [p.stem for p in toc_notebooks() if p.stem not in record["notebooks"]]
    assert not missing, f"chapters without a recorded {profile} time: {missing}"
    over = {
        name: round(e["seconds"])
        for name, e in record["notebooks"].items()
        if e["seconds"] > nt.BUDGET_SECONDS and not (profile == "gpu" and name == "11_train_on_gpu")
    }
    assert not over, f"chapters over the {nt.BUDGET_SECONDS} s budget under {profile}: {over}"


def test_each_chapter_states_its_time_from_the_record():
    record = load("notebook-times-cpu.json") or {"notebooks": {}}
    for path in chapter_notebooks():
        setup = next(
            c.source
            for c in nbformat.read(path, as_version=4).cells
            if c.cell_type == "code" and "from tinyqwen.runtime import setup" in c.source
        )
        assert f'chapter="{path.stem}"' in setup, (
            f"{path.name}: setup(..., chapter=...) states the time"
        )
        if path.stem in record["notebooks"]:
            line = chapter_time(path.stem, "cpu")
            assert "[cpu: " in line and "not measured" not in line.split("[cpu:")[1].split("]")[0]


def test_the_tool_times_a_notebook_and_names_its_slowest_cells(tmp_path):
    out = tmp_path / "results"
    assert (
        nt.main(
            [
                "--profile",
                "ci",
                "--notebooks",
                str(ROOT / "notebooks" / "_template.ipynb"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "notebook-times-ci.json").read_text())
    entry = record["notebooks"]["_template"]
    assert record["kind"] == "measurement" and entry["seconds"] > 0
    assert (
        len(entry["slowest_cells"]) == 3
        and entry["slowest_cells"][0]["seconds"] >= entry["slowest_cells"][1]["seconds"]
    )


def test_each_chapter_runs_in_a_fresh_folder_as_a_first_run(tmp_path):
    """A chapter that keeps its run folder (chapter 11 part 2) must not resume an earlier one."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from pathlib import Path\n"
            "assert not Path('runs').exists(), 'resumed an earlier run'\n"
            "Path('runs').mkdir()"
        )
    ]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    for _ in range(2):
        entry = nt.run_notebook(path, "ci", rehearse=False, timeout=60)
        assert entry["cells_with_errors"] == []
    assert not (tmp_path / "runs").exists()


def _rec(desc, total, depth, flops, ops=0, runs=2, seconds=0.1):
    return {
        "desc": desc,
        "total": total,
        "depth": depth,
        "iterations_run": runs,
        "seconds_per_iteration": seconds,
        "flops_per_iteration": flops,
        "ops_per_iteration": ops,
        "finished": 0.0,
    }


def test_the_estimate_folds_nested_loops_into_the_outer_one():
    peak = nt.t4_peak(nt.T4_ASSUMED["precision"]) * nt.T4_ASSUMED["utilisation"]
    inner = 1e12  # FLOPs per inner step
    records = [
        _rec("steps", 100, 2, inner),
        _rec("steps", 100, 2, inner),
        _rec("sweep", 8, 1, 100 * 0 + 2 * inner * 2 / 2 + 1e9),
    ]  # 2 inner runs of 2 steps, + own work
    (outer,) = nt.loop_estimates(records)
    per_sweep_point = 100 * inner / peak + 1e9 / peak
    assert outer["estimated_gpu_seconds"] == pytest.approx(8 * per_sweep_point, rel=1e-9)


def test_tiny_steps_are_bounded_by_launch_overhead_not_flops():
    (loop,) = nt.loop_estimates([_rec("tiny", 1000, 1, flops=1e3, ops=50)])
    assert loop["estimated_gpu_seconds"] == pytest.approx(
        1000 * 50 * nt.T4_ASSUMED["seconds_per_op"]
    )


def test_chapter_11_part_2s_training_counts_the_time_the_chapter_states():
    from tinyqwen.train import preset_plan

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("train(cfg)")
    cell.metadata["execution"] = {
        "iopub.execute_input": "2026-12-02T00:00:00Z",
        "shell.execute_reply": "2026-12-02T00:00:10Z",
    }
    nb.cells = [cell]
    loop = {**_rec("training", 5000, 1, flops=1e15), "finished": cell_end(cell)}
    estimate = nt.estimate_notebook(nb, [loop], nt.stated_seconds("11_train_on_gpu"))
    assert estimate["gpu_stage_seconds"] == pytest.approx(preset_plan("t4", "T4")["seconds"])
    assert nt.estimate_notebook(nb, [loop])["gpu_stage_seconds"] > estimate["gpu_stage_seconds"]


def cell_end(cell) -> float:
    return nt.cell_window(cell)[1]
