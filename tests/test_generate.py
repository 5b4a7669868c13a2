"""python -m tinyqwen.generate: streaming samples from a run, a checkpoint or a model folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyqwen import train as T
from tinyqwen.generate import resolve, stream
from tinyqwen.model import Qwen3ForCausalLM
from tinyqwen.tokenizer import BPETokenizer

ENV = {**os.environ, "TINYQWEN_PROFILE": "ci", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    T.train(
        T.train_config(
            "ci",
            out_dir=str(out),
            n_docs=400,
            tokenizer_docs=400,
            batch_size=8,
            seq_len=32,
            max_steps=30,
            warmup_steps=2,
            eval_every=30,
            ckpt_every=15,
            sample_every=1000,
            eval_batches=2,
            progress=False,
        )
    )
    return out


def _greedy(model_dir: Path, tokenizer_path: Path, prompt: str, n: int) -> str:
    model = Qwen3ForCausalLM.from_pretrained(model_dir).eval()
    tok = BPETokenizer.load(tokenizer_path)
    ids = model.generate(torch.tensor([tok.encode(prompt)]), n, eos_token_id=tok.eot_id)
    return tok.decode(ids[0].tolist())


def test_the_command_streams_the_greedy_text_of_the_final_model(run):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinyqwen.generate",
            str(run),
            "--prompt",
            "Once upon a time",
            "--greedy",
            "--max-new-tokens",
            "24",
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    expected = _greedy(run / "final", run / "final" / "tokenizer.json", "Once upon a time", 24)
    assert out.stdout.rstrip("\n") == expected.split("<|endoftext|>")[0]
    assert "<|endoftext|>" not in out.stdout


def test_a_checkpoint_folder_and_a_run_still_training_resolve(run):
    ckpt = T.find_checkpoint(run)
    assert resolve(ckpt) == (ckpt, run / "tokenizer.json")
    assert resolve(run)[0] == run / "final"


def test_streaming_writes_piece_by_piece_and_keeps_utf8_whole(run):
    model = Qwen3ForCausalLM.from_pretrained(run / "final").eval()
    tok = BPETokenizer.load(run / "tokenizer.json")
    sink = io.StringIO()
    writes = []
    sink.write = lambda s, _w=sink.write: (writes.append(s), _w(s))[1]
    text = stream(
        model,
        tok,
        "Lily é",
        max_new_tokens=12,
        temperature=0.8,
        top_k=50,
        top_p=None,
        seed=1,
        out=sink,
    )
    assert len(writes) > 3 and text.startswith("Lily é") and "\ufffd" not in text[: len("Lily é")]


def test_a_wrong_path_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tinyqwen.generate", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "neither a run folder" in out.stderr


def test_transformers_pipeline_writes_the_same_greedy_text(run):
    transformers = pytest.importorskip("transformers")
    pipe = transformers.pipeline("text-generation", model=str(run / "final"), device="cpu")
    assert pipe.model.config.eos_token_id == pipe.tokenizer.eos_token_id, (
        "stories end in both models"
    )
    theirs = pipe("Once upon a time", max_new_tokens=16, do_sample=False, return_full_text=True)[0][
        "generated_text"
    ]
    ours = _greedy(run / "final", run / "final" / "tokenizer.json", "Once upon a time", 16)
    assert theirs == ours.split("<|endoftext|>")[0]
