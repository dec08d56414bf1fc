"""PyTorch baseline for `downhill compare` on Fashion-MNIST: the issue's protocol.

MLP 784-256-128-10 (ReLU, dropout 0.2 after each hidden layer), batch 128, pixels scaled to
[0, 1] then standardized by the training set's global mean and std, shuffled every epoch.
Prints per epoch: optimizer, epoch, seconds for the training pass, test accuracy.

    python bench/torch_compare.py --threads 2 --epochs 15 --optimizers adam,sgd
"""
import argparse, gzip, struct, time
import numpy as np
import torch
import torch.nn as nn

def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)

OPTS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    "nadam": lambda p: torch.optim.NAdam(p, lr=2e-3),
    "radam": lambda p: torch.optim.RAdam(p, lr=1e-3),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizers", default=",".join(OPTS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = a.data_dir
    xtr = idx(f"{d}/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    ytr = idx(f"{d}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = idx(f"{d}/t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    yte = idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean, std = xtr.mean(), xtr.std()
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    xtr, ytr, xte, yte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    for name in a.optimizers.split(","):
        torch.manual_seed(a.seed)
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2),
                              nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
        opt = OPTS[name](model.parameters())
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(1, a.epochs + 1):
            model.train()
            perm = torch.randperm(len(xtr))
            t0 = time.perf_counter()
            for i in range(0, len(xtr), 128):
                ids = perm[i:i + 128]
                opt.zero_grad()
                loss_fn(model(xtr[ids]), ytr[ids]).backward()
                opt.step()
            secs = time.perf_counter() - t0
            model.eval()
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"{name},{epoch},{secs:.3f},{100 * acc:.2f}", flush=True)

if __name__ == "__main__":
    main()
