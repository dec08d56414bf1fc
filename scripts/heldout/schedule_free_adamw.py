"""Held-out cases for Schedule-Free AdamW (optax.contrib.schedule_free_adamw)."""
from gen import Case


def _make(**options):
    import optax
    return optax.contrib.schedule_free_adamw(**options)


CALL = "optax.contrib.schedule_free_adamw(**options)"

CASES = [
    # No warm-up, weight decay, other betas.
    Case("schedule_free_adamw", "wd-no-warmup", "optax", _make,
         {"learning_rate": 0.02, "b1": 0.95, "b2": 0.99, "weight_decay": 0.05}, CALL,
         shapes=[[5, 3], [3]]),
    # A warm-up longer than a third of the run, linear averaging weights, larger eps.
    Case("schedule_free_adamw", "warmup-power1", "optax", _make,
         {"learning_rate": 0.01, "warmup_steps": 12, "b1": 0.8, "eps": 1e-4,
          "weight_lr_power": 1.0}, CALL,
         shapes=[[4, 4], [4]], seed=2),
]
