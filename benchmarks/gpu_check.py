"""GPU evidence in one command: ``make gpu-check`` (``python -m benchmarks.gpu_check``).

For every training preset whose predicted memory fits the GPU, a short run at the preset's full
model and batch shape on the offline story source, eager and with ``torch.compile``, in the
preset's precision (bfloat16 where the GPU has it, else float16 with the gradient scaler):
tokens/s, MFU, peak memory beside chapter 8's prediction, time per step, host synchronisations
per step, and whether the loss falls. Then cached generation, tokens/s, against ``transformers``
on the same GPU. Writes ``benchmarks/results/gpu-<device>.json`` and regenerates
``benchmarks/results/gpu.md``, the table the benchmark appendix includes.

MFU counts 6N plus the attention term in full (PaLM's convention; chapter 8) against the GPU's
datasheet peak for the precision used. ``--dry`` runs the same code on the CPU with the ``ci``
preset in seconds (the test suite does), and writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch

from tinyqwen.accel import autocast_for, flops_per_token, peak_flops, training_memory
from tinyqwen.data import TokenDataset, prepare_corpus
from tinyqwen.model import Qwen3Config, Qwen3ForCausalLM
from tinyqwen.optim import build_optimizer, set_lr
from tinyqwen.train import TRAIN_PRESETS, apply_update, train_config, train_step

RESULTS = Path(__file__).resolve().parent / "results"
GPU_PRESETS = ("t4", "a100", "h100", "qwen3-283m")


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "memory_gb": round(props.total_memory / 1e9, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
    else:
        info |= {"gpu": None, "cpu": f"{os.cpu_count()} CPU cores (a dry run)", "memory_gb": None}
    return info


def prepare_tokens(vocab_size: int, n_docs: int, where: Path) -> Path:
    """Synthetic stories (offline), a tokenizer of `vocab_size`, token files: once per vocab."""
    out = where / f"synthetic-{vocab_size}-{n_docs}"
    prepare_corpus(
        "synthetic",
        n_docs,
        out_dir=out,
        vocab_size=vocab_size,
        tokenizer_docs=n_docs,
        on_mismatch="rebuild",
        progress=False,
    )
    return out


class SyncCounter:
    """Counts the host synchronisations CUDA reports (torch.cuda.set_sync_debug_mode)."""

    def __enter__(self):
        self.count = 0
        self._catch = warnings.catch_warnings(record=True)
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        self.count = sum("synchroniz" in str(w.message) for w in self._log)
        self._catch.__exit__(*exc)


def run_preset(
    preset: str,
    data_dir: Path,
    device: torch.device,
    *,
    compile_model: bool,
    steps: int,
    warmup: int,
    model_overrides: dict | None = None,
) -> dict:
    """A short run at `preset`'s model and batch shape; what it measured."""
    cfg = train_config(preset)
    model_cfg = Qwen3Config.preset(cfg.preset, **(model_overrides or {}))
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(model_cfg).to(device)
    optimizer = build_optimizer(
        model, cfg.optimizer, lr=cfg.lr, muon_lr=cfg.muon_lr, weight_decay=cfg.weight_decay
    )
    autocast, scaler = autocast_for(device)
    step_model = torch.compile(model) if compile_model else model
    data = TokenDataset(data_dir / "train.bin", cfg.seq_len, cfg.batch_size, seed=0, device=device)
    schedule = dict(
        warmup_steps=max(1, (warmup + steps) // 5), total_steps=warmup + steps, min_lr_ratio=0.1
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []

    def step(i: int) -> None:
        set_lr(optimizer, i, **schedule)
        batches = [data.next_batch() for _ in range(cfg.grad_accum)]
        loss, _ = train_step(
            step_model,
            optimizer,
            scaler,
            batches,
            autocast=autocast,
            grad_clip=cfg.grad_clip,
            chunked_loss=cfg.chunked_loss,
        )
        apply_update(optimizer, scaler)
        losses.append(loss)

    for i in range(warmup):  # compilation and allocator warm-up are not timed
        step(i)
    sync()
    start = time.perf_counter()
    with SyncCounter() as counter:
        for i in range(warmup, warmup + steps):
            step(i)
    sync()
    seconds, syncs = time.perf_counter() - start, counter.count
    losses = torch.stack(losses).float().tolist()
    tokens_per_s = steps * cfg.tokens_per_step / seconds
    peak = peak_flops(device, autocast.dtype)
    predicted = training_memory(
        model_cfg,
        cfg.batch_size,
        cfg.seq_len,
        cfg.optimizer,
        autocast_dtype=autocast.dtype if autocast.enabled else None,
        loss="chunked" if cfg.chunked_loss else "fused",
        device=device.type,
    )["total"]
    k = max(1, len(losses) // 5)
    return {
        "preset": preset,
        "compile": compile_model,
        "precision": str(autocast.dtype).removeprefix("torch."),
        "grad_scaler": scaler is not None,
        "batch": f"{cfg.batch_size}x{cfg.seq_len}x{cfg.grad_accum}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_timed": steps,
        "seconds_per_step": seconds / steps,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token(model_cfg, cfg.seq_len) / peak,
        "peak_flops": peak,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else None,
        "predicted_memory_bytes": predicted,
        "host_syncs_per_step": syncs / steps,
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "loss_falls": sum(losses[-k:]) / k < sum(losses[:k]) / k,
    }


def generation(preset: str, device: torch.device, *, new_tokens: int, repeats: int) -> dict:
    """Cached greedy generation, tokens/s: our model against transformers' with the same weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    ours = Qwen3ForCausalLM(Qwen3Config.preset(preset)).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = AutoModelForCausalLM.from_pretrained(tmp).to(device).eval()
    prompt = torch.randint(0, ours.config.vocab_size, (1, 16), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    def ours_fn():
        return ours.generate(prompt, new_tokens)

    def theirs_fn():
        return theirs.generate(
            prompt,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
        )

    with torch.no_grad():
        ours_fn(), theirs_fn()  # warm up
        t_ours = sorted(timed(ours_fn) for _ in range(repeats))[repeats // 2]
        t_theirs = sorted(timed(theirs_fn) for _ in range(repeats))[repeats // 2]
    return {
        "preset": preset,
        "new_tokens": new_tokens,
        "ours_tokens_per_s": new_tokens / t_ours,
        "transformers_tokens_per_s": new_tokens / t_theirs,
        "ratio": t_theirs / t_ours,
    }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _gb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e9:.2f}"


def markdown(results: list[dict]) -> str:
    """The appendix's table: every recorded GPU check, newest first."""
    if not results:
        return (
            "No GPU check has been recorded yet. On a machine with a CUDA GPU, `make gpu-check` "
            "measures it and writes the result here.\n"
        )
    lines = []
    for r in sorted(results, key=lambda r: r["date"], reverse=True):
        m = r["machine"]
        where = f"{m['gpu']} ({m['memory_gb']} GB)" if m["gpu"] else m["cpu"]
        lines += [
            f"### {where}, {r['date']}",
            "",
            f"`{r['command']}` at commit {str(r.get('commit'))[:10]}, torch {m['torch']}, CUDA {m.get('cuda')}; "
            f"{r['seconds']:.0f} s in all. MFU: 6N plus full attention per token (PaLM's convention) "
            "over the datasheet peak of the precision used.",
            "",
            "| preset | compile | precision | batch | s/step | tokens/s | MFU | peak memory (GB) | predicted (GB) | syncs/step | loss falls |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in r["runs"]:
            lines.append(
                f"| {p['preset']} | {'yes' if p['compile'] else 'no'} | {p['precision']}{' + scaler' if p['grad_scaler'] else ''} "
                f"| {p['batch']} | {p['seconds_per_step']:.3f} | {p['tokens_per_s']:,.0f} | {p['mfu']:.1%} "
                f"| {_gb(p['peak_memory_bytes'])} | {_gb(p['predicted_memory_bytes'])} "
                f"| {p['host_syncs_per_step']:.1f} | {'yes' if p['loss_falls'] else 'no'} "
                f"({p['loss_first']:.2f} → {p['loss_last']:.2f}) |"
            )
        for name, why in r.get("skipped", {}).items():
            lines.append(f"| {name} | – | – | – | – | – | – | – | – | – | skipped: {why} |")
        g = r.get("generation")
        if g:
            lines += [
                "",
                f"Cached greedy generation ({g['preset']} model, {g['new_tokens']} new tokens, batch 1): "
                f"ours {g['ours_tokens_per_s']:,.0f} tokens/s, transformers {g['transformers_tokens_per_s']:,.0f} "
                f"tokens/s ({g['ratio']:.2f}× theirs).",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--dry", action="store_true", help="CPU, ci preset, a few steps: checks the script itself"
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument(
        "--out", type=Path, default=RESULTS, help="where gpu-<device>.json and gpu.md go"
    )
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "tinyqwen-gpu-check")
    args = ap.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA GPU here: `make gpu-check` measures a real GPU (use --dry to test the script)"
        )
    device = torch.device("cpu" if args.dry else "cuda")
    presets = args.presets or (["ci"] if args.dry else list(GPU_PRESETS))
    began = time.perf_counter()
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.gpu_check" + (" --dry" if args.dry else ""),
        "commit": _commit(),
        "machine": machine(device),
        "dry": args.dry,
        "runs": [],
        "skipped": {},
    }
    memory = (
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    )
    tokenized = {}
    for preset in presets:
        cfg, model_cfg = train_config(preset), Qwen3Config.preset(TRAIN_PRESETS[preset]["preset"])
        amp = autocast_for(device)[0]
        need = training_memory(
            model_cfg,
            cfg.batch_size,
            cfg.seq_len,
            cfg.optimizer,
            autocast_dtype=amp.dtype if amp.enabled else None,
            loss="chunked" if cfg.chunked_loss else "fused",
            device=device.type,
        )["total"]
        if memory is not None and need > 0.9 * memory:
            result["skipped"][preset] = (
                f"needs {need / 1e9:.1f} GB by chapter 8's calculator, the GPU has {memory / 1e9:.1f}"
            )
            continue
        vocab = min(model_cfg.vocab_size, 10_240)  # one story tokenizer serves every preset's model
        if vocab not in tokenized:
            tokenized[vocab] = prepare_tokens(vocab, 400 if args.dry else 20_000, args.data)
        for compile_model in (False,) if args.dry else (False, True):
            print(f"{preset}: {'compiled' if compile_model else 'eager'} ...", flush=True)
            result["runs"].append(
                run_preset(
                    preset,
                    tokenized[vocab],
                    device,
                    compile_model=compile_model,
                    steps=3 if args.dry else args.steps,
                    warmup=1 if args.dry else 3,
                )
            )
    result["generation"] = generation(
        presets[0] if args.dry else "t4",
        device,
        new_tokens=8 if args.dry else 256,
        repeats=1 if args.dry else 5,
    )
    result["seconds"] = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    name = "dry" if args.dry else _slug(result["machine"]["gpu"])
    (args.out / f"gpu-{name}.json").write_text(json.dumps(result, indent=1))
    recorded = [json.loads(p.read_text()) for p in sorted(args.out.glob("gpu-*.json"))]
    (args.out / "gpu.md").write_text(
        markdown([r for r in recorded if not r.get("dry")] or ([result] if args.dry else []))
    )
    print(markdown([result]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
