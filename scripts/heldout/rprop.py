"""Held-out cases for Rprop (torch.optim.Rprop) at other settings than the modern case."""
from gen import Case


def _make(params, **options):
    import torch
    return torch.optim.Rprop(params, **options)


CALL = "torch.optim.Rprop(params, **options)"

CASES = [
    Case("rprop", "etas-bounds", "torch", _make,
         {"lr": 0.02, "etas": [0.3, 1.5], "step_sizes": [1e-3, 0.05]}, CALL,
         shapes=[[5, 3], [3]]),
    # Gradient pulled away from zero and maximized: the ascent heads back to zero.
    Case("rprop", "maximize", "torch", _make,
         {"lr": 0.005, "etas": [0.6, 1.1], "maximize": True}, CALL,
         shapes=[[5, 3], [3]], seed=1, pull=-1.0),
]
