"""Held-out cases of PyTorch's Adafactor (`torch.optim.Adafactor`) at settings other than the
bundled case's (which is `lr=0.01` on [[5, 3], [3]], everything else default)."""
from gen import Case


def _adafactor(params, **options):
    import torch
    return torch.optim.Adafactor(params, **options)


CALL = "torch.optim.Adafactor(params, **options)"

CASES = [
    # Decoupled weight decay and maximize, a tall matrix and a vector.
    Case("adafactor", "decay-maximize", "torch", _adafactor,
         {"lr": 0.02, "weight_decay": 0.1, "maximize": True}, CALL, [[6, 2], [4]]),
    # Explicit eps1, larger eps2 and clipping threshold, slower decay of the statistics; a 3-D
    # tensor (factored over its last two dimensions for each leading index) and a 0-D scalar.
    Case("adafactor", "eps-d-3d", "torch", _adafactor,
         {"lr": 0.05, "beta2_decay": -0.5, "eps": [1e-30, 1e-2], "d": 2.0},
         CALL, [[2, 4, 3], []]),
    # Pure-noise gradients (no pull) and a slow decay exponent: the update's RMS exceeds d = 1
    # on about a quarter of the steps (clipped; so it does in decay-maximize, never in
    # eps-d-3d); lr above 1/√2, so ρ = 1/√t from step 2.
    Case("adafactor", "clipped", "torch", _adafactor,
         {"lr": 0.8, "beta2_decay": -0.2, "weight_decay": 0.01},
         CALL, [[3, 5], [5]], pull=0.0, grad_scale=1.0),
]
