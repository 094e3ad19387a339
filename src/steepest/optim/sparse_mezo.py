"""Sparse MeZO: MeZO restricted to each tensor's small-magnitude weights."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import ParamGroup, StateSpec
from steepest.optim._functional import is_dtensor
from steepest.optim._validation import UNIT_OPEN, Rule
from steepest.optim.mezo import ZO_RULES, ActiveParam, ZerothOrderOptimizer, decays


def selected_count(numel: int, sparsity: float) -> int:
    """How many of a tensor's ``numel`` entries are selected: ``numel - floor(sparsity * numel)``.

    At most a ``sparsity`` fraction is frozen, so at least a ``1 - sparsity`` fraction, and at
    least one entry of any non-empty tensor, is updated (``sparsity < 1``): a bias of 1 or 2
    entries takes part at the default 0.75, where ``round((1 - s) n)`` (half to even) froze it.
    """
    # round() first: 0.29 * 100 is 28.999999999999996, whose floor would freeze one entry too few.
    return numel - math.floor(round(sparsity * numel, 6))


def magnitude_threshold(values: Tensor, sparsity: float) -> float:
    """The per-tensor threshold ``h``: ``|theta| <= h`` selects the :func:`selected_count` smallest.

    ``h`` is the ``k``-th smallest ``|theta|`` with ``k = selected_count(numel, sparsity)``;
    ``inf`` when every entry is selected (``sparsity = 0``), ``-1`` for an empty tensor.
    """
    numel = values.numel()
    k = selected_count(numel, sparsity)
    if k >= numel:
        return math.inf
    if k <= 0:
        return -1.0
    if is_dtensor(values):  # an FSDP2 shard: the k-th value is over the whole tensor
        values = values.full_tensor()  # type: ignore[attr-defined]
    magnitudes = values.detach().abs().flatten()
    if magnitudes.dtype not in (torch.float32, torch.float64):
        magnitudes = magnitudes.float()  # exact: every float16/bfloat16 value is a float32 value
    return float(magnitudes.kthvalue(k).values)


class SparseMeZO(ZerothOrderOptimizer):
    r"""Sparse MeZO: MeZO that perturbs and updates only the small-magnitude weights.

    Paper: Liu, Zhu, Gong, Cheng, Hsieh, You, "Sparse MeZO: Less Parameters for Better
    Performance in Zeroth-Order LLM Fine-Tuning", 2024, arXiv:2402.15751. The official code
    (NUS-HPC-AI-Lab/SparseMeZO) was not reachable; this follows the paper.

    Update rule, with :math:`z \sim N(0, I)` regenerated from a seed and the mask
    :math:`m = [\,|\theta_t| \le h\,]` computed per tensor from the *unperturbed* weights at
    the start of each step (the paper's dynamic mask) and reused for all passes:

    .. math::

        \hat z &= m \odot z, \qquad
        g = \frac{L(\theta + \epsilon\hat z) - L(\theta - \epsilon\hat z)}{2\epsilon} \\
        \theta &\leftarrow \theta - \eta\,(g\,\hat z + \lambda\, m \odot \theta)

    The threshold :math:`h` of each tensor is fixed at its first step: the :math:`k`-th smallest
    :math:`|\theta|` with :math:`k = n - \lfloor \text{sparsity}\cdot n\rfloor` for a tensor
    of :math:`n` entries, so at least a ``1 - sparsity`` fraction of the entries (the smallest
    ones), and at least one entry of every tensor, is selected at the start: the paper selects
    the small weights of every layer, and a bias of one or two entries is no exception.

    State per parameter: ``seed`` (int64), ``projected_grad`` (float32), ``threshold``
    (:math:`h`, 0-dim in the update dtype), and ``master`` with ``master_weights``. The mask is
    not state: it lives during one step (one byte per entry), as the paper recomputes it.

    Differences from the paper: ``sparsity`` is the fraction of entries *frozen* (the paper
    is ambiguous; its best values are 0.5-0.8, i.e. 20-50% of the weights updated). Weight
    decay (not in the paper) applies to the selected entries only, with MeZO's name rule.
    ``sparsity=0`` is exactly :class:`~steepest.optim.mezo.MeZO`. Everything else (stream,
    precision, ``master_weights``) is as in MeZO.

    Args:
        params: parameters, param groups, or ``model.named_parameters()``.
        lr: step size :math:`\eta`, default 1e-6 (MeZO's; the paper reports Sparse MeZO
            tolerates larger ones).
        eps: perturbation scale :math:`\epsilon`, default 1e-3 (MeZO).
        sparsity: fraction of each tensor's entries frozen (the largest in magnitude), in
            [0, 1); default 0.75 (inside the paper's best range).
        weight_decay: :math:`\lambda`, default 0.
        seed: base seed of the random streams.
        master_weights: float32 master copy for float16/bfloat16 parameters.
        maximize: ascend the objective instead.
        foreach: accepted; both paths are the same per-tensor loop.

    Requirements: a closure that runs the forward pass and returns the loss (called twice per
    step under ``torch.no_grad()``; a torch-style closure with an unconditional ``backward()``
    works too, at a backward pass per call, see
    :class:`~steepest.optim.mezo.ZerothOrderOptimizer`). ``.grad`` is left as it was.
    """

    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = {**ZO_RULES, "sparsity": UNIT_OPEN}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-6,
        eps: float = 1e-3,
        sparsity: float = 0.75,
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
            sparsity=sparsity,
            weight_decay=weight_decay,
            seed=seed,
            master_weights=master_weights,
            maximize=maximize,
            foreach=foreach,
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """MeZO's state plus the fixed ``threshold`` (0-dim, in the update dtype)."""
        shapes = super().state_shapes(param, group)
        shapes["threshold"] = ((), torch.float32 if self._uses_master(param, group) else param.dtype)
        return shapes

    def _init_zo_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any], index: int) -> None:
        super()._init_zo_state(param, group, state, index)
        state["threshold"].fill_(magnitude_threshold(param, group["sparsity"]))

    def _prepare(self, active: list[ActiveParam]) -> None:
        for entry in active:
            entry.mask = entry.target.abs() <= entry.state["threshold"]

    def _update_param(self, entry: ActiveParam, g: Tensor) -> None:
        group, target = entry.group, entry.target
        update = entry.direction().mul_(g)
        if group["weight_decay"] != 0 and decays(group, entry.index_in_group):
            assert entry.mask is not None
            update.addcmul_(target, entry.mask, value=group["weight_decay"])
        target.add_(update, alpha=-group["lr"])
