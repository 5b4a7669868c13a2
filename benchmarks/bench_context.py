"""Context-window costs (chapter 10): generation with and without a KV cache, and attention
time and memory against sequence length.

* ``generate``: greedy decoding of 256 new tokens (512 in full mode) after a 16-token prompt
  with a small pre-norm decoder built from tinyqwen's attention, RMSNorm and SwiGLU. Ours uses
  tinyqwen.context.KVCache; the peers are no cache at all (every step re-runs the sequence) and
  transformers' DynamicCache plugged into the same model. ratio = time ours / time peer.
* ``attention``: causal attention, 4 heads of 64, one sequence. The peer is PyTorch's fused
  F.scaled_dot_product_attention, ours chapter 3's readable reference that materialises the
  T x T scores. Time rows and peak tensor memory rows (tinyqwen.loss.TensorMemoryTracker).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import compare, print_rows, row
from tinyqwen.attention import GroupedQueryAttention, scaled_dot_product_attention
from tinyqwen.context import KVCache
from tinyqwen.loss import TensorMemoryTracker
from tinyqwen.moe import SwiGLU
from tinyqwen.norm import RMSNorm


class Block(nn.Module):
    def __init__(self, hidden, heads, kv_heads, layer_idx):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden)
        self.self_attn = GroupedQueryAttention(
            hidden, heads, kv_heads, qk_norm=RMSNorm, layer_idx=layer_idx
        )
        self.post_attention_layernorm = RMSNorm(hidden)
        self.mlp = SwiGLU(hidden, 3 * hidden)

    def forward(self, x, kv_cache=None):
        x = x + self.self_attn(self.input_layernorm(x), kv_cache=kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, vocab=256, hidden=128, layers=4, heads=8, kv_heads=2):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(hidden, heads, kv_heads, i) for i in range(layers))
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids, kv_cache=None):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, kv_cache)
        return self.lm_head(self.norm(x))


def generate(model, prompt, new_tokens, make_cache):
    cache = make_cache()
    ids = prompt
    with torch.no_grad():
        logits = model(ids, kv_cache=cache)
        for _ in range(new_tokens):
            next_id = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
            logits = model(next_id, kv_cache=cache) if cache is not None else model(ids)
    return ids


def run(quick: bool) -> list[dict]:
    from transformers import DynamicCache

    torch.manual_seed(0)
    new_tokens, hidden = (256, 128) if quick else (512, 256)
    model = Decoder(hidden=hidden).eval()
    prompt = torch.randint(0, 256, (1, 16))
    ours = lambda: KVCache(len(model.layers), max_seq_len=16 + new_tokens)  # noqa: E731
    peers = {"no cache": lambda: None, "transformers DynamicCache": DynamicCache}
    reference = generate(model, prompt, new_tokens, lambda: None)
    for make in (ours, *peers.values()):
        assert torch.equal(generate(model, prompt, new_tokens, make), reference), (
            "caches changed the tokens"
        )
    out = []
    for peer_name, make_peer in peers.items():
        r = compare(
            f"generate {new_tokens} tokens (hidden {hidden}, 4 layers, GQA 8/2)",
            lambda: generate(model, prompt, new_tokens, ours),
            lambda make_peer=make_peer: generate(model, prompt, new_tokens, make_peer),
            ours_name="KVCache",
            peer_name=peer_name,
            repeats=2 if quick else 3,
            warmup=0,
        )
        r["note"] = (
            f"tokens/s: ours {new_tokens / r['ours']:.0f}, peer {new_tokens / r['peer']:.0f}"
        )
        out.append(r)

    heads, d_head = 4, 64
    for T in (512, 1024, 2048) if quick else (512, 1024, 2048, 4096):
        q, k, v = (torch.randn(1, heads, T, d_head) for _ in range(3))
        ref = lambda q=q, k=k, v=v: scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        fused = lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        with torch.no_grad():
            out.append(
                compare(
                    f"causal attention T={T} (4x64, fp32)",
                    ref,
                    fused,
                    ours_name="reference",
                    peer_name="F.sdpa (fused)",
                    repeats=3 if quick else 5,
                    unit="ms",
                    scale=1e3,
                )
            )
            peaks = []
            for fn in (ref, fused):
                with TensorMemoryTracker() as mem:
                    fn()
                peaks.append(mem.peak_bytes / 2**20)
        out.append(
            row(
                f"causal attention T={T} (4x64, fp32)",
                ours_name="reference",
                peer_name="F.sdpa (fused)",
                metric="peak mem",
                unit="MiB",
                ours=peaks[0],
                peer=peaks[1],
            )
        )
    return out


if __name__ == "__main__":
    print_rows(run(quick=True))
