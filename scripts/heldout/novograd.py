"""Held-out cases for NovoGrad (optax.novograd) at settings other than tests/reference/modern's."""
import optax

from gen import Case

SHAPES = [[5, 3], [3]]

CASES = [
    Case(
        optimizer="novograd",
        variant="paper-betas-weight-decay",
        library="optax",
        make=optax.novograd,
        options={"learning_rate": 0.02, "b1": 0.95, "b2": 0.98, "weight_decay": 0.01},
        library_call="optax.novograd(learning_rate=0.02, b1=0.95, b2=0.98, weight_decay=0.01)",
        shapes=SHAPES,
        seed=31,
    ),
    Case(
        optimizer="novograd",
        variant="eps-root",
        library="optax",
        make=optax.novograd,
        options={"learning_rate": 0.05, "b1": 0.5, "eps": 1e-8, "eps_root": 1e-3},
        library_call="optax.novograd(learning_rate=0.05, b1=0.5, eps=1e-8, eps_root=1e-3)",
        shapes=SHAPES,
        seed=32,
        grad_scale=0.1,
    ),
]
