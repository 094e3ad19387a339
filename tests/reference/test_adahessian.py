"""AdaHessian against torch-optimizer 0.3.0's ``Adahessian`` (the official code), on the same probes.

torch-optimizer draws its Rademacher probes with the global ``torch.randint_like``; ours come
from seeded generators. Each step we record the probes ours drew (by wrapping
``draw_probe``) and feed the same ones to the oracle (by patching ``torch.randint_like``), so
both see identical gradients, Hessian-vector products and probes. ``hessian_power=1.0`` (the
paper's default; the oracle's default is 0.5), and one run with 0.5.

Model: conv kernel (4-D, spatially averaged by both), matrix and bias of a small tanh network
(its Hessian is not constant). Tolerance ``atol=1e-12`` on parameters of size ~0.1-1 over 20
float64 steps: both compute the same float64 expressions in a slightly different order (the
oracle forms ``lr * (m / bc1 / den + wd * p)``; we fuse ``-lr`` into one ``add_``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch_optimizer

import steepest
import steepest.optim._curvature_base as curvature_base
from tests.reference._curvature_problem import SmallNet, make_params

ATOL = 1e-12


def _run(
    kwargs: dict[str, Any],
    foreach: bool,
    monkeypatch: pytest.MonkeyPatch,
    steps: int = 20,
    ours_override: dict[str, Any] | None = None,
) -> float:
    net = SmallNet()
    ours_params, theirs_params = make_params(), make_params()
    ours = steepest.AdaHessian(ours_params, **{**kwargs, **(ours_override or {})}, foreach=foreach)
    theirs = torch_optimizer.Adahessian(theirs_params, **kwargs)
    recorded: list[torch.Tensor] = []
    draw = curvature_base.draw_probe

    def recording_draw(like: torch.Tensor, distribution: str, seed: int) -> torch.Tensor:
        probe = draw(like, distribution, seed)
        recorded.append(probe)
        return probe

    monkeypatch.setattr(curvature_base, "draw_probe", recording_draw)
    worst = 0.0
    for step in range(steps):
        recorded.clear()
        for params, opt in ((ours_params, ours), (theirs_params, theirs)):
            opt.zero_grad()
            net.loss(params).backward(create_graph=True)
        ours.step()
        assert len(recorded) == len(theirs_params)
        queue: Iterator[torch.Tensor] = iter([(z + 1) / 2 for z in recorded])
        with monkeypatch.context() as patch:
            patch.setattr(torch, "randint_like", lambda p, *args, q=queue, **kw: next(q).to(p.dtype))
            theirs.step()
        for a, b in zip(ours_params, theirs_params, strict=True):
            diff = float((a.detach() - b.detach()).abs().max())
            worst = max(worst, diff)
            assert diff <= ATOL, f"step {step + 1}: {diff:.3e}"
    return worst


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"hessian_power": 1.0}, id="defaults"),
        pytest.param({"lr": 0.05, "hessian_power": 1.0, "weight_decay": 1e-2}, id="wd"),
        pytest.param({"lr": 0.05, "hessian_power": 0.5, "betas": (0.8, 0.99), "eps": 1e-6}, id="power-0.5"),
    ],
)
def test_adahessian_matches_torch_optimizer(
    kwargs: dict[str, Any], foreach: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(kwargs, foreach, monkeypatch)


def test_the_oracle_comparison_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sanity check of the harness: a slightly different eps on our side is caught."""
    with pytest.raises(AssertionError):
        _run({"hessian_power": 1.0}, False, monkeypatch, steps=3, ours_override={"eps": 1.1e-4})
