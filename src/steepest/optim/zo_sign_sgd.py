"""ZO-signSGD: the sign of the SPSA gradient estimate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from steepest.optim.mezo import ActiveParam, ZerothOrderOptimizer, decays


class ZOSignSGD(ZerothOrderOptimizer):
    r"""ZO-signSGD: signSGD on a two-point zeroth-order gradient estimate.

    Paper: Liu, Chen, Chen, Hong, "signSGD via Zeroth-Order Oracle", ICLR 2019 (OpenReview
    BJe-DsC5Fm); benchmarked for LLM fine-tuning as "ZO-SGD-Sign" by Zhang et al., "Revisiting
    Zeroth-Order Optimization for Memory-Efficient LLM Fine-Tuning: A Benchmark", ICML 2024,
    arXiv:2402.11592.

    Update rule, with MeZO's estimate (:math:`z \sim N(0, I)` regenerated from a seed):

    .. math::

        g &= \frac{L(\theta + \epsilon z) - L(\theta - \epsilon z)}{2\epsilon} \\
        \theta &\leftarrow \theta(1 - \eta\lambda) - \eta\,\mathrm{sign}(g\,z)

    State per parameter: ``seed`` (int64), ``projected_grad`` (float32), and ``master`` with
    ``master_weights`` (see :class:`~steepest.optim.mezo.MeZO`).

    Differences from the paper: one direction per step (the paper averages ``q`` directions
    over a mini-batch of ``b``), Gaussian directions and a central difference (the paper uses
    uniform directions on the sphere and a forward difference; the sign is scale-free, so
    only the difference scheme matters). ZO-Bench's ``zo_sign_opt`` trainer instead steps
    with ``sign(g) * z`` (not an elementwise sign); we follow the paper. Weight decay is
    decoupled, as the library's :class:`~steepest.SignSGD` (with MeZO's name exemptions).

    Args:
        params: parameters, param groups, or ``model.named_parameters()``.
        lr: step size :math:`\eta`, default 1e-7 (a sign step moves every entry by
            :math:`\eta`; ZO-Bench's OPT grid is around 1e-7..1e-6 for ZO-SGD-Sign).
        eps: perturbation scale :math:`\epsilon`, default 1e-3 (MeZO, ZO-Bench).
        weight_decay: decoupled decay :math:`\lambda`, default 0.
        seed: base seed of the random streams.
        master_weights: float32 master copy for float16/bfloat16 parameters.
        maximize: ascend the objective instead.
        foreach: accepted; both paths are the same per-tensor loop.

    Requirements: a closure that runs the forward pass and returns the loss (called twice per
    step under ``torch.no_grad()``; a torch-style closure with an unconditional ``backward()``
    works too, at a backward pass per call, see
    :class:`~steepest.optim.mezo.ZerothOrderOptimizer`). ``.grad`` is left as it was.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-7,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        master_weights: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            seed=seed,
            master_weights=master_weights,
            maximize=maximize,
            foreach=foreach,
        )

    def _update_param(self, entry: ActiveParam, g: Tensor) -> None:
        group, target = entry.group, entry.target
        if group["weight_decay"] != 0 and decays(group, entry.index_in_group):
            target.mul_(1.0 - group["lr"] * group["weight_decay"])
        # sign(g z) = sign(g) sign(z); the (g - g) term is 0 for a finite g and NaN for a NaN or
        # infinite one, so a broken loss reaches the parameters instead of being signed to 0.
        sign_g = torch.sign(g) + (g - g)
        target.add_(entry.direction().sign_().mul_(sign_g), alpha=-group["lr"])
