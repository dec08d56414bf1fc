"""AdamW step time with f32 state (PyTorch) and with 8-bit block-wise state (bitsandbytes) on the
CPU, on the shapes of `downhill bench`'s cases: `large` (the transformer-like mix of
`param_shapes(total, d)`, as in `torch_step_bench.py`; `--scale` shrinks it as `downhill bench
--scale` does: d = 1024·√scale, total = 50 M·scale) and `small` (10 000 tensors of 1 000 parameters,
not scaled), f32 parameters and random gradients, lr 1e-3, with `--threads` threads.

Rows (optimizer / impl):
  torch.optim.AdamW        fused     fused=True (the f32 baseline)
  torch.optim.AdamW        foreach   foreach=True (for reference)
  bnb.optim.AdamW8bit      default   as shipped: min_8bit_size=4096, so tensors with fewer than
                                     4 096 elements (all of `small`, the 1-D tensors of `large`)
                                     silently keep f32 state
  bnb.optim.AdamW8bit      min8=0    min_8bit_size=0: every tensor gets 8-bit state
Each optimizer is stepped 3 times to warm up, then the median of `--reps` timed steps is printed
with Mparams/s and the optimizer's state in bytes per parameter, measured from its state tensors:
the nbytes of every distinct tensor in `opt.state` (bitsandbytes: state1/state2 uint8, absmax1/2
f32 per 256-element block, and the two 256-entry f32 quantization maps qmap1/qmap2, which are one
pair shared by all parameters and so counted once) over the number of parameters. The bnb rows
also say how many tensors got uint8 state and check that the parameters moved.

How bitsandbytes steps on the CPU (0.50.x): `Optimizer2State.update_step` calls
`F.optimizer_update_8bit_blockwise` → `torch.ops.bitsandbytes.optimizer_update_8bit_blockwise`,
whose CPU kernel is `_optimizer_update_8bit_blockwise_cpu` in `bitsandbytes/backends/cpu/ops.py`:
per tensor it dequantizes both states to f32 temporaries (`dequantize_blockwise` →
`lib.cdequantize_blockwise_cpu_fp32`, C++/OpenMP in libbitsandbytes_cpu.so), does the Adam
update with eager torch ops on them, then requantizes (`quantize_blockwise` →
`lib.cquantize_blockwise_cpu_fp32`: per-block absmax and a 65 536-entry lookup table into the
dynamic map, OpenMP over 256-element blocks). Tensors under min_8bit_size go through
`_optimizer_update_32bit_cpu` (eager torch ops on f32 state). No extra option is needed on the CPU.

The header (or the `copy` JSON line) gives the load average at the start: with OpenMP, every
parallel region waits for all `--threads` threads, so on a machine whose cores are busy with other
work the multi-threaded timings (torch fused above all) can be many times too slow.

    python bench/torch_lowbit_bench.py --threads 2 --scale 0.05 --reps 5
    python bench/torch_lowbit_bench.py --threads 2 --cases large --reps 5 --json

Needs torch and bitsandbytes (`pip install torch bitsandbytes`); without bitsandbytes only the
torch rows are run.
"""
import argparse, gc, json, math, os, sys, time

def param_shapes(total=50_000_000, d=1024):
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

def cpu_copy(torch):
    x = torch.randn(2**27); y = torch.empty_like(x)  # 512 MiB each
    for _ in range(2): y.copy_(x)
    s = med(lambda: y.copy_(x), 9)
    return 2 * x.numel() * 4 / s / 1e9

def state_bytes(torch, opt):
    """nbytes of the distinct tensors in the optimizer state (shared ones, like bnb's qmaps, once),
    and the nbytes those shared tensors would add if each parameter had its own copy."""
    seen, total, per_tensor = set(), 0, 0
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                nb = v.numel() * v.element_size()
                per_tensor += nb
                key = (v.untyped_storage().data_ptr(), v.storage_offset(), v.numel(), v.dtype)
                if key not in seen:
                    seen.add(key); total += nb
    return total, per_tensor - total

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cases", default="large,small", help="comma-separated: large, small")
    ap.add_argument("--impls", default="fused,foreach,bnb8,bnb8-min0",
                    help="comma-separated: fused, foreach, bnb8, bnb8-min0")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # bitsandbytes' OpenMP loops share torch's libgomp; set the count for both before loading them.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        bnb = None
        print(f"bitsandbytes not importable ({e}); torch rows only", file=sys.stderr)
    d = max(4, round(1024 * math.sqrt(args.scale)))
    total = round(50_000_000 * args.scale)
    cases = {"large": param_shapes(total, d), "small": [(1000,)] * 10000}
    impls = args.impls.split(",")
    versions = dict(torch=torch.__version__, bitsandbytes=bnb.__version__ if bnb else None)

    load = os.getloadavg()[0]
    bw = cpu_copy(torch)
    if args.json:
        print(json.dumps(dict(what="copy", threads=args.threads, gbs=bw, loadavg=load, **versions)),
              flush=True)
    else:
        print(f"torch {versions['torch']}, bitsandbytes {versions['bitsandbytes']}, "
              f"{args.threads} threads, copy {bw:.1f} GB/s, load average {load:.2f}", flush=True)
        print(f"{'case':6} {'optimizer':20} {'impl':8} {'ms':>9} {'Mparam/s':>9} {'B/param':>8}  notes",
              flush=True)

    for case in args.cases.split(","):
        shapes = cases[case]
        for impl in impls:
            if impl.startswith("bnb") and bnb is None:
                continue
            torch.manual_seed(0)
            ps = [torch.randn(s, requires_grad=True) for s in shapes]
            for p in ps: p.grad = torch.randn_like(p)
            n = sum(p.numel() for p in ps)
            if impl == "fused":
                name, opt = "torch.optim.AdamW", torch.optim.AdamW(ps, lr=1e-3, fused=True)
            elif impl == "foreach":
                name, opt = "torch.optim.AdamW", torch.optim.AdamW(ps, lr=1e-3, foreach=True)
            elif impl == "bnb8":
                name, opt = "bnb.optim.AdamW8bit", bnb.optim.AdamW8bit(ps, lr=1e-3)
            elif impl == "bnb8-min0":
                name, opt = "bnb.optim.AdamW8bit", bnb.optim.AdamW8bit(ps, lr=1e-3, min_8bit_size=0)
            else:
                raise SystemExit(f"unknown impl {impl}")
            before = ps[0].detach().clone()
            for _ in range(3): opt.step()
            moved = float((ps[0].detach() != before).float().mean())
            s = med(opt.step, args.reps)
            sb, shared = state_bytes(torch, opt)
            row = dict(case=case, optimizer=name, impl=impl, threads=args.threads, tensors=len(ps),
                       params=n, ms=s * 1e3, mparams_s=n / s / 1e6, state_bytes_per_param=sb / n,
                       moved_frac=moved, **versions)
            notes = f"{len(ps)} tensors, {n/1e6:.1f} M params"
            if name.startswith("bnb"):
                u8 = sum(1 for st in opt.state.values() if st["state1"].dtype == torch.uint8
                         and st["state2"].dtype == torch.uint8)
                u8p = sum(p.numel() for p in ps if opt.state[p]["state1"].dtype == torch.uint8)
                qs = {st["qmap1"].data_ptr() for st in opt.state.values() if "qmap1" in st}
                row.update(uint8_state_tensors=u8, uint8_state_params=u8p, qmap_pairs=len(qs),
                           qmap_bytes_if_not_shared_per_param=shared / n)
                notes += (f"; uint8 state on {u8}/{len(ps)} tensors ({100*u8p/n:.1f}% of params)"
                          f", {len(qs)} shared qmap pair(s)")
            notes += f"; params moved {100*moved:.0f}%"
            print(json.dumps(row) if args.json else
                  f"{case:6} {name:20} {impl:8} {s*1e3:9.2f} {n/s/1e6:9.1f} {sb/n:8.3f}  {notes}",
                  flush=True)
            del opt, ps, before; gc.collect()

if __name__ == "__main__":
    main()
