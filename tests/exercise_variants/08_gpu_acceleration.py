"""Chapter 8's exercises against a wrapper around the finished component and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers).
"""

VARIANTS = {
    "ch08-ex1-shared-expert-flops": {
        # the chapter's flops_per_token (it reads Qwen2-MoE's field names too) plus the shared expert
        "wrapper": """
def moe_flops_per_token(cfg, seq_len):
    sparse = sum(cfg.num_experts > 0 and i not in cfg.mlp_only_layers and (i + 1) % cfg.decoder_sparse_step == 0
                 for i in range(cfg.num_hidden_layers))
    shared = 3 * cfg.hidden_size * cfg.shared_expert_intermediate_size + cfg.hidden_size
    return flops_per_token(cfg, seq_len) + 6 * sparse * shared
""",
        "wrong": {
            "forgets the shared expert": """
def moe_flops_per_token(cfg, seq_len):
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    width = d // cfg.num_attention_heads
    q_out, kv_out = cfg.num_attention_heads * width, cfg.num_key_value_heads * width
    total = cfg.vocab_size * d
    for i in range(n_layers):
        total += 2 * d * q_out + 2 * d * kv_out
        if i not in cfg.mlp_only_layers and (i + 1) % cfg.decoder_sparse_step == 0:
            total += d * cfg.num_experts + cfg.num_experts_per_tok * 3 * d * cfg.moe_intermediate_size
        else:
            total += 3 * d * cfg.intermediate_size
    return 6 * total + 12 * n_layers * q_out * seq_len
""",
            "counts every expert, not the chosen ones": """
def moe_flops_per_token(cfg, seq_len):
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    width = d // cfg.num_attention_heads
    q_out, kv_out = cfg.num_attention_heads * width, cfg.num_key_value_heads * width
    total = cfg.vocab_size * d
    for i in range(n_layers):
        total += 2 * d * q_out + 2 * d * kv_out
        if i not in cfg.mlp_only_layers and (i + 1) % cfg.decoder_sparse_step == 0:
            total += (d * cfg.num_experts + cfg.num_experts * 3 * d * cfg.moe_intermediate_size
                      + 3 * d * cfg.shared_expert_intermediate_size + d)
        else:
            total += 3 * d * cfg.intermediate_size
    return 6 * total + 12 * n_layers * q_out * seq_len
""",
            "ignores mlp_only_layers (every layer sparse)": """
def moe_flops_per_token(cfg, seq_len):
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    width = d // cfg.num_attention_heads
    q_out, kv_out = cfg.num_attention_heads * width, cfg.num_key_value_heads * width
    per_layer = (2 * d * q_out + 2 * d * kv_out + d * cfg.num_experts + d
                 + cfg.num_experts_per_tok * 3 * d * cfg.moe_intermediate_size
                 + 3 * d * cfg.shared_expert_intermediate_size)
    return 6 * (n_layers * per_layer + cfg.vocab_size * d) + 12 * n_layers * q_out * seq_len
""",
            "causal attention term ((T + 1) / 2 keys)": """
def moe_flops_per_token(cfg, seq_len):
    d, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    width = d // cfg.num_attention_heads
    q_out, kv_out = cfg.num_attention_heads * width, cfg.num_key_value_heads * width
    total = cfg.vocab_size * d
    for i in range(n_layers):
        total += 2 * d * q_out + 2 * d * kv_out
        if i not in cfg.mlp_only_layers and (i + 1) % cfg.decoder_sparse_step == 0:
            total += (d * cfg.num_experts + cfg.num_experts_per_tok * 3 * d * cfg.moe_intermediate_size
                      + 3 * d * cfg.shared_expert_intermediate_size + d)
        else:
            total += 3 * d * cfg.intermediate_size
    return 6 * total + 12 * n_layers * q_out * (seq_len + 1) / 2
""",
        },
    },
    "ch08-ex2-checkpoint-memory": {
        # the chapter's accounting of the head and the loss, plus one input per layer
        "wrapper": """
def checkpointed_activation_bytes(cfg, batch, seq_len, grad_accum, dtype):
    if batch % grad_accum:
        raise ValueError("grad_accum must divide batch")
    parts = activation_bytes_per_token(cfg, seq_len, param_dtype=dtype, loss="log_softmax")
    per_token = cfg.num_hidden_layers * cfg.hidden_size * dtype.itemsize + parts["head"] - 8 + parts["loss"]
    return int(batch // grad_accum * seq_len * per_token) + 2 * seq_len * cfg.head_dim * dtype.itemsize
""",
        "wrong": {
            "the whole batch, not one micro-batch": """
def checkpointed_activation_bytes(cfg, batch, seq_len, grad_accum, dtype):
    if batch % grad_accum:
        raise ValueError("grad_accum must divide batch")
    d, size = cfg.hidden_size, dtype.itemsize
    per_token = cfg.num_hidden_layers * d * size + 4 * d + 4 + 2 * size * d + 4 * cfg.vocab_size + 8
    return batch * seq_len * per_token + 2 * seq_len * cfg.head_dim * size
""",
            "log-probabilities in the parameter dtype": """
def checkpointed_activation_bytes(cfg, batch, seq_len, grad_accum, dtype):
    if batch % grad_accum:
        raise ValueError("grad_accum must divide batch")
    d, size = cfg.hidden_size, dtype.itemsize
    per_token = cfg.num_hidden_layers * d * size + 4 * d + 4 + 2 * size * d + size * cfg.vocab_size + 8
    return batch // grad_accum * seq_len * per_token + 2 * seq_len * cfg.head_dim * size
""",
            "forgets the loss": """
def checkpointed_activation_bytes(cfg, batch, seq_len, grad_accum, dtype):
    if batch % grad_accum:
        raise ValueError("grad_accum must divide batch")
    d, size = cfg.hidden_size, dtype.itemsize
    per_token = cfg.num_hidden_layers * d * size + 4 * d + 4 + 2 * size * d
    return batch // grad_accum * seq_len * per_token + 2 * seq_len * cfg.head_dim * size
""",
            "forgets the RoPE tables": """
def checkpointed_activation_bytes(cfg, batch, seq_len, grad_accum, dtype):
    if batch % grad_accum:
        raise ValueError("grad_accum must divide batch")
    d, size = cfg.hidden_size, dtype.itemsize
    per_token = cfg.num_hidden_layers * d * size + 4 * d + 4 + 2 * size * d + 4 * cfg.vocab_size + 8
    return batch // grad_accum * seq_len * per_token
""",
            "accepts a grad_accum that does not divide the batch": """
def checkpointed_activation_bytes(cfg, batch, seq_len, grad_accum, dtype):
    d, size = cfg.hidden_size, dtype.itemsize
    per_token = cfg.num_hidden_layers * d * size + 4 * d + 4 + 2 * size * d + 4 * cfg.vocab_size + 8
    return batch // grad_accum * seq_len * per_token + 2 * seq_len * cfg.head_dim * size
""",
        },
    },
    "ch08-ex3-target-throughput": {
        # the chapter's flops_per_token, turned around
        "wrapper": """
def tokens_per_s_for_mfu(cfg, seq_len, peak, target_mfu, causal=False):
    if not 0 < target_mfu <= 1:
        raise ValueError("target_mfu must be in (0, 1]")
    return target_mfu * peak / flops_per_token(cfg, seq_len, causal=causal)
""",
        "wrong": {
            "forward FLOPs only (2 per weight)": """
def tokens_per_s_for_mfu(cfg, seq_len, peak, target_mfu, causal=False):
    if not 0 < target_mfu <= 1:
        raise ValueError("target_mfu must be in (0, 1]")
    d, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    n = cfg.num_hidden_layers * (2 * d * q + 2 * d * kv + 3 * d * cfg.intermediate_size) + cfg.vocab_size * d
    keys = (seq_len + 1) / 2 if causal else seq_len
    return target_mfu * peak / (2 * n + 4 * cfg.num_hidden_layers * q * keys)
""",
            "heads of hidden_size // num_attention_heads instead of head_dim": """
def tokens_per_s_for_mfu(cfg, seq_len, peak, target_mfu, causal=False):
    if not 0 < target_mfu <= 1:
        raise ValueError("target_mfu must be in (0, 1]")
    d = cfg.hidden_size
    hd = d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    n = cfg.num_hidden_layers * (2 * d * q + 2 * d * kv + 3 * d * cfg.intermediate_size) + cfg.vocab_size * d
    keys = (seq_len + 1) / 2 if causal else seq_len
    return target_mfu * peak / (6 * n + 12 * cfg.num_hidden_layers * q * keys)
""",
            "skips the tied lm_head": """
def tokens_per_s_for_mfu(cfg, seq_len, peak, target_mfu, causal=False):
    if not 0 < target_mfu <= 1:
        raise ValueError("target_mfu must be in (0, 1]")
    d, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    n = cfg.num_hidden_layers * (2 * d * q + 2 * d * kv + 3 * d * cfg.intermediate_size)
    n += 0 if cfg.tie_word_embeddings else cfg.vocab_size * d
    keys = (seq_len + 1) / 2 if causal else seq_len
    return target_mfu * peak / (6 * n + 12 * cfg.num_hidden_layers * q * keys)
""",
            "causal half as T / 2 keys": """
def tokens_per_s_for_mfu(cfg, seq_len, peak, target_mfu, causal=False):
    if not 0 < target_mfu <= 1:
        raise ValueError("target_mfu must be in (0, 1]")
    d, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    n = cfg.num_hidden_layers * (2 * d * q + 2 * d * kv + 3 * d * cfg.intermediate_size) + cfg.vocab_size * d
    keys = seq_len / 2 if causal else seq_len
    return target_mfu * peak / (6 * n + 12 * cfg.num_hidden_layers * q * keys)
""",
        },
    },
    "ch08-ex4-fit-batch": {
        # asks the calculator instead of measuring
        "wrapper": """
def fit_micro_batch(measure, budget, batch):
    run = train_config("t4")
    fits = [b for b in range(1, batch + 1) if batch % b == 0 and training_memory(
        Qwen3Config.preset(run.preset), b, run.seq_len, autocast_dtype=torch.float16)["total"] <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return fits[-1], batch // fits[-1]
""",
        "wrong": {
            "memory proportional to the batch (no fixed part)": """
def fit_micro_batch(measure, budget, batch):
    one = measure(1)
    if one > budget:
        raise ValueError("nothing fits")
    largest = budget // one
    micro = max(b for b in range(1, min(largest, batch) + 1) if batch % b == 0)
    return micro, batch // micro
""",
            "largest micro-batch, whether or not it divides the batch": """
def fit_micro_batch(measure, budget, batch):
    one, two = measure(1), measure(2)
    if one > budget:
        raise ValueError("nothing fits")
    micro = min((budget - (2 * one - two)) // (two - one), batch)
    return micro, -(-batch // micro)
""",
            "largest power of two": """
def fit_micro_batch(measure, budget, batch):
    one, two = measure(1), measure(2)
    if one > budget:
        raise ValueError("nothing fits")
    largest = min((budget - (2 * one - two)) // (two - one), batch)
    micro = 1
    while micro * 2 <= largest and batch % (micro * 2) == 0:
        micro *= 2
    return micro, batch // micro
""",
            "strictly below the budget (off by one sequence)": """
def fit_micro_batch(measure, budget, batch):
    one, two = measure(1), measure(2)
    if one > budget:
        raise ValueError("nothing fits")
    largest = (budget - (2 * one - two)) // (two - one) - 1
    micro = max(b for b in range(1, min(largest, batch) + 1) if batch % b == 0)
    return micro, batch // micro
""",
            "tries every micro-batch (one measurement each)": """
def fit_micro_batch(measure, budget, batch):
    fits = [b for b in range(1, batch + 1) if batch % b == 0 and measure(b) <= budget]
    if not fits:
        raise ValueError("nothing fits")
    return fits[-1], batch // fits[-1]
""",
        },
    },
}
