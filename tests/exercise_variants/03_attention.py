"""Chapter 3's exercises against a wrapper around the finished component and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers).
"""

VARIANTS = {
    "ch03-ex1-cache-mask": {
        # the chapter's causal_mask, once per sequence, padded to the capacity
        "wrapper": """
def cache_causal_mask(past, q_len, capacity):
    masks = []
    for cached in past.tolist():
        mask = torch.zeros(q_len, capacity, dtype=torch.bool)
        mask[:, : cached + q_len] = causal_mask(q_len, cached + q_len)
        masks.append(mask)
    return torch.stack(masks)
""",
        "wrong": {
            "off by one: a new token cannot see its own slot": """
def cache_causal_mask(past, q_len, capacity):
    if (past + q_len > capacity).any():
        raise ValueError("does not fit")
    new_position = past[:, None] + torch.arange(q_len)
    return torch.arange(capacity)[None, None, :] < new_position[:, :, None]
""",
            "aligned top-left: ignores the cached tokens": """
def cache_causal_mask(past, q_len, capacity):
    if (past + q_len > capacity).any():
        raise ValueError("does not fit")
    new_position = torch.arange(q_len).expand(len(past), q_len)
    return torch.arange(capacity)[None, None, :] <= new_position[:, :, None]
""",
            "one offset for the whole batch (the longest cache)": """
def cache_causal_mask(past, q_len, capacity):
    if (past + q_len > capacity).any():
        raise ValueError("does not fit")
    new_position = past.max() + torch.arange(q_len).expand(len(past), q_len)
    return torch.arange(capacity)[None, None, :] <= new_position[:, :, None]
""",
            "no capacity check": """
def cache_causal_mask(past, q_len, capacity):
    new_position = past[:, None] + torch.arange(q_len)
    return torch.arange(capacity)[None, None, :] <= new_position[:, :, None]
""",
        },
    },
    "ch03-ex2-padded-attention": {
        # the chapter's attention_weights with a padding mask: the finished component
        "wrapper": """
def padded_causal_attention(q, k, v, lengths):
    keep = (torch.arange(q.shape[-2]) < lengths[:, None])[:, None, None, :]
    weights = attention_weights(q, k, keep, is_causal=True)
    return weights @ v, weights
""",
        "wrong": {
            "softmax over the queries instead of the keys": """
def padded_causal_attention(q, k, v, lengths):
    position = torch.arange(q.shape[-2])
    may_see = (position[None, :] <= position[:, None]) & (position[None, :] < lengths[:, None])[:, None, :]
    logits = torch.where(may_see[:, None], q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -torch.inf)
    e = (logits - logits.amax(dim=-2, keepdim=True)).exp()
    weights = e / e.sum(dim=-2, keepdim=True)
    return weights @ v, weights
""",
            "missing the 1/sqrt(d) scale": """
def padded_causal_attention(q, k, v, lengths):
    position = torch.arange(q.shape[-2])
    may_see = (position[None, :] <= position[:, None]) & (position[None, :] < lengths[:, None])[:, None, :]
    logits = torch.where(may_see[:, None], q @ k.transpose(-1, -2), -torch.inf)
    e = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    weights = e / e.sum(dim=-1, keepdim=True)
    return weights @ v, weights
""",
            "padding mask off by one (the first padding key stays visible)": """
def padded_causal_attention(q, k, v, lengths):
    position = torch.arange(q.shape[-2])
    may_see = (position[None, :] <= position[:, None]) & (position[None, :] <= lengths[:, None])[:, None, :]
    logits = torch.where(may_see[:, None], q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -torch.inf)
    e = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    weights = e / e.sum(dim=-1, keepdim=True)
    return weights @ v, weights
""",
            "no causal mask (padding only)": """
def padded_causal_attention(q, k, v, lengths):
    position = torch.arange(q.shape[-2])
    may_see = (position[None, :] < lengths[:, None])[:, None, :].expand(-1, len(position), -1)
    logits = torch.where(may_see[:, None], q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -torch.inf)
    e = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    weights = e / e.sum(dim=-1, keepdim=True)
    return weights @ v, weights
""",
            "exp without subtracting the row maximum (overflows)": """
def padded_causal_attention(q, k, v, lengths):
    position = torch.arange(q.shape[-2])
    may_see = (position[None, :] <= position[:, None]) & (position[None, :] < lengths[:, None])[:, None, :]
    e = torch.where(may_see[:, None], q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -torch.inf).exp()
    weights = e / e.sum(dim=-1, keepdim=True)
    return weights @ v, weights
""",
        },
    },
    "ch03-ex3-attention-backward": {
        # autograd through a hand-written forward: the gradient without deriving it
        "wrapper": """
def attention_backward(q, k, v, grad_out):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    probs = torch.softmax(leaves[0] @ leaves[1].transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return torch.autograd.grad(probs @ leaves[2], leaves, grad_out)
""",
        "wrong": {
            "softmax backward without the row-sum term": """
def attention_backward(q, k, v, grad_out):
    scale = 1 / math.sqrt(q.shape[-1])
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    dscores = probs * (grad_out @ v.transpose(-1, -2))
    return dscores @ k * scale, dscores.transpose(-1, -2) @ q * scale, probs.transpose(-1, -2) @ grad_out
""",
            "missing the 1/sqrt(d) scale in dq and dk": """
def attention_backward(q, k, v, grad_out):
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    dprobs = grad_out @ v.transpose(-1, -2)
    dscores = probs * (dprobs - (dprobs * probs).sum(dim=-1, keepdim=True))
    return dscores @ k, dscores.transpose(-1, -2) @ q, probs.transpose(-1, -2) @ grad_out
""",
            "row sum over the wrong axis": """
def attention_backward(q, k, v, grad_out):
    scale = 1 / math.sqrt(q.shape[-1])
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    dprobs = grad_out @ v.transpose(-1, -2)
    dscores = probs * (dprobs - (dprobs * probs).sum(dim=-2, keepdim=True))
    return dscores @ k * scale, dscores.transpose(-1, -2) @ q * scale, probs.transpose(-1, -2) @ grad_out
""",
        },
    },
    "ch03-ex4-kv-budget": {
        # chapter 10's kv_cache_bytes does the arithmetic
        "wrapper": """
from tinyqwen.context import kv_cache_bytes


def sequences_that_fit(config, seq_len, free_bytes, dtype):
    heads = {"MHA": config.num_attention_heads, "GQA": config.num_key_value_heads, "MQA": 1}
    return {
        kind: free_bytes // kv_cache_bytes(config.num_hidden_layers, h, config.head_dim, seq_len, bytes_per_value=dtype.itemsize)
        for kind, h in heads.items()
    }
""",
        "wrong": {
            "counts the keys but not the values": """
def sequences_that_fit(config, seq_len, free_bytes, dtype):
    heads = {"MHA": config.num_attention_heads, "GQA": config.num_key_value_heads, "MQA": 1}
    per_token = config.num_hidden_layers * config.head_dim * dtype.itemsize
    return {kind: free_bytes // (per_token * h * seq_len) for kind, h in heads.items()}
""",
            "head_dim taken as hidden_size // num_attention_heads": """
def sequences_that_fit(config, seq_len, free_bytes, dtype):
    heads = {"MHA": config.num_attention_heads, "GQA": config.num_key_value_heads, "MQA": 1}
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * head_dim * dtype.itemsize
    return {kind: free_bytes // (per_token * h * seq_len) for kind, h in heads.items()}
""",
            "always 2 bytes per number": """
def sequences_that_fit(config, seq_len, free_bytes, dtype):
    heads = {"MHA": config.num_attention_heads, "GQA": config.num_key_value_heads, "MQA": 1}
    per_token = 2 * config.num_hidden_layers * config.head_dim * 2
    return {kind: free_bytes // (per_token * h * seq_len) for kind, h in heads.items()}
""",
            "rounds to the nearest sequence instead of whole sequences": """
def sequences_that_fit(config, seq_len, free_bytes, dtype):
    heads = {"MHA": config.num_attention_heads, "GQA": config.num_key_value_heads, "MQA": 1}
    per_token = 2 * config.num_hidden_layers * config.head_dim * dtype.itemsize
    return {kind: round(free_bytes / (per_token * h * seq_len)) for kind, h in heads.items()}
""",
        },
    },
}
