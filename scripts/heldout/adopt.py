"""Held-out cases for `adopt` (optax.contrib.adopt) at other settings."""
import optax

from gen import Case


def _l2(learning_rate, b1, eps, weight_decay):
    # L2 penalty (downhill's weight_decay with decoupled_weight_decay false): g + λθ first.
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.contrib.adopt(learning_rate, b1=b1, eps=eps),
    )


def _decoupled_maximize(learning_rate, b2, weight_decay, decoupled_weight_decay, maximize):
    assert decoupled_weight_decay and maximize
    return optax.chain(
        optax.scale(-1.0),
        optax.contrib.scale_by_adopt(b2=b2),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


CASES = [
    Case(
        optimizer="adopt",
        variant="no-clip-nesterov",
        library="optax",
        make=optax.contrib.adopt,
        options={"learning_rate": 0.02, "b2": 0.999, "nesterov": True, "use_clipping": False},
        library_call="optax.contrib.adopt(learning_rate=0.02, b2=0.999, nesterov=True, "
                     "use_clipping=False)",
        shapes=[[5, 3], [3]],
    ),
    Case(
        optimizer="adopt",
        variant="l2-b1-eps",
        library="optax",
        make=_l2,
        options={"learning_rate": 0.01, "b1": 0.5, "eps": 0.3, "weight_decay": 0.05},
        library_call="optax.chain(optax.add_decayed_weights(0.05), "
                     "optax.contrib.adopt(0.01, b1=0.5, eps=0.3))",
        shapes=[[5, 3], [3]],
        seed=1,
        grad_scale=0.2,
        note="L2 weight decay: optax.add_decayed_weights before adopt; eps large enough to "
             "bound the normalizer",
    ),
    Case(
        optimizer="adopt",
        variant="decoupled-maximize",
        library="optax",
        make=_decoupled_maximize,
        options={"learning_rate": 0.01, "b2": 0.9, "weight_decay": 0.1,
                 "decoupled_weight_decay": True, "maximize": True},
        library_call="optax.chain(optax.scale(-1.0), optax.contrib.scale_by_adopt(b2=0.9), "
                     "optax.add_decayed_weights(0.1), optax.scale_by_learning_rate(0.01))",
        shapes=[[5, 3], [3]],
        seed=2,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); decoupled decay: "
             "add_decayed_weights after the scaling, before the learning rate",
    ),
]
