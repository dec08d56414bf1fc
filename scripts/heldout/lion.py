"""Held-out cases for `lion` (optax.lion) at settings other than the modern case's."""
import optax

from gen import Case


def _maximize(learning_rate, maximize):
    assert maximize
    # optax has no `maximize`: negate the gradient first (downhill's prelude does the same).
    # `weight_decay` is left at optax's default (1e-3), which is also downhill's.
    return optax.chain(optax.scale(-1.0), optax.lion(learning_rate))


CASES = [
    Case(
        optimizer="lion",
        variant="wd-betas",
        library="optax",
        make=optax.lion,
        options={"learning_rate": 0.003, "b1": 0.95, "b2": 0.98, "weight_decay": 0.1},
        library_call="optax.lion(learning_rate=0.003, b1=0.95, b2=0.98, weight_decay=0.1)",
        shapes=[[5, 3], [3]],
    ),
    Case(
        optimizer="lion",
        variant="maximize",
        library="optax",
        make=_maximize,
        options={"learning_rate": 0.01, "maximize": True},
        library_call="optax.chain(optax.scale(-1.0), optax.lion(learning_rate=0.01))",
        shapes=[[5, 3], [3]],
        seed=1,
        pull=-0.5,
        note="maximize: the gradient negated by optax.scale(-1.0) before optax.lion (default weight_decay 1e-3)",
    ),
]
