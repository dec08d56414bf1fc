"""Held-out cases for `yogi` (optax.yogi / scale_by_yogi) at other settings."""
import optax

from gen import Case


def _l2(learning_rate, b1, b2, eps, eps_root, initial_accumulator_value, weight_decay):
    # L2 penalty (downhill's weight_decay with decoupled_weight_decay false): g + λθ first.
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_yogi(b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                            initial_accumulator_value=initial_accumulator_value),
        optax.scale_by_learning_rate(learning_rate),
    )


def _decoupled_maximize(learning_rate, weight_decay, decoupled_weight_decay, maximize):
    assert decoupled_weight_decay and maximize
    return optax.chain(
        optax.scale(-1.0),
        optax.scale_by_yogi(),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


CASES = [
    Case(
        optimizer="yogi",
        variant="betas-eps",
        library="optax",
        make=optax.yogi,
        options={"learning_rate": 0.05, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
        library_call="optax.yogi(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-4)",
        shapes=[[5, 3], [3]],
    ),
    Case(
        optimizer="yogi",
        variant="l2-eps-root-init",
        library="optax",
        make=_l2,
        options={"learning_rate": 0.02, "b1": 0.9, "b2": 0.95, "eps": 1e-3, "eps_root": 1e-8,
                 "initial_accumulator_value": 0.1, "weight_decay": 0.05},
        library_call="optax.chain(optax.add_decayed_weights(0.05), optax.scale_by_yogi(b1=0.9, "
                     "b2=0.95, eps=1e-3, eps_root=1e-8, initial_accumulator_value=0.1), "
                     "optax.scale_by_learning_rate(0.02))",
        shapes=[[5, 3], [3]],
        seed=1,
        grad_scale=0.1,
        note="L2 weight decay: optax.add_decayed_weights before scale_by_yogi",
    ),
    Case(
        optimizer="yogi",
        variant="decoupled-maximize",
        library="optax",
        make=_decoupled_maximize,
        options={"learning_rate": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                 "maximize": True},
        library_call="optax.chain(optax.scale(-1.0), optax.scale_by_yogi(), "
                     "optax.add_decayed_weights(0.1), optax.scale_by_learning_rate(0.01))",
        shapes=[[5, 3], [3]],
        seed=2,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); decoupled decay: "
             "add_decayed_weights after the scaling, before the learning rate",
    ),
]
