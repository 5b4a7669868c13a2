"""Execute every notebook in _toc.yml top to bottom under the ci profile, offline."""

from __future__ import annotations

import json
import os

import pytest

from tinyqwen.grading import scores

from conftest import ROOT, executed, toc_notebooks

TIMES = ROOT / "_build" / "notebook-times.json"


@pytest.mark.notebook
@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_with_full_marks(path):
    run = executed(path)
    nb, seconds = run.nb, run.seconds
    TIMES.parent.mkdir(exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[path.name] = round(seconds, 1)
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))
    print(f"\n{path.name}: {seconds:.1f} s under the ci profile ({os.cpu_count()} CPUs)")
    lost = [s for s in scores(nb) if s["points"] < s["max_points"]]
    assert not lost, f"the instructor edition loses points: {lost}"
