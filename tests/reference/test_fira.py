"""Fira against the official ``fira.FiraAdamW`` (PyPI fira 1.0.2).

Same model and setting as ``test_galore.py``: tall and wide ``attn``/``mlp`` weights projected
at rank 3 with ``update_proj_gap=5`` (8 refreshes in 40 steps), plain biases and head, float32.
The official group key ``alpha`` is ``scale`` here.

Tolerance: ``rtol=1e-5, atol=1e-7`` on every parameter at every one of the 40 steps. Measured:
**bitwise equal** in every case below (per-tensor and foreach): the float32 op sequence is
the official one (see ``test_galore.py`` for why exactness matters at the subspace refreshes).
``proj_type='full'`` is not compared: the official step fails there (its per-row factor does
not broadcast), and ours refuses it at construction.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from fira import FiraAdamW as OfficialFira

import steepest
from tests.reference._lowrank import ADAMW_SETTINGS, batch, compare, make_model, official_groups

RTOL, ATOL = 1e-5, 1e-7


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"proj_type": "std"}, id="std"),
        pytest.param({"proj_type": "std", "scale": 0.25}, id="std-alpha"),
        pytest.param({"proj_type": "reverse_std", "scale": 0.5}, id="reverse_std"),
        pytest.param({"proj_type": "left"}, id="left"),
        pytest.param({"proj_type": "right", "scale": 0.0625}, id="right"),
    ],
)
@pytest.mark.parametrize("hyper", ADAMW_SETTINGS)
def test_fira_matches_official(options: dict[str, Any], hyper: dict[str, Any], foreach: bool) -> None:
    rank, gap = 3, 5
    compare(
        lambda m: steepest.Fira(
            steepest.lowrank_param_groups(m, rank, update_proj_gap=gap, **options), **hyper, foreach=foreach
        ),
        lambda m: OfficialFira(
            official_groups(m, "alpha", rank=rank, update_proj_gap=gap, **{"scale": 1.0, **options}),
            **hyper,
            no_deprecation_warning=True,
        ),
        steps=40,
        rtol=RTOL,
        atol=ATOL,
    )


def test_limiter_engages() -> None:
    """The norm-growth limiter is active in the compared runs: the residual norm grows by at most 1.01x."""
    model = make_model()
    opt = steepest.Fira(steepest.lowrank_param_groups(model, 3, update_proj_gap=5), lr=1e-2)
    x, y = batch()
    weight = model.mlp["up"].weight
    norms = []
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        norms.append(float(opt.state[weight]["residual_norm"]))
    ratios = [b / a for a, b in itertools.pairwise(norms)]
    assert max(ratios) <= 1.01 * (1 + 1e-6)
    assert any(r > 1.0 for r in ratios)


# -- equivalence: Fira without a residual is GaLore ----------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("proj_type", ["std", "reverse_std", "left", "right"])
def test_fira_without_residual_equals_galore(proj_type: str, foreach: bool) -> None:
    """Gradients of rank <= r with the basis refreshed every step: G - back(R) = 0, so Fira = GaLore.

    The loss sum_k (a_k^T W b_k - c_k)^2, k = 1..r, has the rank-r gradient
    sum_k 2 (a_k^T W b_k - c_k) a_k b_k^T; float64, so the residual is ~1e-16 of the gradient.
    """
    rank = 2
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rank, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(rank, 5, generator=gen, dtype=torch.float64)
    c = torch.randn(rank, generator=gen, dtype=torch.float64)
    init = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    weights = [torch.nn.Parameter(init.clone()) for _ in range(2)]
    group = {"rank": rank, "update_proj_gap": 1, "proj_type": proj_type}
    hyper = {"lr": 0.05, "weight_decay": 0.1, "foreach": foreach}
    fira = steepest.Fira([{"params": [weights[0]], **group}], **hyper)
    galore = steepest.GaLoreAdamW([{"params": [weights[1]], **group}], **hyper)
    for _ in range(30):
        for w, opt in zip(weights, (fira, galore), strict=True):
            opt.zero_grad()
            with torch.enable_grad():
                (((a @ w) * b).sum(dim=1).sub(c) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(weights[0].detach(), weights[1].detach(), rtol=1e-10, atol=1e-12)
    assert float(fira.state[weights[0]]["residual_norm"]) < 1e-10
