"""Held-out cases of PyTorch's Muon (`torch.optim.Muon`) at settings other than the bundled
cases' (`lr=0.02` default, and `match_rms_adamw` with `weight_decay=0.01`).

As for the bundled cases, the Newton-Schulz iteration runs in the parameters' dtype: PyTorch
casts the momentum to bfloat16 for it, which no other implementation reproduces; the cast is
removed (`_zeropower_via_newtonschulz` replaced by the same function without it), nothing else
changes."""
from gen import Case

NOTE = ("torch.optim.Muon with the Newton-Schulz iteration in the parameter dtype: torch itself "
        "casts the gradient to bfloat16 for it; that cast was removed for this reference, "
        "nothing else changed")


def _ns_in_param_dtype(grad, ns_coefficients, ns_steps, eps):
    # torch.optim._muon._zeropower_via_newtonschulz (2.15) without `.to(torch.bfloat16)`.
    import torch
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(grad.shape) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    ortho_grad = grad.clone()
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram_matrix = ortho_grad @ ortho_grad.T
        gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
        ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


def _muon(params, **options):
    import torch
    import torch.optim._muon as m
    m._zeropower_via_newtonschulz = _ns_in_param_dtype
    return torch.optim.Muon(params, **options)


CALL = "torch.optim.Muon(params, **options)"

CASES = [
    # Plain (not Nesterov) momentum, no decay; a wide and a tall matrix.
    Case("muon", "no-nesterov", "torch", _muon,
         {"lr": 0.03, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
         CALL, [[3, 5], [5, 3]], note=NOTE),
    # Other polynomial, fewer iterations, larger eps, Bernstein's unclamped lr; a square and a
    # tall matrix.
    Case("muon", "spectral-ns3", "torch", _muon,
         {"lr": 0.01, "adjust_lr_fn": "spectral_unclamped", "ns_steps": 3,
          "ns_coefficients": [3.0, -3.2, 1.2], "eps": 1e-5, "weight_decay": 0.05},
         CALL, [[4, 4], [6, 2]], note=NOTE),
    # "original" named explicitly, lower momentum, default weight decay 0.1, a tall matrix.
    Case("muon", "original-tall", "torch", _muon,
         {"lr": 0.05, "adjust_lr_fn": "original", "momentum": 0.8},
         CALL, [[7, 3]], note=NOTE),
]
