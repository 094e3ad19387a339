"""Small deterministic problems the conformance matrix trains on."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

SHAPES: tuple[tuple[int, ...], ...] = ((5, 4), (4,), (0, 3), (3, 2, 2))


def make_params(
    dtype: torch.dtype = torch.float64, seed: int = 0, device: torch.device | str = "cpu"
) -> list[torch.nn.Parameter]:
    """A 2-D, 1-D, zero-size and 3-D parameter, deterministic (the same values on every device)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype))
        for s in SHAPES
    ]


class SumOfQuadratics:
    """``0.5 * sum_i ||w_i * (p_i - c_i)||^2 + 0.1 * sum_i sum(p_i)^2 / n_i`` (a coupled quadratic)."""

    def __init__(self, seed: int = 1) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.targets = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        self.weights = [0.5 + torch.rand(s, generator=gen, dtype=torch.float64) for s in SHAPES]

    def loss(self, params: list[Tensor]) -> Tensor:
        """The loss at ``params`` (computed in float64, on the parameters' device)."""
        device = params[0].device if params else torch.device("cpu")
        total = torch.zeros((), dtype=torch.float64, device=device)
        for p, c, w in zip(params, self.targets, self.weights, strict=True):
            p64 = p.to(torch.float64)
            c, w = c.to(device), w.to(device)
            total = total + 0.5 * ((w * (p64 - c)) ** 2).sum()
            if p.numel():
                total = total + 0.1 * p64.sum() ** 2 / p.numel()
        return total

    def backward(self, params: list[Tensor], sign: float = 1.0) -> Tensor:
        """Set ``.grad`` of every parameter to ``sign * grad loss``; return the loss."""
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss = self.loss(params)
            (sign * loss).backward()
        return loss.detach()


class Quadratic:
    """``0.5 (x - c)^T H (x - c)`` in ``dim`` dimensions, eigenvalues log-spaced in [1, kappa]."""

    def __init__(self, dim: int = 20, kappa: float = 10.0, seed: int = 2) -> None:
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        eig = torch.logspace(0.0, math.log10(kappa), dim, dtype=torch.float64)
        self.hessian = q @ torch.diag(eig) @ q.T
        self.center = torch.randn(dim, generator=gen, dtype=torch.float64)
        self.dim = dim

    def loss(self, x: Tensor) -> Tensor:
        """The loss at ``x``; its minimum is 0."""
        d = x.to(torch.float64) - self.center
        return 0.5 * d @ self.hessian @ d


class LogisticRegression:
    """L2-regularised logistic regression on a fixed non-separable synthetic set."""

    def __init__(self, n: int = 200, dim: int = 10, l2: float = 1e-2, seed: int = 3) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        w_true = torch.randn(dim, generator=gen, dtype=torch.float64)
        logits = self.x @ w_true
        self.y = (torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(logits)).to(torch.float64)
        self.l2 = l2
        self.dim = dim

    def loss(self, w: Tensor, b: Tensor) -> Tensor:
        """Mean logistic loss plus ``l2/2 * ||w||^2``."""
        logits = self.x @ w.to(torch.float64) + b.to(torch.float64)
        data = torch.nn.functional.binary_cross_entropy_with_logits(logits, self.y)
        return data + 0.5 * self.l2 * (w.to(torch.float64) ** 2).sum()

    def optimum(self) -> float:
        """The minimum loss, by L-BFGS to high precision."""
        w = torch.zeros(self.dim, dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = self.loss(w, b)
            loss.backward()
            return loss

        opt.step(closure)
        return float(self.loss(w, b).detach())


def make_closure(
    params: list[Tensor],
    loss_fn: Callable[[], Tensor],
    *,
    sign: float = 1.0,
    drop: tuple[int, ...] = (),
    create_graph: bool = False,
) -> Callable[[], Tensor]:
    """A closure following the library's contract (see :class:`steepest.Capabilities`).

    It zeroes the gradients, computes ``sign * loss_fn()``, back-propagates only when grad mode is
    on, then sets the gradients of ``params[i]`` for ``i`` in ``drop`` to None (a parameter that
    took no part in this step), and returns the detached loss.
    """

    def closure() -> Tensor:
        for p in params:
            p.grad = None
        loss = sign * loss_fn()
        if torch.is_grad_enabled():
            loss.backward(create_graph=create_graph)
            for i in drop:
                params[i].grad = None
            return loss.detach()
        # Under no_grad there is no graph to drop; returning the loss as computed keeps a
        # forward-mode tangent (ForwardGradient reads d = grad . v from it).
        return loss

    return closure


def take_step(
    opt: torch.optim.Optimizer,
    params: list[Tensor],
    loss_fn: Callable[[], Tensor],
    *,
    sign: float = 1.0,
    drop: tuple[int, ...] = (),
) -> Tensor:
    """One step of ``opt`` on ``loss_fn``, driven as its capabilities ask.

    Closure optimizers get the closure; the others get gradients computed here first (with
    ``create_graph`` when the optimizer needs Hessian-vector products).
    """
    caps = opt.capabilities  # type: ignore[attr-defined]
    closure = make_closure(params, loss_fn, sign=sign, drop=drop, create_graph=caps.needs_create_graph)
    if caps.requires_closure or caps.gradient_free:
        return opt.step(closure)
    with torch.enable_grad():
        loss = closure()
    opt.step()
    return loss


def run_steps(
    opt: torch.optim.Optimizer,
    params: list[Tensor],
    loss_fn: Callable[[], Tensor],
    steps: int,
    *,
    sign: float = 1.0,
) -> list[list[Tensor]]:
    """Take ``steps`` steps with :func:`take_step`; return a snapshot of the parameters after each."""
    trajectory = []
    for _ in range(steps):
        take_step(opt, params, loss_fn, sign=sign)
        trajectory.append([p.detach().clone() for p in params])
    return trajectory
