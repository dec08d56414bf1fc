#!/usr/bin/env python3
"""Held-out reference cases for the optimizers newer than the lecture.

`../shared/reference/modern/` holds 30 cases at one setting of each optimizer. These are the
same optimizers at *other* settings (weight decay, other betas, Nesterov off, warm-up, …), made
by the same libraries (optax with float64 enabled; PyTorch), so that `downhill verify` shows the
rules are built, not the cases. Every module `scripts/heldout/<optimizer>.py` defines `CASES`: a
list of `Case`s. Run from the repository root:

    python3 scripts/heldout/gen.py [OUT_DIR]     # default crates/downhill/tests/reference/heldout

Needs `jax`, `optax` and (for PyTorch's optimizers) `torch` from PyPI. The files are written in
the format of `tests/reference/FORMAT.md`, options under the producing library's names.
"""
import dataclasses
import importlib
import json
import os
import pathlib
import sys
from typing import Callable, Optional

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass
class Case:
    """One held-out case.

    `library` is "optax" or "torch". `make` builds the optimizer from `options`: for optax a
    GradientTransformation, for torch a `torch.optim.Optimizer` over a list of tensors (called as
    `make(params, **options)`).
    """

    optimizer: str
    variant: str
    library: str
    make: Callable
    options: dict
    library_call: str
    shapes: list
    steps: int = 30
    seed: int = 0
    grad_scale: float = 1.0
    # A function of the step (0-based) and the parameters, added to a random gradient: gives a
    # trajectory that goes somewhere (default: the gradient of 0.5·|x|², pulled toward zero).
    pull: float = 1.0
    note: Optional[str] = None


def _grads(rng, params, case):
    return [case.pull * p + case.grad_scale * rng.standard_normal(p.shape) for p in params]


def run_optax(case, dtype):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax  # noqa: F401

    rng = np.random.default_rng(case.seed)
    init = [rng.standard_normal(s).astype(dtype) for s in case.shapes]
    opt = case.make(**case.options)
    params = [jnp.asarray(p) for p in init]
    state = opt.init(params)
    steps = []
    for _ in range(case.steps):
        g = [np.asarray(x, dtype=dtype) for x in _grads(rng, [np.asarray(p) for p in params], case)]
        gj = [jnp.asarray(x) for x in g]
        updates, state = opt.update(gj, state, params)
        params = optax_apply(params, updates)
        steps.append((g, [np.asarray(p) for p in params]))
    return init, steps


def optax_apply(params, updates):
    import optax
    return optax.apply_updates(params, updates)


def run_torch(case, dtype):
    import torch
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    rng = np.random.default_rng(case.seed)
    init = [rng.standard_normal(s).astype(dtype) for s in case.shapes]
    params = [torch.tensor(p, dtype=tdtype, requires_grad=True) for p in init]
    opt = case.make(params, **case.options)
    steps = []
    for _ in range(case.steps):
        g = [np.asarray(x, dtype=dtype) for x in _grads(rng, [p.detach().numpy() for p in params], case)]
        for p, x in zip(params, g):
            p.grad = torch.tensor(x, dtype=tdtype)
        opt.step()
        steps.append((g, [p.detach().numpy().copy() for p in params]))
    return init, steps


def write(case, dtype_name, out_dir):
    dtype = {"f32": np.float32, "f64": np.float64}[dtype_name]
    if case.library == "optax":
        import jax
        import optax
        init, steps = run_optax(case, dtype)
        source = f"optax {optax.__version__} (jax {jax.__version__}, x64)"
    else:
        import torch
        init, steps = run_torch(case, dtype)
        source = f"torch {torch.__version__}"
    lr = case.options.get("learning_rate", case.options.get("lr", 0.0))
    doc = {
        "name": f"{case.optimizer}/{case.variant}",
        "source": source,
        "optimizer": case.optimizer,
        "options": case.options,
        "library_call": case.library_call,
        "note": case.note,
        "schedule": None,
        "clip_grad_norm": None,
        "dtype": dtype_name,
        "shapes": [list(s) for s in case.shapes],
        "init": [p.astype(np.float64).ravel().tolist() for p in init],
        "steps": [
            {
                "lr": float(lr),
                "grads": [x.astype(np.float64).ravel().tolist() for x in g],
                "params": [p.astype(np.float64).ravel().tolist() for p in ps],
            }
            for g, ps in steps
        ],
    }
    path = out_dir / f"{case.optimizer}__{case.variant}__{dtype_name}.json"
    path.write_text(json.dumps(doc) + "\n")
    return path


def main():
    out_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "crates/downhill/tests/reference/heldout")
    only = os.environ.get("ONLY")
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    for f in sorted(HERE.glob("*.py")):
        if f.stem == "gen" or (only and f.stem not in only.split(",")):
            continue
        mod = importlib.import_module(f.stem)
        for case in mod.CASES:
            for dt in ("f64", "f32"):
                print(write(case, dt, out_dir))


if __name__ == "__main__":
    main()
