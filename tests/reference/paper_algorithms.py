r"""Float64 transcriptions of papers' algorithms, written from the papers, not from steepest.

Each algorithm is a plain loop over one flat list of Python floats: the concatenation, in
parameter order and row-major, of every parameter of a param group. That is the paper's
:math:`x \in \mathbb{R}^d`, so a transcription also checks that a statistic such as a norm is
taken over the whole group, not per tensor. :class:`FlatReference` runs one on each param
group of real parameters so it can stand in for an optimizer in ``assert_same_trajectory``.

Weight decay, where given, is the decoupled form :math:`x(1-\eta\lambda)` applied before the
step; the papers have none, and steepest documents it as its own addition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

#: ``(x, g, sizes, state, hp) -> new x``: one step on flat float lists. ``sizes`` are the
#: element counts of the group's tensors, in order; ``state`` persists between steps.
Algorithm = Callable[[list[float], list[float], list[int], dict[str, Any], dict[str, Any]], list[float]]


def _sign(v: float) -> float:
    if math.isnan(v):
        return math.nan
    return float((v > 0) - (v < 0))


def sign_sgd(
    x: list[float], g: list[float], sizes: list[int], state: dict[str, Any], hp: dict[str, Any]
) -> list[float]:
    """Bernstein et al. 2018, Algorithm 1: x <- x - lr * sign(g)."""
    lr, wd = hp["lr"], hp.get("weight_decay", 0.0)
    return [x[i] * (1.0 - lr * wd) - lr * _sign(g[i]) for i in range(len(x))]


def signum(x: list[float], g: list[float], sizes: list[int], state: dict[str, Any], hp: dict[str, Any]) -> list[float]:
    """Bernstein et al. 2018, Algorithm 3: m <- beta*m + (1-beta)*g; x <- x - lr * sign(m), m_0 = 0."""
    lr, beta, wd = hp["lr"], hp.get("momentum", 0.9), hp.get("weight_decay", 0.0)
    m = state.setdefault("m", [0.0] * len(x))
    out = []
    for i in range(len(x)):
        m[i] = beta * m[i] + (1.0 - beta) * g[i]
        out.append(x[i] * (1.0 - lr * wd) - lr * _sign(m[i]))
    return out


def normalized_steepest_descent(
    x: list[float], g: list[float], sizes: list[int], state: dict[str, Any], hp: dict[str, Any]
) -> list[float]:
    """Gunasekar et al. 2018: x <- x - lr * s * argmax_{||v|| <= 1} <g, v>.

    s = 1 (normalized) or the dual norm ||g||_* (``dual_scaled``). l2: v = g/||g||_2, dual
    ||g||_2; linf: v = sign(g), dual ||g||_1; l1: v = sign(g_i) e_i at the first i with the
    largest |g_i|, dual ||g||_inf. A zero gradient gives v = 0.
    """
    lr, wd = hp["lr"], hp.get("weight_decay", 0.0)
    norm, dual_scaled = hp.get("norm", "l2"), hp.get("dual_scaled", False)
    d = len(x)
    v = [0.0] * d
    if norm == "l2":
        dual = math.sqrt(sum(gi * gi for gi in g))
        if dual > 0:
            v = [gi / dual for gi in g]
    elif norm == "linf":
        dual = sum(abs(gi) for gi in g)
        v = [_sign(gi) for gi in g]
    else:
        best = 0
        for i in range(d):
            if abs(g[i]) > abs(g[best]):
                best = i
        dual = abs(g[best]) if d else 0.0
        if d:
            v[best] = _sign(g[best])
    scale = dual if dual_scaled else 1.0
    return [x[i] * (1.0 - lr * wd) - lr * scale * v[i] for i in range(d)]


def adagrad_norm(
    x: list[float], g: list[float], sizes: list[int], state: dict[str, Any], hp: dict[str, Any]
) -> list[float]:
    """Ward, Wu, Bottou 2019, Algorithm 1: b^2 <- b^2 + ||G||^2; x <- x - eta / b * G.

    ``scope="tensor"`` runs the same rule on each tensor's slice with its own b.
    """
    lr, wd, b0 = hp["lr"], hp.get("weight_decay", 0.0), hp.get("initial_accumulator", 0.1)
    segments = [len(x)] if hp.get("scope", "global") == "global" else sizes
    b_squared = state.setdefault("b_squared", [b0 * b0] * len(segments))
    out = []
    start = 0
    for k, size in enumerate(segments):
        for i in range(start, start + size):
            b_squared[k] += g[i] * g[i]
        b = math.sqrt(b_squared[k])
        out.extend(x[i] * (1.0 - lr * wd) - lr / b * g[i] for i in range(start, start + size))
        start += size
    return out


class FlatReference:
    """Runs an :data:`Algorithm` on each param group, its parameters flattened into one list.

    Behaves enough like a ``torch.optim.Optimizer`` for ``assert_same_trajectory``: built from
    parameters or param-group dicts (group keys override ``defaults``), ``step()`` reads
    ``.grad`` and writes the parameters back in place. Parameters without a gradient are left
    out of the step.
    """

    def __init__(self, params: Iterable[Any], algorithm: Algorithm, **defaults: Any) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.algorithm = algorithm
        self.states: list[dict[str, Any]] = [{} for _ in self.param_groups]

    @torch.no_grad()
    def step(self) -> None:
        """One step of the algorithm on every param group."""
        for group, state in zip(self.param_groups, self.states, strict=True):
            params = [p for p in group["params"] if p.grad is not None]
            x = [float(v) for p in params for v in p.detach().reshape(-1).tolist()]
            g = [float(v) for p in params for v in p.grad.reshape(-1).tolist()]
            sizes = [p.numel() for p in params]
            hp = {k: v for k, v in group.items() if k != "params"}
            new_x = self.algorithm(x, g, sizes, state, hp)
            start = 0
            for p, size in zip(params, sizes, strict=True):
                values = torch.tensor(new_x[start : start + size], dtype=torch.float64)
                p.copy_(values.reshape(p.shape))
                start += size
