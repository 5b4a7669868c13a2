"""Chapter 10's exercises against wrappers of the finished components and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers).
"""

# The reference solution of exercise 1 with one line changed; `{slot}` is the slot of token p.
_SINK_CACHE = """
class SinkWindowCache:
    def __init__(self, n_sink, window):
        self.n_sink, self.window = n_sink, window
        self.keys = self.values = None
        self.positions = torch.full((n_sink + window,), {empty}, dtype=torch.long)
        self.next_position = 0

    def update(self, k, v):
        if self.keys is None:
            shape = (k.shape[0], k.shape[1], self.n_sink + self.window, k.shape[3])
            self.keys, self.values = k.new_zeros(shape), v.new_zeros(shape)
        p = self.next_position
        slot = {slot}
        self.keys[:, :, slot] = k[:, :, 0]
        self.values[:, :, slot] = v[:, :, 0]
        self.positions[slot] = p
        self.next_position += 1
        return self.keys, self.values, self.positions
"""
_RING = "p if p < self.n_sink else self.n_sink + (p - self.n_sink) % self.window"

# The reference solution of exercise 2 with the block's first key and its mask as parameters.
_BLOCKED = """
def blocked_sliding_window_attention(q, k, v, window):
    T = q.shape[2]
    out = torch.empty_like(q)
    for start in range(0, T, window):
        stop = min(start + window, T)
        first = {first}
        i = torch.arange(start, stop)[:, None]
        j = torch.arange(first, stop)[None, :]
        visible = {visible}
        out[:, :, start:stop] = F.scaled_dot_product_attention(
            q[:, :, start:stop], k[:, :, first:stop], v[:, :, first:stop], attn_mask=visible)
    return out
"""

# The reference solution of exercise 4 with the positions each kind of layer keeps as parameters.
_HYBRID = """
def hybrid_kv_cache_bytes(config, seq_len, batch_size, dtype):
    per_position = {per_position}
    kept = {{"full_attention": seq_len, "sliding_attention": {sliding}}}
    return sum(per_position * kept[kind] for kind in config.layer_types)
"""
_PER_POSITION = "2 * config.num_key_value_heads * config.head_dim * dtype.itemsize * batch_size"

VARIANTS = {
    "ch10-ex1-sink-window-cache": {
        # the chapter's growing KVCache, its last `window` tokens put back into ring order
        "wrapper": """
class SinkWindowCache:
    def __init__(self, n_sink, window):
        self.n_sink, self.window, self.cache = n_sink, window, KVCache(1)

    def update(self, k, v):
        keys, values = self.cache.update(k, v, 0)
        total = keys.shape[2]
        buffer_k = k.new_zeros(k.shape[0], k.shape[1], self.n_sink + self.window, k.shape[3])
        buffer_v, positions = torch.zeros_like(buffer_k), torch.full((self.n_sink + self.window,), -1)
        for p in list(range(min(total, self.n_sink))) + list(range(max(self.n_sink, total - self.window), total)):
            slot = p if p < self.n_sink else self.n_sink + (p - self.n_sink) % self.window
            buffer_k[:, :, slot], buffer_v[:, :, slot], positions[slot] = keys[:, :, p], values[:, :, p], p
        return buffer_k, buffer_v, positions
""",
        "wrong": {
            "one ring over every slot: the sinks get overwritten": _SINK_CACHE.format(
                empty=-1, slot="p % (self.n_sink + self.window)"
            ),
            "the window's ring counts from token 0, not from the first non-sink": _SINK_CACHE.format(
                empty=-1,
                slot="p if p < self.n_sink else self.n_sink + p % self.window",
            ),
            "empty slots marked 0, so attention sees zero keys": _SINK_CACHE.format(
                empty=0, slot=_RING
            ),
            "a window one token short": _SINK_CACHE.format(
                empty=-1,
                slot="p if p < self.n_sink else self.n_sink + (p - self.n_sink) % max(1, self.window - 1)",
            ),
        },
    },
    "ch10-ex2-blocked-window-attention": {
        # the chapter's mask over the whole sequence, one fused call
        "wrapper": """
def blocked_sliding_window_attention(q, k, v, window):
    mask = sliding_window_mask(q.shape[2], window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
""",
        "wrong": {
            "one T x T mask built from positions": """
def blocked_sliding_window_attention(q, k, v, window):
    i, j = torch.arange(q.shape[2])[:, None], torch.arange(q.shape[2])[None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(j <= i) & (j > i - window))
""",
            "every block attends to all keys up to its end (T x T work in slices)": _BLOCKED.format(
                first="0", visible="(j <= i) & (j > i - window)"
            ),
            "off by one: window + 1 keys": _BLOCKED.format(
                first="max(0, start - window)", visible="(j <= i) & (j >= i - window)"
            ),
            "no look-back into the previous block": _BLOCKED.format(
                first="start", visible="(j <= i) & (j > i - window)"
            ),
            "no causal part: queries see later keys of their block": _BLOCKED.format(
                first="max(0, start - window + 1)", visible="(j > i - window)"
            ),
        },
    },
    "ch10-ex3-dynamic-ntk": {
        # the chapter's NTK-aware scaling with the dynamic factor
        "wrapper": """
def dynamic_ntk_inv_freq(head_dim, factor, seq_len, original_max_position_embeddings, theta=1_000_000.0):
    length = max(seq_len, original_max_position_embeddings)
    return ntk_scaled_inv_freq(head_dim, factor * length / original_max_position_embeddings - (factor - 1), theta)
""",
        "wrong": {
            "stretch s L / L_train, without - (s - 1)": """
def dynamic_ntk_inv_freq(head_dim, factor, seq_len, original_max_position_embeddings, theta=1_000_000.0):
    length = max(seq_len, original_max_position_embeddings)
    stretch = factor * length / original_max_position_embeddings
    return rope_inv_freq(head_dim, theta * stretch ** (head_dim / (head_dim - 2)))
""",
            "base times the stretch, exponent d / (d - 2) left out": """
def dynamic_ntk_inv_freq(head_dim, factor, seq_len, original_max_position_embeddings, theta=1_000_000.0):
    length = max(seq_len, original_max_position_embeddings)
    stretch = factor * length / original_max_position_embeddings - (factor - 1)
    return rope_inv_freq(head_dim, theta * stretch)
""",
            "not clamped: short inputs shrink the base": """
def dynamic_ntk_inv_freq(head_dim, factor, seq_len, original_max_position_embeddings, theta=1_000_000.0):
    stretch = factor * seq_len / original_max_position_embeddings - (factor - 1)
    return rope_inv_freq(head_dim, theta * abs(stretch) ** (head_dim / (head_dim - 2)))
""",
            "static NTK: the full factor at every length": """
def dynamic_ntk_inv_freq(head_dim, factor, seq_len, original_max_position_embeddings, theta=1_000_000.0):
    return rope_inv_freq(head_dim, theta * factor ** (head_dim / (head_dim - 2)))
""",
        },
    },
    "ch10-ex4-hybrid-cache-bytes": {
        # the chapter's kv_cache_bytes, one layer at a time
        "wrapper": """
def hybrid_kv_cache_bytes(config, seq_len, batch_size, dtype):
    return sum(kv_cache_bytes(1, config.num_key_value_heads, config.head_dim,
                              min(seq_len, config.sliding_window) if kind == "sliding_attention" else seq_len,
                              batch_size=batch_size, bytes_per_value=dtype.itemsize)
               for kind in config.layer_types)
""",
        "wrong": {
            "every layer keeps every position": _HYBRID.format(
                per_position=_PER_POSITION, sliding="seq_len"
            ),
            "sliding layers keep window - 1 positions": _HYBRID.format(
                per_position=_PER_POSITION, sliding="min(seq_len, config.sliding_window - 1)"
            ),
            "keys only, no values": _HYBRID.format(
                per_position="config.num_key_value_heads * config.head_dim * dtype.itemsize * batch_size",
                sliding="min(seq_len, config.sliding_window)",
            ),
            "bits instead of bytes": _HYBRID.format(
                per_position="2 * config.num_key_value_heads * config.head_dim * torch.finfo(dtype).bits * batch_size",
                sliding="min(seq_len, config.sliding_window)",
            ),
        },
    },
}
