"""SophiaG against PyPI ``sophia-opt==0.2.2`` (a copy of the official Liuhong99/Sophia ``sophia.py``).

Both run the official training loop on a small float64 classifier: a step on the data loss,
then every ``k`` steps a Gauss-Newton-Bartlett refresh from the gradient of the loss under
labels sampled from the model (the same sampled labels for both). Ours refreshes through
``step(hessian_closure=...)``, the oracle through ``update_hessian()`` after a backward, as the
official ``train_sophiag.py`` does. Tolerance ``atol=1e-13`` over 24 steps: the same float64
operations, in the same order, on parameters of size ~0.1-1.
"""

from __future__ import annotations

from typing import Any

import pytest
import sophia_opt
import torch

import steepest
from steepest.optim.sophia import sampled_cross_entropy
from tests.reference._curvature_problem import SmallNet, make_params

ATOL = 1e-13


def _run(
    kwargs: dict[str, Any], foreach: bool, k: int = 3, steps: int = 24, ours_override: dict[str, Any] | None = None
) -> None:
    net = SmallNet()
    bs = kwargs.pop("bs", 5120)
    ours_params, theirs_params = make_params(), make_params()
    ours = steepest.SophiaG(
        ours_params, **{**kwargs, **(ours_override or {})}, bs=bs, update_period=k, foreach=foreach
    )
    theirs = sophia_opt.SophiaG(theirs_params, **kwargs)
    for step in range(1, steps + 1):
        labels_gen = torch.Generator().manual_seed(step)

        def sampled(step: int = step) -> torch.Tensor:
            ours.zero_grad()
            loss = sampled_cross_entropy(net.logits(ours_params), torch.Generator().manual_seed(step))
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        ours.zero_grad()
        net.loss(ours_params).backward()
        ours.step(hessian_closure=sampled)

        theirs.zero_grad()
        net.loss(theirs_params).backward()
        theirs.step(bs=bs)
        if step % k == 0:
            theirs.zero_grad()
            sampled_cross_entropy(net.logits(theirs_params), labels_gen).backward()
            theirs.update_hessian()
            theirs.zero_grad(set_to_none=True)
        for a, b in zip(ours_params, theirs_params, strict=True):
            diff = float((a.detach() - b.detach()).abs().max())
            assert diff <= ATOL, f"step {step}: {diff:.3e}"
    for a, b in zip(ours_params, theirs_params, strict=True):
        assert torch.equal(ours.state[a]["hessian"] > 0, theirs.state[b]["hessian"] > 0)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"lr": 1e-2}, id="defaults-lr"),
        pytest.param({"lr": 2e-2, "rho": 0.1, "weight_decay": 0.2, "betas": (0.9, 0.95), "bs": 16}, id="all-set"),
    ],
)
def test_sophia_g_matches_sophia_opt(kwargs: dict[str, Any], foreach: bool) -> None:
    _run(dict(kwargs), foreach)


def test_the_oracle_comparison_can_fail() -> None:
    """Sanity check of the harness: a slightly different rho on our side is caught."""
    with pytest.raises(AssertionError):
        _run({"lr": 1e-2, "bs": 16}, False, steps=8, ours_override={"rho": 0.041})
