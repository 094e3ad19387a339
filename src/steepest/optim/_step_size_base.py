"""The scaffolding the step-size optimizers (SLS, PoNoS, SPS, multidimensional backtracking) share.

A :class:`StepSizeOptimizer` takes one step over all param groups at once: it calls the closure
at the current point (with gradients), gathers every parameter that has a gradient, and hands
them to the subclass's :meth:`StepSizeOptimizer._search_step`, which searches a step size (or a
preconditioner) with trial points evaluated through a
:class:`~steepest.optim._linesearch.TrialEvaluator`.

Scalar search state (the step size carried between steps, counters of forwards, backwards and
backtracks, nonmonotone references) is optimizer-wide; it is stored as float64 0-dim tensors in
the state of **every** parameter that took part in the step (identical copies), so
``state_dict`` round-trips and parameters without a gradient keep no state. It is read from the
taking-part parameter that has taken the most steps (a parameter that rejoins after steps
without a gradient does not bring back a stale step size).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._linesearch import TrialEvaluator, refuse_grad_scaler

#: Counters every step-size optimizer keeps (float64 scalars, cumulative except ``last_backtracks``).
COUNTERS = ("n_forwards", "n_backwards", "n_backtracks", "last_backtracks")


def _same_setting(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a.shape == b.shape and bool((a == b).all())
    return bool(a == b)


class OptimizerWideSettings:
    """Refuses param groups whose settings the optimizer would ignore: one search spans all groups.

    For optimizers that read every hyperparameter but those in :attr:`per_group_hyperparameters`
    once, from the first group (a line search, a CG solve or a Polyak step over all parameters
    at once). A later group must have the first group's value of each of them, whether it sets
    it itself or takes the constructor's: a differing value raises ``ValueError`` naming the key,
    in the constructor, in ``add_param_group`` and in ``load_state_dict``, instead of being
    accepted and ignored.
    """

    #: Hyperparameters each group may set for itself; every other one is optimizer-wide.
    per_group_hyperparameters: ClassVar[frozenset[str]] = frozenset({"lr"})
    #: Why the others are optimizer-wide, for the error message.
    optimizer_wide_reason: ClassVar[str] = "one search spans all param groups"

    param_groups: list[ParamGroup]
    defaults: dict[str, Any]
    hyperparameter_defaults: ClassVar[Mapping[str, Any]]

    def _optimizer_wide_keys(self) -> list[str]:
        return [k for k in self.hyperparameter_defaults if k not in self.per_group_hyperparameters]

    def _refuse_group_settings(self, first: Mapping[str, Any], group: Mapping[str, Any], index: int) -> None:
        for key in self._optimizer_wide_keys():
            if key in first and not _same_setting(group[key], first[key]):
                raise ValueError(
                    f"{type(self).__name__}: param group {index} has {key}={group[key]!r} but the first group has "
                    f"{key}={first[key]!r}; {key} is optimizer-wide ({self.optimizer_wide_reason}): set it in "
                    f"the constructor, only {sorted(self.per_group_hyperparameters)} may differ per group"
                )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; every optimizer-wide hyperparameter must equal the first group's."""
        if self.param_groups:
            resolved = {k: param_group.get(k, self.defaults[k]) for k in self._optimizer_wide_keys()}
            self._refuse_group_settings(self.param_groups[0], resolved, len(self.param_groups))
        super().add_param_group(param_group)  # type: ignore[misc]

    def _validate_state_dict(self, state_dict: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        saved_groups: list[Mapping[str, Any]] = super()._validate_state_dict(state_dict)  # type: ignore[misc]
        if saved_groups:
            first = {**self.param_groups[0], **saved_groups[0]}
            for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
                try:
                    self._refuse_group_settings(first, {**group, **saved}, index)
                except ValueError as err:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {err}") from None
        return saved_groups


@dataclass
class Entry:
    """One parameter taking part in a step.

    Attributes:
        param: the parameter.
        group: its param group.
        state: its state.
        grad: the signed gradient (negated for ``maximize``) in the working dtype
            (float32 or wider), detached.
        origin: the parameter at the start of the step, in the working dtype.
    """

    param: Tensor
    group: ParamGroup
    state: dict[str, Any]
    grad: Tensor
    origin: Tensor


class StepSizeOptimizer(OptimizerWideSettings, SteepestOptimizer):
    """Base of the optimizers that pick their own step size from loss evaluations.

    Closure contract (the library's one rule): the closure zeroes the gradients, computes the
    loss, calls ``loss.backward()`` only ``if torch.is_grad_enabled()``, and returns the loss.
    ``step`` calls it once under ``torch.enable_grad()`` at the current point, and then under
    ``torch.no_grad()`` at every trial point (line searches) or under ``enable_grad`` where
    the method needs the gradient at the trial point (multidimensional backtracking). The
    closure must evaluate the **same mini-batch** every time it is called within one step.
    With ``same_randomness=True`` (default) the torch RNG state is restored before every trial
    call, so dropout draws the same masks at every trial as at the gradient point.

    A torch-style closure (``loss.backward()`` unconditionally, as PyTorch's docs write one for
    LBFGS) takes the same steps: a loss-only trial finds it out (its first call stops at
    ``backward()``), and runs it under ``enable_grad`` from then on, so each trial costs a
    backward pass too (``n_backwards`` counts them). Loss-only trials leave ``.grad`` as the
    gradient point set it, whichever the style (the step reads its own copy of that gradient),
    so after a line-search step ``.grad`` holds the gradient at the step's starting point.

    ``torch.amp.GradScaler`` is refused with a clear ``RuntimeError`` (see
    :func:`~steepest.optim._linesearch.refuse_grad_scaler`); bfloat16 autocast needs no scaler
    and works.

    One search spans all param groups: every setting except ``lr`` is optimizer-wide (read
    once; a group with a different value raises ``ValueError``, see
    :class:`OptimizerWideSettings`), and ``lr`` acts per group (a cap or a multiplier, as each
    subclass documents).
    Trial forwards run the model in whatever mode it is in: BatchNorm running statistics are
    updated by every trial in train mode (as in the official codes).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(requires_closure=True, elementwise=False, global_statistic=True)
    #: ``GradScaler.step`` hands such optimizers ``grad_scale``/``found_inf`` instead of
    #: unscaling, which is where :func:`refuse_grad_scaler` detects it.
    _step_supports_amp_scaling: ClassVar[bool] = True
    #: Optimizer-wide float64 scalars, besides :data:`COUNTERS` and ``step``.
    search_state: ClassVar[tuple[str, ...]] = ()
    _lead: int = 0

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``param_state`` like the parameter, ``step``, counters and ``search_state`` as float64 scalars."""
        shapes: StateSpec = {name: (tuple(param.shape), param.dtype) for name in self.param_state}
        for name in ("step", *COUNTERS, *self.search_state):
            shapes[name] = ((), torch.float64)
        return shapes

    def _initial_scalar(self, name: str, group: ParamGroup) -> float:
        """The value a search scalar starts at (0 unless overridden)."""
        return 0.0

    def _init_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any]) -> None:
        super()._init_state(param, group, state)
        for name in self.search_state:
            state[name].fill_(self._initial_scalar(name, group))

    # -- shared scalars ---------------------------------------------------------------------

    def shared(self, entries: list[Entry], name: str) -> float:
        """The optimizer-wide scalar ``name``, read from the taking-part parameter with the most steps."""
        return float(entries[self._lead].state[name])

    @staticmethod
    def write_shared(entries: list[Entry], name: str, value: float) -> None:
        """Write the optimizer-wide scalar ``name`` into every taking-part parameter's state."""
        for entry in entries:
            entry.state[name].fill_(value)

    # -- step -------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: the closure at the current point, then the method's search; returns that loss.

        Args:
            closure: re-evaluates the model on the **same** mini-batch and returns the loss,
                following the closure contract (``backward()`` only under grad mode). Required.
        """
        refuse_grad_scaler(self)
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step requires a closure that re-evaluates the loss on the same batch"
            )
        settings = self.param_groups[0]
        sign = -1.0 if settings["maximize"] else 1.0
        params = [p for group in self.param_groups for p in group["params"]]
        evaluator = TrialEvaluator(closure, self._same_randomness(), sign, params)
        loss = evaluator.gradient_point()
        self._check_loss(loss, sign)
        entries = self._entries(sign)
        if entries:
            steps = [float(e.state["step"]) for e in entries]
            self._lead = steps.index(max(steps))
            self._search_step(entries, loss, evaluator)
            self._count(entries, evaluator)
        evaluator.finish()
        return loss

    def _same_randomness(self) -> bool:
        return bool(self.param_groups[0].get("same_randomness", True))

    def _check_loss(self, loss: Any, sign: float) -> None:
        """Refuse the step for ``loss`` (``sign`` -1 under maximize) before any state is created (default: accept)."""

    def _entries(self, sign: float) -> list[Entry]:
        entries = []
        for group in self.param_groups:
            params, grads = self._params_with_grad(group)
            for p, g in zip(params, grads, strict=True):
                state = self.state[p]
                if not state:
                    self._init_state(p, group, state)
                work = torch.promote_types(p.dtype, torch.float32)
                entries.append(Entry(p, group, state, sign * g.detach().to(work), p.detach().to(work, copy=True)))
        return entries

    def _count(self, entries: list[Entry], evaluator: TrialEvaluator) -> None:
        step = self.shared(entries, "step") + 1.0
        self.write_shared(entries, "step", step)
        self.write_shared(entries, "n_forwards", self.shared(entries, "n_forwards") + evaluator.forwards)
        self.write_shared(entries, "n_backwards", self.shared(entries, "n_backwards") + evaluator.backwards)

    def record_backtracks(self, entries: list[Entry], backtracks: int) -> None:
        """Add this step's backtracks to the counters."""
        self.write_shared(entries, "n_backtracks", self.shared(entries, "n_backtracks") + backtracks)
        self.write_shared(entries, "last_backtracks", float(backtracks))

    def use_foreach(self) -> bool:
        """Whether the vector operations run as ``torch._foreach_*`` (one flag, read from the first group)."""
        return self.param_groups[0]["foreach"] is not False

    @abstractmethod
    def _search_step(self, entries: list[Entry], loss: Any, evaluator: TrialEvaluator) -> None:
        """Search and move the parameters of ``entries``; ``loss`` is the closure's loss at the origin."""

