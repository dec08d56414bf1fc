#!/usr/bin/env python3
"""Held-out reference cases for optimizer state stored in 8 bits (block-wise) or bfloat16.

An independent implementation, in numpy `float32`, of the specification in
`crates/downhill/tests/reference/lowbit/README.md` (it shares no code with the generator of the
public cases next to that README). Every operation is rounded to `f32` on its own, in the README's
order; scalars (1−β, 1−lr·wd, −lr/(1−β₁ᵗ), √(1−β₂ᵗ), …) are computed in Python `float64` and rounded
to `f32` once.

Run from the repository root:

    python3 scripts/lowbit/gen.py [OUT_DIR]     # default crates/downhill/tests/reference/lowbit/heldout
    python3 scripts/lowbit/gen.py --check DIR   # replay every case in DIR (full trajectory, not
                                                # teacher-forced) and compare params and state
    python3 scripts/lowbit/gen.py --check-forced DIR   # the same, teacher-forced (README's test)

Needs only numpy (torch, if present, is used to cross-check the quantization maps).
"""
import dataclasses
import json
import pathlib
import sys
from typing import Optional

import numpy as np

F32 = np.float32
SOURCE = "downhill scripts/lowbit/gen.py (from the lowbit README spec)"
BLOCK = 256


def f32(x):
    """A Python (f64) scalar rounded to f32 once."""
    return F32(float(x))


# ---------------------------------------------------------------------------------------------
# bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)


def round_f32(v):
    """An exact rational rounded to the nearest f32, ties to even (no double rounding)."""
    from fractions import Fraction
    c = F32(float(v))
    best = None
    for x in (np.nextafter(c, F32(-np.inf)), c, np.nextafter(c, F32(np.inf))):
        d = abs(Fraction(float(x)) - v)
        even = (int(np.asarray(x, dtype=F32).view(np.uint32)) & 1) == 0
        if best is None or d < best[0] or (d == best[0] and even):
            best = (d, x)
    return F32(best[1])


def fma_f32(a, b, c):
    """a·b + c with one rounding to f32 (a fused multiply-add)."""
    from fractions import Fraction
    return round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def linspace_f32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=torch.float32) on the CPU: step = (end − start)/(steps − 1)
    in f32; the first half start + step·i, the second half end − step·(steps − 1 − i), each a fused
    multiply-add (one rounding): that is what the compiled kernel does (a separately rounded product
    and sum differ from torch's output in up to 24 of 129 entries)."""
    start, end = F32(start), F32(end)
    step = F32(end - start) / F32(steps - 1)
    half = steps // 2
    out = np.empty(steps, dtype=F32)
    for i in range(steps):
        if i < half:
            out[i] = fma_f32(step, F32(i), start)
        else:
            out[i] = fma_f32(-step, F32(steps - i - 1), end)
    return out


def dynamic_map(signed, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    assert additional_items == 0
    for i in range(max_exponent_bits):
        n = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        b = linspace_f32(0.1, 1.0, n)
        means = (b[:-1] + b[1:]) / F32(2.0)
        # a Python scalar times a float32 tensor: the scalar is rounded to f32, the product is f32
        scale = f32(10 ** (-(max_exponent_bits - 1) + i))
        data += [float(x) for x in (scale * means).astype(F32)]
        if signed:
            data += [float(x) for x in ((-scale) * means).astype(F32)]
    data.append(0.0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return np.array(data, dtype=F32)


SIGNED = dynamic_map(True)
UNSIGNED = dynamic_map(False)


def torch_maps():
    """The same maps made by torch (bitsandbytes' code, verbatim in substance), or None."""
    try:
        import torch
    except ImportError:
        return None
    out = []
    for signed in (True, False):
        data = []
        for i in range(7):
            n = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
            b = torch.linspace(0.1, 1, n, dtype=torch.float32)
            means = (b[:-1] + b[1:]) / 2.0
            data += ((10 ** (-6 + i)) * means).tolist()
            if signed:
                data += (-(10 ** (-6 + i)) * means).tolist()
        data.append(0)
        data.append(1.0)
        data.sort()
        out.append(torch.tensor(data, dtype=torch.float32).numpy())
    return out


# ---------------------------------------------------------------------------------------------
# block-wise quantization


def quantize(x, qmap, block=BLOCK):
    """x (f32, flat) -> (codes u8, absmax f32, yunrounded f32).

    absmax = max|x| per block; y = x/absmax in f32; code = nearest map entry, ties to the lower
    index (y compared with the exact midpoint (a+b)/2 in f64); an all-zero block gets the code of 0.0.
    """
    x = np.asarray(x, dtype=F32)
    n = x.size
    nb = (n + block - 1) // block
    pad = np.zeros(nb * block, dtype=F32)
    pad[:n] = x
    blocks = pad.reshape(nb, block)
    absmax = np.abs(blocks).max(axis=1).astype(F32)
    zero = absmax == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        y = (blocks / np.where(zero, F32(1), absmax)[:, None]).astype(F32)
    y[zero, :] = F32(0)
    y = y.ravel()[:n]
    codes = nearest_code(y, qmap)
    return codes, absmax, y


def nearest_code(y, qmap):
    q64 = qmap.astype(np.float64)
    mids = (q64[:-1] + q64[1:]) / 2.0  # exact in f64 (two f32s)
    y64 = y.astype(np.float64)
    # code = number of midpoints strictly below y: y == mid goes to the lower index
    return np.searchsorted(mids, y64, side="left").astype(np.uint8)


def dequantize(codes, absmax, qmap, block=BLOCK):
    n = codes.size
    a = np.repeat(absmax, block)[:n]
    return (qmap[codes] * a).astype(F32)


def midpoint_distance(y, code, qmap):
    """Relative distance of y from the nearest midpoint between map entries adjacent to `code`."""
    q64 = qmap.astype(np.float64)
    best = np.inf
    for c in (int(code) - 1, int(code)):
        if 0 <= c < 255:
            mid = (q64[c] + q64[c + 1]) / 2.0
            best = min(best, abs(float(y) - mid) / max(abs(mid), 1e-300))
    return best


def midpoint_distances(y, qmap):
    """Per element: the relative distance of y from the nearest midpoint between two map entries."""
    q64 = qmap.astype(np.float64)
    mids = (q64[:-1] + q64[1:]) / 2.0
    y64 = np.asarray(y, dtype=np.float64)
    i = np.clip(np.searchsorted(mids, y64), 1, mids.size - 1)
    d = np.minimum(np.abs(y64 - mids[i - 1]) / np.abs(mids[i - 1]), np.abs(y64 - mids[i]) / np.abs(mids[i]))
    return d


def bf16(x):
    """Round f32 to bfloat16, nearest even, via the bits; returned as f32."""
    b = np.asarray(x, dtype=F32).view(np.uint32).astype(np.uint64)
    r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16
    return r.astype(np.uint32).view(F32)


# ---------------------------------------------------------------------------------------------
# the update rules

BUFFERS = {"adam": ("m", "v"), "adamw": ("m", "v"), "sgd": ("m",), "lion": ("m",), "rmsprop": ("v",), "adagrad": ("v",)}


def resolved(optimizer, options):
    """Options with the defaults filled in (PyTorch's where PyTorch has the optimizer;
    bitsandbytes' Lion8bit for lion)."""
    o = dict(options)
    if optimizer in ("adam", "adamw"):
        o.setdefault("betas", [0.9, 0.999])
        o.setdefault("eps", 1e-8)
        o.setdefault("weight_decay", 0.01 if optimizer == "adamw" else 0.0)
    elif optimizer == "sgd":
        o.setdefault("momentum", 0.0)
        o.setdefault("weight_decay", 0.0)
    elif optimizer == "lion":
        o.setdefault("betas", [0.9, 0.99])
        o.setdefault("weight_decay", 0.0)
    elif optimizer == "rmsprop":
        o.setdefault("alpha", 0.99)
        o.setdefault("eps", 1e-8)
        o.setdefault("weight_decay", 0.0)
    elif optimizer == "adagrad":
        o.setdefault("eps", 1e-10)
        o.setdefault("weight_decay", 0.0)
    else:
        raise ValueError(optimizer)
    return o


def update(optimizer, o, t, lr, p, g, st):
    """One step (t counted from 1) on one tensor, in place on the f32 state `st` (dict of arrays).
    Returns the new parameters."""
    p = p.astype(F32)
    g = g.astype(F32)
    wd = float(o.get("weight_decay", 0.0))
    if optimizer in ("adam", "adamw"):
        b1, b2 = (float(b) for b in o["betas"])
        m = st["m"] * f32(b1) + g * f32(1.0 - b1)
        v = st["v"] * f32(b2) + (g * g) * f32(1.0 - b2)
        d = np.sqrt(v) / f32(np.sqrt(1.0 - b2 ** t)) + f32(o["eps"])
        if wd > 0:
            p = p * f32(1.0 - lr * wd)
        p = p + f32(-lr / (1.0 - b1 ** t)) * (m / d)
        st["m"], st["v"] = m, v
    elif optimizer == "sgd":
        if wd != 0:
            g = g + p * f32(wd)
        m = g if t == 1 else st["m"] * f32(o["momentum"]) + g
        p = p + f32(-lr) * m
        st["m"] = m
    elif optimizer == "lion":
        b1, b2 = (float(b) for b in o["betas"])
        if wd > 0:
            p = p * f32(1.0 - lr * wd)
        c = st["m"] * f32(b1) + g * f32(1.0 - b1)
        p = p + f32(-lr) * np.sign(c).astype(F32)
        st["m"] = st["m"] * f32(b2) + g * f32(1.0 - b2)
    elif optimizer == "rmsprop":
        a = float(o["alpha"])
        if wd != 0:
            g = g + p * f32(wd)
        v = st["v"] * f32(a) + (g * g) * f32(1.0 - a)
        p = p + f32(-lr) * (g / (np.sqrt(v) + f32(o["eps"])))
        st["v"] = v
    elif optimizer == "adagrad":
        if wd != 0:
            g = g + p * f32(wd)
        v = st["v"] + g * g
        p = p + f32(-lr) * (g / (np.sqrt(v) + f32(o["eps"])))
        st["v"] = v
    for k in st:
        st[k] = st[k].astype(F32)
    return p.astype(F32)


def qmap_for(optimizer, buf):
    return UNSIGNED if (optimizer in ("adam", "adamw") and buf == "v") else SIGNED


class Runner:
    """Holds parameters and stored (compressed) state; `step` does one step on every tensor."""

    def __init__(self, optimizer, options, precision, min_8bit_size, init):
        self.opt = optimizer
        self.o = resolved(optimizer, options)
        self.prec = precision
        self.min8 = min_8bit_size or 0
        self.params = [np.asarray(p, dtype=F32) for p in init]
        self.t = 0
        # stored state: per tensor, per buffer: ("q", codes, absmax) | ("f", values)
        self.stored = []
        for p in self.params:
            d = {}
            for b in BUFFERS[optimizer]:
                z = np.zeros(p.size, dtype=F32)
                d[b] = self._store(b, p.size, z)[0]
            self.stored.append(d)

    def eightbit(self, n):
        return self.prec == "8bit-blockwise" and n >= self.min8

    def _store(self, buf, n, x):
        """Compress f32 state x; returns (stored, y-unrounded or None)."""
        if self.eightbit(n):
            codes, absmax, y = quantize(x, qmap_for(self.opt, buf))
            return ("q", codes, absmax), y
        if self.prec == "bf16":
            return ("f", bf16(x)), None
        return ("f", x.astype(F32)), None

    def _load(self, buf, s):
        if s[0] == "q":
            return dequantize(s[1], s[2], qmap_for(self.opt, buf))
        return s[1].astype(F32)

    def step(self, lr, grads):
        self.t += 1
        self.last_y = []
        for i, (p, g) in enumerate(zip(self.params, grads)):
            st = {b: self._load(b, s) for b, s in self.stored[i].items()}
            self.params[i] = update(self.opt, self.o, self.t, float(lr), p, np.asarray(g, dtype=F32), st)
            ys = {}
            for b in st:
                self.stored[i][b], ys[b] = self._store(b, p.size, st[b])
            self.last_y.append(ys)

    def load_recorded(self, params, state):
        self.params = [np.asarray(p, dtype=F32) for p in params]
        for i, ts in enumerate(state):
            for b, s in ts.items():
                if "codes" in s:
                    self.stored[i][b] = ("q", np.asarray(s["codes"], dtype=np.uint8), np.asarray(s["absmax"], dtype=F32))
                else:
                    self.stored[i][b] = ("f", np.asarray(s["values"], dtype=F32))

    def state_json(self):
        out = []
        for d in self.stored:
            td = {}
            for b, s in d.items():
                if s[0] == "q":
                    td[b] = {"codes": [int(c) for c in s[1]], "absmax": [float(a) for a in s[2]]}
                else:
                    td[b] = {"values": [float(v) for v in s[1]]}
            out.append(td)
        return out


# ---------------------------------------------------------------------------------------------
# checking recorded cases


def check_maps(doc):
    qm = doc.get("quantization_maps")
    if qm is None:
        return True
    ok = True
    for name, mine in (("signed", SIGNED), ("unsigned", UNSIGNED)):
        rec = np.asarray(qm[name], dtype=np.float64)
        same = np.array_equal(rec, mine.astype(np.float64))
        if not same:
            bad = np.nonzero(rec != mine.astype(np.float64))[0]
            print(f"  map {name}: {bad.size} entries differ, e.g. {bad[:5]}")
        ok &= same
    return ok


def check_case(path, forced=False):
    doc = json.loads(pathlib.Path(path).read_text())
    maps_ok = check_maps(doc)
    r = Runner(doc["optimizer"], doc["options"], doc["state_precision"], doc.get("min_8bit_size"), doc["init"])
    worst_p = 0.0
    worst_abs = 0.0
    total_codes = total_vals = 0
    absmax_worst = 0.0
    near = 0  # codes whose unrounded y lies within 1e-6 relative of a midpoint
    closest = np.inf
    lines = []
    for k, st in enumerate(doc["steps"]):
        if forced and k > 0:
            prev = doc["steps"][k - 1]
            r.load_recorded(prev["params"], prev["state"])
        r.step(st["lr"], st["grads"])
        for mine, rec in zip(r.params, st["params"]):
            rec = np.asarray(rec, dtype=np.float64)
            diff = np.abs(mine.astype(np.float64) - rec)
            worst_abs = max(worst_abs, float(diff.max(initial=0)))
            worst_p = max(worst_p, float((diff / np.maximum(np.abs(rec), 1e-30)).max(initial=0)))
        ncodes = nvals = 0
        details = []
        for i, (mine, rec) in enumerate(zip(r.stored, st["state"])):
            for b, s in rec.items():
                ms = mine[b]
                if "codes" in s:
                    assert ms[0] == "q", (path, k, i, b)
                    rc = np.asarray(s["codes"], dtype=np.uint8)
                    bad = np.nonzero(rc != ms[1])[0]
                    ncodes += bad.size
                    ra = np.asarray(s["absmax"], dtype=np.float64)
                    absmax_worst = max(absmax_worst, float((np.abs(ra - ms[2]) / np.maximum(np.abs(ra), 1e-30)).max(initial=0)))
                    y = r.last_y[i][b]
                    md = midpoint_distances(y, qmap_for(r.opt, b))
                    near += int((md <= 1e-6).sum())
                    closest = min(closest, float(md.min(initial=np.inf)))
                    for j in bad[:10]:
                        details.append(
                            f"tensor {i} {b}[{j}]: mine {ms[1][j]} recorded {rc[j]}, y={float(y[j])!r}, "
                            f"rel. distance from midpoint {midpoint_distance(y[j], ms[1][j], qmap_for(r.opt, b)):.3g}"
                        )
                else:
                    assert ms[0] == "f", (path, k, i, b)
                    rv = np.asarray(s["values"], dtype=F32)
                    bad = np.nonzero(rv.view(np.uint32) != ms[1].view(np.uint32))[0]
                    nvals += bad.size
                    for j in bad[:5]:
                        details.append(f"tensor {i} {b}[{j}]: mine {float(ms[1][j])!r} recorded {float(rv[j])!r}")
        total_codes += ncodes
        total_vals += nvals
        lines.append(f"    step {k + 1:2d}: codes differing {ncodes}, values differing {nvals}")
        lines += ["      " + d for d in details]
    exact = maps_ok and total_codes == 0 and total_vals == 0 and worst_p == 0.0 and absmax_worst == 0.0
    print(
        f"{pathlib.Path(path).name}: maps {'equal' if maps_ok else 'DIFFER'}; params worst rel {worst_p:.3g} "
        f"(abs {worst_abs:.3g}); absmax worst rel {absmax_worst:.3g}; codes differing {total_codes}, "
        f"values differing {total_vals} -> {'EXACT' if exact else 'MISMATCH'}"
        + (f"; codes within 1e-6 rel. of a midpoint: {near} (closest {closest:.3g})" if np.isfinite(closest) else "")
    )
    if not exact:
        print("\n".join(lines))
    return exact


# ---------------------------------------------------------------------------------------------
# held-out cases


@dataclasses.dataclass
class Case:
    optimizer: str
    variant: str
    precision: str  # "8bit-blockwise" | "bf16"
    options: dict
    shapes: list
    min_8bit_size: int = 0
    steps: int = 20
    seed: int = 0
    # per-step gradient scales are drawn from these (some steps larger than others)
    scales: tuple = (0.01, 0.1, 1.0)
    pull: float = 1.0
    # tensor index -> number of first steps with an all-zero gradient
    zero_grad_steps: dict = dataclasses.field(default_factory=dict)
    note: Optional[str] = None


CASES = [
    Case("adam", "8bit-betas-wd", "8bit-blockwise",
         {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1},
         [[20, 24], [300], [7]], seed=1, scales=(0.01, 0.1, 1.0, 5.0),
         note="weight decay decoupled (p·(1 − lr·wd)), as the spec has it also for adam"),
    Case("adamw", "bf16-wd", "bf16",
         {"lr": 0.003, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05},
         [[20, 20], [257], [5]], seed=2),
    Case("adamw", "8bit-threshold1000", "8bit-blockwise",
         {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
         [[1000], [999], [5]], min_8bit_size=1000, steps=12, seed=3,
         note="min_8bit_size=1000: the tensor of 1000 elements has 8-bit state, those of 999 and 5 f32; 12 steps"),
    Case("sgd", "8bit-momentum-wd", "8bit-blockwise",
         {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.001},
         [[20, 30], [300], [9]], seed=4, scales=(0.01, 0.1, 1.0, 5.0)),
    Case("sgd", "bf16-momentum", "bf16",
         {"lr": 0.01, "momentum": 0.95, "weight_decay": 0.0},
         [[20, 24], [300], [3]], seed=5),
    Case("lion", "8bit-wd-betas", "8bit-blockwise",
         {"lr": 0.003, "betas": [0.95, 0.98], "weight_decay": 0.1},
         [[600], [17, 13]], seed=6),
    Case("lion", "bf16-wd", "bf16",
         {"lr": 0.001, "betas": [0.9, 0.99], "weight_decay": 0.01},
         [[25, 24], [130]], seed=7),
    Case("rmsprop", "8bit-alpha-wd", "8bit-blockwise",
         {"lr": 0.002, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.01},
         [[24, 32], [200], [4]], seed=8, scales=(0.01, 0.1, 1.0, 5.0)),
    Case("rmsprop", "bf16", "bf16",
         {"lr": 0.001, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0},
         [[24, 24], [200]], seed=9),
    Case("adagrad", "8bit-eps-wd", "8bit-blockwise",
         {"lr": 0.05, "eps": 1e-8, "weight_decay": 0.001},
         [[700], [3, 5], [200]], seed=10),
    Case("adagrad", "bf16", "bf16",
         {"lr": 0.01, "eps": 1e-10, "weight_decay": 0.0},
         [[40, 20], [15]], seed=11),
    Case("adam", "8bit-edge-lengths", "8bit-blockwise",
         {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
         [[1], [255], [256], [257], [513]], seed=12,
         zero_grad_steps={1: 3, 4: 5},
         note="block edges (lengths 1, 255, 256, 257, 513); tensors 1 and 4 get all-zero gradients on their "
              "first 3 and 5 steps, so whole blocks of state are zero (absmax 0, the code of 0.0)"),
    Case("sgd", "8bit-edge-lengths", "8bit-blockwise",
         {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
         [[1], [256], [257], [100]], seed=13,
         zero_grad_steps={0: 4, 2: 6},
         note="block edges; tensors 0 and 2 get all-zero gradients on their first 4 and 6 steps"),
]


def make_case(case):
    rng = np.random.default_rng(case.seed)
    init = [rng.standard_normal(int(np.prod(s))).astype(F32) for s in case.shapes]
    r = Runner(case.optimizer, case.options, case.precision, case.min_8bit_size, init)
    steps = []
    for k in range(case.steps):
        scale = float(rng.choice(case.scales))
        grads = []
        for i, p in enumerate(r.params):
            g = (case.pull * p.astype(np.float64) * 0.1 + scale * rng.standard_normal(p.size)).astype(F32)
            if k < case.zero_grad_steps.get(i, 0):
                g = np.zeros_like(g)
            grads.append(g)
        lr = float(case.options["lr"])
        r.step(lr, grads)
        steps.append({
            "lr": lr,
            "grads": [[float(x) for x in g] for g in grads],
            "params": [[float(x) for x in p] for p in r.params],
            "state": r.state_json(),
        })
    doc = {
        "name": f"{case.optimizer}/{case.variant}",
        "source": SOURCE,
        "optimizer": case.optimizer,
        "options": case.options,
        "note": case.note,
        "schedule": None,
        "clip_grad_norm": None,
        "dtype": "f32",
        "state_precision": case.precision,
    }
    if case.precision == "8bit-blockwise":
        doc["block_size"] = BLOCK
        doc["min_8bit_size"] = case.min_8bit_size
        doc["quantization_maps"] = {"signed": [float(x) for x in SIGNED], "unsigned": [float(x) for x in UNSIGNED]}
    doc["shapes"] = [list(s) for s in case.shapes]
    doc["init"] = [[float(x) for x in p] for p in init]
    doc["steps"] = steps
    doc["bnb_as_shipped_worst"] = None
    return doc


def main():
    args = sys.argv[1:]
    tm = torch_maps()
    if tm is not None:
        for name, mine, theirs in (("signed", SIGNED, tm[0]), ("unsigned", UNSIGNED, tm[1])):
            if not np.array_equal(mine.view(np.uint32), theirs.view(np.uint32)):
                print(f"warning: the {name} map differs from torch's create_dynamic_map")
    if args and args[0] in ("--check", "--check-forced"):
        forced = args[0] == "--check-forced"
        d = pathlib.Path(args[1] if len(args) > 1 else "crates/downhill/tests/reference/lowbit")
        files = sorted(d.glob("*.json"))
        ok = [check_case(f, forced) for f in files]
        print(f"{sum(ok)}/{len(ok)} cases reproduced exactly ({'teacher-forced' if forced else 'full trajectory'})")
        sys.exit(0 if all(ok) else 1)
    out = pathlib.Path(args[0] if args else "crates/downhill/tests/reference/lowbit/heldout")
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        doc = make_case(case)
        path = out / f"{case.optimizer}__{case.variant}__f32.json"
        path.write_text(json.dumps(doc) + "\n")
        print(path, f"{path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
