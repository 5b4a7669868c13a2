# Hand-written support module (teaches nothing new): a command line around model.generate.
"""Write with a trained TinyQwen: ``python -m tinyqwen.generate RUN_OR_CHECKPOINT --prompt "..."``.

RUN_OR_CHECKPOINT is a run folder made by ``python -m tinyqwen.train`` (its ``final/`` model, or
its newest intact checkpoint while it is still training), or a model folder itself (``final/``,
``checkpoints/step_NNNNNNN``). The text streams as it is generated, with chapter 11's sampling
controls; ``--greedy`` always takes the most likely token.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from pathlib import Path

import torch

from tinyqwen.model import Qwen3ForCausalLM
from tinyqwen.tokenizer import BPETokenizer
from tinyqwen.train import find_checkpoint


def resolve(path: str | Path) -> tuple[Path, Path]:
    """(model folder, tokenizer.json) for a run folder or a model folder; ValueError otherwise."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if (path / "final" / "model.safetensors").exists() or (path / "checkpoints").is_dir():
        model_dir = (
            path / "final"
            if (path / "final" / "model.safetensors").exists()
            else find_checkpoint(path)
        )
        if model_dir is None:
            raise ValueError(f"{path} is a run folder without a final model or a checkpoint yet")
    elif (path / "config.json").exists():
        model_dir = path
    else:
        raise ValueError(
            f"{path} is neither a run folder (final/, checkpoints/) nor a model folder (config.json)"
        )
    for candidate in (model_dir, model_dir.parent, model_dir.parent.parent):
        if (candidate / "tokenizer.json").exists():
            return model_dir, candidate / "tokenizer.json"
    raise ValueError(f"no tokenizer.json next to {model_dir} or in its run folder")


def stream(
    model,
    tokenizer: BPETokenizer,
    prompt: str,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
    out=sys.stdout,
) -> str:
    """Generate a continuation of ``prompt``, writing each piece of text as soon as it is whole
    (a character split across tokens waits for its last byte); returns prompt + continuation."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [prompt]
    out.write(prompt)

    def emit(token: torch.Tensor) -> None:
        if int(token[0]) == tokenizer.eot_id:  # the story ends here: nothing to print
            return
        text = decoder.decode(tokenizer.decode_bytes([int(token[0])]))
        pieces.append(text)
        out.write(text)
        out.flush()

    generator = torch.Generator(device=device).manual_seed(seed)
    model.generate(
        ids,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_token_id=tokenizer.eot_id,
        callback=emit,
        generator=generator,
    )
    tail = decoder.decode(b"", final=True)
    out.write(tail + "\n")
    return "".join(pieces) + tail


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tinyqwen.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="a run folder, or a model folder (final/ or a checkpoint)")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument(
        "--greedy", action="store_true", help="always the most likely token (temperature 0)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    a = p.parse_args(argv)
    try:
        model_dir, tokenizer_path = resolve(a.path)
    except ValueError as exc:
        p.error(str(exc))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    model = Qwen3ForCausalLM.from_pretrained(model_dir, device=device).eval()
    tokenizer = BPETokenizer.load(tokenizer_path)
    print(f"[{model_dir}]", file=sys.stderr)
    stream(
        model,
        tokenizer,
        a.prompt,
        max_new_tokens=a.max_new_tokens,
        temperature=0.0 if a.greedy else a.temperature,
        top_k=None if a.greedy else a.top_k,
        top_p=None if a.greedy else a.top_p,
        seed=a.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
