"""LAMB against the paper's Algorithm 2 (a float64 transcription below) and cybertronai's variant.

* ``bias_correction=True`` (default) against :class:`PaperLamb`, a line-by-line float64
  transcription of Algorithm 2 of You et al. (arXiv:1904.00962 v5) written for this test: it
  shares no code with ``steepest``.
* ``bias_correction=False`` against ``torch_optimizer.Lamb(clamp_value=..., debias=False)``
  0.3.0, the port of cybertronai/pytorch-lamb (no bias correction, ``||x||`` clamped at 10).

Tolerances (float64, 40 steps, both our paths, weight decay on, two param groups):
``rtol=1e-12, atol=1e-14``. The worst absolute difference seen is 3e-16 (one ulp of the O(1)
entries); the worst relative one, 4e-13, is at an entry of size 1e-4 that carries that ulp. The
cause is the same arithmetic in a different order (bias corrections folded into one factor and
into eps, trust ratios from stacked norms, ``lerp`` for the first moment). A wrong formula (bias
correction on the other side of eps, decay outside the trust ratio, another clamp) moves the
trajectory by 1e-9 or more at the first step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch_optimizer

import steepest
from tests.reference._compare import assert_same_trajectory

RTOL, ATOL = 1e-12, 1e-14


class PaperLamb(torch.optim.Optimizer):
    """Algorithm 2 of the LAMB paper, one tensor (layer) at a time, in float64.

    m_t = b1 m + (1-b1) g;  v_t = b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t);
    r = m^ / (sqrt(v^) + eps);  x <- x - lr * phi(||x||) / ||r + wd x|| * (r + wd x),
    phi(z) = min(z, clamp) (identity when clamp is None), ratio 1 if either norm is 0.
    """

    def __init__(
        self, params: Any, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, clamp: float | None
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.clamp = clamp

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for x in group["params"]:
                if x.grad is None:
                    continue
                g = x.grad.to(torch.float64)
                state = self.state[x]
                if not state:
                    state.update(t=0, m=torch.zeros_like(g), v=torch.zeros_like(g))
                state["t"] += 1
                t = state["t"]
                state["m"] = beta1 * state["m"] + (1 - beta1) * g
                state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
                m_hat = state["m"] / (1 - beta1**t)
                v_hat = state["v"] / (1 - beta2**t)
                r = m_hat / (v_hat.sqrt() + group["eps"])
                u = r + group["weight_decay"] * x
                weight_norm = float(x.norm())
                phi = weight_norm if self.clamp is None else min(weight_norm, self.clamp)
                update_norm = float(u.norm())
                trust = phi / update_norm if phi > 0 and update_norm > 0 else 1.0
                x.sub_(group["lr"] * trust * u)


def _groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    return [{"params": params[:2]}, {"params": params[2:], "lr": 5e-3, "weight_decay": 0.2}]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("clamp_value", [10.0, 1.0, None])
def test_lamb_matches_paper_algorithm_2(clamp_value: float | None, foreach: bool) -> None:
    # clamp_value=1.0 is below the norms of the larger test tensors (2.7 and 4.3): phi clamps.
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.05}
    assert_same_trajectory(
        lambda p: steepest.LAMB(p, **kwargs, clamp_value=clamp_value, foreach=foreach),
        lambda p: PaperLamb(p, **kwargs, clamp=clamp_value),
        groups=_groups,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("clamp_value", [10.0, 1.0])
def test_lamb_without_bias_correction_matches_torch_optimizer(clamp_value: float, foreach: bool) -> None:
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-6, "weight_decay": 0.05}
    assert_same_trajectory(
        lambda p: steepest.LAMB(p, **kwargs, clamp_value=clamp_value, bias_correction=False, foreach=foreach),
        lambda p: torch_optimizer.Lamb(p, **kwargs, clamp_value=clamp_value, debias=False),
        groups=_groups,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_without_weight_decay_matches_paper(foreach: bool) -> None:
    # weight_decay=0 takes a separate branch in our foreach path (bias corrections folded into the ratio).
    kwargs = {"lr": 2e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0}
    assert_same_trajectory(
        lambda p: steepest.LAMB(p, **kwargs, foreach=foreach),
        lambda p: PaperLamb(p, **kwargs, clamp=10.0),
        rtol=RTOL,
        atol=ATOL,
    )
