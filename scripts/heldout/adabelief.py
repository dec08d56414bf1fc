"""Held-out cases for `adabelief` (optax.adabelief) at other settings."""
import optax

from gen import Case


def _l2(learning_rate, eps, eps_root, weight_decay):
    # L2 penalty (downhill's weight_decay with decoupled_weight_decay false): g + λθ first.
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.adabelief(learning_rate, eps=eps, eps_root=eps_root),
    )


def _decoupled_maximize(learning_rate, b2, weight_decay, decoupled_weight_decay, maximize):
    assert decoupled_weight_decay and maximize
    return optax.chain(
        optax.scale(-1.0),
        optax.scale_by_belief(b2=b2),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


CASES = [
    Case(
        optimizer="adabelief",
        variant="nesterov-betas",
        library="optax",
        make=optax.adabelief,
        options={"learning_rate": 0.02, "b1": 0.8, "b2": 0.99, "nesterov": True},
        library_call="optax.adabelief(learning_rate=0.02, b1=0.8, b2=0.99, nesterov=True)",
        shapes=[[5, 3], [3]],
    ),
    Case(
        optimizer="adabelief",
        variant="l2-eps",
        library="optax",
        make=_l2,
        options={"learning_rate": 0.01, "eps": 1e-8, "eps_root": 1e-12, "weight_decay": 0.05},
        library_call="optax.chain(optax.add_decayed_weights(0.05), "
                     "optax.adabelief(0.01, eps=1e-8, eps_root=1e-12))",
        shapes=[[5, 3], [3]],
        seed=1,
        note="L2 weight decay: optax.add_decayed_weights before adabelief",
    ),
    Case(
        optimizer="adabelief",
        variant="decoupled-maximize",
        library="optax",
        make=_decoupled_maximize,
        options={"learning_rate": 0.01, "b2": 0.9, "weight_decay": 0.1,
                 "decoupled_weight_decay": True, "maximize": True},
        library_call="optax.chain(optax.scale(-1.0), optax.scale_by_belief(b2=0.9), "
                     "optax.add_decayed_weights(0.1), optax.scale_by_learning_rate(0.01))",
        shapes=[[5, 3], [3]],
        seed=2,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); decoupled decay: "
             "add_decayed_weights after the scaling, before the learning rate",
    ),
]
