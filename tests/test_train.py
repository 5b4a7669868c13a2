"""Chapter 11 (part 2): the trainer — learning, resuming bit-for-bit, DDP, NaN guard, presets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinyqwen.data import TokenDataset
from tinyqwen.model import Qwen3Config
from tinyqwen.train import preset_plan, save_checkpoint, train, train_config

SMALL = dict(
    n_docs=600, tokenizer_docs=600, batch_size=8, seq_len=64, eval_batches=2, progress=False
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Token files prepared once for every test here (synthetic stories, ci tokenizer)."""
    from tinyqwen.train import prepare_data

    cfg = train_config("ci", out_dir=str(tmp_path_factory.mktemp("prep")), **SMALL)
    return prepare_data(cfg, Qwen3Config.preset("ci").vocab_size)


def _cli(out: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tinyqwen.train",
        "--preset",
        "ci",
        "--out",
        str(out),
        "--data-dir",
        str(data),
        "--no-progress",
        "--set",
        *[f"{k}={json.dumps(v)}" for k, v in SMALL.items() if k != "progress"],
        *extra,
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


ENV = {**os.environ, "TINYQWEN_PROFILE": "ci", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_ci_preset_learns_below_the_unigram_baseline(tmp_path, data_dir):
    result = train(
        train_config(
            "ci",
            out_dir=str(tmp_path),
            data_dir=str(data_dir),
            max_steps=80,
            eval_every=40,
            ckpt_every=80,
            sample_every=80,
            **SMALL,
        )
    )
    evals = [r["val_loss"] for r in result["history"] if "val_loss" in r]
    assert evals[-1] < result["unigram_entropy"] - 0.3, (
        f"validation loss {evals[-1]:.3f} is not clearly below the unigram entropy {result['unigram_entropy']:.3f}"
    )
    assert evals[-1] < evals[0]
    assert (tmp_path / "final" / "config.json").exists() and (
        tmp_path / "final" / "tokenizer.json"
    ).exists()


def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path, data_dir):
    steps = ["max_steps=36", "ckpt_every=6", "eval_every=12", "sample_every=1000"]
    subprocess.run(
        _cli(tmp_path / "straight", data_dir, *steps), check=True, env=ENV, capture_output=True
    )
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(run, data_dir, *steps), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() >= "step_0000017":
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists()
    resumed = subprocess.run(
        _cli(run, data_dir, *steps, "--resume"), env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different[:5]}"


def test_torchrun_two_processes_match_one(tmp_path, data_dir):
    steps = ["max_steps=12", "ckpt_every=100", "eval_every=6", "sample_every=1000"]
    subprocess.run(
        _cli(tmp_path / "one", data_dir, *steps), check=True, env=ENV, capture_output=True
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *_cli(tmp_path / "two", data_dir, *steps)[1:],
    ]
    two = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    l1, l2 = torch.tensor([r["loss"] for r in h1]), torch.tensor([r["loss"] for r in h2])
    # Same global batch, split across the two ranks; DDP averages gradients in another order,
    # so the curves agree to float32 rounding, which grows slowly over steps.
    torch.testing.assert_close(l2, l1, rtol=1e-3, atol=1e-4)


def test_nan_guard_stops_with_a_clear_message_or_skips(tmp_path, data_dir):
    cfg = dict(
        data_dir=str(data_dir),
        max_steps=6,
        warmup_steps=0,
        lr=1e12,
        ckpt_every=100,
        eval_every=100,
        sample_every=100,
        **SMALL,
    )
    with pytest.raises(FloatingPointError, match="not finite"):
        train(train_config("ci", out_dir=str(tmp_path / "stop"), **cfg))
    result = train(train_config("ci", out_dir=str(tmp_path / "skip"), nan_policy="skip", **cfg))
    assert len(result["history"]) < 6


def test_a_crash_during_a_save_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    from tinyqwen import train as train_module

    result = train(
        train_config(
            "ci",
            out_dir=str(tmp_path),
            data_dir=str(data_dir),
            max_steps=4,
            warmup_steps=1,
            ckpt_every=2,
            eval_every=100,
            sample_every=100,
            **SMALL,
        )
    )
    latest = (tmp_path / "checkpoints" / "latest").read_text()
    assert latest == "step_0000003"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train_module.torch, "save", crash)
    sampler = TokenDataset(data_dir / "train.bin", SMALL["seq_len"], SMALL["batch_size"])
    with pytest.raises(OSError):
        save_checkpoint(
            tmp_path,
            5,
            result["model"],
            torch.optim.SGD(result["model"].parameters(), lr=0.1),
            None,
            sampler,
            [],
            train_config("ci"),
        )
    assert not (tmp_path / "checkpoints" / "step_0000005").exists()
    assert (tmp_path / "checkpoints" / "latest").read_text() == latest
    assert (tmp_path / "checkpoints" / latest / "trainer.pt").exists()


def test_final_model_loads_in_transformers(tmp_path, data_dir):
    transformers = pytest.importorskip("transformers")
    result = train(
        train_config(
            "ci",
            out_dir=str(tmp_path),
            data_dir=str(data_dir),
            max_steps=3,
            warmup_steps=1,
            ckpt_every=100,
            eval_every=100,
            sample_every=100,
            **SMALL,
        )
    )
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 16))
    ours = result["model"].eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_t4_preset_fits_a_16gb_t4_and_an_hour():
    """Chapter 8's plan of the t4 preset: memory by its calculator, time at its assumed MFU."""
    plan = preset_plan("t4", "T4")
    assert plan["memory"]["total"] < 14e9, (
        f"t4 needs {plan['memory']['total'] / 1e9:.1f} GB of a T4's 16 GB (leave room for the CUDA context)"
    )
    assert plan["seconds"] < 3600, (
        f"t4 preset needs {plan['seconds'] / 60:.0f} min at {plan['assumed_mfu']:.0%} MFU"
    )


def test_presets_are_complete():
    for name in ("ci", "cpu", "t4", "a100", "h100", "qwen3-283m"):
        cfg = train_config(name)
        Qwen3Config.preset(cfg.preset)
        assert cfg.seq_len <= Qwen3Config.preset(cfg.preset).max_position_embeddings
    with pytest.raises(ValueError, match="unknown training preset"):
        train_config("tpu")
    with pytest.raises(ValueError, match="optimizer"):
        train_config("ci", optimizer="lion")
