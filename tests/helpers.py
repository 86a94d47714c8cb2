"""Small models and batches several test files build the same way."""

from __future__ import annotations

import torch
from torch import nn


def tiny(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(4 * 13 * 13, 10))


def batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def loss_and_grads(method, model, x, y, seed=0):
    torch.manual_seed(seed)
    model.zero_grad()
    loss = method(model, x, y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]
