"""Runtime profiles, seeding and the text sources."""

from __future__ import annotations

import socket

import pytest
import torch

from tinyqwen import runtime, sources


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("TINYQWEN_PROFILE", "cpu")
    assert runtime.current_profile() == "cpu"
    monkeypatch.setenv("TINYQWEN_PROFILE", "huge")
    with pytest.raises(ValueError, match="huge"):
        runtime.current_profile()


def test_pick_and_device(monkeypatch):
    monkeypatch.setenv("TINYQWEN_PROFILE", "ci")
    rt = runtime.setup(seed=3, verbose=False)
    assert rt.profile == "ci" and rt.offline and rt.device == torch.device("cpu")
    assert rt.pick(ci=1, cpu=2, gpu=3) == 1


def test_seed_makes_runs_repeat():
    runtime.seed_everything(7)
    a = torch.randn(5)
    runtime.seed_everything(7)
    assert torch.equal(a, torch.randn(5))
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)


def test_synthetic_stories_are_deterministic_and_varied():
    a, b = sources.synthetic_stories(200, seed=1), sources.synthetic_stories(200, seed=1)
    assert a == b and a != sources.synthetic_stories(200, seed=2)
    assert len(set(a)) == len(a), "stories repeat"
    words = {w for s in a for w in s.split()}
    assert len(words) > 400, f"vocabulary too small: {len(words)} distinct words"
    shapes = {s.split(".")[0].split()[0] for s in a}
    assert len(shapes) >= 4, f"too few sentence openings: {shapes}"


def test_synthetic_stories_reuse_their_characters_and_objects():
    """Context matters: the hero's name and their object come back later in the same story."""
    for story in sources.synthetic_stories(100, seed=0):
        first, rest = story.split(". ", 1)
        name = [
            w
            for w in first.replace(".", "").split()
            if w[0].isupper() and w not in ("Once", "One", "There")
        ]
        assert name and name[-1] in rest, story


def test_ci_profile_never_touches_the_network(monkeypatch):
    monkeypatch.setenv("TINYQWEN_PROFILE", "ci")

    def refuse(*args, **kwargs):
        raise AssertionError("network touched under the ci profile")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert sources.hub_reachable() is False
    docs = sources.load_stories("auto", 5, verbose=False)
    assert docs == sources.synthetic_stories(5, seed=0)


def test_offline_detection_is_fast(monkeypatch):
    monkeypatch.setenv("TINYQWEN_PROFILE", "cpu")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert sources.hub_reachable() is False


def test_validation_split_differs_from_train():
    train = sources.load_stories("synthetic", 50, verbose=False)
    val = sources.load_stories("synthetic", 50, split="validation", verbose=False)
    assert not set(train) & set(val)


def test_local_file_source(tmp_path, capsys):
    f = tmp_path / "stories.txt"
    f.write_text("One story.\n<|endoftext|>\nAnother story.\n<|endoftext|>\n")
    assert sources.load_stories(str(f), 10) == ["One story.", "Another story."]
    assert "local file" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a file"):
        sources.load_stories(str(tmp_path / "missing.txt"))


def test_progress_counts_every_item_normally(monkeypatch):
    from tinyqwen.runtime import REHEARSAL_ENV, progress

    monkeypatch.delenv(REHEARSAL_ENV, raising=False)
    assert sum(progress(range(100), desc="x", disable=True)) == 4950


def test_a_rehearsal_runs_two_iterations_and_logs_their_cost(monkeypatch, tmp_path):
    import json

    import torch

    from tinyqwen.runtime import REHEARSAL_ENV, progress

    log = tmp_path / "rehearsal.jsonl"
    monkeypatch.setenv(REHEARSAL_ENV, str(log))
    w, seen = torch.randn(32, 32), []
    for outer in progress(range(5), desc="outer", disable=True):
        for step in progress(range(50), desc="inner", disable=True):
            seen.append((outer, step))
            (torch.randn(4, 32) @ w).sum()
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["desc"], r["total"], r["depth"]) for r in records] == [
        ("inner", 50, 2),
        ("inner", 50, 2),
        ("outer", 5, 1),
    ]
    assert records[0]["flops_per_iteration"] == 2 * 4 * 32 * 32
    assert records[-1]["flops_per_iteration"] == 2 * records[0]["flops_per_iteration"]
