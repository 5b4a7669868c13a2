"""Chapter 9's exercises against wrappers of the finished components and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers).
"""

VARIANTS = {
    "ch09-ex1-batch-bpb": {
        # the chapter's bits_per_byte on the counted text tokens
        "wrapper": """
def batch_bits_per_byte(token_losses, targets, token_bytes, ignore_index=-100):
    ids = targets[targets != ignore_index]
    is_text = token_bytes[ids] > 0
    losses = token_losses[targets != ignore_index][is_text]
    return bits_per_byte(losses.mean().item(), len(losses), token_bytes[ids].sum().item())
""",
        "wrong": {
            "special tokens' losses kept in the bits": """
def batch_bits_per_byte(token_losses, targets, token_bytes, ignore_index=-100):
    counted = targets != ignore_index
    n_bytes = token_bytes[targets[counted]].sum()
    return token_losses[counted].double().sum() / math.log(2) / n_bytes
""",
            "nats, not bits": """
def batch_bits_per_byte(token_losses, targets, token_bytes, ignore_index=-100):
    counted = targets != ignore_index
    n_bytes = torch.where(counted, token_bytes[torch.where(counted, targets, 0)], 0)
    return token_losses[n_bytes > 0].double().sum() / n_bytes.sum()
""",
            "ignored positions read as token 0": """
def batch_bits_per_byte(token_losses, targets, token_bytes, ignore_index=-100):
    n_bytes = token_bytes[targets.clamp(min=0)]
    return token_losses[n_bytes > 0].double().sum() / math.log(2) / n_bytes.sum()
""",
            "mean of the sequences' bits per byte": """
def batch_bits_per_byte(token_losses, targets, token_bytes, ignore_index=-100):
    counted = targets != ignore_index
    n_bytes = torch.where(counted, token_bytes[torch.where(counted, targets, 0)], 0)
    bits = torch.where(n_bytes > 0, token_losses, 0.0).double().sum(-1) / math.log(2)
    return (bits / n_bytes.sum(-1)).mean()
""",
        },
    },
    "ch09-ex2-smoothed-z-grad": {
        # autograd through the chapter's losses
        "wrapper": """
def smoothed_z_loss_grad(logits, targets, smoothing, z_weight, ignore_index=-100):
    x = logits.clone().requires_grad_()
    loss = cross_entropy(x, targets, ignore_index, label_smoothing=smoothing) + z_weight * z_loss(x, targets, ignore_index)
    loss.backward()
    return x.grad
""",
        "wrong": {
            "smoothing's uniform term left out": """
def smoothed_z_loss_grad(logits, targets, smoothing, z_weight, ignore_index=-100):
    counted = targets != ignore_index
    p = torch.softmax(logits, dim=-1)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    target = torch.zeros_like(logits).scatter_(1, torch.where(counted, targets, 0)[:, None], 1 - smoothing)
    return (p - target + 2 * z_weight * log_z * p) * counted[:, None] / counted.sum()
""",
            "z-loss gradient without the factor 2": """
def smoothed_z_loss_grad(logits, targets, smoothing, z_weight, ignore_index=-100):
    counted = targets != ignore_index
    p = torch.softmax(logits, dim=-1)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    target = torch.zeros_like(logits).scatter_(1, torch.where(counted, targets, 0)[:, None], 1 - smoothing)
    grad = p - target - smoothing / logits.shape[-1] + z_weight * log_z * p
    return grad * counted[:, None] / counted.sum()
""",
            "z-loss gradient 2 lambda log Z, without p": """
def smoothed_z_loss_grad(logits, targets, smoothing, z_weight, ignore_index=-100):
    counted = targets != ignore_index
    p = torch.softmax(logits, dim=-1)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    target = torch.zeros_like(logits).scatter_(1, torch.where(counted, targets, 0)[:, None], 1 - smoothing)
    grad = p - target - smoothing / logits.shape[-1] + 2 * z_weight * log_z
    return grad * counted[:, None] / counted.sum()
""",
            "divided by all rows, not the counted ones": """
def smoothed_z_loss_grad(logits, targets, smoothing, z_weight, ignore_index=-100):
    counted = targets != ignore_index
    p = torch.softmax(logits, dim=-1)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    target = torch.zeros_like(logits).scatter_(1, torch.where(counted, targets, 0)[:, None], 1 - smoothing)
    grad = p - target - smoothing / logits.shape[-1] + 2 * z_weight * log_z * p
    return grad * counted[:, None] / len(targets)
""",
            "ignored rows still get a gradient": """
def smoothed_z_loss_grad(logits, targets, smoothing, z_weight, ignore_index=-100):
    counted = targets != ignore_index
    p = torch.softmax(logits, dim=-1)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    target = torch.zeros_like(logits).scatter_(1, torch.where(counted, targets, 0)[:, None], 1 - smoothing)
    grad = p - target - smoothing / logits.shape[-1] + 2 * z_weight * log_z * p
    return grad / counted.sum()
""",
        },
    },
    "ch09-ex3-sharded-ce": {
        # join the shards and call the chapter's loss
        "wrapper": """
def sharded_cross_entropy(shards, targets, ignore_index=-100):
    return cross_entropy(torch.cat(shards, dim=-1), targets, ignore_index)
""",
        "wrong": {
            "no shared maximum: exp overflows": """
def sharded_cross_entropy(shards, targets, ignore_index=-100):
    sum_exp = sum(s.exp().sum(dim=-1) for s in shards)
    counted = targets != ignore_index
    picked, start = torch.zeros(len(targets)), 0
    for s in shards:
        mine = counted & (targets >= start) & (targets < start + s.shape[-1])
        picked = picked + torch.where(mine, s.gather(1, torch.where(mine, targets - start, 0)[:, None]).squeeze(1), 0.0)
        start += s.shape[-1]
    return torch.where(counted, sum_exp.log() - picked, 0.0).sum() / counted.sum()
""",
            "each shard shifted by its own maximum, then added": """
def sharded_cross_entropy(shards, targets, ignore_index=-100):
    top = torch.stack([s.amax(dim=-1) for s in shards]).amax(dim=0)
    sum_exp = sum((s - s.amax(dim=-1, keepdim=True)).exp().sum(dim=-1) for s in shards)
    counted = targets != ignore_index
    picked, start = torch.zeros_like(top), 0
    for s in shards:
        mine = counted & (targets >= start) & (targets < start + s.shape[-1])
        picked = picked + torch.where(mine, s.gather(1, torch.where(mine, targets - start, 0)[:, None]).squeeze(1), 0.0)
        start += s.shape[-1]
    return torch.where(counted, top + sum_exp.log() - picked, 0.0).sum() / counted.sum()
""",
            "every shard's slice starts at id 0": """
def sharded_cross_entropy(shards, targets, ignore_index=-100):
    top = torch.stack([s.amax(dim=-1) for s in shards]).amax(dim=0)
    sum_exp = sum((s - top[:, None]).exp().sum(dim=-1) for s in shards)
    counted = targets != ignore_index
    picked = torch.zeros_like(top)
    for s in shards:
        mine = counted & (targets >= 0) & (targets < s.shape[-1])
        picked = picked + torch.where(mine, s.gather(1, torch.where(mine, targets, 0)[:, None]).squeeze(1), 0.0)
    return torch.where(counted, top + sum_exp.log() - picked, 0.0).sum() / counted.sum()
""",
            "ignored positions counted in the mean": """
def sharded_cross_entropy(shards, targets, ignore_index=-100):
    top = torch.stack([s.amax(dim=-1) for s in shards]).amax(dim=0)
    sum_exp = sum((s - top[:, None]).exp().sum(dim=-1) for s in shards)
    counted = targets != ignore_index
    picked, start = torch.zeros_like(top), 0
    for s in shards:
        mine = counted & (targets >= start) & (targets < start + s.shape[-1])
        picked = picked + torch.where(mine, s.gather(1, torch.where(mine, targets - start, 0)[:, None]).squeeze(1), 0.0)
        start += s.shape[-1]
    return torch.where(counted, top + sum_exp.log() - picked, 0.0).mean()
""",
            "the full logits rebuilt by slice assignment": """
def sharded_cross_entropy(shards, targets, ignore_index=-100):
    logits = torch.empty(len(targets), sum(s.shape[-1] for s in shards))
    start = 0
    for s in shards:
        logits[:, start : start + s.shape[-1]] = s
        start += s.shape[-1]
    top = logits.amax(dim=-1, keepdim=True)
    lse = top.squeeze(-1) + (logits - top).exp().sum(dim=-1).log()
    counted = targets != ignore_index
    picked = logits.gather(1, torch.where(counted, targets, 0)[:, None]).squeeze(1)
    return torch.where(counted, lse - picked, 0.0).sum() / counted.sum()
""",
        },
    },
    "ch09-ex4-distillation": {
        # PyTorch's KL divergence
        "wrapper": """
def distillation_loss(student_logits, teacher_logits, targets, temperature, ignore_index=-100):
    keep = targets != ignore_index
    log_p = torch.log_softmax(student_logits[keep] / temperature, dim=-1)
    log_q = torch.log_softmax(teacher_logits[keep] / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
""",
        "wrong": {
            "no T squared": """
def distillation_loss(student_logits, teacher_logits, targets, temperature, ignore_index=-100):
    log_p = torch.log_softmax(student_logits / temperature, dim=-1)
    log_q = torch.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    counted = targets != ignore_index
    return torch.where(counted, kl, 0.0).sum() / counted.sum()
""",
            "KL the other way round, KL(student || teacher)": """
def distillation_loss(student_logits, teacher_logits, targets, temperature, ignore_index=-100):
    log_p = torch.log_softmax(student_logits / temperature, dim=-1)
    log_q = torch.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    counted = targets != ignore_index
    return temperature**2 * torch.where(counted, kl, 0.0).sum() / counted.sum()
""",
            "temperature on the student only": """
def distillation_loss(student_logits, teacher_logits, targets, temperature, ignore_index=-100):
    log_p = torch.log_softmax(student_logits / temperature, dim=-1)
    log_q = torch.log_softmax(teacher_logits, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    counted = targets != ignore_index
    return temperature**2 * torch.where(counted, kl, 0.0).sum() / counted.sum()
""",
            "mean over every position, ignored ones too": """
def distillation_loss(student_logits, teacher_logits, targets, temperature, ignore_index=-100):
    log_p = torch.log_softmax(student_logits / temperature, dim=-1)
    log_q = torch.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    return temperature**2 * kl.mean()
""",
        },
    },
}
