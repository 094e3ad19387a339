"""Forward gradient descent: one forward-mode JVP per step, no backward pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from steepest.optim._linesearch import refuse_grad_scaler
from steepest.optim._validation import Integer, Rule
from steepest.optim.mezo import ActiveParam, ZerothOrderOptimizer, decays, direction, loss_value


class ForwardGradient(ZerothOrderOptimizer):
    r"""Forward gradient descent: the directional derivative along a random direction, by forward-mode AD.

    Paper: Baydin, Pearlmutter, Syme, Wood, Torr, "Gradients without Backpropagation", 2022,
    arXiv:2202.08524 (Algorithm 1).

    Update rule, with :math:`v \sim N(0, I)` drawn from each parameter's seeded stream:

    .. math::

        d &= \nabla L(\theta)^\top v \quad\text{(one JVP, exact, in the forward pass)} \\
        \theta &\leftarrow \theta - \eta\,(d\,v + \lambda\,\theta)

    :math:`E[d\,v] = \nabla L(\theta)`: the forward gradient is an unbiased gradient estimate.

    The closure contract: the library's ordinary closure (runs the forward pass, returns the
    loss), called **once** per step under ``torch.no_grad()``. Inside the step, each parameter
    carries its tangent :math:`v` as a forward-mode dual number
    (:mod:`torch.autograd.forward_ad`, the machinery ``torch.func.jvp`` is built on), attached
    in place for the duration of that one forward pass; the loss comes back as a dual number
    whose tangent is :math:`d`. So no functional rewrite of the model is needed, unlike
    ``torch.func.jvp``, which wants the loss as a pure function of the parameter tensors.
    The forward pass must use operations that have forward-mode derivatives (most do; the CPU
    flash kernel of ``scaled_dot_product_attention`` does not: select the math backend with
    ``torch.nn.attention.sdpa_kernel``), must read the parameters themselves (not ``.data``
    or a detached copy), and must return the loss tensor as computed: ``.detach()``,
    ``.item()`` or ``float()`` drop the tangent (under ``torch.no_grad()`` they are not needed
    anyway). A loss without a tangent raises ``RuntimeError`` rather than silently not training.
    A torch-style closure (unconditional ``loss.backward()``) gives the same step, at the cost of
    a forward pass that stops at its ``backward()`` and then a forward and a backward under
    ``torch.enable_grad()`` (:class:`~steepest.optim._closures.LossOnlyCaller`); ``.grad`` is
    left as it was either way.

    Memory: the parameters, all tangents :math:`v` (one model copy, alive during the forward
    pass) and the forward pass's activations with their tangents; no backward graph. State per
    parameter: ``seed`` (int64, on the CPU) and ``projected_grad`` (:math:`d`, float32).

    Differences from the paper: weight decay (not in the paper) as in ZO-Bench's forward-grad
    trainer, with MeZO's name exemptions; parameters with ``requires_grad=False`` and groups
    with lr 0 are left out of the JVP.

    Args:
        params: parameters, param groups, or ``model.named_parameters()``.
        lr: step size :math:`\eta`, default 1e-4 (the paper tunes it per problem; the
            estimate's variance is about ``dim`` times the gradient's, so it is smaller than SGD's).
        weight_decay: :math:`\lambda`, default 0.
        seed: base seed of the random streams.
        maximize: ascend the objective instead.
        foreach: accepted; both paths are the same per-tensor loop.

    Requirements: a closure as above; ``step()`` without one raises ``RuntimeError``.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.ForwardGradient([w], lr=0.1)
        >>> loss = opt.step(lambda: (w ** 2).sum())
        >>> float(loss)
        5.0
    """

    dtensor_refusal: ClassVar[str | None] = "forward-mode tangents, which DTensor parameters do not carry"
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = {"seed": Integer(0)}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        seed: int = 0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, seed=seed, maximize=maximize, foreach=foreach)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One forward-gradient step: one forward pass carrying tangents, then the update.

        Args:
            closure: runs the forward pass on the parameters and returns the loss (called once,
                under ``torch.no_grad()``, inside a forward-AD dual level; a torch-style closure
                that always back-propagates also works, at a backward pass). Required.

        Returns:
            The loss at the current parameters (its primal value).
        """
        refuse_grad_scaler(self, "closure")
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step requires a closure that runs the forward pass and returns the loss"
            )
        loss_only = self._loss_only(closure)
        active = self._active()
        if not active:
            return loss_only()
        self._advance_seeds(active)
        tangents = [direction(entry.param, entry.seed) for entry in active]
        with fwad.dual_level():
            for entry, tangent in zip(active, tangents, strict=True):
                # Adding a dual -0.0 gives the parameter its tangent and leaves every bit of its
                # value as it is (x + -0.0 == x, signed zeros included).
                entry.param.add_(fwad.make_dual(torch.full_like(entry.param, -0.0), tangent))
            loss = loss_only()
            primal, derivative = self._unpack(loss)
        for entry, tangent in zip(active, tangents, strict=True):
            d = derivative.to(entry.param.device)
            if entry.group["maximize"]:
                d = -d
            entry.state["projected_grad"].copy_(d)
            self._apply(entry, tangent, d)
        return primal

    @staticmethod
    def _unpack(loss: Any) -> tuple[Any, Tensor]:
        tangent = fwad.unpack_dual(loss).tangent if isinstance(loss, Tensor) else None
        if tangent is None:
            raise RuntimeError(
                "ForwardGradient: the closure's loss carries no forward-mode tangent. Return the loss "
                "tensor as computed from the parameters (no .detach(), .item() or float(): under "
                "torch.no_grad() they are not needed), and compute it from the parameters themselves "
                "(not .data or copies)."
            )
        return fwad.unpack_dual(loss).primal.detach(), loss_value(tangent)

    @staticmethod
    def _apply(entry: ActiveParam, tangent: Tensor, d: Tensor) -> None:
        group, param = entry.group, entry.param
        update = tangent.mul_(d)
        if group["weight_decay"] != 0 and decays(group, entry.index_in_group):
            update.add_(param, alpha=group["weight_decay"])
        param.add_(update, alpha=-group["lr"])

    def _update_param(self, entry: ActiveParam, g: Tensor) -> None:
        # The tangents are kept from the forward pass (see step); this path is not used.
        self._apply(entry, entry.direction(), g)
