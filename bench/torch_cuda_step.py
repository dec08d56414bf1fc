"""PyTorch's optimizer step on CUDA, on the cases of `downhill bench --device cuda`: the CUDA part
of ../shared/bench/torch_step_bench.py (same shapes, same timing: median of 20 steps, each
followed by a synchronize), without its CPU part. `large`: param_shapes(200_000_000), 160
tensors, 201.5 M parameters; `small`: 10 000 tensors of 1 000. Prints torch's copy bandwidth
too. Writes torch_cuda_step.json under $OUT when $OUT is set.
"""
import json, os, time
import torch

def med(f, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2]

def param_shapes(total, d=1024):
    shapes, n = [], 0
    while n < total:
        for s in [(d, 3 * d), (3 * d,), (d, d), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,), (d,), (d,)]:
            shapes.append(s); n += torch.Size(s).numel()
    return shapes

BYTES = {"adamw": 28, "sgdm": 20}
rows = []
x = torch.empty(2**29, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
a.record()
for _ in range(20): y.copy_(x)
b.record(); torch.cuda.synchronize()
bw = 2 * x.numel() * 4 * 20 / (a.elapsed_time(b) * 1e-3) / 1e9
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: copy {bw:.0f} GB/s", flush=True)
rows.append(dict(what="copy", gbs=bw))
del x, y
for case, shapes in [("large", param_shapes(200_000_000)), ("small", [(1000,)] * 10000)]:
    for opt in ["adamw", "sgdm"]:
        for impl in ["fused", "foreach"]:
            ps = [torch.randn(s, device="cuda", requires_grad=True) for s in shapes]
            for p in ps: p.grad = torch.randn_like(p)
            kw = {"fused": True} if impl == "fused" else {"foreach": True}
            o = torch.optim.AdamW(ps, lr=1e-3, **kw) if opt == "adamw" else torch.optim.SGD(ps, lr=0.01, momentum=0.9, **kw)
            for _ in range(3): o.step()
            torch.cuda.synchronize()
            def f(): o.step(); torch.cuda.synchronize()
            s = med(f, 20)
            n = sum(p.numel() for p in ps)
            gbs = BYTES[opt] * n / s / 1e9
            print(f"{case:6} {opt:5} {impl:7} {s * 1e3:8.3f} ms {gbs:7.0f} GB/s {100 * gbs / bw:5.1f}% of copy", flush=True)
            rows.append(dict(case=case, opt=opt, impl=impl, ms=s * 1e3, gbs=gbs, pct_copy=100 * gbs / bw))
            del ps, o
            torch.cuda.empty_cache()
out = os.environ.get("OUT")
if out: json.dump(dict(rows=rows, torch=torch.__version__), open(os.path.join(out, "torch_cuda_step.json"), "w"), indent=1)
