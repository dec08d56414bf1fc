"""Held-out cases for Adan (optax.adan) at settings other than tests/reference/modern's."""
import optax

from gen import Case

SHAPES = [[5, 3], [3]]


def _l2_maximize(learning_rate, weight_decay, decoupled_weight_decay, maximize, **rest):
    """downhill's maximize (gradient negated first) and L2 penalty (decoupled_weight_decay
    false: g + λθ before the rule), built around optax.adan with no decay of its own."""
    assert maximize and not decoupled_weight_decay
    return optax.chain(
        optax.scale(-1.0),
        optax.add_decayed_weights(weight_decay),
        optax.adan(learning_rate, **rest),
    )


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
    Case(
        optimizer="adan",
        variant="l2-maximize",
        library="optax",
        make=_l2_maximize,
        options={'learning_rate': 0.01, 'b2': 0.85,
                 'weight_decay': 0.05, 'decoupled_weight_decay': False, 'maximize': True},
        library_call="optax.chain(optax.scale(-1.0), optax.add_decayed_weights(0.05), "
                     "optax.adan(learning_rate=0.01, b2=0.85))",
        shapes=SHAPES,
        seed=13,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); L2 penalty "
             "(decoupled_weight_decay false): add_decayed_weights before the optimizer",
    ),
]
