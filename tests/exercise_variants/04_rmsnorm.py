"""Chapter 4's exercises against wrappers of the finished components and plausible wrong answers.

Each source replaces the exercise's solution cell in the executed chapter's kernel; its graded
cell must then fail (ForbiddenCall for a wrapper, AssertionError for a wrong answer).
"""

VARIANTS = {
    "ch04-ex1-rms-backward": {
        "wrapper": """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    norm = RMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    x = x.clone().requires_grad_(True)
    norm(x).backward(grad_out)
    return x.grad, norm.weight.grad
""",
        "wrong": {
            "no projection term": """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    r = (x.square().mean(-1, keepdim=True) + eps).rsqrt()
    return r * grad_out * weight, (grad_out * x * r).reshape(-1, x.shape[-1]).sum(0)
""",
            "gain left out of grad_x": """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    r = (x.square().mean(-1, keepdim=True) + eps).rsqrt()
    xn = x * r
    grad_x = r * (grad_out - xn * (grad_out * xn).mean(-1, keepdim=True))
    return grad_x, (grad_out * xn).reshape(-1, x.shape[-1]).sum(0)
""",
            "sum instead of mean in the projection": """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    r = (x.square().mean(-1, keepdim=True) + eps).rsqrt()
    xn, g = x * r, grad_out * weight
    grad_x = r * (g - xn * (g * xn).sum(-1, keepdim=True))
    return grad_x, (grad_out * xn).reshape(-1, x.shape[-1]).sum(0)
""",
            "eps left out": """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    r = x.square().mean(-1, keepdim=True).rsqrt()
    xn, g = x * r, grad_out * weight
    grad_x = r * (g - xn * (g * xn).mean(-1, keepdim=True))
    return grad_x, (grad_out * xn).reshape(-1, x.shape[-1]).sum(0)
""",
            "grad_weight not summed over tokens": """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    r = (x.square().mean(-1, keepdim=True) + eps).rsqrt()
    xn, g = x * r, grad_out * weight
    grad_x = r * (g - xn * (g * xn).mean(-1, keepdim=True))
    return grad_x, grad_out * xn
""",
            # The Jacobian of x / RMS(x) is symmetric, so a Jacobian-vector product gives grad_x.
            "forward-mode autograd": (
                """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    unit = lambda t: t * (t.square().mean(-1, keepdim=True) + eps).rsqrt()
    grad_x = torch.func.jvp(unit, (x,), (grad_out * weight,))[1]
    return grad_x, (grad_out * unit(x)).reshape(-1, x.shape[-1]).sum(0)
""",
                "ForbiddenCall",
            ),
            "autograd's engine without .backward": (
                """
def rms_norm_backward(x, weight, grad_out, eps=1e-6):
    x, w = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    y = w * x * (x.square().mean(-1, keepdim=True) + eps).rsqrt()
    torch.autograd.graph._engine_run_backward((y,), (grad_out,), True)
    return x.grad, w.grad
""",
                "ForbiddenCall",
            ),
        },
    },
    "ch04-ex2-fp16-rms-norm": {
        "wrapper": """
def rms_norm_fp16(x, weight, eps=1e-6):
    norm = RMSNorm(x.shape[-1], eps=eps).half()
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)
""",
        "wrong": {
            "plain float16 formula": """
def rms_norm_fp16(x, weight, eps=1e-6):
    return weight * (x * (x.square().mean(-1, keepdim=True) + eps).rsqrt())
""",
            "rows scaled, eps not": """
def rms_norm_fp16(x, weight, eps=1e-6):
    peak = x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    unit = x / peak
    return weight * (unit * (unit.square().mean(-1, keepdim=True) + eps).rsqrt())
""",
            "eps / peak**2 underflows": """
def rms_norm_fp16(x, weight, eps=1e-6):
    peak = x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    unit = x / peak
    return weight * (unit * (unit.square().mean(-1, keepdim=True) + eps / peak**2).rsqrt())
""",
            "zero row becomes nan": """
def rms_norm_fp16(x, weight, eps=1e-6):
    peak = x.abs().amax(-1, keepdim=True)
    unit = x / peak
    return weight * (unit * (unit.square().mean(-1, keepdim=True) + (math.sqrt(eps) / peak).square()).rsqrt())
""",
            "float32 by type promotion": (
                """
def rms_norm_fp16(x, weight, eps=1e-6):
    wide = x * torch.ones(1)  # a float32 tensor promotes the product to float32
    return weight * (wide * (wide.square().mean(-1, keepdim=True) + eps).rsqrt()).half()
""",
                "ForbiddenCall",
            ),
            "float32 in NumPy": (
                """
def rms_norm_fp16(x, weight, eps=1e-6):
    import numpy as np

    wide = np.asarray(x, dtype=np.float32)
    y = wide / np.sqrt((wide**2).mean(-1, keepdims=True) + eps)
    return weight * torch.from_numpy(y).half()
""",
                "ForbiddenCall",
            ),
        },
    },
    "ch04-ex3-overflow-depth": {
        "wrapper": """
def fp16_overflow_depth(blocks, x):
    h = x.double()  # predict in float64 instead of running float16
    for i, block in enumerate(blocks, start=1):
        h = h + torch.relu(h @ block.fc1.weight.detach().double().T) @ block.fc2.weight.detach().double().T
        if h.abs().max() > torch.finfo(torch.float16).max:
            return i
    return None
""",
        "wrong": {
            "blocks counted from 0": """
def fp16_overflow_depth(blocks, x):
    h = x.half()
    for i, block in enumerate(blocks):
        h = h + torch.relu(h @ block.fc1.weight.detach().half().T) @ block.fc2.weight.detach().half().T
        if not torch.isfinite(h).all():
            return i
    return None
""",
            "looks for nan only": """
def fp16_overflow_depth(blocks, x):
    h = x.half()
    for i, block in enumerate(blocks, start=1):
        h = h + torch.relu(h @ block.fc1.weight.detach().half().T) @ block.fc2.weight.detach().half().T
        if torch.isnan(h).any():
            return i
    return None
""",
            "checks after the whole stack": """
def fp16_overflow_depth(blocks, x):
    h = x.half()
    for block in blocks:
        h = h + torch.relu(h @ block.fc1.weight.detach().half().T) @ block.fc2.weight.detach().half().T
    return len(blocks) if not torch.isfinite(h).all() else None
""",
        },
    },
}
