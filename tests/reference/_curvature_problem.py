"""A small non-quadratic float64 model for the curvature reference tests.

A Conv2d kernel (4-D: AdaHessian's spatially averaged case, which the oracle supports), a
2-D matrix and a bias, all in one loss with a non-constant, indefinite Hessian.
"""

from __future__ import annotations

import torch
from torch import Tensor


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    """Conv kernel (2, 1, 3, 3), matrix (3, 8), bias (3,), float64."""
    gen = torch.Generator().manual_seed(seed)
    shapes = ((2, 1, 3, 3), (3, 8), (3,))
    return [torch.nn.Parameter(0.5 * torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]


class SmallNet:
    """conv -> tanh -> flatten -> linear, cross-entropy on fixed data; ``logits`` exposed for GNB."""

    def __init__(self, seed: int = 1, n: int = 16) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 4, 4, generator=gen, dtype=torch.float64)
        self.y = torch.randint(0, 3, (n,), generator=gen)

    def logits(self, params: list[Tensor]) -> Tensor:
        """The model's logits at ``params``."""
        kernel, weight, bias = params
        hidden = torch.tanh(torch.nn.functional.conv2d(self.x, kernel)).reshape(self.x.shape[0], -1)
        return hidden @ weight.T + bias

    def loss(self, params: list[Tensor]) -> Tensor:
        """Mean cross-entropy on the fixed labels."""
        return torch.nn.functional.cross_entropy(self.logits(params), self.y)
