"""Held-out cases for Adan (optax.adan) at settings other than tests/reference/modern's."""
import optax

from gen import Case

SHAPES = [[5, 3], [3]]

CASES = [
    Case(
        optimizer="adan",
        variant="weight-decay",
        library="optax",
        make=optax.adan,
        options={"learning_rate": 0.02, "weight_decay": 0.05},
        library_call="optax.adan(learning_rate=0.02, weight_decay=0.05)",
        shapes=SHAPES,
        seed=11,
    ),
    Case(
        optimizer="adan",
        variant="other-betas",
        library="optax",
        make=optax.adan,
        options={"learning_rate": 0.01, "b1": 0.9, "b2": 0.8, "b3": 0.999, "eps": 1e-6,
                 "eps_root": 0.0, "weight_decay": 0.01},
        library_call="optax.adan(learning_rate=0.01, b1=0.9, b2=0.8, b3=0.999, eps=1e-6, "
                     "eps_root=0.0, weight_decay=0.01)",
        shapes=SHAPES,
        seed=12,
        grad_scale=0.3,
    ),
]
