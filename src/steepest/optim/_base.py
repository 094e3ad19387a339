"""The thin base every ``steepest`` optimizer builds on.

:class:`SteepestOptimizer` is a :class:`torch.optim.Optimizer` that adds, and only adds:

* **validation driven by the signature**: every keyword of the subclass ``__init__`` is a
  hyperparameter with a :class:`~steepest.optim._validation.Rule`; values are checked at
  construction and for every param group added later;
* **declared capabilities and state**: :class:`Capabilities` (closure, ``create_graph``,
  foreach, sparse) and :meth:`state_shapes`, the exact tensors kept per parameter, from which
  state is created, ``load_state_dict`` input is checked and memory is accounted;
* **dispatch**: ``step`` gathers the parameters that have a gradient, negates gradients for
  ``maximize``, and calls the subclass's per-tensor reference path, its ``torch._foreach_*``
  path, or (``fused=True``) the per-tensor path compiled over each device and dtype bucket
  (:mod:`steepest.optim._fused`).

Subclasses write the math in ``_single_tensor_update`` and ``_foreach_update``. An optimizer
that declares ``supports_fused`` writes its ``_single_tensor_update`` so that every scalar
hyperparameter may be a float or a 0-dim tensor and reads no tensor value on the host.
"""

from __future__ import annotations

import inspect
from abc import ABCMeta
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from steepest.optim import _fused
from steepest.optim._functional import is_dtensor
from steepest.optim._validation import COMMON_RULES, Rule, check_hyperparameters, is_real_valued

#: One state entry: its shape and dtype.
StateShape = tuple[tuple[int, ...], torch.dtype]
#: What an optimizer keeps for one parameter: entry name -> (shape, dtype).
StateSpec = dict[str, StateShape]
ParamGroup = dict[str, Any]

#: Group keys that choose how a step runs, not what it computes; kept across ``load_state_dict``.
EXECUTION_PATH_KEYS = ("foreach", "fused")

#: The float dtype of scalar state (step counters, accumulators), as torch's optimizers use.
SCALAR_DTYPE = torch.float32


def zeros_state(param: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A zeroed state tensor for ``param``: laid out like it when shaped like it, else a plain tensor.

    "Like it" keeps ``param``'s memory format and, for an FSDP2 parameter (a DTensor), its sharding,
    so elementwise state stays sharded with the parameter whatever its dtype.
    """
    if tuple(shape) == tuple(param.shape):
        return torch.zeros_like(param, dtype=dtype, memory_format=torch.preserve_format)
    return torch.zeros(shape, dtype=dtype, device=param.device)


@dataclass(frozen=True)
class Capabilities:
    """What an optimizer needs from the training loop and what it supports.

    Attributes:
        requires_closure: ``step`` must be given a closure that re-evaluates the loss.
        needs_create_graph: gradients must be computed with ``backward(create_graph=True)``.
        supports_foreach: a ``torch._foreach_*`` path exists (``foreach=True`` is allowed).
        supports_sparse: sparse gradients are handled (otherwise they raise).
        elementwise: each coordinate's update reads only that coordinate's state, plus
            per-tensor or global scalars, so the step is memory-bandwidth bound.
        global_statistic: the update needs a statistic over all parameters of a group
            (a norm or a maximum), so groups are not split per parameter.
        needs_named_parameters: the constructor takes ``model.named_parameters()`` (the
            update depends on what each tensor is, e.g. Adam-mini's partition by name).
        gradient_free: ``step`` never reads ``.grad`` and leaves it as the caller had it; it
            calls the closure for the loss only (under ``torch.no_grad()``, or under
            ``torch.enable_grad()`` for a torch-style closure).
        supports_fused: ``fused=True`` compiles ``_single_tensor_update`` over each bucket
            (the optimizer takes a ``fused`` keyword; see :mod:`steepest.optim._fused`).

    The closure contract, one rule for every optimizer: a closure zeroes the gradients,
    computes the loss, calls ``loss.backward()`` only ``if torch.is_grad_enabled()`` (with
    ``create_graph=True`` when ``needs_create_graph``), and returns the loss. Optimizers call it
    under ``torch.enable_grad()`` when they need gradients and under ``torch.no_grad()`` when
    they need only the loss (line-search trial points, zeroth-order estimates).

    A torch-style closure, which calls ``loss.backward()`` unconditionally as PyTorch's docs
    write one for LBFGS, is accepted as well and gives the same steps. Where only the loss is
    needed, its first call of a step raises under ``torch.no_grad()``; the optimizer then puts
    the torch RNG back where that attempt started, calls it again under ``torch.enable_grad()``
    and keeps calling it that way for the rest of the step
    (:class:`steepest.optim._closures.LossOnlyCaller`). The cost is one extra forward pass per
    step (the attempt that stopped at ``backward()``) and a backward pass per loss-only
    evaluation. Loss-only evaluations never change ``.grad``, whichever the style. A closure may
    return None only where the optimizer does not need the loss (BlockLLM then records no loss).

    Closure and Hessian-vector-product optimizers refuse ``torch.amp.GradScaler`` with a
    ``RuntimeError`` naming bfloat16 autocast, which needs no scaler. (``scaler.step(opt,
    closure)`` before any ``scaler.scale()`` call in the iteration fails inside torch, with
    "_scale is None", before the optimizer runs.)
    """

    requires_closure: bool = False
    needs_create_graph: bool = False
    supports_foreach: bool = True
    supports_sparse: bool = False
    elementwise: bool = True
    global_statistic: bool = False
    needs_named_parameters: bool = False
    gradient_free: bool = False
    supports_fused: bool = False


class StateSpecMixin:
    """Strict ``load_state_dict``: structure, groups, state keys and shapes are checked first.

    Works on any :class:`torch.optim.Optimizer` subclass that implements :meth:`state_shapes`.
    Nothing in the optimizer changes unless every check passes.
    """

    state: Any
    param_groups: list[ParamGroup]

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """The exact state tensors this optimizer keeps for ``param`` in ``group``."""
        raise TypeError(f"{type(self).__name__} must implement state_shapes")

    def saved_state_shapes(self, param: Tensor, group: ParamGroup, entry: Mapping[str, Any]) -> StateSpec:
        """The state a saved ``entry`` for ``param`` must hold; :meth:`state_shapes` by default.

        Optimizers whose state depends on a selection (BlockLLM's active tensors) override this so
        that a checkpoint is checked against the selection it was saved with.
        """
        return self.state_shapes(param, group)

    def _hyperparameter_rules(self) -> Mapping[str, Rule]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load state after checking it matches this optimizer; raises ``ValueError`` otherwise.

        In torch's order: the load pre-hooks first (one may migrate an old checkpoint), then the
        checks, then the load, then the post-hooks, which see the final state. A scalar state
        entry saved as a Python number (``step`` in pre-1.12 torch checkpoints) is loaded as the
        declared 0-dim tensor, as torch's own optimizers cast it. Entries of ``state`` that belong
        to no parameter (a key that is not a parameter id, such as a hook's marker) are kept as
        torch keeps them.

        The execution path (``foreach``, ``fused``) stays this optimizer's own: a checkpoint written
        by a fused run continues on the per-tensor path of the optimizer loading it, and back.
        """
        optimizer = cast(Optimizer, self)
        if isinstance(state_dict, Mapping):
            state_dict = dict(state_dict)
        for pre_hook in optimizer._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(optimizer, state_dict)
            if result is not None:
                state_dict = result
        prepared = self._prepare_loaded_state_dict(state_dict)
        saved_groups = self._validate_state_dict(prepared)
        paths = [{k: g[k] for k in EXECUTION_PATH_KEYS if k in g} for g in self.param_groups]
        hooks = optimizer._optimizer_load_state_dict_pre_hooks, optimizer._optimizer_load_state_dict_post_hooks
        optimizer._optimizer_load_state_dict_pre_hooks = OrderedDict()
        optimizer._optimizer_load_state_dict_post_hooks = OrderedDict()
        try:
            super().load_state_dict(prepared)  # type: ignore[misc]
        finally:
            optimizer._optimizer_load_state_dict_pre_hooks, optimizer._optimizer_load_state_dict_post_hooks = hooks
        for group, path in zip(self.param_groups, paths, strict=True):
            group.update(path)
        # torch casts every floating entry except 'step' to the parameter dtype; restore the
        # declared dtype from the saved tensor itself so no precision is lost on the way.
        saved_state = prepared["state"]
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in saved_groups for i in g["params"]]
        groups = [g for g in self.param_groups for _ in g["params"]]
        for param, saved_id, group in zip(params, saved_ids, groups, strict=True):
            if saved_id not in saved_state or not saved_state[saved_id]:
                continue
            entry = self.state[param]
            for key, (_, dtype) in self.saved_state_shapes(param, group, saved_state[saved_id]).items():
                saved = saved_state[saved_id][key]
                if not isinstance(saved, Tensor):  # a Python number for a 0-dim entry (checked)
                    entry[key] = torch.tensor(float(saved), dtype=dtype, device=param.device)
                elif entry[key].dtype != dtype:
                    entry[key] = saved.to(device=param.device, dtype=dtype, copy=True)
        self._finish_load(state_dict)
        for post_hook in optimizer._optimizer_load_state_dict_post_hooks.values():
            post_hook(optimizer)

    def _prepare_loaded_state_dict(self, state_dict: Any) -> Any:
        """The state dict the checks and torch's load see, after the pre-hooks; ``state_dict`` by default.

        Optimizers that keep optimizer-wide state inside the state dict (BlockLLM's selection)
        check and strip it here, raising ``ValueError`` before anything is loaded.
        """
        return state_dict

    def _finish_load(self, state_dict: Mapping[str, Any]) -> None:
        """Runs after the load, before the post-hooks (default: nothing); for optimizer-wide state."""

    def _validate_state_dict(self, state_dict: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{name}.load_state_dict: expected a mapping with 'state' and 'param_groups'")
        saved_state, saved_groups = state_dict["state"], state_dict["param_groups"]
        if not isinstance(saved_state, Mapping) or not isinstance(saved_groups, list | tuple):
            raise ValueError(f"{name}.load_state_dict: 'state' must be a mapping and 'param_groups' a list")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter group(s), "
                f"this optimizer has {len(self.param_groups)}"
            )
        id_to_param: dict[Any, tuple[Tensor, ParamGroup]] = {}
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), list | tuple):
                raise ValueError(f"{name}.load_state_dict: param group {index} has no 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: param group {index} has {len(saved['params'])} saved "
                    f"parameter(s), this optimizer's group has {len(group['params'])}"
                )
            hyper = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            try:
                check_hyperparameters(name, self._hyperparameter_rules(), hyper)
            except ValueError as err:
                raise ValueError(f"{name}.load_state_dict: param group {index}: {err}") from None
            merged = {**group, **hyper}
            for saved_id, param in zip(saved["params"], group["params"], strict=True):
                id_to_param[saved_id] = (param, merged)
        for saved_id, entry in saved_state.items():
            if saved_id not in id_to_param:
                if isinstance(saved_id, int):
                    raise ValueError(f"{name}.load_state_dict: state for unknown parameter id {saved_id!r}")
                continue  # not a parameter's state (torch keeps such entries as they are)
            if not isinstance(entry, Mapping):
                raise ValueError(f"{name}.load_state_dict: state of parameter {saved_id!r} is not a mapping")
            if not entry:
                continue
            param, group = id_to_param[saved_id]
            expected = self.saved_state_shapes(param, group, entry)
            missing, extra = set(expected) - set(entry), set(entry) - set(expected)
            if missing or extra:
                raise ValueError(
                    f"{name}.load_state_dict: state of parameter {saved_id!r} has keys {sorted(entry)}, "
                    f"expected {sorted(expected)}"
                )
            for key, (shape, _) in expected.items():
                value = entry[key]
                if shape == () and isinstance(value, int | float) and not isinstance(value, bool):
                    continue  # an old checkpoint's Python-number step: cast on load
                if not isinstance(value, Tensor):
                    raise ValueError(f"{name}.load_state_dict: state {key!r} of parameter {saved_id!r} is not a tensor")
                if tuple(value.shape) != tuple(shape):
                    raise ValueError(
                        f"{name}.load_state_dict: state {key!r} of parameter {saved_id!r} has shape "
                        f"{tuple(value.shape)}, expected {tuple(shape)} (parameter shape {tuple(param.shape)})"
                    )
        return list(saved_groups)


class SteepestOptimizer(StateSpecMixin, Optimizer, metaclass=ABCMeta):
    """Base class: validation, declared state, and per-tensor / foreach dispatch.

    A subclass declares its hyperparameters as keywords of ``__init__`` (each must have a
    rule in :data:`~steepest.optim._validation.COMMON_RULES` or ``hyperparameter_rules``,
    and ``maximize`` and ``foreach`` are required), calls ``super().__init__(params, **kw)``,
    lists its state in ``param_state`` / ``scalar_state`` (or overrides :meth:`state_shapes`),
    and implements ``_single_tensor_update`` and ``_foreach_update``.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: State entries shaped and typed like the parameter.
    param_state: ClassVar[tuple[str, ...]] = ()
    #: 0-dim float32 state entries (step counters, scalar accumulators).
    scalar_state: ClassVar[tuple[str, ...]] = ()
    #: Rules for hyperparameters beyond the common ones (or overriding them).
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType({})
    #: Filled from the ``__init__`` signature: hyperparameter name -> default.
    hyperparameter_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: ``_foreach_update`` gets the whole group (all devices and dtypes) and buckets it itself,
    #: because it needs a statistic over the group first (a norm, a maximum).
    foreach_whole_group: ClassVar[bool] = False
    _real_hyperparameters: ClassVar[frozenset[str]] = frozenset()
    #: Real hyperparameters the fused path bakes into its compiled graph as constants instead of
    #: passing them as tensors: exponents, where a constant lets inductor emit the cheap kernel
    #: (``x ** 1`` is ``x``, ``x ** 0.5`` a square root) and a tensor one costs a ``pow`` per
    #: element. Changing one recompiles; schedulers do not touch them.
    fused_constant_hyperparameters: ClassVar[frozenset[str]] = frozenset()
    #: Why this optimizer cannot update DTensor parameters (FSDP2 ``fully_shard``), or None when it can.
    #: Said as what it needs, e.g. "full gradient matrices for its SVD projector".
    dtensor_refusal: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        if not _declares_hyperparameters(cls):
            return  # a wrapper or user subclass: it keeps the hyperparameters its parent declared
        if cls.step is SteepestOptimizer.step and cls._single_tensor_update is SteepestOptimizer._single_tensor_update:
            raise TypeError(f"{cls.__name__} must implement _single_tensor_update (or override step)")
        signature = inspect.signature(cls.__init__)
        defaults: dict[str, Any] = {}
        rules = cls._rules()
        for name, parameter in list(signature.parameters.items())[2:]:  # skip self, params
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its hyperparameters explicitly")
            if parameter.default is parameter.empty:
                raise TypeError(f"{cls.__name__}.__init__: hyperparameter {name!r} needs a default")
            if name not in rules:
                raise TypeError(f"{cls.__name__}: hyperparameter {name!r} has no validation rule")
            rules[name].check(cls.__name__, name, parameter.default)
            defaults[name] = parameter.default
        for required in ("lr", "maximize", "foreach"):
            if required not in defaults:
                raise TypeError(f"{cls.__name__}.__init__ must accept {required!r}")
        if cls.capabilities.supports_fused != ("fused" in defaults):
            raise TypeError(f"{cls.__name__}: accepts 'fused' exactly when capabilities.supports_fused")
        cls.hyperparameter_defaults = MappingProxyType(defaults)
        cls._real_hyperparameters = frozenset(name for name in defaults if is_real_valued(rules[name]))

    @classmethod
    def _rules(cls) -> dict[str, Rule]:
        return {**COMMON_RULES, **cls.hyperparameter_rules}

    def _hyperparameter_rules(self) -> Mapping[str, Rule]:
        return self._rules()

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], **hyperparameters: Any) -> None:
        name = type(self).__name__
        if set(hyperparameters) != set(self.hyperparameter_defaults):
            raise TypeError(
                f"{name}: super().__init__ got {sorted(hyperparameters)}, "
                f"expected the signature's {sorted(self.hyperparameter_defaults)}"
            )
        check_hyperparameters(name, self._rules(), hyperparameters)
        _check_paths(name, self.capabilities, hyperparameters)
        super().__init__(params, hyperparameters)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group after checking its hyperparameter overrides and parameter dtypes."""
        name = type(self).__name__
        check_hyperparameters(name, self._rules(), {k: v for k, v in param_group.items() if k != "params"})
        _check_paths(name, self.capabilities, {**self.defaults, **param_group})
        params = param_group["params"]
        if not isinstance(params, Tensor | set):  # torch rejects sets itself, with its own message
            params = param_group["params"] = list(params)
        tensors = [p for p in ([params] if isinstance(params, Tensor) else params) if isinstance(p, Tensor)]
        for p in tensors:
            if not p.is_floating_point():
                raise ValueError(f"{name}: parameters must be real floating point tensors, got {p.dtype}")
        if any(is_dtensor(p) for p in tensors):
            reason = self.sharding_refusal({**self.defaults, **param_group})
            if reason is not None:
                raise ValueError(
                    f"{name} cannot update DTensor parameters (FSDP2 fully_shard): it needs {reason}. "
                    "Train it under DDP instead (see steepest.distributed)."
                )
        super().add_param_group(param_group)

    def sharding_refusal(self, group: ParamGroup) -> str | None:
        """What ``group`` would need that sharded (DTensor) parameters lack, or None if they are fine.

        :attr:`dtensor_refusal` by default; optimizers that refuse only some groups (GaLore's
        projected matrices) override this. Checked when a group holding DTensors is added, so an
        unsupported optimizer fails at construction instead of updating shards wrongly.
        """
        return self.dtensor_refusal

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, default in self.hyperparameter_defaults.items():
                group.setdefault(key, default)

    # -- state ---------------------------------------------------------------------------

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """The exact state kept for ``param``: ``param_state`` like it, ``scalar_state`` as 0-dim."""
        shapes: StateSpec = {name: (tuple(param.shape), param.dtype) for name in self.param_state}
        shapes.update({name: ((), SCALAR_DTYPE) for name in self.scalar_state})
        return shapes

    def init_state(self) -> None:
        """Create the state of every parameter that has none yet, as its first step would, without a step.

        For ``torch.distributed.checkpoint``: ``get_state_dict`` on an optimizer without state calls
        ``step()`` with zero gradients and no closure, which closure optimizers and Hessian-vector
        product optimizers refuse. Call ``init_state()`` first; the values are the initial ones
        (zeros, initial scalars) and a checkpoint loaded afterwards replaces them.
        """
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                if param not in self.state or not self.state[param]:
                    state: dict[str, Any] = {}
                    if self._init_param_state(param, group, state, index):
                        self.state[param] = state
                index += 1

    def _init_param_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any], index: int) -> bool:
        """What :meth:`init_state` does for one parameter (``index`` counts over all groups).

        Returns whether a step keeps an entry for ``param`` (possibly empty, for stateless updates).
        """
        self._init_state(param, group, state)
        return True

    def _init_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any]) -> None:
        """Create zeroed state for ``param``; override for a different initial value."""
        for name, (shape, dtype) in self.state_shapes(param, group).items():
            state[name] = zeros_state(param, shape, dtype)

    # -- step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (run with grad enabled).
                Required when ``capabilities.requires_closure``.
        """
        name = type(self).__name__
        loss = None
        if closure is None:
            if self.capabilities.requires_closure:
                raise RuntimeError(f"{name}.step requires a closure that re-evaluates the loss")
        else:
            with torch.enable_grad():
                loss = closure()
        # Gather and check everything first so a bad gradient raises before any update.
        gathered = [self._params_with_grad(group) for group in self.param_groups]
        if type(self)._prepare_step is not SteepestOptimizer._prepare_step:
            self._prepare_step([g for _, grads in gathered for g in grads])
        for group in self.param_groups:
            self._init_group(group)
        jobs = []
        for group, (params, grads) in zip(self.param_groups, gathered, strict=True):
            if not params:
                continue
            states = [self.state[p] for p in params]
            if group["maximize"]:
                grads = list(torch._foreach_neg(grads))
            jobs.append((group, params, grads, states))
        self._update_groups(jobs)
        return loss

    def _init_group(self, group: ParamGroup) -> None:
        """Create the state of every parameter of ``group`` that has a gradient and no state yet.

        Named as torch's optimizers name it: under ``torch.compile(opt.step)`` dynamo runs a method
        of this name eagerly while tracing and guards on the state it leaves, so a compiled step
        does not compile once more after the state appears (torch 2.13's ``OptimizerVariable``).
        """
        for p in group["params"]:
            if p.grad is not None:
                state = self.state[p]
                if not state:
                    self._init_state(p, group, state)

    def _params_with_grad(self, group: ParamGroup) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self.capabilities.supports_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
        return params, grads

    def _prepare_step(self, grads: list[Tensor]) -> None:
        """Hook run once per step, before any group is updated, with every gradient of every group.

        For statistics over the whole optimizer, such as a global gradient-norm clip factor.
        The gradients are as the user left them (before ``maximize`` negation); never modify them.
        """

    def _use_foreach(self, group: ParamGroup) -> bool:
        return self.capabilities.supports_foreach and group["foreach"] is not False

    def _use_fused(self, group: ParamGroup) -> bool:
        """Whether ``group`` takes the compiled path: ``fused=True`` (opt-in; ``None`` means not fused)."""
        if not self.capabilities.supports_fused or getattr(self, "_fused_unavailable", None) is not None:
            return False
        return bool(group["fused"]) and self.fused_applies(group)

    def fused_applies(self, group: ParamGroup) -> bool:
        """Whether ``group``'s update can be fused; optimizers with projected groups say no for those.

        GaLore, Fira and FRUGAL fuse their dense (unprojected) groups; a projected group keeps its
        own path (an SVD or a gather per tensor is not an elementwise pass).
        """
        return True

    def fused_static_facts(self, group: ParamGroup, params: list[Tensor]) -> dict[str, Any]:
        """Facts about ``params`` the compiled update reads from its group view (default: none).

        The fused path hands ``_single_tensor_update`` a copy of the group without ``params`` and
        ``param_names``; an update that looks parameters up by name (Adam-mini's partition)
        provides what it needs here, computed eagerly, as constants of the compiled graph.
        """
        return {}

    def real_hyperparameters(self) -> frozenset[str]:
        """Names of the real-valued hyperparameters (passed as tensors to the fused path)."""
        return self._real_hyperparameters

    def _update_groups(self, jobs: list[tuple[ParamGroup, list[Tensor], list[Tensor], list[dict[str, Any]]]]) -> None:
        """Update every ``(group, params, grads, states)`` job of one step: the fused ones first, together.

        The groups that take the fused path are updated by one compiled call (all of them or, when
        compilation fails, none: they then take the foreach path, in the same step); every other
        group by :meth:`_update_group`.
        """
        fused = [job for job in jobs if self._use_fused(job[0])]
        if fused:
            position = {id(g): i for i, g in enumerate(self.param_groups)}
            tasks: list[_fused.Task] = []
            whole = self.foreach_whole_group
            for group, params, grads, states in fused:
                buckets = [(params, grads, states)] if whole else device_dtype_buckets(params, grads, states)
                tasks += [(position[id(group)], group, *bucket) for bucket in buckets]
            if _fused.fused_step(self, tasks):
                done = {id(job[0]) for job in fused}
                jobs = [job for job in jobs if id(job[0]) not in done]
        for group, params, grads, states in jobs:
            self._update_group(group, params, grads, states)

    def _update_group(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """Update one param group eagerly: foreach per (device, dtype) bucket, or the per-tensor path.

        With ``foreach_whole_group`` the foreach path gets the whole group in one call. A tensor
        ``lr`` (or other real hyperparameter) is read once here, as a Python float, so the eager
        arithmetic is the same whichever form the value has.
        """
        if self.capabilities.supports_fused and torch.compiler.is_compiling():
            # Traced by the user's torch.compile(opt.step): the per-tensor update is the one
            # written for tracing (the fused path's), and a tensor lr stays a graph input.
            self._single_tensor_update(group, params, grads, states)
            return
        group = host_scalars(group, self.real_hyperparameters())
        if not self._use_foreach(group):
            self._single_tensor_update(group, params, grads, states)
            return
        buckets = [(params, grads, states)] if self.foreach_whole_group else device_dtype_buckets(params, grads, states)
        for bucket in buckets:
            self._foreach_bucket(group, *bucket)

    def _foreach_bucket(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """The foreach path on one bucket: in :func:`foreach_chunks` unless the update spans the whole group."""
        if self.foreach_whole_group:
            self._foreach_update(group, params, grads, states)
            return
        for chunk_params, chunk_grads, chunk_states in foreach_chunks(params, grads, states):
            self._foreach_update(group, chunk_params, chunk_grads, chunk_states)

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """The readable reference: a plain loop over the parameters that have a gradient.

        Every optimizer that uses the base ``step`` implements it (checked when the class is
        defined); optimizers whose step spans all groups at once (line searches, NewtonCG, M-FAC,
        zeroth-order methods) override ``step`` instead and never reach this dispatch.
        """
        raise TypeError(f"{type(self).__name__} reached the per-tensor dispatch without implementing it")

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """The fast path over tensors of one device and dtype; defaults to the reference loop."""
        self._single_tensor_update(group, params, grads, states)

    # -- description ---------------------------------------------------------------------

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter, derived from the declared state."""
        from steepest.optim._state_description import describe_state  # lazy: it imports the registry

        return describe_state(cls)


def host_scalars(group: ParamGroup, names: frozenset[str]) -> ParamGroup:
    """``group`` with each tensor-valued hyperparameter among ``names`` read as a Python float.

    A scheduler may keep ``lr`` as a 1-element tensor (torch's convention for a compiled step);
    the eager update paths compute with floats. ``group`` itself when nothing is a tensor.
    """
    tensors = [name for name in names if isinstance(group.get(name), Tensor)]
    if not tensors:
        return group
    return {**group, **{name: float(group[name].reshape(()).item()) for name in tensors}}


def _declares_hyperparameters(cls: type[SteepestOptimizer]) -> bool:
    """Whether ``cls`` declares its hyperparameters in its ``__init__`` signature.

    The first concrete optimizer class must (every keyword a validated hyperparameter with a
    default, ``lr``, ``maximize`` and ``foreach`` among them); a subclass may redeclare them the
    same way (SPS-max over SPS). Any other subclass of a declared optimizer inherits its parent's
    declaration whatever its ``__init__`` looks like: a user's ``class MyLion(Lion)`` taking
    ``**kwargs`` or a few keywords, and the dynamic subclasses frameworks build around an
    optimizer instance (Lightning's ``LightningLion``, Fabric's wrapper). Their values are still
    checked, by the parent's ``__init__`` and by :meth:`SteepestOptimizer.add_param_group`.
    """
    inherited = bool(cls.hyperparameter_defaults)
    if "__init__" not in cls.__dict__:
        return not inherited
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return not inherited
    return not inherited or {"lr", "maximize", "foreach"} <= {p.name for p in parameters}


def _check_paths(owner: str, capabilities: Capabilities, hyperparameters: Mapping[str, Any]) -> None:
    """``foreach=True`` needs a foreach path; ``fused=True`` excludes ``foreach=True`` (as in torch)."""
    if hyperparameters.get("foreach") and not capabilities.supports_foreach:
        raise ValueError(f"{owner}: foreach=True is not supported by this optimizer")
    if hyperparameters.get("fused") and hyperparameters.get("foreach"):
        raise ValueError(f"{owner}: fused=True and foreach=True cannot both be set")


#: On CPU a foreach update is run over chunks of a bucket holding at most this many bytes of
#: parameters (a larger tensor forms a chunk of its own). A foreach op allocates its result for
#: every tensor of the list at once; glibc hands allocations above its mmap threshold (dynamic, at
#: most 32 MiB) back to the kernel when they are freed and trims more than twice that from the top
#: of the heap, so whole-model temporaries are fresh pages, faulted in again every step. Small
#: chunks keep a step's temporaries within what the allocator reuses, as the per-tensor loop does.
#: Measured on the 24.2M benchmark model (2 threads, benchmarks/step_time.py), foreach step
#: unchunked -> 16 MiB -> 8 MiB chunks: Lion 45.9 -> 28.8 -> 25.6 ms, AdaBelief 83 -> 41 -> 39 ms,
#: SignSGD 34.6 -> 15.1 ms (16 MiB), GaLore's AdamW 107 -> 44 ms (16 MiB); 32 MiB was slower
#: than 16. (With glibc told to keep freed memory, ``MALLOC_TRIM_THRESHOLD_``, the unchunked Lion
#: step took 20.0 ms: the cost was page faults.) CUDA's caching allocator reuses memory: no chunks.
FOREACH_CPU_CHUNK_BYTES = 8 << 20

#: Foreach paths that stack same-shape tensors to reduce them in one batched call (SCALE's column
#: norms, Adam-mini's block means) stack only tensors below this many elements; larger ones are
#: reduced one at a time, where the per-call cost is small next to the tensor's memory time and
#: a stack would copy the tensor into fresh memory every step. On the 24.2M benchmark model
#: (2 threads, alternated with the per-tensor loop in one process) the foreach step over stacked
#: large matrices took 1.50x the loop's time for SCALE (the profiler: 9.5 ms per step in ``stack``,
#: 8.2 in the square, 7.6 in the division) and 1.13x for Adam-mini; one at a time, 0.62x and 0.80x.
FOREACH_STACK_MAX_NUMEL = 1 << 16


def foreach_chunks(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
) -> list[tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]]:
    """One (device, dtype) bucket split for the foreach path: byte-bounded chunks on CPU, whole elsewhere."""
    if not params or params[0].device.type != "cpu":
        return [(params, grads, states)]
    chunks: list[tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]] = []
    start, size = 0, 0
    for i, param in enumerate(params):
        nbytes = param.nbytes  # a property: no call into torch per parameter
        if i > start and size + nbytes > FOREACH_CPU_CHUNK_BYTES:
            chunks.append((params[start:i], grads[start:i], states[start:i]))
            start, size = i, 0
        size += nbytes
    chunks.append((params[start:], grads[start:], states[start:]))
    return chunks


def device_dtype_buckets(
    params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
) -> list[tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]]:
    """Split parallel lists into buckets of one device and dtype, as foreach kernels need."""
    grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads], with_indices=True)  # type: ignore[list-item]
    buckets = []
    for (bucket_params, bucket_grads), indices in grouped.values():
        tensors = cast(tuple[list[Tensor], list[Tensor]], (bucket_params, bucket_grads))
        buckets.append((list(tensors[0]), list(tensors[1]), [states[i] for i in indices]))
    return buckets
