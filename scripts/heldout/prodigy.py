"""Held-out cases for Prodigy (optax.contrib.prodigy)."""
from gen import Case


def _make(**options):
    import optax
    return optax.contrib.prodigy(**options)


CALL = "optax.contrib.prodigy(**options)"

CASES = [
    # Weight decay, explicit beta3, other betas, larger d0 and coefficient, lr < 1.
    Case("prodigy", "wd-beta3", "optax", _make,
         {"learning_rate": 0.5, "betas": [0.8, 0.99], "beta3": 0.9, "weight_decay": 0.01,
          "estim_lr0": 1e-4, "estim_lr_coef": 2.0}, CALL,
         shapes=[[5, 3], [3]]),
    # The safeguarded sum (no learning rate in s), larger eps.
    Case("prodigy", "safeguard", "optax", _make,
         {"learning_rate": 1.0, "safeguard_warmup": True, "eps": 1e-6, "estim_lr0": 1e-3},
         CALL, shapes=[[6, 2], [2, 3]], seed=3, steps=40),
]
