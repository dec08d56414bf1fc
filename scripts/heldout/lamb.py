"""Held-out cases for LAMB (optax.lamb) at settings other than tests/reference/modern's."""
import optax

from gen import Case

SHAPES = [[5, 3], [3]]

CASES = [
    Case(
        optimizer="lamb",
        variant="weight-decay",
        library="optax",
        make=optax.lamb,
        options={"learning_rate": 0.02, "weight_decay": 0.01},
        library_call="optax.lamb(learning_rate=0.02, weight_decay=0.01)",
        shapes=SHAPES,
        seed=41,
    ),
    Case(
        optimizer="lamb",
        variant="other-betas",
        library="optax",
        make=optax.lamb,
        options={"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "eps_root": 1e-10,
                 "weight_decay": 0.1},
        library_call="optax.lamb(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-8, "
                     "eps_root=1e-10, weight_decay=0.1)",
        shapes=SHAPES,
        seed=42,
        grad_scale=0.5,
    ),
]
