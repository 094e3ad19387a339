"""LARS against kozistr ``pytorch_optimizer.LARS`` 4.1.0 and against the paper's Algorithm 1.

* kozistr's LARS (MoCo-v3 / MAE lineage): per-tensor local lr
  ``tc * ||w|| / (||g|| + wd * ||w||)`` on tensors with ``ndim > 1``; 1-D tensors take plain
  momentum SGD without weight decay; torch-SGD momentum from a zero buffer with dampening and
  Nesterov. Ours with ``exclude_1d=True`` (default). kozistr's default lr is 1e-3, ours 1.0, so
  lr is passed explicitly.
* :class:`PaperLars`, a float64 transcription of Algorithm 1 of You, Gitman, Ginsburg
  (arXiv:1708.03888) written for this test: every tensor adapted, ``v <- m v + lr * l * (g + wd w)``,
  ``w <- w - v``. With a constant lr and no dampening it is ours with ``exclude_1d=False``.

Tolerances (float64, 40 steps, both our paths, weight decay on, two param groups):
``rtol=1e-12, atol=1e-14``. Our per-tensor path reproduces kozistr's bit for bit. The foreach
path folds the local lr into the buffer update (``b <- m b + l g + l wd w``, no ``d`` formed)
and applies Nesterov as two adds, which rounds differently: worst seen 4e-14 relative and 5e-15
absolute. Against the paper transcription: 1.4e-14 relative, 9e-16 absolute.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pytorch_optimizer import LARS as ReferenceLARS

import steepest
from tests.reference._compare import assert_same_trajectory

RTOL, ATOL = 1e-12, 1e-14


class PaperLars(torch.optim.Optimizer):
    """Algorithm 1 of the LARS paper for every tensor, in float64 (constant global lr).

    l = tc * ||w|| / (||g|| + wd ||w||) (1 if a norm is 0);  v <- m v + lr * l * (g + wd w);  w <- w - v.
    """

    def __init__(self, params: Any, lr: float, momentum: float, weight_decay: float, trust_coefficient: float) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "tc": trust_coefficient}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            wd = group["weight_decay"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                weight_norm, grad_norm = float(w.norm()), float(g.norm())
                denominator = grad_norm + wd * weight_norm
                local_lr = group["tc"] * weight_norm / denominator if weight_norm > 0 and denominator > 0 else 1.0
                state = self.state[w]
                v = state.get("v", torch.zeros_like(w))
                state["v"] = group["momentum"] * v + group["lr"] * local_lr * (g + wd * w)
                w.sub_(state["v"])


def _groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.5, "weight_decay": 0.02}]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"momentum": 0.9, "dampening": 0.0, "nesterov": False},
        {"momentum": 0.9, "dampening": 0.1, "nesterov": False},
        {"momentum": 0.8, "dampening": 0.0, "nesterov": True},
        {"momentum": 0.0, "dampening": 0.0, "nesterov": False},
    ],
    ids=["momentum", "dampening", "nesterov", "no-momentum"],
)
def test_lars_matches_pytorch_optimizer(kwargs: dict[str, Any], foreach: bool) -> None:
    common = {"lr": 1.0, "weight_decay": 0.05, "trust_coefficient": 0.01, **kwargs}
    assert_same_trajectory(
        lambda p: steepest.LARS(p, **common, foreach=foreach),
        lambda p: ReferenceLARS(p, **common, foreach=False),
        groups=_groups,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_lars_without_exclusion_matches_paper_algorithm_1(foreach: bool) -> None:
    common = {"lr": 2.0, "momentum": 0.9, "weight_decay": 0.05, "trust_coefficient": 0.01}
    assert_same_trajectory(
        lambda p: steepest.LARS(p, **common, exclude_1d=False, foreach=foreach),
        lambda p: PaperLars(p, **common),
        groups=_groups,
        rtol=RTOL,
        atol=ATOL,
    )
