"""Runs that never lose or mix work: checkpoints, resume, out-dir ownership, the command line.

Each test reproduces a way a run used to lose or mix work (issue "Runs that never lose or mix
work") and shows what happens now. Tiny sizes: the `ci` preset on a few hundred stories.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinyqwen import train as T
from tinyqwen.model import Qwen3Config
from tinyqwen.optim import lr_schedule

SMALL = dict(
    n_docs=400,
    tokenizer_docs=400,
    batch_size=8,
    seq_len=32,
    eval_batches=2,
    progress=False,
    warmup_steps=1,
    sample_every=1000,
    sample_tokens=8,
)
ENV = {**os.environ, "TINYQWEN_PROFILE": "ci", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    cfg = T.train_config("ci", out_dir=str(tmp_path_factory.mktemp("prep")), **SMALL)
    return T.prepare_data(cfg, Qwen3Config.preset("ci").vocab_size)


def _cfg(out, data_dir, **kw):
    return T.train_config("ci", out_dir=str(out), data_dir=str(data_dir), **{**SMALL, **kw})


def _final(out: Path) -> dict:
    return load_file(out / "final" / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
    """An uninterrupted 12-step run: what every interrupted run must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("straight")
    T.train(_cfg(out, data_dir, max_steps=12, ckpt_every=3, eval_every=6))
    return _final(out)


def _interrupted(tmp_path, data_dir, damage):
    """A 12-step run (checkpoints every 3 steps, 3 kept) as if killed just after saving step 8:
    then damage its checkpoints, and resume it to the end."""
    out = tmp_path / "run"
    cfg = dict(max_steps=12, ckpt_every=3, eval_every=6, keep_checkpoints=3)
    T.train(_cfg(out, data_dir, **cfg))
    root = out / "checkpoints"
    shutil.rmtree(out / "final")
    shutil.rmtree(root / "step_0000011")
    (root / "latest").write_text("step_0000008")
    damage(root)
    T.train(_cfg(out, data_dir, resume=True, **cfg))
    return out


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda root: (root / "latest").write_bytes(b"\xff\xfe garbage"), "garbled pointer"),
        (lambda root: (root / "latest").unlink(), "missing pointer"),
        (lambda root: (root / "latest").write_text("step_0000999"), "pointer to a deleted folder"),
        (lambda root: _truncate(root / "step_0000008" / "model.safetensors"), "truncated weights"),
        (lambda root: _truncate(root / "step_0000008" / "trainer.pt"), "truncated trainer state"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_resume_survives_a_damaged_checkpoint_and_still_matches(
    tmp_path, data_dir, straight, damage, why, capsys
):
    out = _interrupted(tmp_path, data_dir, damage)
    assert _same(_final(out), straight), (
        f"after a {why}, the resumed run differs from the straight one"
    )
    said = capsys.readouterr()
    assert "resuming from" in said.out + said.err


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_checkpoints_exist_but_none_is_intact_is_loud(tmp_path, data_dir):
    out = tmp_path / "run"
    T.train(_cfg(out, data_dir, max_steps=4, ckpt_every=2, eval_every=100))
    for ckpt in (out / "checkpoints").glob("step_*"):
        _truncate(ckpt / "model.safetensors")
    with pytest.raises(ValueError, match="none is intact"):
        T.train(_cfg(out, data_dir, max_steps=6, ckpt_every=2, eval_every=100, resume=True))


def test_pruning_never_removes_the_checkpoint_just_written(tmp_path, data_dir):
    out = tmp_path / "run"
    result = T.train(_cfg(out, data_dir, max_steps=2, ckpt_every=1, eval_every=100))
    root = out / "checkpoints"
    for step in (79, 39):  # higher-numbered leftovers, e.g. from another run
        (root / "step_0000001").rename(root / f"step_{step:07d}") if step == 79 else None
    (root / "step_0000039").mkdir()
    sampler = T.TokenDataset(data_dir / "train.bin", SMALL["seq_len"], SMALL["batch_size"])
    opt = torch.optim.SGD(result["model"].parameters(), lr=0.1)
    written = T.save_checkpoint(
        out, 9, result["model"], opt, None, sampler, [], _cfg(out, data_dir), keep=2
    )
    assert written.exists() and (root / "latest").read_text() == written.name
    assert T.find_checkpoint(out) == written


def test_a_fresh_run_into_a_used_out_dir_is_refused_unless_overwrite(tmp_path, data_dir):
    out = tmp_path / "run"
    T.train(_cfg(out, data_dir, max_steps=2, ckpt_every=1, eval_every=100))
    with pytest.raises(ValueError, match="already holds a run"):
        T.train(_cfg(out, data_dir, max_steps=2, ckpt_every=1, eval_every=100, lr=1e-3))
    T.train(_cfg(out, data_dir, max_steps=3, ckpt_every=1, eval_every=100, lr=1e-3, overwrite=True))
    assert json.loads((out / "train_config.json").read_text())["lr"] == 1e-3
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == [
        "step_0000001",
        "step_0000002",
    ]


def test_overwrite_never_deletes_a_folder_the_trainer_did_not_make(tmp_path, data_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="did not make"):
        T.train(_cfg(out, data_dir, max_steps=2, overwrite=True))
    assert (out / "thesis.tex").read_text() == "years of work"


def test_a_live_run_holds_its_out_dir_and_a_dead_ones_lock_is_taken_over(tmp_path, data_dir):
    out = tmp_path / "run"
    out.mkdir()
    lock = T.acquire_run_lock(out)  # this very process holds it: alive
    with pytest.raises(RuntimeError, match="in use by another run"):
        T.train(_cfg(out, data_dir, max_steps=2, eval_every=100))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    info = json.loads(lock.read_text())
    lock.write_text(json.dumps({**info, "pid": int(dead.stdout), "start": None}))
    T.train(_cfg(out, data_dir, max_steps=2, eval_every=100))  # takes the stale lock over
    assert not lock.exists(), "the lock is released when the run ends"


def test_resume_applies_allowed_changes_and_records_them(tmp_path, data_dir):
    out = tmp_path / "run"
    T.train(
        _cfg(out, data_dir, max_steps=4, ckpt_every=2, eval_every=100, lr=3e-3, weight_decay=0.1)
    )
    result = T.train(
        _cfg(
            out,
            data_dir,
            max_steps=6,
            ckpt_every=2,
            eval_every=100,
            lr=1e-3,
            weight_decay=0.05,
            resume=True,
        )
    )
    ran = json.loads((out / "train_config.json").read_text())
    assert (ran["lr"], ran["weight_decay"], ran["max_steps"]) == (1e-3, 0.05, 6)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    resumed = next(e for e in events if e["event"] == "resume")
    assert resumed["changes"]["lr"] == [3e-3, 1e-3] and resumed["changes"]["weight_decay"] == [
        0.1,
        0.05,
    ]
    assert result["history"][-1]["step"] == 5
    expected = lr_schedule(
        5, max_lr=1e-3, warmup_steps=1, total_steps=6, kind="cosine", min_lr_ratio=0.1
    )
    assert result["history"][-1]["lr"] == expected, "the new peak learning rate must be applied"


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(model_overrides={"num_hidden_layers": 3}), "model_overrides"),
        (dict(optimizer="muon"), "optimizer"),
        (dict(batch_size=4), "batch_size"),
        (dict(seed=1), "seed"),
    ],
    ids=["model size", "optimizer", "batch size", "seed"],
)
def test_resume_refuses_changes_that_would_train_another_run(tmp_path, data_dir, change, field):
    out = tmp_path / "run"
    T.train(_cfg(out, data_dir, max_steps=2, ckpt_every=1, eval_every=100))
    # the seed also decides the prepared data, which refuses first, naming it as well
    with pytest.raises(
        ValueError, match=rf"(cannot resume|prepared with other settings)(.|\n)*{field}: "
    ):
        T.train(
            _cfg(out, data_dir, max_steps=4, ckpt_every=1, eval_every=100, resume=True, **change)
        )


def test_resume_with_other_data_is_refused_before_the_data_is_touched(tmp_path):
    """A resume that names another source must not rebuild the run's token files first."""
    out = tmp_path / "run"
    T.train(T.train_config("ci", out_dir=str(out), **{**SMALL, "max_steps": 2, "ckpt_every": 1}))
    meta = (out / "data" / "meta.json").read_bytes()
    story = tmp_path / "other.txt"
    story.write_text("Once upon a time a cat sat on a mat.\n\n" * 400)
    with pytest.raises(ValueError, match=r"cannot resume(.|\n)*data: "):
        T.train(
            T.train_config(
                "ci", out_dir=str(out), data=str(story), resume=True, **{**SMALL, "max_steps": 4}
            )
        )
    assert (out / "data" / "meta.json").read_bytes() == meta, "the run's data was rebuilt"


def _syncs(monkeypatch, cfg) -> int:
    """Host synchronisations during train(cfg): every way a tensor's value reaches Python."""
    count = [0]
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            count[0] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    T.train(cfg)
    monkeypatch.undo()
    return count[0]


def test_the_trainer_waits_for_the_device_only_every_log_every_steps(
    tmp_path, data_dir, monkeypatch
):
    quiet = dict(eval_every=1000, ckpt_every=1000, sample_every=1000, log_every=10)
    n20 = _syncs(monkeypatch, _cfg(tmp_path / "a", data_dir, max_steps=20, **quiet))
    n40 = _syncs(monkeypatch, _cfg(tmp_path / "b", data_dir, max_steps=40, **quiet))
    assert n40 - n20 == 2, (
        f"20 more steps cost {n40 - n20} synchronisations; two flushes should cost 2"
    )
    every_step = _syncs(
        monkeypatch, _cfg(tmp_path / "c", data_dir, max_steps=20, **{**quiet, "log_every": 1})
    )
    assert every_step - n20 == 18, "the counter must see one flush per step with log_every=1"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "batch_size=abc"], "batch_size='abc' must be int"),
        (["--max-steps", "4"], "warmup_steps=10 must be between 0 and max_steps=4"),
        (["--set", "lr=1e-3", "--set", "lr=2e-3"], "lr is given twice"),
        (["--set", "nonsense=1"], "KEY a TrainConfig field"),
        (["--resume", "--overwrite"], "exclude each other"),
    ],
)
def test_command_line_mistakes_get_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        T.parse_args(["--preset", "ci", *argv])
    assert message in capsys.readouterr().err


def test_set_given_twice_keeps_both():
    cfg = T.parse_args(["--preset", "ci", "--set", "lr=1e-3", "--set", "batch_size=4"])
    assert (cfg.lr, cfg.batch_size) == (1e-3, 4)


def test_help_states_what_survives_and_what_is_refused(capsys):
    with pytest.raises(SystemExit):
        T.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--resume" in text and "intact checkpoint" in text and "--overwrite" in text


def _cli(out: Path, *extra: str) -> list[str]:
    small = {k: v for k, v in SMALL.items() if k != "progress"}
    return [
        sys.executable,
        "-m",
        "tinyqwen.train",
        "--preset",
        "ci",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        *[f"{k}={json.dumps(v)}" for k, v in small.items()],
        *extra,
    ]


def _latest_step(run: Path) -> int:
    try:
        return int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step_"))
    except (OSError, ValueError):
        return -1


def _kill_when(proc, ready, rng, timeout=120.0, delay=0.03) -> bool:
    """SIGKILL `proc` a random moment (up to `delay` s) after `ready()` holds; False if it ended
    first. The delay is short so that a fast machine cannot finish the run in it."""
    deadline = time.time() + timeout
    while proc.poll() is None and not ready() and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, delay))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Kill -9 again and again: once while the run prepares its own data, then at random moments
    after it made progress (it saves a checkpoint every step, so most kills land in checkpoint
    writing and pruning); resume each time; the result equals an uninterrupted run."""
    steps = ["max_steps=24", "ckpt_every=1", "eval_every=8", "keep_checkpoints=2"]
    subprocess.run(
        _cli(tmp_path / "straight", "--set", *steps), check=True, env=ENV, capture_output=True
    )
    run, rng, kills = tmp_path / "killed", random.Random(0), 0

    def start(resume: bool):
        return subprocess.Popen(
            _cli(run, "--set", *steps) + (["--resume"] if resume else []),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    kills += _kill_when(
        start(False), lambda: (run / "data").exists(), rng, delay=0.4
    )  # during data preparation
    for _ in range(6):
        before = _latest_step(run)
        proc, ahead = start(True), rng.randint(1, 2)  # kill after one or two new checkpoints
        if not _kill_when(proc, lambda b=before + ahead - 1: _latest_step(run) > b, rng):
            assert proc.returncode == 0, proc.stderr.read()[-3000:]
            break
        kills += 1
    if not (run / "final").exists():
        last = subprocess.run(
            _cli(run, "--set", *steps, "--resume"), env=ENV, capture_output=True, text=True
        )
        assert last.returncode == 0, last.stderr[-3000:]
    assert kills >= 5, f"only {kills} kills landed"
    assert _same(_final(run), _final(tmp_path / "straight")), (
        f"after {kills} kills the weights differ"
    )
