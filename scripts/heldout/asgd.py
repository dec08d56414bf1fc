"""Held-out cases for ASGD (torch.optim.ASGD) at other settings than the modern case."""
from gen import Case


def _make(params, **options):
    import torch
    return torch.optim.ASGD(params, **options)


CALL = "torch.optim.ASGD(params, **options)"

CASES = [
    # Strong decay of the step size and of the parameters, L2 weight decay, averaging from
    # step 10 on.
    Case("asgd", "decay-wd", "torch", _make,
         {"lr": 0.05, "lambd": 0.05, "alpha": 0.5, "t0": 10.0, "weight_decay": 0.1}, CALL,
         shapes=[[5, 3], [3]]),
    Case("asgd", "maximize", "torch", _make,
         {"lr": 0.02, "lambd": 1e-3, "alpha": 1.0, "t0": 5.0, "maximize": True}, CALL,
         shapes=[[5, 3], [3]], seed=1, pull=-1.0),
]
