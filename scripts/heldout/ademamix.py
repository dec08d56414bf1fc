"""Held-out cases for AdEMAMix (optax.contrib.ademamix) at settings other than
tests/reference/modern's, including the paper's alpha and beta3 warm-ups given to optax as
schedules (the official implementation's `alpha_scheduler(alpha, 0, T_alpha)` and
`beta3_scheduler(beta3, beta1, T_beta3)`, github.com/apple/ml-ademamix)."""
import math

import optax

from gen import Case

SHAPES = [[5, 3], [3]]


def alpha_scheduler(alpha, alpha_start=0.0, warmup=0):
    def schedule(step):
        step = int(step)
        if step < warmup:
            a = step / float(warmup)
            return (1.0 - a) * alpha_start + a * alpha
        return alpha
    return schedule


def beta3_scheduler(beta_end, beta_start=0.0, warmup=0):
    def f(beta):
        return math.log(0.5) / math.log(beta) - 1

    def f_inv(t):
        return math.pow(0.5, 1 / (t + 1))

    def schedule(step):
        step = int(step)
        if step < warmup:
            a = step / float(warmup)
            return f_inv((1.0 - a) * f(beta_start) + a * f(beta_end))
        return beta_end
    return schedule


def ademamix_with_warmups(alpha_warmup, beta3_warmup, b1=0.9, b3=0.9999, alpha=5.0, **rest):
    """optax.contrib.ademamix with the paper's warm-ups as schedules of b3 and alpha."""
    return optax.contrib.ademamix(
        b1=b1,
        b3=beta3_scheduler(b3, b1, beta3_warmup),
        alpha=alpha_scheduler(alpha, 0.0, alpha_warmup),
        **rest,
    )



def _l2_maximize(learning_rate, weight_decay, decoupled_weight_decay, maximize, **rest):
    """downhill's maximize (gradient negated first) and L2 penalty (decoupled_weight_decay
    false: g + λθ before the rule), built around optax.contrib.ademamix with no decay of its own."""
    assert maximize and not decoupled_weight_decay
    return optax.chain(
        optax.scale(-1.0),
        optax.add_decayed_weights(weight_decay),
        optax.contrib.ademamix(learning_rate, **rest),
    )


CASES = [
    Case(
        optimizer="ademamix",
        variant="weight-decay",
        library="optax",
        make=optax.contrib.ademamix,
        options={"learning_rate": 0.02, "b3": 0.999, "alpha": 2.0, "eps_root": 1e-8,
                 "weight_decay": 0.1},
        library_call="optax.contrib.ademamix(learning_rate=0.02, b3=0.999, alpha=2.0, "
                     "eps_root=1e-8, weight_decay=0.1)",
        shapes=SHAPES,
        seed=21,
    ),
    Case(
        optimizer="ademamix",
        variant="warmups",
        library="optax",
        make=ademamix_with_warmups,
        options={"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "b3": 0.999, "alpha": 8.0,
                 "alpha_warmup": 10, "beta3_warmup": 20, "weight_decay": 0.01},
        library_call="optax.contrib.ademamix(learning_rate=0.01, b1=0.8, b2=0.99, "
                     "b3=beta3_scheduler(0.999, 0.8, 20), alpha=alpha_scheduler(8.0, 0, 10), "
                     "weight_decay=0.01) with ml-ademamix's schedulers",
        shapes=SHAPES,
        seed=22,
        note="alpha_warmup and beta3_warmup are downhill's names for the paper's T_alpha and "
             "T_beta3; optax takes the schedules themselves (see scripts/heldout/ademamix.py)",
    ),
    Case(
        optimizer="ademamix",
        variant="l2-maximize",
        library="optax",
        make=_l2_maximize,
        options={'learning_rate': 0.01, 'b3': 0.99, 'alpha': 3.0,
                 'weight_decay': 0.05, 'decoupled_weight_decay': False, 'maximize': True},
        library_call="optax.chain(optax.scale(-1.0), optax.add_decayed_weights(0.05), "
                     "optax.contrib.ademamix(learning_rate=0.01, b3=0.99, alpha=3.0))",
        shapes=SHAPES,
        seed=23,
        pull=-0.5,
        note="maximize: gradient negated by optax.scale(-1.0); L2 penalty "
             "(decoupled_weight_decay false): add_decayed_weights before the optimizer",
    ),
]
