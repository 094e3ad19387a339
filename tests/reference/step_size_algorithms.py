"""Float64 NumPy transcriptions of the step-size papers' algorithms, written from the spec sheet.

Each function follows the official code's loop as the spec sheet (§14-16, §18 of
``algorithm-specs.md``) writes it down, with plain NumPy and no torch, one step at a time:
SLS (Armijo / Goldstein, reset options), AdaSLS with the Adam preconditioner, PoNoS, SPS
(constant and smooth_iter) and multidimensional backtracking (box, ellipsoid with grad_dir).
They are the oracles of ``test_step_size_reference.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
LossGrad = Callable[[Array, int], tuple[float, Array]]


@dataclass
class Logistic:
    """Mini-batch logistic regression, ``f_B(w) = mean_{i in B} log(1 + exp(-y_i x_i.w))``."""

    x: Array
    y: Array
    batch_size: int

    @classmethod
    def make(cls, n: int = 64, dim: int = 6, batch_size: int = 16, seed: int = 0) -> Logistic:
        """A separable-ish synthetic set (interpolation holds approximately)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, dim))
        y = np.sign(x @ rng.standard_normal(dim) + 0.3 * rng.standard_normal(n))
        return cls(x, y, batch_size)

    def batch(self, k: int) -> slice:
        """Indices of batch ``k`` (cyclic, in order)."""
        count = len(self.y) // self.batch_size
        start = (k % count) * self.batch_size
        return slice(start, start + self.batch_size)

    def loss(self, w: Array, k: int) -> float:
        """The loss on batch ``k``."""
        b = self.batch(k)
        return float(np.mean(np.logaddexp(0.0, -self.y[b] * (self.x[b] @ w))))

    def loss_grad(self, w: Array, k: int) -> tuple[float, Array]:
        """The loss and gradient on batch ``k``."""
        b = self.batch(k)
        margins = self.y[b] * (self.x[b] @ w)
        weights = -self.y[b] / (1.0 + np.exp(margins))
        return self.loss(w, k), self.x[b].T @ weights / self.batch_size


def sls(
    problem: Logistic,
    w0: Array,
    steps: int,
    *,
    init_step_size: float = 1.0,
    c: float = 0.1,
    beta_b: float = 0.9,
    gamma: float = 2.0,
    reset_option: int = 1,
    n_batches_per_epoch: int = 500,
    line_search: str = "armijo",
    beta_f: float = 2.0,
    eta_max: float = 10.0,
) -> tuple[list[Array], list[float]]:
    """SLS (spec §14): iterates and stored step sizes after each step."""
    w, eta_prev = w0.copy(), init_step_size
    iterates, steps_taken = [], []
    for k in range(steps):
        f, g = problem.loss_grad(w, k)
        gn2 = float(g @ g)
        if reset_option == 0:
            eta = eta_prev
        elif reset_option == 1:
            eta = eta_prev * gamma ** (1.0 / n_batches_per_epoch)
        else:
            eta = init_step_size
        if np.sqrt(gn2) >= 1e-8:
            w0_k = w.copy()
            found = False
            for _ in range(100):
                trial = w0_k - eta * g
                f_new = problem.loss(trial, k)
                armijo = f_new <= f - c * eta * gn2
                if line_search == "armijo":
                    if armijo:
                        found = True
                        break
                    eta *= beta_b
                else:
                    curvature = f_new >= f - (1 - c) * eta * gn2
                    if armijo and curvature:
                        found = True
                        break
                    if armijo:
                        eta = min(beta_f * eta, eta_max)
                    else:
                        eta = max(beta_b * eta, 1e-8)
            w = trial if (found or line_search != "armijo") else w0_k - 1e-6 * g
        eta_prev = eta
        iterates.append(w.copy())
        steps_taken.append(eta)
    return iterates, steps_taken


def ada_sls(
    problem: Logistic,
    w0: Array,
    steps: int,
    *,
    init_step_size: float = 1.0,
    c: float = 0.1,
    beta_b: float = 0.9,
    gamma: float = 2.0,
    n_batches_per_epoch: int = 500,
    beta: float = 0.99,
    momentum: float = 0.0,
) -> tuple[list[Array], list[float]]:
    """AdaSLS with base_opt='adam', reset option 1 (spec §14)."""
    w, eta_prev = w0.copy(), init_step_size
    v, m = np.zeros_like(w0), np.zeros_like(w0)
    iterates, etas = [], []
    for k in range(steps):
        t = k + 1
        f, g = problem.loss_grad(w, k)
        v = beta * v + (1 - beta) * g**2
        m = momentum * m + (1 - momentum) * g
        precond = 1.0 / (np.sqrt(v / (1 - beta**t)) + 1e-8)
        eta = eta_prev * gamma ** (1.0 / n_batches_per_epoch)
        decrease = float(np.sum(g**2 * precond))
        for _ in range(100):
            if problem.loss(w - eta * precond * g, k) <= f - c * eta * decrease:
                break
            eta *= beta_b
        else:
            eta = 1e-6
        d = m / (1 - momentum**t) if momentum > 0 else g
        w = w - eta * precond * d
        eta_prev = eta
        iterates.append(w.copy())
        etas.append(eta)
    return iterates, etas


def ponos(
    problem: Logistic,
    w0: Array,
    steps: int,
    *,
    c: float = 0.5,
    c_p: float = 0.1,
    delta: float = 0.5,
    xi: float = 1.0,
    max_eta: float = 10.0,
    min_eta: float = 1e-6,
    save_backtracks: bool = True,
) -> tuple[list[Array], list[float], list[int]]:
    """PoNoS (spec §15): iterates, step sizes and cuts per step."""
    w = w0.copy()
    q = c_ref = 0.0
    memory = 0
    iterates, etas, cuts_per_step = [], [], []
    for k in range(steps):
        f, g = problem.loss_grad(w, k)
        gn2 = float(g @ g)
        eta = f / (c_p * gn2 + 1e-8)
        if save_backtracks:
            eta *= delta**memory
        eta = min(max(eta, min_eta), max_eta)
        q_new = xi * q + 1.0
        c_ref = (xi * q * c_ref + f) / q_new
        q = q_new
        reference = max(c_ref, f)
        cuts = 0
        if np.sqrt(gn2) >= 1e-8 and f != 0:
            accepted = False
            for e in range(100):
                trial = w - eta * g
                if problem.loss(trial, k) <= reference - c * eta * gn2:
                    accepted = True
                    cuts = e
                    break
                eta *= delta
            if not accepted:
                trial, eta, cuts = w - 1e-6 * g, 1e-6, 99
            memory = max(memory + cuts - 1, 0)
            w = trial
        iterates.append(w.copy())
        etas.append(eta)
        cuts_per_step.append(cuts)
    return iterates, etas, cuts_per_step


def sps(
    problem: Logistic,
    w0: Array,
    steps: int,
    *,
    c: float = 0.5,
    eps: float = 1e-8,
    mode: str = "constant",
    eta_max: float | None = None,
    f_star: float = 0.0,
    gamma: float = 2.0,
    n_batches_per_epoch: int = 500,
    init_step_size: float = 1.0,
) -> tuple[list[Array], list[float]]:
    """SPS (spec §16): 'constant' (with f*, eta_max) or 'smooth_iter' (f* = 0)."""
    w, eta_prev = w0.copy(), init_step_size
    iterates, etas = [], []
    for k in range(steps):
        f, g = problem.loss_grad(w, k)
        gn2 = float(g @ g)
        if np.sqrt(gn2) < 1e-8:
            eta = 0.0
        elif mode == "constant":
            eta = 0.0 if f < f_star else (f - f_star) / (c * gn2 + eps)
            if eta_max is not None:
                eta = min(eta, eta_max)
        else:
            eta = min(f / (c * gn2 + eps), gamma ** (1.0 / n_batches_per_epoch) * eta_prev)
        w = w - eta * g
        eta_prev = eta
        iterates.append(w.copy())
        etas.append(eta)
    return iterates, etas


def precsearch(
    func: Callable[[Array], float],
    grad: Callable[[Array], Array],
    x0: Array,
    iterations: int,
    *,
    set_type: str = "ellipsoid",
    scale: float = 1.0,
    forward: float = 2.0,
    grad_dir: bool = True,
) -> tuple[list[Array], list[int]]:
    """Multidimensional backtracking (spec §18): the accepted iterates and the cuts before each.

    One iteration = one trial, as in the code; an accepted trial moves ``x``.
    """
    d = len(x0)
    bound = np.full(d, (scale * d) ** 2 if set_type == "ellipsoid" else scale * d)
    x = x0.copy()
    f, g = func(x), grad(x)
    accepted: list[Array] = []
    cuts_before: list[int] = []
    cuts = 0
    for _ in range(iterations):
        if set_type == "box":
            p = bound / d
        elif grad_dir:
            p = bound * g**2 / (np.sqrt(2) * np.sqrt(d) * np.linalg.norm(np.sqrt(bound) * g**2))
        else:
            p = np.sqrt(bound) / (np.sqrt(2) * d)
        y = x - p * g
        f_y, g_y = func(y), grad(y)
        if f_y - f + 0.5 * float(g @ (p * g)) <= 0:
            x, f, g = y, f_y, g_y
            bound = bound * (np.sqrt(forward) if set_type == "ellipsoid" else forward)
            accepted.append(x.copy())
            cuts_before.append(cuts)
            cuts = 0
            continue
        cuts += 1
        u = np.maximum((0.5 * g**2 - g_y * g) / (f - f_y - float(g_y @ (p * g))), 0.0)
        if set_type == "box":
            bound = 1.0 / np.maximum(1.0 / bound, u)
        else:
            ell = float(np.sum(u**2 * bound))
            lam = (ell / d) * (d - 1) / (ell - 1)
            bound = 1.0 / (lam / bound + (1 - lam) * u**2)
    return accepted, cuts_before


def as_list(values: Sequence[float]) -> list[float]:
    """Plain floats (for readable assertion messages)."""
    return [float(v) for v in values]
