"""What publishing needs: valid workflows and notebooks that ask Colab for a GPU where it helps."""

from __future__ import annotations

import yaml

from conftest import ROOT, chapter_notebooks, read_nb

# Chapters whose cpu/gpu profiles train or time models, and so benefit from a GPU runtime.
GPU_CHAPTERS = {"03", "05", "06", "08", "10", "11"}


def _workflow(name):
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as True
    return data, data.get("on", data.get(True))


def test_book_workflow_builds_and_deploys_pages_on_main():
    wf, on = _workflow("book.yml")
    assert on["push"]["branches"] == ["main"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    runs = " ".join(s.get("run", "") for s in build["steps"])
    uses = [s.get("uses", "") for s in build["steps"]] + [
        s.get("uses", "") for s in deploy["steps"]
    ]
    assert "make book" in runs
    assert any(u.startswith("actions/cache") for u in uses), (
        "the executed notebooks should be cached"
    )
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert deploy["needs"] == "build" and wf["permissions"]["pages"] == "write"


def test_test_workflow_runs_make_test():
    wf, on = _workflow("test.yml")
    assert "push" in on
    runs = " ".join(s.get("run", "") for j in wf["jobs"].values() for s in j["steps"])
    assert "make test" in runs


def test_gpu_chapters_ask_colab_for_a_gpu():
    for path in chapter_notebooks():
        if path.name[:2] in GPU_CHAPTERS:
            meta = read_nb(path).metadata
            assert meta.get("accelerator") == "GPU", (
                f"{path.name}: metadata.accelerator should be 'GPU'"
            )
            assert meta.get("colab", {}).get("gpuType"), (
                f"{path.name}: metadata.colab.gpuType missing"
            )
