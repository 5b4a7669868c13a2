"""Chapter 2's exercises against wrappers of the finished RoPE and plausible wrong answers.

Each source replaces the exercise's solution cell in the executed chapter's kernel; its graded
cell must then fail (ForbiddenCall for a wrapper, AssertionError for a wrong answer).
"""

VARIANTS = {
    "ch02-ex1-sinusoidal": {
        "wrapper": """
def sinusoidal_encoding(num_positions, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    cos, sin = rope_cos_sin(dim, num_positions, base)
    return torch.stack((sin[:, : dim // 2], cos[:, : dim // 2]), dim=-1).flatten(-2)
""",
        "wrong": {
            "sin and cos swapped": """
def sinusoidal_encoding(num_positions, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    omega = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * omega
    return torch.stack((angles.cos(), angles.sin()), dim=-1).flatten(-2).float()
""",
            "exponent i/d instead of 2i/d": """
def sinusoidal_encoding(num_positions, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    omega = base ** (-torch.arange(dim // 2, dtype=torch.float64) / dim)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * omega
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).float()
""",
            "positions start at 1": """
def sinusoidal_encoding(num_positions, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    omega = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(1, num_positions + 1, dtype=torch.float64)[:, None] * omega
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).float()
""",
            "halves instead of interleaved": """
def sinusoidal_encoding(num_positions, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    omega = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * omega
    return torch.cat((angles.sin(), angles.cos()), dim=-1).float()
""",
            "no error for an odd dim": """
def sinusoidal_encoding(num_positions, dim, base=10000.0):
    omega = base ** (-torch.arange(0, dim - dim % 2, 2, dtype=torch.float64) / dim)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * omega
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).float()
""",
        },
    },
    "ch02-ex2-rope-cache": {
        "wrapper": """
def rope_after_cache(x, cache_lengths, theta=1_000_000.0):
    positions = cache_lengths[:, None] + torch.arange(x.shape[1])
    cos, sin = rope_cos_sin(x.shape[-1], positions, theta)
    return apply_rope(x[:, None], cos, sin)[:, 0]
""",
        "wrong": {
            "one offset for the whole batch": """
def rope_after_cache(x, cache_lengths, theta=1_000_000.0):
    seq, d = x.shape[1], x.shape[2]
    speed = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = (int(cache_lengths[0]) + torch.arange(seq, dtype=torch.float64))[:, None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)
""",
            "off by one position": """
def rope_after_cache(x, cache_lengths, theta=1_000_000.0):
    seq, d = x.shape[1], x.shape[2]
    speed = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = (cache_lengths[:, None] + 1 + torch.arange(seq)).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)
""",
            "interleaved pairs": """
def rope_after_cache(x, cache_lengths, theta=1_000_000.0):
    seq, d = x.shape[1], x.shape[2]
    speed = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = (cache_lengths[:, None] + torch.arange(seq)).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)
""",
            "rotation the wrong way": """
def rope_after_cache(x, cache_lengths, theta=1_000_000.0):
    seq, d = x.shape[1], x.shape[2]
    speed = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = (cache_lengths[:, None] + torch.arange(seq)).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((a * c + b * s, b * c - a * s), dim=-1)
""",
        },
    },
    "ch02-ex3-score-distance": {
        "wrapper": """
def score_at_distance(q, k, distances, theta=1_000_000.0):
    d = q.shape[-1]
    cos, sin = rope_cos_sin(d, distances, theta)
    rotated_q = apply_rope(q.expand(1, 1, len(distances), d), cos, sin)[0, 0]
    return rotated_q @ k
""",
        "wrong": {
            "distance n - m instead of m - n": """
def score_at_distance(q, k, distances, theta=1_000_000.0):
    h = q.shape[-1] // 2
    zq, zk = torch.complex(q[:h].double(), q[h:].double()), torch.complex(k[:h].double(), k[h:].double())
    speed = theta ** (-torch.arange(0, 2 * h, 2, dtype=torch.float64) / (2 * h))
    turn = -distances[:, None].double() * speed
    return (zq * zk.conj() * torch.polar(torch.ones_like(turn), turn)).real.sum(-1).to(q.dtype)
""",
            "interleaved pairs": """
def score_at_distance(q, k, distances, theta=1_000_000.0):
    h = q.shape[-1] // 2
    zq, zk = torch.complex(q[0::2].double(), q[1::2].double()), torch.complex(k[0::2].double(), k[1::2].double())
    speed = theta ** (-torch.arange(0, 2 * h, 2, dtype=torch.float64) / (2 * h))
    turn = distances[:, None].double() * speed
    return (zq * zk.conj() * torch.polar(torch.ones_like(turn), turn)).real.sum(-1).to(q.dtype)
""",
            "cosine terms only": """
def score_at_distance(q, k, distances, theta=1_000_000.0):
    h = q.shape[-1] // 2
    same = q[:h] * k[:h] + q[h:] * k[h:]  # the sine terms (q_j k_{j+h} - q_{j+h} k_j) are missing
    speed = theta ** (-torch.arange(0, 2 * h, 2, dtype=torch.float64) / (2 * h))
    return (same.double() * (distances[:, None].double() * speed).cos()).sum(-1).to(q.dtype)
""",
            "score at distance 0 for all": """
def score_at_distance(q, k, distances, theta=1_000_000.0):
    return (q @ k).expand(len(distances)).clone()
""",
        },
    },
}
