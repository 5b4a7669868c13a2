"""Chapter 5's exercises against wrappers of the finished components and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers).
"""

# The reference solution of exercise 1 with its serving order, capacity test and weights as parameters.
_CAPACITY = """
def capacity_dispatch(x, routing_weights, selected_experts, experts, capacity):
    num_tokens, k = selected_experts.shape
    served = {served}
    one_hot = F.one_hot(served, len(experts))
    earlier = (one_hot.cumsum(dim=0) - one_hot)[torch.arange(len(served)), served]
    kept = {kept}
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for expert_id, expert in enumerate(experts):
        rows, slots = torch.nonzero((selected_experts == expert_id) & kept, as_tuple=True)
        if len(rows):
            weighted = {weights}.float() * expert(x[rows]).float()
            out.index_add_(0, rows, weighted)
    return out.to(x.dtype), kept
"""
_SLOT_MAJOR = "selected_experts.T.reshape(-1)"
_KEPT = "(earlier < capacity).view(k, num_tokens).T"
_WEIGHTS = "routing_weights[rows, slots, None]"

VARIANTS = {
    "ch05-ex1-capacity-dispatch": {
        # the right mask, then the chapter's dispatch with the dropped weights set to zero
        "wrapper": _CAPACITY.format(served=_SLOT_MAJOR, kept=_KEPT, weights=_WEIGHTS).split(
            "    out = torch.zeros"
        )[0]
        + "    return grouped_expert_forward(x, routing_weights * kept, selected_experts, experts), kept\n",
        "wrong": {
            "capacity off by one": _CAPACITY.format(
                served=_SLOT_MAJOR,
                kept="(earlier <= capacity).view(k, num_tokens).T",
                weights=_WEIGHTS,
            ),
            "served token by token (each token's k slots together)": _CAPACITY.format(
                served="selected_experts.reshape(-1)",
                kept="(earlier < capacity).view(num_tokens, k)",
                weights=_WEIGHTS,
            ),
            "kept weights renormalised": _CAPACITY.format(
                served=_SLOT_MAJOR,
                kept=_KEPT,
                weights="(routing_weights * kept / (routing_weights * kept).sum(-1, keepdim=True).clamp_min(1e-9))[rows, slots, None]",
            ),
            "routing weights left out": _CAPACITY.format(
                served=_SLOT_MAJOR, kept=_KEPT, weights="torch.ones(len(rows), 1)"
            ),
            "slot-major order, but the mask read back token-major": _CAPACITY.format(
                served=_SLOT_MAJOR,
                kept="(earlier < capacity).view(num_tokens, k)",
                weights=_WEIGHTS,
            ),
        },
    },
}

# The reference solution of exercise 2 with its probabilities, selection and gates as parameters.
_EXPERT_CHOICE = """
def expert_choice_forward(x, router_weight, experts, capacity):
    logits = x @ router_weight.T
    probs = {probs}
    gates, chosen = {select}
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e, expert in enumerate(experts):
        out.index_add_(0, chosen[e], {gates} * expert(x[chosen[e]]).float())
    return out.to(x.dtype), chosen
"""
_PROBS = "torch.softmax(logits.float(), dim=-1)"
_SELECT = "torch.topk(probs.T, capacity, dim=-1)"
_GATES = "gates[e, :, None]"
VARIANTS["ch05-ex2-expert-choice"] = {
    # the right choice, then the chapter's dispatch with every expert as a slot of every token
    "wrapper": """
def expert_choice_forward(x, router_weight, experts, capacity):
    probs = torch.softmax((x @ router_weight.T).float(), dim=-1)
    gates, chosen = torch.topk(probs.T, capacity, dim=-1)
    picked = torch.zeros_like(probs).scatter_(0, chosen.T, 1.0)
    every = torch.arange(len(experts)).expand(len(x), -1)
    return grouped_expert_forward(x, probs * picked, every, experts), chosen
""",
    "wrong": {
        "softmax over the tokens instead of the experts": _EXPERT_CHOICE.format(
            probs="torch.softmax(logits.float(), dim=0)", select=_SELECT, gates=_GATES
        ),
        "softmax after the choice (tokens picked by raw logit)": _EXPERT_CHOICE.format(
            probs=_PROBS,
            select="(probs.T.gather(1, logits.T.topk(capacity, dim=-1).indices), logits.T.topk(capacity, dim=-1).indices)",
            gates=_GATES,
        ),
        "one token too few per expert": _EXPERT_CHOICE.format(
            probs=_PROBS, select="torch.topk(probs.T, capacity - 1, dim=-1)", gates=_GATES
        ),
        "gates left out": _EXPERT_CHOICE.format(probs=_PROBS, select=_SELECT, gates="1.0"),
        "gates renormalised over the experts that chose the token": _EXPERT_CHOICE.format(
            probs=_PROBS,
            select="torch.topk(probs.T, capacity, dim=-1)\n"
            "    picked = torch.zeros_like(probs).scatter_(0, chosen.T, 1.0)\n"
            "    gates = (probs * picked / (probs * picked).sum(-1, keepdim=True).clamp_min(1e-9)).T.gather(1, chosen)",
            gates=_GATES,
        ),
    },
}

# The reference solution of exercise 3 with its dtype, shift and reduction as parameters.
_Z_LOSS = """
def router_z_loss(router_logits):
    logits = {logits}
    shift = {shift}
    log_normaliser = shift.squeeze(-1) + (logits - shift).exp().sum(dim=-1).log()
    return {reduce}
"""
_FLOAT = "router_logits.float()"
_SHIFT = "logits.amax(dim=-1, keepdim=True).detach()"
_MEAN_SQUARE = "log_normaliser.square().mean()"
VARIANTS["ch05-ex3-router-z-loss"] = {
    "wrapper": """
def router_z_loss(router_logits):
    return torch.logsumexp(router_logits.float(), dim=-1).square().mean()
""",
    "wrong": {
        "no shift (exp overflows)": _Z_LOSS.format(
            logits=_FLOAT, shift="torch.zeros_like(logits[:, :1])", reduce=_MEAN_SQUARE
        ),
        "in the input's dtype": _Z_LOSS.format(
            logits="router_logits", shift=_SHIFT, reduce=_MEAN_SQUARE + ".float()"
        ),
        "log-normaliser not squared": _Z_LOSS.format(
            logits=_FLOAT, shift=_SHIFT, reduce="log_normaliser.mean()"
        ),
        "sum over tokens instead of the mean": _Z_LOSS.format(
            logits=_FLOAT, shift=_SHIFT, reduce="log_normaliser.square().sum()"
        ),
        "mean squared logit instead of the log-normaliser": _Z_LOSS.format(
            logits=_FLOAT, shift=_SHIFT, reduce="logits.square().mean()"
        ),
        "square of the mean": _Z_LOSS.format(
            logits=_FLOAT, shift=_SHIFT, reduce="log_normaliser.mean().square()"
        ),
    },
}

# The reference solution of exercise 4 with one of its terms as a parameter.
_PARAMS = """
def qwen2_moe_param_counts(config):
    c = config
    d, head_dim = c.hidden_size, c.hidden_size // c.num_attention_heads
    q_width, kv_width = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    attention = {attention}
    swiglu = lambda width: 3 * d * width
    dense_mlp = swiglu(c.intermediate_size)
    always_on = {always_on}
    total = active = c.vocab_size * d * (1 if c.tie_word_embeddings else 2) + d
    for layer in range(c.num_hidden_layers):
        base = attention + 2 * d
        sparse = {sparse}
        if sparse:
            total += base + always_on + c.num_experts * swiglu(c.moe_intermediate_size)
            active += base + {active_always} + {active_experts} * swiglu(c.moe_intermediate_size)
        else:
            total += base + dense_mlp
            active += base + dense_mlp
    return total, active
"""
_ATTENTION = "2 * d * q_width + 2 * d * kv_width + (q_width + 2 * kv_width if c.qkv_bias else 0)"
_ALWAYS_ON = "c.num_experts * d + swiglu(c.shared_expert_intermediate_size) + d"
_SPARSE = "layer not in c.mlp_only_layers and (layer + 1) % c.decoder_sparse_step == 0"
_RIGHT = dict(
    attention=_ATTENTION,
    always_on=_ALWAYS_ON,
    sparse=_SPARSE,
    active_always="always_on",
    active_experts="c.num_experts_per_tok",
)
VARIANTS["ch05-ex4-shared-expert-params"] = {
    "wrapper": """
def qwen2_moe_param_counts(config):
    from transformers.models.qwen2_moe import modeling_qwen2_moe as m

    with torch.device("meta"):
        model = m.Qwen2MoeForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    per_expert = 3 * config.hidden_size * config.moe_intermediate_size
    sparse = sum(isinstance(layer.mlp, m.Qwen2MoeSparseMoeBlock) for layer in model.model.layers)
    return total, total - sparse * (config.num_experts - config.num_experts_per_tok) * per_expert
""",
    "wrong": {
        "sparse layers counted from 0": _PARAMS.format(
            **{
                **_RIGHT,
                "sparse": "layer not in c.mlp_only_layers and layer % c.decoder_sparse_step == 0",
            }
        ),
        "attention biases left out": _PARAMS.format(
            **{**_RIGHT, "attention": "2 * d * q_width + 2 * d * kv_width"}
        ),
        "shared expert's gate left out": _PARAMS.format(
            **{
                **_RIGHT,
                "always_on": "c.num_experts * d + swiglu(c.shared_expert_intermediate_size)",
            }
        ),
        "shared expert not counted as active": _PARAMS.format(
            **{**_RIGHT, "active_always": "c.num_experts * d + d"}
        ),
        "mlp_only_layers ignored": _PARAMS.format(
            **{**_RIGHT, "sparse": "(layer + 1) % c.decoder_sparse_step == 0"}
        ),
        "key/value heads as wide as the query heads": _PARAMS.format(
            **{**_RIGHT, "attention": "4 * d * q_width + (3 * q_width if c.qkv_bias else 0)"}
        ),
    },
}
