"""GaLore-AdamW against the official ``galore_torch.GaLoreAdamW`` (PyPI galore-torch 1.0).

The model (``tests/reference/_lowrank.py``) has tall and wide ``attn``/``mlp`` weights,
projected at rank 3 with ``update_proj_gap=5`` (8 refreshes in 40 steps), and plain biases
and head, which get the AdamW path. float32, as the official code decomposes in float32.

Tolerance: ``rtol=1e-5, atol=1e-7`` on every parameter at every one of the 40 steps. Measured:
**bitwise equal** in every case below, per-tensor and foreach. We run the official float32 op
sequence (``exp_avg / denom`` then ``add_``; decay as ``p.add_(p, alpha=-lr*wd)``) and give
``P^T`` the row-major layout the official SVD output has, since ``G @ P^T`` rounds differently
with a column-major ``P^T`` (2e-7). Exactness matters here: the moments are kept across
refreshes, so an ulp-level change of the gradient that flips the sign of one singular vector at
a refresh changes the trajectory at the 1e-2 level (seen with ``addcdiv`` in place of the
division). The tolerance leaves room for ulp-level differences only.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from galore_torch import GaLoreAdamW as OfficialGaLoreAdamW

import steepest
from steepest.optim._base import ParamGroup
from steepest.optim._projectors import RIGHT_KEY, LowRankProjector
from tests.reference._lowrank import ADAMW_SETTINGS, compare, official_groups

RTOL, ATOL = 1e-5, 1e-7


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"proj_type": "std"}, id="std"),
        pytest.param({"proj_type": "reverse_std", "scale": 0.25}, id="reverse_std"),
        pytest.param({"proj_type": "left"}, id="left"),
        pytest.param({"proj_type": "right", "scale": 0.5}, id="right"),
        pytest.param({"proj_type": "full"}, id="full"),
    ],
)
@pytest.mark.parametrize("hyper", ADAMW_SETTINGS)
def test_galore_matches_official(options: dict[str, Any], hyper: dict[str, Any], foreach: bool) -> None:
    rank, gap = 3, 5
    compare(
        lambda m: steepest.GaLoreAdamW(
            steepest.lowrank_param_groups(m, rank, update_proj_gap=gap, **options), **hyper, foreach=foreach
        ),
        lambda m: OfficialGaLoreAdamW(
            official_groups(m, "scale", rank=rank, update_proj_gap=gap, **{"scale": 1.0, **options}),
            **hyper,
            no_deprecation_warning=True,
        ),
        steps=40,
        rtol=RTOL,
        atol=ATOL,
    )


# -- equivalences -------------------------------------------------------------------------


class _IdentityProjector(LowRankProjector):
    """A right projection whose basis is the identity (full rank): no projection at all."""

    def check(self, owner: str, param: torch.Tensor) -> None:
        assert param.dim() == 2 and self.rank == param.shape[1]

    def refresh_(self, grad: torch.Tensor, state: Any, step: int) -> None:
        state[RIGHT_KEY].copy_(torch.eye(grad.shape[1], dtype=grad.dtype))


class _IdentityGaLore(steepest.GaLoreAdamW):
    def projector(self, group: ParamGroup) -> LowRankProjector | None:
        if group["rank"] is None:
            return None
        return _IdentityProjector(group["rank"], "right", group["scale"], group["update_proj_gap"])


@pytest.mark.parametrize("foreach", [False, True])
def test_full_rank_identity_projection_is_adamw_form_a(foreach: bool) -> None:
    """GaLore's projected path with P = I equals its plain AdamW path (eps form A, decay after)."""
    gen = torch.Generator().manual_seed(0)
    w_projected = torch.nn.Parameter(torch.randn(5, 4, generator=gen, dtype=torch.float64))
    w_plain = torch.nn.Parameter(w_projected.detach().clone())
    hyper = {"lr": 0.05, "weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-6, "foreach": foreach}
    projected = _IdentityGaLore([{"params": [w_projected], "rank": 4, "update_proj_gap": 3}], **hyper)
    with pytest.warns(UserWarning, match="no param group is projected"):
        plain = steepest.GaLoreAdamW([w_plain], **hyper)
    target = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    for _ in range(30):
        for w, opt in ((w_projected, projected), (w_plain, plain)):
            opt.zero_grad()
            with torch.enable_grad():
                ((w - target) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(w_projected.detach(), w_plain.detach(), rtol=1e-12, atol=1e-14)
    assert projected.state[w_projected]["exp_avg"].shape == (5, 4)


def test_plain_path_is_adamw_form_a_with_decay_after() -> None:
    """One plain step written out: p' = p - lr*sqrt(bc2)/bc1 * m/(sqrt(v)+eps); then p' * (1 - lr*wd)."""
    lr, (b1, b2), eps, wd = 0.1, (0.9, 0.999), 1e-6, 0.5
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    with pytest.warns(UserWarning, match="no param group is projected"):
        opt = steepest.GaLoreAdamW([w], lr=lr, weight_decay=wd)
    g = torch.tensor([0.5, -0.25], dtype=torch.float64)
    w.grad = g.clone()
    opt.step()
    m, v = (1 - b1) * g, (1 - b2) * g * g
    step_size = lr * (1 - b2) ** 0.5 / (1 - b1)
    expected = (torch.tensor([1.0, -2.0], dtype=torch.float64) - step_size * m / (v.sqrt() + eps)) * (1 - lr * wd)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-15, atol=0.0)
