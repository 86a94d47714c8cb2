"""A model as a user brings it: trained by a plain PyTorch script (no rll), saved as TorchScript.

Reads Fashion-MNIST's IDX files directly (Debian's dataset-fashion-mnist), trains a small CNN for two epochs
on 10,000 seeded training images with Adam, and saves it with ``torch.jit.save``. Then:

    python docs/examples/plain_torchscript_model.py results/plain_fmnist.pt
    rll card results/plain_fmnist.pt --dataset fashion_mnist
"""

import gzip
import sys

import numpy as np
import torch
from torch import nn

ROOT = "/usr/share/datasets/fashion-mnist"


def idx(path: str) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main(out: str) -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(idx(f"{ROOT}/train-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1)
    y = torch.from_numpy(idx(f"{ROOT}/train-labels-idx1-ubyte.gz").astype(np.int64))
    keep = torch.randperm(len(x))[:10000]
    x, y = x[keep], y[keep]
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(2):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            opt.step()
        print(f"epoch {epoch + 1}: train accuracy {(net(x).argmax(1) == y).float().mean():.3f}")
    torch.jit.save(torch.jit.script(net.eval()), out)
    print(f"saved {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain_fmnist.pt")
