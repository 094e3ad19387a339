r"""Float64 transcriptions of zeroth-order algorithms, written from the papers, not from steepest.

Parameters are plain lists of Python floats, one list per tensor (row-major). The random
directions come from a ``draw(step, tensor_index) -> list[float]`` callable, so a test can feed
the same Gaussian vectors the optimizer draws; everything else is the paper's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

Flat = list[list[float]]
#: ``(step, tensor_index) -> z`` for that tensor, as a flat list.
Draw = Callable[[int, int], list[float]]


def _axpy(x: Flat, a: float, z: Flat) -> Flat:
    return [[xi + a * zi for xi, zi in zip(xt, zt, strict=True)] for xt, zt in zip(x, z, strict=True)]


def spsa_estimate(theta: Flat, loss: Callable[[Flat], float], z: Flat, eps: float) -> tuple[Flat, float, float]:
    """MeZO Algorithm 1, lines 3-8: perturb by +eps z, -2 eps z, +eps z in place; return (theta, g, L+).

    Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023,
    arXiv:2305.17333. The in-place round trip is transcribed as written (it is not an exact
    restore in floating point).
    """
    theta = _axpy(theta, eps, z)
    loss_plus = loss(theta)
    theta = _axpy(theta, -2.0 * eps, z)
    loss_minus = loss(theta)
    theta = _axpy(theta, eps, z)
    return theta, (loss_plus - loss_minus) / (2.0 * eps), loss_plus


def mezo(
    theta: Flat,
    loss: Callable[[Flat], float],
    draw: Draw,
    steps: int,
    hp: dict[str, Any],
    decayed: list[bool] | None = None,
) -> list[Flat]:
    """MeZO (Algorithm 1 with the official weight decay): theta <- theta - lr (g z + wd theta).

    ``decayed[i]`` says whether tensor ``i`` gets weight decay (the official code skips biases
    and layer norms). Returns theta after every step.
    """
    lr, eps, wd = hp["lr"], hp["eps"], hp.get("weight_decay", 0.0)
    decayed = decayed or [True] * len(theta)
    trajectory = []
    for t in range(steps):
        z = [draw(t, i) for i in range(len(theta))]
        theta, g, _ = spsa_estimate(theta, loss, z, eps)
        theta = [
            [x - lr * (g * zi + (wd * x if decayed[i] else 0.0)) for x, zi in zip(xt, zt, strict=True)]
            for i, (xt, zt) in enumerate(zip(theta, z, strict=True))
        ]
        trajectory.append(theta)
    return trajectory


def sparse_mezo(
    theta: Flat, loss: Callable[[Flat], float], draw: Draw, steps: int, hp: dict[str, Any]
) -> list[Flat]:
    """Sparse MeZO (Liu et al. 2024, arXiv:2402.15751): z masked to |theta_t| <= h, h fixed at step 1.

    ``h`` per tensor: the k-th smallest |theta_0| with k = n - floor(sparsity n), so at most a
    ``sparsity`` fraction is frozen and a non-empty tensor keeps at least one entry. The product
    ``sparsity n`` is taken exactly, for the decimal as written (0.29 * 100 is 29, not the float
    28.999999999999996).
    """
    lr, eps, sparsity = hp["lr"], hp["eps"], hp["sparsity"]
    frozen_fraction = Fraction(repr(sparsity))
    thresholds = []
    for xt in theta:
        k = len(xt) - math.floor(frozen_fraction * len(xt))
        thresholds.append(math.inf if k >= len(xt) else (-1.0 if k <= 0 else sorted(abs(x) for x in xt)[k - 1]))
    trajectory = []
    for t in range(steps):
        masks = [[abs(x) <= h for x in xt] for xt, h in zip(theta, thresholds, strict=True)]
        z = [[zi if m else 0.0 for zi, m in zip(draw(t, i), masks[i], strict=True)] for i in range(len(theta))]
        theta, g, _ = spsa_estimate(theta, loss, z, eps)
        theta = [[x - lr * g * zi for x, zi in zip(xt, zt, strict=True)] for xt, zt in zip(theta, z, strict=True)]
        trajectory.append(theta)
    return trajectory


def zo_sign_sgd(
    theta: Flat, loss: Callable[[Flat], float], draw: Draw, steps: int, hp: dict[str, Any]
) -> list[Flat]:
    """ZO-signSGD (Liu et al., ICLR 2019): theta <- theta - lr sign(g z), one direction per step."""
    lr, eps = hp["lr"], hp["eps"]
    trajectory = []
    for t in range(steps):
        z = [draw(t, i) for i in range(len(theta))]
        theta, g, _ = spsa_estimate(theta, loss, z, eps)
        theta = [
            [x - lr * math.copysign(1.0, g * zi) if g * zi != 0 else x for x, zi in zip(xt, zt, strict=True)]
            for xt, zt in zip(theta, z, strict=True)
        ]
        trajectory.append(theta)
    return trajectory


def zo_adam(theta: Flat, loss: Callable[[Flat], float], draw: Draw, steps: int, hp: dict[str, Any]) -> list[Flat]:
    """ZO-Adam (ZO-Bench, Zhang et al. 2024, arXiv:2402.11592): Adam (Kingma & Ba, Algorithm 1) on g z."""
    lr, eps, (b1, b2), delta = hp["lr"], hp["eps"], hp["betas"], hp["adam_eps"]
    m = [[0.0] * len(xt) for xt in theta]
    v = [[0.0] * len(xt) for xt in theta]
    trajectory = []
    for t in range(1, steps + 1):
        z = [draw(t - 1, i) for i in range(len(theta))]
        theta, g, _ = spsa_estimate(theta, loss, z, eps)
        new_theta = []
        for i, (xt, zt) in enumerate(zip(theta, z, strict=True)):
            row = []
            for j, (x, zi) in enumerate(zip(xt, zt, strict=True)):
                grad = g * zi
                m[i][j] = b1 * m[i][j] + (1 - b1) * grad
                v[i][j] = b2 * v[i][j] + (1 - b2) * grad * grad
                m_hat, v_hat = m[i][j] / (1 - b1**t), v[i][j] / (1 - b2**t)
                row.append(x - lr * m_hat / (math.sqrt(v_hat) + delta))
            new_theta.append(row)
        theta = new_theta
        trajectory.append(theta)
    return trajectory
