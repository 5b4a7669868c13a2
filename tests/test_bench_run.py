"""The benchmark table says when and how each of its rows was measured."""

from __future__ import annotations

from benchmarks.run import markdown

MACHINE = {
    "cpu_model": "test CPU",
    "processor": "x86_64",
    "cpus": 2,
    "gpu": None,
    "python": "3.11",
    "torch": "2",
}


def _row(module: str) -> dict:
    return dict(
        benchmark=f"{module} bench",
        metric="time",
        unit="s",
        ours_name="ours",
        peer_name="peer",
        ours=1.0,
        peer=2.0,
        ratio=0.5,
        module=module,
    )


def test_a_table_gathered_from_several_runs_names_each_modules_run():
    result = {
        "date": "2026-12-02 01:06 UTC",
        "command": "python -m benchmarks.run --only moe",
        "machine": MACHINE,
        "rows": [_row("moe"), _row("norm")],
        "errors": {},
        "modules": {
            "moe": {
                "date": "2026-12-02 01:06 UTC",
                "command": "python -m benchmarks.run --only moe",
                "quick": False,
            },
            "norm": {
                "date": "2026-11-29 21:51 UTC",
                "command": "python -m benchmarks.run --quick",
                "quick": True,
            },
        },
    }
    text = markdown(result)
    assert (
        "* `norm`: 2026-11-29 21:51 UTC, `python -m benchmarks.run --quick` (quick sizes)" in text
    )
    assert "* `moe`: 2026-12-02 01:06 UTC, `python -m benchmarks.run --only moe`" in text
    one_run = {**result, "modules": {k: result["modules"]["moe"] for k in ("moe", "norm")}}
    assert "several runs" not in markdown(one_run)


def test_a_partial_run_replaces_its_modules_rows_and_the_unnamed_ones_of_the_same_kind(
    tmp_path, monkeypatch
):
    import json
    import sys
    import types

    from benchmarks import run

    old = {
        "date": "2026-11-29 21:51 UTC",
        "command": "python -m benchmarks.run --quick",
        "quick": True,
        "machine": MACHINE,
        "rows": [
            {**_row("norm"), "benchmark": "norm forward 4096x1024"},
            {**_row("x"), "benchmark": "optim: AdamW step"},
        ],
        "errors": {},
    }
    for r in old["rows"]:
        del r["module"]  # written before rows named their module
    (tmp_path / "latest.json").write_text(json.dumps(old))
    fake = types.ModuleType("benchmarks.bench_norm")
    fake.run = lambda quick: [{**_row("norm"), "benchmark": "norm forward 16384x2048"}]
    monkeypatch.setitem(sys.modules, "benchmarks.bench_norm", fake)
    monkeypatch.setattr(run, "machine", lambda: MACHINE)
    run.main(["--only", "norm", "--out", str(tmp_path / "latest")])
    result = json.loads((tmp_path / "latest.json").read_text())
    assert sorted(r["benchmark"] for r in result["rows"]) == [
        "norm forward 16384x2048",
        "optim: AdamW step",
    ]
    assert set(result["modules"]) == {"norm", "unnamed (2026-11-29 21:51 UTC)"}
