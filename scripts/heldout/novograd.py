"""Held-out cases for NovoGrad (optax.novograd) at settings other than tests/reference/modern's."""
import optax

from gen import Case

SHAPES = [[5, 3], [3]]


def _l2_maximize(learning_rate, weight_decay, decoupled_weight_decay, maximize, **rest):
    """downhill's maximize (gradient negated first) and L2 penalty (decoupled_weight_decay
    false: g + λθ before the rule), built around optax.novograd with no decay of its own."""
    assert maximize and not decoupled_weight_decay
    return optax.chain(
        optax.scale(-1.0),
        optax.add_decayed_weights(weight_decay),
        optax.novograd(learning_rate, **rest),
    )


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
    Case(
        optimizer="novograd",
        variant="l2-maximize",
        library="optax",
        make=_l2_maximize,
        options={'learning_rate': 0.02, 'b2': 0.5,
                 'weight_decay': 0.05, 'decoupled_weight_decay': False, 'maximize': True},
        library_call="optax.chain(optax.scale(-1.0), optax.add_decayed_weights(0.05), "
                     "optax.novograd(learning_rate=0.02, b2=0.5))",
        shapes=SHAPES,
        seed=33,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); L2 penalty "
             "(decoupled_weight_decay false): add_decayed_weights before the optimizer",
    ),
]
