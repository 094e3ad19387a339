"""MeZO: memory-efficient zeroth-order SGD, and the SPSA machinery its variants share.

The shared part, :class:`ZerothOrderOptimizer`, owns what every SPSA-style method in the
library does the same way: the per-parameter random stream (seeds in the state), in-place
perturbation regenerated from the seed, the two forward passes, the restore, and the optional
float32 master copy for low-precision parameters. Subclasses only say how a parameter is
updated from the estimate ``g * z`` (:meth:`ZerothOrderOptimizer._update_param`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer, zeros_state
from steepest.optim._closures import LossOnlyCaller
from steepest.optim._functional import is_dtensor
from steepest.optim._linesearch import refuse_grad_scaler
from steepest.optim._validation import POSITIVE, Boolean, Integer, Rule

_MASK64 = (1 << 64) - 1
_MASK63 = (1 << 63) - 1
#: Substrings of parameter names that the official MeZO code exempts from weight decay.
NO_DECAY_NAMES = ("bias", "layer_norm", "layernorm")
#: Dtypes a float32 master copy helps (``master_weights=True``).
LOW_PRECISION = (torch.float16, torch.bfloat16)
#: State dtype of the seeds (exact integers).
SEED_DTYPE = torch.int64


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def initial_seed(seed: int, index: int) -> int:
    """The stream start of the parameter at position ``index`` (over all groups) for base ``seed``."""
    return _splitmix64(_splitmix64(seed) ^ _splitmix64(index + 1)) & _MASK63


def next_seed(seed: int) -> int:
    """The next seed of a parameter's stream (splitmix64, kept in ``[0, 2**63)``)."""
    return _splitmix64(seed) & _MASK63


def direction(like: Tensor, seed: int, dtype: torch.dtype | None = None) -> Tensor:
    """The Gaussian direction ``z ~ N(0, I)`` shaped like ``like``, regenerated exactly from ``seed``.

    Drawn with a fresh :class:`torch.Generator` on ``like``'s device, so the global RNG (the
    user's dropout stream) is never touched.

    For a DTensor ``like`` (an FSDP2 shard) every rank draws the full-shape direction from the same
    seed and keeps its own shard (``distribute_tensor`` with ``src_data_rank=None``: no communication),
    so the perturbation is the one a single process draws, whatever the world size.
    """
    generator = torch.Generator(device=like.device).manual_seed(seed)
    z = torch.randn(like.shape, generator=generator, dtype=dtype or like.dtype, device=like.device)
    if is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(z, like.device_mesh, like.placements, src_data_rank=None)  # type: ignore[attr-defined]
    return z


def loss_value(loss: Any) -> Tensor:
    """A closure's loss as a detached float64 tensor (so ``L+ - L-`` is not rounded in low precision)."""
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise RuntimeError(f"the closure must return a scalar loss, got shape {tuple(loss.shape)}")
        value = loss.detach().reshape(())
        return value.to(torch.float32 if value.device.type == "mps" else torch.float64)
    if isinstance(loss, int | float):
        return torch.tensor(float(loss), dtype=torch.float64)
    raise RuntimeError(f"the closure must return the loss (a tensor or a number), got {type(loss).__name__}")


def decays(group: ParamGroup, index_in_group: int) -> bool:
    """Whether weight decay applies: all parameters, except (with names) biases and layer norms.

    The official MeZO code skips names containing ``bias``, ``layer_norm`` or ``layernorm``;
    names are known when the optimizer was built from ``model.named_parameters()``.
    """
    names = group.get("param_names")
    if not names:
        return True
    return not any(part in names[index_in_group] for part in NO_DECAY_NAMES)


@dataclass
class ActiveParam:
    """One parameter taking part in a step, with what the step needs about it."""

    param: Tensor
    group: ParamGroup
    state: dict[str, Any]
    index_in_group: int
    seed: int = 0
    mask: Tensor | None = None

    @property
    def master(self) -> Tensor | None:
        """The float32 master copy, when ``master_weights`` keeps one for this parameter."""
        master = self.state.get("master")
        return master if isinstance(master, Tensor) else None

    @property
    def target(self) -> Tensor:
        """The tensor the update is written to: the master copy if any, else the parameter."""
        master = self.master
        return self.param if master is None else master

    def direction(self) -> Tensor:
        """The direction of the current step, regenerated from the seed, in the update dtype, masked if sparse."""
        z = direction(self.param, self.seed, self.target.dtype)
        if self.mask is not None:
            z.mul_(self.mask)
        return z


ZO_RULES: Mapping[str, Rule] = {"eps": POSITIVE, "seed": Integer(0), "master_weights": Boolean()}


class ZerothOrderOptimizer(SteepestOptimizer):
    """Base of the SPSA optimizers: two forward passes per step, parameters perturbed in place.

    One step, for the parameters that take part (``requires_grad`` and a group ``lr != 0``):

    1. advance each parameter's seed; ``z`` is regenerated from it whenever needed, never stored;
    2. ``theta <- theta + eps z``; ``L+ = closure()``; ``theta <- theta - 2 eps z``; ``L- = closure()``;
       ``theta <- theta + eps z`` (restore);
    3. ``g = (L+ - L-) / (2 eps)`` (a scalar, the projected gradient, per group's ``eps``);
    4. :meth:`_update_param` for each parameter with the estimate ``g z``.

    If the closure raises, the parameters are moved back (up to the round trip's rounding)
    before the exception propagates.

    With ``master_weights=True`` a float16/bfloat16 parameter gets a float32 copy in its state:
    the perturbed values are written as ``round(master +- eps z)``, the restore is an exact copy
    of ``round(master)`` and the update is applied to the master, so the rounding drift of the
    in-place round trip and the loss of small updates in low precision both disappear, at 4 bytes
    per parameter entry.

    The closure contract (the library's one rule): the closure runs the forward pass, calls
    ``loss.backward()`` only ``if torch.is_grad_enabled()`` (or never), and returns the loss; it
    is called under ``torch.no_grad()``, twice per step. It should be deterministic given the
    parameters (put the model in ``eval()`` mode or fix the dropout seed): the two evaluations
    must see the same batch and the same randomness.

    A torch-style closure (``zero_grad()``, loss, unconditional ``loss.backward()``, as PyTorch's
    docs write one for LBFGS) gives the same step at a cost: its first call of each step stops at
    ``backward()`` (under ``no_grad``), and from then on it runs under ``torch.enable_grad()``, a
    forward and a backward pass per evaluation, the gradients thrown away
    (:class:`~steepest.optim._closures.LossOnlyCaller`). Either way ``.grad`` is left exactly as
    the caller had it: these methods never read it.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(requires_closure=True, gradient_free=True)
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = ZO_RULES
    #: State entries shaped like the parameter, in the update dtype (float32 with a master copy).
    zo_param_state: ClassVar[tuple[str, ...]] = ()
    #: 0-dim float32 state entries beyond ``projected_grad``.
    zo_scalar_state: ClassVar[tuple[str, ...]] = ()

    # -- state ---------------------------------------------------------------------------

    @staticmethod
    def _uses_master(param: Tensor, group: ParamGroup) -> bool:
        return bool(group.get("master_weights")) and param.dtype in LOW_PRECISION

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``seed`` (int64) and ``projected_grad`` (float32), plus ``master`` and subclass state."""
        shape = tuple(param.shape)
        work = torch.float32 if self._uses_master(param, group) else param.dtype
        shapes: StateSpec = {"seed": ((), SEED_DTYPE), "projected_grad": ((), SCALAR_DTYPE)}
        shapes.update({name: ((), SCALAR_DTYPE) for name in self.zo_scalar_state})
        shapes.update({name: (shape, work) for name in self.zo_param_state})
        if self._uses_master(param, group):
            shapes["master"] = (shape, torch.float32)
        return shapes

    def _init_param_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any], index: int) -> bool:
        if not (param.requires_grad and group["lr"] != 0):  # a step leaves it alone (see _active)
            return False
        self._init_zo_state(param, group, state, index)
        return True

    def _init_zo_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any], index: int) -> None:
        for name, (shape, dtype) in self.state_shapes(param, group).items():
            state[name] = zeros_state(param, shape, dtype)
        # Seeds live on the CPU: they are read on the host to seed each direction's generator.
        state["seed"] = torch.tensor(initial_seed(group["seed"], index), dtype=SEED_DTYPE)
        if "master" in state:
            state["master"].copy_(param)

    def _finish_load(self, state_dict: Mapping[str, Any]) -> None:
        """Seeds are moved back to the CPU, where they are read."""
        for state in self.state.values():
            if isinstance(state, dict) and isinstance(state.get("seed"), Tensor):
                state["seed"] = state["seed"].to("cpu")

    # -- step ----------------------------------------------------------------------------

    def _active(self) -> list[ActiveParam]:
        """The parameters that take part: ``requires_grad`` and a group lr other than 0.

        A group whose lr is 0 is not perturbed at all (so it stays bitwise unchanged); its
        parameters keep their stream where it was.
        """
        active = []
        index = 0
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if p.requires_grad and group["lr"] != 0:
                    state = self.state[p]
                    if not state:
                        self._init_zo_state(p, group, state, index)
                    active.append(ActiveParam(p, group, state, i))
                index += 1
        return active

    def _advance_seeds(self, active: list[ActiveParam]) -> None:
        for entry in active:
            entry.seed = next_seed(int(entry.state["seed"]))
            entry.state["seed"].fill_(entry.seed)

    def _prepare(self, active: list[ActiveParam]) -> None:
        """Hook before the first perturbation (Sparse MeZO computes its masks here)."""

    @staticmethod
    def _perturb(active: list[ActiveParam], scale: float, position: float) -> None:
        """Move every parameter by ``scale * eps * z`` to ``theta + position * eps * z``.

        Without a master copy the move is done in place (``p += scale*eps*z``, as the official
        code); with one, the perturbed value is written from the master in a single rounding.
        """
        for entry in active:
            eps = entry.group["eps"]
            z = entry.direction()
            master = entry.master
            if master is None:
                entry.param.add_(z, alpha=scale * eps)
            else:
                entry.param.copy_(z.mul_(position * eps).add_(master))

    def _restore(self, active: list[ActiveParam]) -> None:
        for entry in active:
            master = entry.master
            if master is None:
                entry.param.add_(entry.direction(), alpha=entry.group["eps"])
            else:
                entry.param.copy_(master)

    #: ``GradScaler.step`` then hands ``grad_scale``/``found_inf`` over instead of unscaling, and
    #: ``step`` refuses with an error naming bfloat16 autocast (``refuse_grad_scaler``).
    _step_supports_amp_scaling: ClassVar[bool] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SPSA step: two forward passes, then the update.

        Args:
            closure: runs the forward pass on the current parameters and returns the loss
                (called twice, under ``torch.no_grad()``; a torch-style closure that always
                back-propagates also works, at a backward pass per call). Required.

        Returns:
            The loss at the ``+eps`` point, as the closure returned it (the official code's
            training loss). With no parameter taking part, the closure is called once and its
            loss returned.
        """
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step requires a closure that runs the forward pass and returns the loss"
            )
        refuse_grad_scaler(self, "closure")
        loss_only = self._loss_only(closure)
        active = self._active()
        if not active:
            return loss_only()
        self._advance_seeds(active)
        self._prepare(active)
        self._perturb(active, 1.0, 1.0)
        try:
            loss_plus = loss_only()
        except BaseException:
            self._perturb(active, -1.0, 0.0)  # leave the parameters where they were
            raise
        self._perturb(active, -2.0, -1.0)
        try:
            loss_minus = loss_only()
        except BaseException:
            self._perturb(active, 1.0, 0.0)
            raise
        self._restore(active)
        difference = loss_value(loss_plus) - loss_value(loss_minus)
        projected: dict[tuple[int, torch.device], Tensor] = {}
        for entry in active:
            group = entry.group
            key = (id(group), entry.param.device)
            if key not in projected:
                g = difference / (2.0 * group["eps"])
                projected[key] = (-g if group["maximize"] else g).to(entry.param.device)
            g = projected[key]
            entry.state["projected_grad"].copy_(g)
            self._update_param(entry, g)
            if entry.master is not None:
                entry.param.copy_(entry.master)
        return loss_plus

    def _loss_only(self, closure: Callable[[], Any]) -> LossOnlyCaller:
        """The closure as this step calls it: for the loss only, leaving every ``.grad`` as it was."""
        return LossOnlyCaller(closure, [p for group in self.param_groups for p in group["params"]])

    @abstractmethod
    def _update_param(self, entry: ActiveParam, g: Tensor) -> None:
        """Write this step's update to ``entry.target`` from the estimate ``g * entry.direction()``."""



class MeZO(ZerothOrderOptimizer):
    r"""MeZO: zeroth-order SGD at inference memory (SPSA with in-place, seed-regenerated perturbation).

    Paper: Malladi, Gao, Nichani, Damian, Lee, Chen, Arora, "Fine-Tuning Language Models with
    Just Forward Passes", NeurIPS 2023, arXiv:2305.17333 (Algorithm 1). Official code:
    princeton-nlp/MeZO, ``large_models/trainer.py`` (``zo_step``, ``zo_update``).

    Update rule, with :math:`z \sim N(0, I)` regenerated from a seed (never stored):

    .. math::

        g &= \frac{L(\theta + \epsilon z) - L(\theta - \epsilon z)}{2\epsilon} \\
        \theta &\leftarrow \theta - \eta\,(g\,z + \lambda\,\theta)

    :math:`\lambda\theta` applies to every parameter of a group, except, when the optimizer
    was given ``model.named_parameters()``, those whose name contains ``bias``, ``layer_norm``
    or ``layernorm`` (the official rule). :math:`E[g z]` is the gradient of the Gaussian-smoothed
    loss :math:`E_u[L(\theta + \epsilon u)]` for quadratic losses exactly, and up to
    :math:`O(\epsilon^2)` otherwise.

    Memory: the parameters and one forward pass's activations; a temporary ``z`` of one
    parameter at a time. State per parameter: ``seed`` (int64 0-dim, the seed of the latest
    direction, on the CPU) and ``projected_grad`` (float32 0-dim, the latest :math:`g`), plus
    ``master`` (float32, like the parameter) with ``master_weights`` for float16/bfloat16.

    Differences from the official code:

    * Random stream: each parameter has its own stream, ``seed_t = splitmix64(seed_{t-1})``
      starting from :func:`initial_seed` (``seed``, position), and draws ``z`` from a private
      :class:`torch.Generator`. The official code reseeds the *global* RNG with one
      ``np.random.randint(1e9)`` per step and draws all ``z`` in parameter order. Same
      distribution; ours leaves the user's RNG alone, freezing a parameter does not shift the
      others' directions, and the stream is part of the state (a ``state_dict`` round trip
      continues bitwise).
    * The loss difference is taken in float64 (the official code subtracts Python floats: the same).
    * Parameters with ``requires_grad=False``, and whole groups whose lr is 0, are not perturbed.
    * ``master_weights`` (off by default, so the default is the official in-place round trip).

    Precision: ``theta + eps z - 2 eps z + eps z`` does not restore :math:`\theta` bit for bit
    (MeZO issue #42: Llama-2 in float16 collapses). Per step about half the entries move by
    about one rounding: ``benchmarks/zo_drift.py`` measured, for N(0, 0.02^2) weights and
    eps=1e-3, an RMS drift per step of 6e-8 relative (1.2e-9 absolute) in float32, 4.9e-4
    (9.8e-6) in float16 and 3.9e-3 (7.9e-5) in bfloat16, a random walk that in 16 bits exceeds
    a MeZO update ``lr * g * z`` (RMS 1e-6 at lr=1e-6, |g|=1) by 10-80x; and updates that small
    round away in bfloat16 anyway. ``master_weights=True`` removes the drift exactly (measured
    and tested: 0 after any number of steps) and keeps the small updates.

    Args:
        params: parameters, param groups, or ``model.named_parameters()`` (for the official
            weight-decay exemptions).
        lr: step size :math:`\eta`. Default 1e-6 (the paper's OPT grid is 1e-6/1e-7; RoBERTa 1e-6).
        eps: perturbation scale :math:`\epsilon`, default 1e-3 (paper and official code).
        weight_decay: :math:`\lambda`, default 0 (official default).
        seed: base seed of the random streams (default 0).
        master_weights: keep a float32 master copy of float16/bfloat16 parameters (default False).
        maximize: ascend the objective instead.
        foreach: accepted for API uniformity; both paths are the same per-tensor loop, since a
            foreach path would hold every ``z`` at once (a full copy of the model).

    Requirements: a closure that runs the forward pass and returns the loss (called twice per
    step under ``torch.no_grad()``; a torch-style closure with an unconditional ``backward()``
    works too, at a backward pass per call, see :class:`ZerothOrderOptimizer`); ``step()``
    without one raises ``RuntimeError``. ``.grad`` is never read and is left as it was.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.MeZO([w], lr=0.1)
        >>> loss = opt.step(lambda: (w ** 2).sum())
        >>> bool((w ** 2).sum() < 5.0)
        True
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-6,
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
        update = entry.direction().mul_(g)
        if group["weight_decay"] != 0 and decays(group, entry.index_in_group):
            update.add_(target, alpha=group["weight_decay"])
        target.add_(update, alpha=-group["lr"])
