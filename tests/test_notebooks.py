"""Execute every notebook in _toc.yml top to bottom under the ci profile, offline."""

from __future__ import annotations

import json
import os
import time

import nbformat
import pytest
from conftest import ROOT, toc_notebooks
from nbclient import NotebookClient

TIMES = ROOT / "_build" / "notebook-times.json"


@pytest.mark.notebook
@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    monkeypatch.setenv("TINYQWEN_PROFILE", "ci")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    TIMES.parent.mkdir(exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[path.name] = round(seconds, 1)
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))
    print(f"\n{path.name}: {seconds:.1f} s under the ci profile ({os.cpu_count()} CPUs)")
