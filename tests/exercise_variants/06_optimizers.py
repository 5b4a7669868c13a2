"""Chapter 6's exercises against a wrapper around the finished component and plausible wrong answers."""

VARIANTS = {
    "ch06-ex1-inverse-sqrt": {
        "wrapper": """
def inverse_sqrt_lr(step, *, max_lr, warmup_steps):
    if step < warmup_steps:  # the warmup is lr_schedule's
        return lr_schedule(step, max_lr=max_lr, warmup_steps=warmup_steps, total_steps=warmup_steps)
    return max_lr * math.sqrt(warmup_steps / (step + 1))
""",
        "wrong": {
            "warmup off by one (step / warmup)": """
def inverse_sqrt_lr(step, *, max_lr, warmup_steps):
    if warmup_steps < 1 or step < 0:
        raise ValueError(f"bad step={step} or warmup_steps={warmup_steps}")
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return max_lr * math.sqrt(warmup_steps / (step + 1))
""",
            "decay from step, not step + 1": """
def inverse_sqrt_lr(step, *, max_lr, warmup_steps):
    if warmup_steps < 1 or step < 0:
        raise ValueError(f"bad step={step} or warmup_steps={warmup_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return max_lr * math.sqrt(warmup_steps / step)
""",
            "no ValueError for bad input": """
def inverse_sqrt_lr(step, *, max_lr, warmup_steps):
    n = step + 1
    return max_lr * min(n / warmup_steps, math.sqrt(warmup_steps / n)) if warmup_steps else max_lr
""",
        },
    },
    "ch06-ex2-amsgrad-groups": {
        "wrapper": """
def amsgrad_steps(params, grads, lrs, *, betas, eps, weight_decay, no_decay):
    ps = {name: torch.nn.Parameter(p.clone()) for name, p in params.items()}
    opt = torch.optim.AdamW([{"params": [p for n, p in ps.items() if n not in no_decay]},
                             {"params": [p for n, p in ps.items() if n in no_decay], "weight_decay": 0.0}],
                            lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=True)
    for grad, lr in zip(grads, lrs):
        for name, p in ps.items():
            p.grad = grad[name].clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return {name: p.detach().clone() for name, p in ps.items()}
""",
        "wrong": {
            "the chapter's adamw_update (no maximum)": (
                """
def amsgrad_steps(params, grads, lrs, *, betas, eps, weight_decay, no_decay):
    theta = {name: p.clone() for name, p in params.items()}
    state = {name: {} for name in params}
    for grad, lr in zip(grads, lrs):
        for name in theta:
            adamw_update(theta[name], grad[name], state[name], lr=lr, betas=betas, eps=eps,
                         weight_decay=0.0 if name in no_decay else weight_decay)
    return theta
""",
                "ForbiddenCall",
            ),
            "plain AdamW: no maximum": """
def amsgrad_steps(params, grads, lrs, *, betas, eps, weight_decay, no_decay):
    b1, b2 = betas
    theta = {n: p.clone() for n, p in params.items()}
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    for t, (grad, lr) in enumerate(zip(grads, lrs), start=1):
        for n in theta:
            m[n] = b1 * m[n] + (1 - b1) * grad[n]
            v[n] = b2 * v[n] + (1 - b2) * grad[n] ** 2
            shrink = 1.0 if n in no_decay else 1 - lr * weight_decay
            theta[n] = shrink * theta[n] - lr * (m[n] / (1 - b1**t)) / ((v[n] / (1 - b2**t)).sqrt() + eps)
    return theta
""",
            "maximum of the bias-corrected v": """
def amsgrad_steps(params, grads, lrs, *, betas, eps, weight_decay, no_decay):
    b1, b2 = betas
    theta = {n: p.clone() for n, p in params.items()}
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    v_hat_max = {n: torch.zeros_like(p) for n, p in params.items()}
    for t, (grad, lr) in enumerate(zip(grads, lrs), start=1):
        for n in theta:
            m[n] = b1 * m[n] + (1 - b1) * grad[n]
            v[n] = b2 * v[n] + (1 - b2) * grad[n] ** 2
            v_hat_max[n] = torch.maximum(v_hat_max[n], v[n] / (1 - b2**t))
            shrink = 1.0 if n in no_decay else 1 - lr * weight_decay
            theta[n] = shrink * theta[n] - lr * (m[n] / (1 - b1**t)) / (v_hat_max[n].sqrt() + eps)
    return theta
""",
            "maximum of the squared gradient instead of v": """
def amsgrad_steps(params, grads, lrs, *, betas, eps, weight_decay, no_decay):
    b1, b2 = betas
    theta = {n: p.clone() for n, p in params.items()}
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    g2_max = {n: torch.zeros_like(p) for n, p in params.items()}
    for t, (grad, lr) in enumerate(zip(grads, lrs), start=1):
        for n in theta:
            m[n] = b1 * m[n] + (1 - b1) * grad[n]
            g2_max[n] = torch.maximum(g2_max[n], grad[n] ** 2)
            shrink = 1.0 if n in no_decay else 1 - lr * weight_decay
            theta[n] = shrink * theta[n] - lr * (m[n] / (1 - b1**t)) / (g2_max[n].sqrt() + eps)
    return theta
""",
            "every parameter decayed": """
def amsgrad_steps(params, grads, lrs, *, betas, eps, weight_decay, no_decay):
    b1, b2 = betas
    theta = {n: p.clone() for n, p in params.items()}
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    v_max = {n: torch.zeros_like(p) for n, p in params.items()}
    for t, (grad, lr) in enumerate(zip(grads, lrs), start=1):
        for n in theta:
            m[n] = b1 * m[n] + (1 - b1) * grad[n]
            v[n] = b2 * v[n] + (1 - b2) * grad[n] ** 2
            v_max[n] = torch.maximum(v_max[n], v[n])
            update = (m[n] / (1 - b1**t)) / ((v_max[n] / (1 - b2**t)).sqrt() + eps)
            theta[n] = (1 - lr * weight_decay) * theta[n] - lr * update
    return theta
""",
        },
    },
    "ch06-ex3-polar-newton-schulz": {
        "wrapper": """
def polar_by_newton_schulz(G, tol=1e-10, max_iters=100):
    for k in range(max_iters + 1):
        X = newton_schulz(G, k, coefficients=(1.5, -0.5, 0.0), dtype=G.dtype)
        P = X @ X.T if G.shape[0] <= G.shape[1] else X.T @ X
        if torch.linalg.matrix_norm(P - torch.eye(min(G.shape), dtype=G.dtype)) <= tol:
            return X, k
    raise ValueError(f"tol={tol} not reached in max_iters={max_iters}")
""",
        "wrong": {
            "counts the checks, not the updates": """
def polar_by_newton_schulz(G, tol=1e-10, max_iters=100):
    wide = G.shape[0] <= G.shape[1]
    identity = torch.eye(min(G.shape), dtype=G.dtype)
    X = G / torch.linalg.matrix_norm(G)
    for k in range(1, max_iters + 2):
        P = X @ X.T if wide else X.T @ X
        if torch.linalg.matrix_norm(P - identity) <= tol:
            return X, k
        X = 1.5 * X - 0.5 * (P @ X if wide else X @ P)
    raise ValueError(f"tol={tol} not reached in max_iters={max_iters}")
""",
            "Muon's quintic (a band around 1, not convergence)": """
def polar_by_newton_schulz(G, tol=1e-10, max_iters=100):
    a, b, c = 3.4445, -4.7750, 2.0315
    wide = G.shape[0] <= G.shape[1]
    identity = torch.eye(min(G.shape), dtype=G.dtype)
    X = G / torch.linalg.matrix_norm(G)
    for k in range(max_iters + 1):
        P = X @ X.T if wide else X.T @ X
        if torch.linalg.matrix_norm(P - identity) <= tol or k == 5:
            return X, k
        X = a * X + (b * P + c * P @ P) @ X if wide else a * X + X @ (b * P + c * P @ P)
""",
            "Gram matrix of the wrong side for tall inputs": """
def polar_by_newton_schulz(G, tol=1e-10, max_iters=100):
    X = G / torch.linalg.matrix_norm(G)
    identity = torch.eye(G.shape[0], dtype=G.dtype)
    for k in range(max_iters + 1):
        P = X @ X.T
        if torch.linalg.matrix_norm(P - identity) <= tol:
            return X, k
        X = 1.5 * X - 0.5 * P @ X
    return X, max_iters
""",
        },
    },
    "ch06-ex4-state-memory": {
        "wrapper": """
def muon_adamw_state_bytes(config, bytes_per_value=4):
    from tinyqwen.accel import optimizer_state_elements
    return bytes_per_value * optimizer_state_elements(config, "muon")
""",
        "wrong": {
            "builds the model on the meta device": (
                """
def muon_adamw_state_bytes(config, bytes_per_value=4):
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    n = {True: 0, False: 0}
    for p in model.parameters():
        n["proj" in str(p.shape) or p.ndim == 2 and p.shape[0] != config.vocab_size] += p.numel()
    return bytes_per_value * (n[True] + 2 * n[False])
""",
                "ForbiddenCall",
            ),
            "attention width taken as hidden_size": """
def muon_adamw_state_bytes(config, bytes_per_value=4):
    d, L = config.hidden_size, config.num_hidden_layers
    kv = d * config.num_key_value_heads // config.num_attention_heads
    matrices = L * (2 * d * d + 2 * d * kv + 3 * d * config.intermediate_size)
    others = L * (2 * d + 2 * config.head_dim) + d + config.vocab_size * d * (1 if config.tie_word_embeddings else 2)
    return bytes_per_value * (matrices + 2 * others)
""",
            "tied head counted twice": """
def muon_adamw_state_bytes(config, bytes_per_value=4):
    d, L, hd = config.hidden_size, config.num_hidden_layers, config.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    matrices = L * (2 * d * q + 2 * d * kv + 3 * d * config.intermediate_size)
    others = L * (2 * d + 2 * hd) + d + 2 * config.vocab_size * d
    return bytes_per_value * (matrices + 2 * others)
""",
            "q_norm and k_norm forgotten": """
def muon_adamw_state_bytes(config, bytes_per_value=4):
    d, L, hd = config.hidden_size, config.num_hidden_layers, config.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    matrices = L * (2 * d * q + 2 * d * kv + 3 * d * config.intermediate_size)
    others = L * 2 * d + d + config.vocab_size * d * (1 if config.tie_word_embeddings else 2)
    return bytes_per_value * (matrices + 2 * others)
""",
        },
    },
}
