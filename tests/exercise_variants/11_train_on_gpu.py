"""Chapter 11 part 2's exercises against a wrapper around the finished trainer and plausible wrong answers."""

# Exercise 4's wrong answers: the chapter's bigram entropy with one slot changed.
_BIGRAM = """
def bigram_entropy(tokens):
    ids = torch.as_tensor(tokens).long()
    prev, nxt = {prev}, {nxt}
    width = int(ids.max()) + 1
    joint = torch.bincount(prev * width + nxt, minlength=width * width).{dtype}().view(width, width)
    rows = joint.sum(dim=1, keepdim=True).expand_as(joint)
    seen = joint > 0
    return float(-(joint[seen] * (joint[seen] / rows[seen]).{log}()).sum() / ({n_pairs}))
"""


def _bigram(**changed) -> str:
    slots = dict(prev="ids[:-1]", nxt="ids[1:]", dtype="double", log="log", n_pairs="len(ids) - 1")
    return _BIGRAM.format(**{**slots, **changed})


VARIANTS = {
    "ch11t-ex1-loss-scale": {
        "wrapper": """
def scaled_step(model, optimizer, batches, scale, *, grad_clip):
    from contextlib import nullcontext

    from tinyqwen.train import apply_update, train_step

    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1_000)
    loss, norm = train_step(model, optimizer, scaler, batches, autocast=nullcontext, grad_clip=grad_clip)
    apply_update(optimizer, scaler)
    skipped = scaler.get_scale() < scale
    return float(loss), None if skipped else float(norm), scaler.get_scale()
""",
        "wrong": {
            "clips before unscaling": """
def scaled_step(model, optimizer, batches, scale, *, grad_clip):
    losses = []
    for x, y in batches:
        loss = model(x, targets=y).loss
        (loss * scale / len(batches)).backward()
        losses.append(loss.detach())
    weights = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = float(torch.nn.utils.clip_grad_norm_(weights, max_norm=grad_clip)) / scale
    finite = all(bool(torch.isfinite(p.grad).all()) for p in weights)
    for p in weights:
        p.grad.mul_(1.0 / scale)
    if finite:
        optimizer.step()
    optimizer.zero_grad()
    return float(sum(losses) / len(batches)), norm if finite else None, scale if finite else scale / 2
""",
            "no division by the number of micro-batches": """
def scaled_step(model, optimizer, batches, scale, *, grad_clip):
    losses = []
    for x, y in batches:
        loss = model(x, targets=y).loss
        (loss * scale).backward()
        losses.append(loss.detach())
    weights = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    for p in weights:
        p.grad.mul_(1.0 / scale)
    finite = all(bool(torch.isfinite(p.grad).all()) for p in weights)
    norm = float(torch.nn.utils.clip_grad_norm_(weights, max_norm=grad_clip)) if finite else None
    if finite:
        optimizer.step()
    optimizer.zero_grad()
    return float(sum(losses) / len(batches)), norm, scale if finite else scale / 2
""",
            "the scale kept after an overflow": """
def scaled_step(model, optimizer, batches, scale, *, grad_clip):
    losses = []
    for x, y in batches:
        loss = model(x, targets=y).loss
        (loss * scale / len(batches)).backward()
        losses.append(loss.detach())
    weights = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    for p in weights:
        p.grad.mul_(1.0 / scale)
    finite = all(bool(torch.isfinite(p.grad).all()) for p in weights)
    norm = float(torch.nn.utils.clip_grad_norm_(weights, max_norm=grad_clip)) if finite else None
    if finite:
        optimizer.step()
    optimizer.zero_grad()
    return float(sum(losses) / len(batches)), norm, scale
""",
            "steps even when the gradients overflowed": """
def scaled_step(model, optimizer, batches, scale, *, grad_clip):
    losses = []
    for x, y in batches:
        loss = model(x, targets=y).loss
        (loss * scale / len(batches)).backward()
        losses.append(loss.detach())
    weights = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    for p in weights:
        p.grad.mul_(1.0 / scale)
    finite = all(bool(torch.isfinite(p.grad).all()) for p in weights)
    norm = float(torch.nn.utils.clip_grad_norm_(weights, max_norm=grad_clip))
    optimizer.step()
    optimizer.zero_grad()
    return float(sum(losses) / len(batches)), norm if finite else None, scale if finite else scale / 2
""",
            "unscaled through a float16 reciprocal (not exact)": """
def scaled_step(model, optimizer, batches, scale, *, grad_clip):
    losses = []
    for x, y in batches:
        loss = model(x, targets=y).loss
        (loss * scale / len(batches)).backward()
        losses.append(loss.detach())
    weights = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    inverse = float(torch.tensor(1.0 / scale, dtype=torch.float16))  # 0 below float16's range
    for p in weights:
        p.grad.mul_(inverse)
    finite = all(bool(torch.isfinite(p.grad).all()) for p in weights)
    norm = float(torch.nn.utils.clip_grad_norm_(weights, max_norm=grad_clip)) if finite else None
    if finite:
        optimizer.step()
    optimizer.zero_grad()
    return float(sum(losses) / len(batches)), norm, scale if finite else scale / 2
""",
        },
    },
    "ch11t-ex2-token-weighted": {
        "wrapper": """
def accumulate_by_tokens(model, batches):
    from contextlib import nullcontext

    from tinyqwen.train import train_step

    loss, _ = train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), None, batches,
                         autocast=nullcontext, grad_clip=1e30)
    return float(loss)
""",
        "wrong": {
            "the mean of the micro-batch means (train_step's weighting)": """
def accumulate_by_tokens(model, batches):
    total = 0.0
    for x, y in batches:
        loss = model(x, targets=y).loss
        (loss / len(batches)).backward()
        total += loss.item() / len(batches)
    return total
""",
            "padding counted as tokens": """
def accumulate_by_tokens(model, batches):
    counts = [y.numel() for _, y in batches]
    total, mean_loss = sum(counts), 0.0
    for (x, y), count in zip(batches, counts):
        loss = model(x, targets=y).loss
        (loss * count / total).backward()
        mean_loss += loss.item() * count / total
    return mean_loss
""",
            "weighted by sequences, not tokens": """
def accumulate_by_tokens(model, batches):
    rows = [x.shape[0] for x, _ in batches]
    total, mean_loss = sum(rows), 0.0
    for (x, y), n in zip(batches, rows):
        loss = model(x, targets=y).loss
        (loss * n / total).backward()
        mean_loss += loss.item() * n / total
    return mean_loss
""",
            "one padded batch through the model (no accumulation)": """
def accumulate_by_tokens(model, batches):
    import torch.nn.functional as F

    longest = max(x.shape[1] for x, _ in batches)
    x = torch.cat([F.pad(x, (0, longest - x.shape[1])) for x, _ in batches])
    y = torch.cat([F.pad(y, (0, longest - y.shape[1]), value=-100) for _, y in batches])
    loss = model(x, targets=y).loss
    loss.backward()
    return loss.item()
""",
        },
    },
    "ch11t-ex3-resume": {
        "wrapper": """
def capture_state(next_step, model, optimizer):
    import tempfile
    from pathlib import Path

    from tinyqwen.train import save_checkpoint, train_config

    folder = Path(tempfile.mkdtemp())
    save_checkpoint(folder, next_step - 1, model, optimizer, None, None, [], train_config("ci"))
    return {"folder": str(folder)}


def restore_state(state, model, optimizer):
    from pathlib import Path

    from tinyqwen.train import load_checkpoint

    path = sorted((Path(state["folder"]) / "checkpoints").glob("step_*"))[-1]
    return load_checkpoint(path, model, optimizer, None, None)[0]
""",
        "wrong": {
            "keeps references, not copies": """
def capture_state(next_step, model, optimizer):
    return {"next_step": next_step, "weights": model.state_dict(), "optimizer": optimizer.state_dict(),
            "global_rng": torch.get_rng_state()}


def restore_state(state, model, optimizer):
    model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["global_rng"])
    return state["next_step"]
""",
            "forgets the random generator": """
def capture_state(next_step, model, optimizer):
    import copy

    return {"next_step": next_step, "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict())}


def restore_state(state, model, optimizer):
    model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    return state["next_step"]
""",
            "forgets the optimizer's state": """
def capture_state(next_step, model, optimizer):
    return {"next_step": next_step, "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "global_rng": torch.get_rng_state()}


def restore_state(state, model, optimizer):
    model.load_state_dict(state["weights"])
    torch.set_rng_state(state["global_rng"])
    return state["next_step"]
""",
            "continues one step late": """
def capture_state(next_step, model, optimizer):
    import copy

    return {"step": next_step, "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()), "global_rng": torch.get_rng_state()}


def restore_state(state, model, optimizer):
    model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["global_rng"])
    return state["step"] + 1
""",
        },
    },
    "ch11t-ex4-bigram": {
        "wrapper": """
def bigram_entropy(tokens):
    from tinyqwen.train import unigram_entropy

    ids = torch.as_tensor(tokens).long()
    width = int(ids.max()) + 1
    pairs = (ids[:-1] * width + ids[1:]).numpy()
    return unigram_entropy(pairs) - unigram_entropy(ids[:-1].numpy())
""",
        "wrong": {
            "the joint entropy of the pairs": """
def bigram_entropy(tokens):
    ids = torch.as_tensor(tokens).long()
    width = int(ids.max()) + 1
    counts = torch.bincount(ids[:-1] * width + ids[1:]).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())
""",
            "the unigram entropy of the next tokens": """
def bigram_entropy(tokens):
    ids = torch.as_tensor(tokens).long()
    counts = torch.bincount(ids[1:]).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())
""",
            "bits, not nats": _bigram(log="log2"),
            "pairs wrap around from the last token to the first": _bigram(
                prev="ids", nxt="torch.roll(ids, -1)", n_pairs="len(ids)"
            ),
            "computed in float32": _bigram(dtype="float"),
        },
    },
}
