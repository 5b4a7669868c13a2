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
    "ch02-ex2-partial-rope": {
        "wrapper": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    from tinyqwen.rope import apply_rope, rope_cos_sin

    positions = cache_lengths[:, None] + torch.arange(x.shape[1])
    cos, sin = rope_cos_sin(rotary_dim, positions, theta)
    turned = apply_rope(x[:, None, :, :rotary_dim], cos, sin)[:, 0]
    return torch.cat((turned, x[..., rotary_dim:]), dim=-1)
""",
        "wrong": {
            # the chapter's own cells defined these too: they are switched off like tinyqwen.rope's
            "the chapter's rope_inv_freq and rotate_half": (
                """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    positions = cache_lengths[:, None] + torch.arange(x.shape[1])
    angles = positions[..., None].float() * rope_inv_freq(rotary_dim, theta)
    angles = torch.cat((angles, angles), dim=-1)
    turned = x[..., :rotary_dim] * angles.cos() + rotate_half(x[..., :rotary_dim]) * angles.sin()
    return torch.cat((turned, x[..., rotary_dim:]), dim=-1)
""",
                "ForbiddenCall",
            ),
            "every feature turned, as in Qwen3": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    d = x.shape[-1]
    speed = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = (cache_lengths[:, None] + torch.arange(x.shape[1])).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1)
""",
            "speeds from head_dim instead of rotary_dim": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    h = rotary_dim // 2
    speed = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / x.shape[-1])
    turn = (cache_lengths[:, None] + torch.arange(x.shape[1])).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., :h], x[..., h:rotary_dim]
    return torch.cat((a * c - b * s, b * c + a * s, x[..., rotary_dim:]), dim=-1)
""",
            "feature j paired with j + head_dim/2": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    h, d = rotary_dim // 2, x.shape[-1]
    speed = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    turn = (cache_lengths[:, None] + torch.arange(x.shape[1])).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    out = x.clone()
    a, b = x[..., :h], x[..., d // 2 : d // 2 + h]
    out[..., :h], out[..., d // 2 : d // 2 + h] = a * c - b * s, b * c + a * s
    return out
""",
            "the last rotary_dim features turned instead of the first": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    h, d = rotary_dim // 2, x.shape[-1]
    speed = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    turn = (cache_lengths[:, None] + torch.arange(x.shape[1])).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., d - rotary_dim : d - h], x[..., d - h :]
    return torch.cat((x[..., : d - rotary_dim], a * c - b * s, b * c + a * s), dim=-1)
""",
            "one offset for the whole batch": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    h = rotary_dim // 2
    speed = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    turn = (int(cache_lengths[0]) + torch.arange(x.shape[1], dtype=torch.float64))[:, None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., :h], x[..., h:rotary_dim]
    return torch.cat((a * c - b * s, b * c + a * s, x[..., rotary_dim:]), dim=-1)
""",
            "interleaved pairs inside the turned features (GPT-J's layout)": """
def partial_rope(x, cache_lengths, rotary_dim, theta=1_000_000.0):
    speed = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    turn = (cache_lengths[:, None] + torch.arange(x.shape[1])).double()[..., None] * speed
    c, s = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    a, b = x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2]
    turned = torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)
    return torch.cat((turned, x[..., rotary_dim:]), dim=-1)
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
