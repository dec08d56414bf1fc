"""PyTorch's Muon step (`torch.optim.Muon`) on the matrices of `downhill bench`'s `large` case,
for comparison with `downhill bench --optimizers muon`: the 2-D tensors of `param_shapes(total, d)`
(as `torch_step_bench.py`; `--scale` shrinks it as `downhill bench --scale` does: d = 1024·√scale,
total = 50 M·scale), f32, on the CPU with `--threads` threads.

Times two variants: PyTorch's Muon as shipped (the Newton–Schulz iteration in bfloat16) and with
the iteration in the parameters' dtype (what downhill does by default and what the reference cases
check). Prints the median step time of each and writes JSON lines with `--json`.

    python bench/torch_muon_bench.py --threads 2 --scale 0.0625 --reps 5
"""
import argparse, json, math, time

import torch
import torch.optim._muon as muon_mod

def param_shapes(total, d):
    shapes, n = [], 0
    while n < total:
        for s in [(d, 3 * d), (3 * d,), (d, d), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,), (d,), (d,)]:
            shapes.append(s); n += math.prod(s)
    return shapes

def med(f, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2]

SHIPPED = muon_mod._zeropower_via_newtonschulz

def in_param_dtype(grad, ns_coefficients, ns_steps, eps, use_addmm=False):
    """torch's Newton–Schulz without its cast to bfloat16 (the reference cases' variant)."""
    a, b, c = ns_coefficients
    x = grad
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        update = b * gram + c * gram @ gram
        x = a * x + update @ x
    if grad.size(0) > grad.size(1):
        x = x.T
    return x

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = max(4, round(1024 * math.sqrt(args.scale)))
    total = round(50_000_000 * args.scale)
    shapes = [s for s in param_shapes(total, d) if len(s) == 2]
    n = sum(math.prod(s) for s in shapes)
    torch.manual_seed(0)
    for variant, fn in [("bf16-ns (as shipped)", SHIPPED), ("f32-ns", in_param_dtype)]:
        muon_mod._zeropower_via_newtonschulz = fn
        ps = [torch.randn(s, requires_grad=True) for s in shapes]
        for p in ps:
            p.grad = torch.randn_like(p)
        opt = torch.optim.Muon(ps, lr=0.02)
        opt.step()
        s = med(opt.step, args.reps)
        row = dict(optimizer="torch.optim.Muon", variant=variant, threads=args.threads,
                   tensors=len(shapes), params=n, median_ms=s * 1e3, torch=torch.__version__)
        print(json.dumps(row) if args.json else
              f"torch Muon {variant:22} {len(shapes)} matrices, {n/1e6:.1f} M params, "
              f"{args.threads} threads: {s*1e3:9.1f} ms/step", flush=True)
    muon_mod._zeropower_via_newtonschulz = SHIPPED

if __name__ == "__main__":
    main()
