"""Held-out cases for LAMB (optax.lamb) at settings other than tests/reference/modern's."""
import optax

from gen import Case

SHAPES = [[5, 3], [3]]


def _l2_maximize(learning_rate, weight_decay, decoupled_weight_decay, maximize, **rest):
    """downhill's maximize (gradient negated first) and L2 penalty (decoupled_weight_decay
    false: g + λθ before the rule), built around optax.lamb with no decay of its own."""
    assert maximize and not decoupled_weight_decay
    return optax.chain(
        optax.scale(-1.0),
        optax.add_decayed_weights(weight_decay),
        optax.lamb(learning_rate, **rest),
    )


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
    Case(
        optimizer="lamb",
        variant="l2-maximize",
        library="optax",
        make=_l2_maximize,
        options={'learning_rate': 0.02, 'b1': 0.85,
                 'weight_decay': 0.05, 'decoupled_weight_decay': False, 'maximize': True},
        library_call="optax.chain(optax.scale(-1.0), optax.add_decayed_weights(0.05), "
                     "optax.lamb(learning_rate=0.02, b1=0.85))",
        shapes=SHAPES,
        seed=43,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); L2 penalty "
             "(decoupled_weight_decay false): add_decayed_weights before the optimizer",
    ),
]
