"""BlockLLM: block coordinate descent over parameter tensors, with Adam state only for the selected block."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import adamw_step_, foreach_adamw_step_
from steepest.optim._names import split_named_params
from steepest.optim._validation import Boolean, Integer, Interval, Rule, Strings

#: Hyperparameters of the selection, which is optimizer-wide: groups may not override them.
SELECTION_KEYS = (
    "sparsity",
    "update_freq",
    "patience",
    "num_probes",
    "probe_interval",
    "exclude",
    "freeze_unselected",
    "seed",
)
_SELECTOR_KEYS = {
    "selected": torch.bool,
    "probes": torch.bool,
    "visits": torch.float64,
    "grad_norms": torch.float64,
    "losses": torch.float64,  # saved as a list of floats
    "count": torch.int64,
}


def _generator(seed: int, count: int, salt: int) -> torch.Generator:
    """A generator for the draw at step ``count`` (stateless: a checkpoint needs no RNG state)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + count * 7919 + salt) % (2**63))


class BlockLLM(SteepestOptimizer):
    r"""BlockLLM: Adam on a selected subset of parameter tensors, re-selected when the loss stops falling.

    Paper: Ramesh, Ganapathiraman, Laradji, Schmidt, "BlockLLM: Memory-Efficient Adaptation of LLMs
    by Selecting and Optimizing the Right Coordinate Blocks", 2024, arXiv:2406.17296; official code
    read at RAmruthaVignesh/blockllm@4a629f4 (``blockllm_torch/blockllm.py``).

    A block is one parameter tensor. Only the selected blocks :math:`S` are updated, by AdamW, and
    only they keep Adam moments (the memory claim: state, and with ``freeze_unselected`` also
    gradients, for about :math:`(1-s)` of the parameters). Parameters whose name contains one of
    ``exclude`` are never selected (the official code freezes embeddings and the output head).

    * Initial selection (construction): :math:`\max(1, \lfloor(1-s)\,n\rfloor)` of the :math:`n`
      eligible tensors at random (the official code's shuffle).
    * Every ``probe_interval`` steps, ``num_probes`` random unselected tensors become *probes*:
      they get gradients (for their norms) but no update.
    * Each step records :math:`\|g_l\|` for every tensor that has a gradient, and the loss.
    * Every ``update_freq`` steps, if more than ``patience`` losses were recorded since the last
      selection and their mean is below the mean of the last ``patience`` (the loss is rising),
      re-select: score :math:`s_l = \|g_l\| / \exp(f_l / t)` (:math:`f_l` the visit frequency of
      :math:`l`, :math:`t` the step count; tensors never seen have no score), take tensors by
      descending score while the running size stays below the budget
      :math:`B = \lfloor(1-s)\,N\rfloor` (:math:`N` the eligible parameters; the first one that
      would reach :math:`B` is not added, and the rest are not looked at). If every scored
      tensor fits below :math:`B` (few tensors had gradients: the selected ones and the probes),
      add tensors never seen, in random order, until the size reaches :math:`B` (the last one may
      cross it). At least one tensor is selected. Then reset every Adam state, visit each
      selected tensor (in parameter order, :math:`f_l \leftarrow f_l + 1` then every
      :math:`f \leftarrow f / \sum f`) and clear the loss history. Visit frequencies start at
      :math:`1/n` for each of the :math:`n` eligible tensors (0 for excluded ones).

    Losses come from the closure (``step(closure)``) or from :meth:`record_loss`; without them the
    selection is never revised (a warning says so at the first ``update_freq`` step).

    Differences from the official code: the first step updates (the official first call does not);
    eps and weight decay are passed to Adam (the official internal Adam drops them); a
    re-selection whose best-scored tensor alone reaches the budget keeps that tensor (the
    official code selects nothing then, and trains nothing until the next re-selection);
    the selection score uses the gradient norm as the official code does, where the paper states
    the Adam-preconditioned magnitude, which unselected tensors have no moments for; draws come
    from seeded generators, so a checkpoint continues identically; the learning rate lives in this
    optimizer's param groups, so LR schedulers work (the official one re-creates its inner Adam).

    State: per selected tensor ``exp_avg``, ``exp_avg_sq`` (like the parameter) and ``step``; none
    for the others. Optimizer-wide, under ``state_dict()["blockllm"]``: ``selected`` and
    ``probes`` (bool per tensor, in param-group order), ``visits`` (the visit frequencies, summing
    to 1), ``grad_norms`` (NaN: never seen), ``losses`` since the last selection, and the step
    ``count``.

    Args:
        named_parameters: ``model.named_parameters()`` or groups of ``(name, parameter)`` pairs.
        lr: default 1e-3 (official config).
        betas: default (0.9, 0.999) (official config).
        eps: default 1e-8 (official config).
        weight_decay: decoupled, default 0.0 (official config).
        sparsity: :math:`s`, the fraction of tensors (by count at first, by size at re-selection)
            left out; default 0.9 (official config).
        update_freq: steps between re-selection checks, default 1000 (official).
        patience: losses compared by the re-selection rule, default 100 (official).
        num_probes: default 1 (official ``num_bottom_to_sample``).
        probe_interval: default 20 (official ``param_update_interval``).
        exclude: name substrings never selected, default ``("embed", "lm_head")`` (official).
        freeze_unselected: set ``requires_grad=False`` on tensors neither selected nor probed, so
            autograd skips their gradients (the official behaviour); default True. This changes
            the model's parameters' ``requires_grad`` flags.
        seed: seed of the random draws, default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).

    Requirements: named parameters; a loss per step (closure or :meth:`record_loss`) for the
    re-selection rule. Selection hyperparameters are optimizer-wide (groups may set ``lr``,
    ``betas``, ``eps`` and ``weight_decay``).

    Example:
        >>> import torch, steepest
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        >>> opt = steepest.BlockLLM(model.named_parameters(), sparsity=0.5, seed=0)
        >>> sum(p.requires_grad for p in model.parameters())  # two of four tensors selected
        2
        >>> loss = model(torch.ones(2, 4)).pow(2).mean()
        >>> loss.backward()
        >>> opt.record_loss(loss)
        >>> _ = opt.step()
    """

    capabilities: ClassVar[Capabilities] = Capabilities(needs_named_parameters=True, elementwise=False)
    dtensor_refusal: ClassVar[str | None] = (
        "whole parameter tensors: it ranks tensors by their gradient norms and masks coordinates by a "
        "top-k over each full tensor, which a shard does not hold"
    )
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "sparsity": Interval(0.0, 1.0, high_open=True),
            "update_freq": Integer(1),
            "patience": Integer(1),
            "num_probes": Integer(0),
            "probe_interval": Integer(1),
            "exclude": Strings(),
            "freeze_unselected": Boolean(),
            "seed": Integer(0),
        }
    )

    def __init__(
        self,
        named_parameters: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        sparsity: float = 0.9,
        update_freq: int = 1000,
        patience: int = 100,
        num_probes: int = 1,
        probe_interval: int = 20,
        exclude: tuple[str, ...] = ("embed", "lm_head"),
        freeze_unselected: bool = True,
        seed: int = 0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            named_parameters,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            sparsity=sparsity,
            update_freq=update_freq,
            patience=patience,
            num_probes=num_probes,
            probe_interval=probe_interval,
            exclude=exclude,
            freeze_unselected=freeze_unselected,
            seed=seed,
            maximize=maximize,
            foreach=foreach,
        )
        blocks = self._blocks()
        self._eligible = torch.tensor(
            [not any(pattern in name for pattern in self.defaults["exclude"]) for name, _ in blocks], dtype=torch.bool
        )
        if not bool(self._eligible.any()):
            raise ValueError(f"BlockLLM: every parameter is excluded by exclude={self.defaults['exclude']!r}")
        self._numels = torch.tensor([p.numel() for _, p in blocks], dtype=torch.float64)
        n = len(blocks)
        self._losses: list[float] = []
        self._warned_no_loss = False
        self._position: dict[int, int] = {}
        eligible = torch.nonzero(self._eligible).flatten()
        k = max(1, int((1.0 - sparsity) * len(eligible)))
        order = torch.randperm(len(eligible), generator=_generator(seed, 0, 1))
        selected = torch.zeros(n, dtype=torch.bool)
        selected[eligible[order[:k]]] = True
        self._selector: dict[str, Tensor] = {
            "selected": selected,
            "probes": torch.zeros(n, dtype=torch.bool),
            "visits": self._eligible.to(torch.float64) / len(eligible),
            "grad_norms": torch.full((n,), math.nan, dtype=torch.float64),
            "count": torch.zeros((), dtype=torch.int64),
        }
        self._apply_freeze()

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles only defaults, state and param_groups; keep the selection too.
        state = super().__getstate__()
        for key in ("_selector", "_losses", "_eligible", "_numels", "_warned_no_loss"):
            state[key] = self.__dict__[key]
        state["_position"] = {}
        return state

    # -- groups and positions ------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of ``(name, parameter)`` pairs; selection hyperparameters are optimizer-wide."""
        names, params = split_named_params("BlockLLM", param_group)
        if getattr(self, "_selector", None) is not None:
            raise ValueError("BlockLLM: param groups cannot be added after construction (the selection spans them)")
        overridden = [k for k in SELECTION_KEYS if k in param_group and param_group[k] != self.defaults[k]]
        if overridden:
            raise ValueError(f"BlockLLM: {overridden} are optimizer-wide; set them in the constructor, not per group")
        super().add_param_group({**param_group, "params": params, "param_names": names})

    def _blocks(self) -> list[tuple[str, Tensor]]:
        return [(n, p) for g in self.param_groups for n, p in zip(g["param_names"], g["params"], strict=True)]

    def _index(self, param: Tensor) -> int:
        i = self._position.get(id(param))
        if i is None or self._blocks()[i][1] is not param:
            self._position = {id(p): j for j, (_, p) in enumerate(self._blocks())}
            i = self._position[id(param)]
        return i

    def selected_names(self) -> list[str]:
        """Names of the tensors currently selected for updates."""
        return [name for (name, _), s in zip(self._blocks(), self._selector["selected"].tolist(), strict=True) if s]

    # -- state ---------------------------------------------------------------------------

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """Adam moments and a step for a selected tensor; nothing for the others."""
        if not bool(self._selector["selected"][self._index(param)]):
            return {}
        return self._adam_shapes(param)

    def _init_param_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any], index: int) -> bool:
        """Adam state for a selected tensor; unselected tensors get no entry, as after a step."""
        self._init_state(param, group, state)
        return bool(state)

    @staticmethod
    def _adam_shapes(param: Tensor) -> StateSpec:
        like = (tuple(param.shape), param.dtype)
        return {"exp_avg": like, "exp_avg_sq": like, "step": ((), SCALAR_DTYPE)}

    def saved_state_shapes(self, param: Tensor, group: ParamGroup, entry: Mapping[str, Any]) -> StateSpec:
        """A saved entry holds Adam state exactly when it was saved for a selected tensor."""
        return self._adam_shapes(param) if entry else {}

    def state_dict(self) -> dict[str, Any]:
        """The torch state dict; the optimizer-wide selection is in the first group, under ``"blockllm"``.

        It lives in a param group (not beside ``state``) so that ``torch.distributed.checkpoint``,
        which keeps only ``state`` and ``param_groups``, carries it; ``losses`` is a list of floats
        because its length changes between checkpoints.
        """
        out = super().state_dict()
        selection: dict[str, Any] = {k: v.clone() for k, v in self._selector.items()}
        selection["losses"] = list(self._losses)
        out["param_groups"][0]["blockllm"] = selection
        return out

    def _prepare_loaded_state_dict(self, state_dict: Any) -> Any:
        """Check the saved selection (in the first group) and return the state dict without it."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
        first = groups[0] if isinstance(groups, list | tuple) and groups else None
        if not isinstance(first, Mapping) or not isinstance(first.get("blockllm"), Mapping):
            raise ValueError(
                "BlockLLM.load_state_dict: expected the 'blockllm' selection in the first param group"
            )
        saved = first["blockllm"]
        n = len(self._blocks())
        if set(saved) != set(_SELECTOR_KEYS):
            raise ValueError(
                f"BlockLLM.load_state_dict: selection keys {sorted(saved)}, expected {sorted(_SELECTOR_KEYS)}"
            )
        for key, dtype in _SELECTOR_KEYS.items():
            value = saved[key]
            if key == "losses":
                if not isinstance(value, list | tuple) or not all(isinstance(v, float | int) for v in value):
                    raise ValueError("BlockLLM.load_state_dict: selection entry 'losses' is not a list of floats")
                continue
            shape = () if key == "count" else (n,)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape or value.dtype != dtype:
                raise ValueError(f"BlockLLM.load_state_dict: selection entry {key!r} is not a valid {dtype} tensor")
        if bool((saved["selected"] & ~self._eligible).any()):
            raise ValueError("BlockLLM.load_state_dict: the saved selection includes excluded parameters")
        assert groups is not None  # first came from it
        rest = {**state_dict, "param_groups": [{k: v for k, v in first.items() if k != "blockllm"}, *groups[1:]]}
        self._check_entries_match_selection(rest, saved["selected"])
        return rest

    def _finish_load(self, state_dict: Mapping[str, Any]) -> None:
        """Take over the saved selection (checked in :meth:`_prepare_loaded_state_dict`)."""
        saved = state_dict["param_groups"][0]["blockllm"]
        self._selector = {k: saved[k].clone() for k in _SELECTOR_KEYS if k != "losses"}
        self._losses = [float(v) for v in saved["losses"]]
        self._apply_freeze()

    def _check_entries_match_selection(self, state_dict: Mapping[str, Any], selected: Tensor) -> None:
        groups, state = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, list | tuple) or not isinstance(state, Mapping):
            return  # the base class reports the structural error
        ids = [i for g in groups if isinstance(g, Mapping) for i in g.get("params", [])]
        for position, saved_id in enumerate(ids):
            if state.get(saved_id) and position < len(selected) and not bool(selected[position]):
                raise ValueError(
                    f"BlockLLM.load_state_dict: parameter {saved_id!r} has Adam state but is not selected"
                )

    # -- step ----------------------------------------------------------------------------

    def record_loss(self, loss: Tensor | float) -> None:
        """Record this step's loss for the re-selection rule (one host sync); call once per step."""
        self._losses.append(float(loss))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update the selected tensors; probe and re-select on schedule.

        Args:
            closure: optional; runs under ``torch.enable_grad()`` (it back-propagates). The loss
                it returns is recorded as by :meth:`record_loss`; a closure returning None (it
                only computes gradients) records nothing, as a step without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if loss is not None:
                self.record_loss(loss)
        self._record_grad_norms()
        super().step()
        self._selector["count"].add_(1)
        count = int(self._selector["count"])
        if self.defaults["num_probes"] and count % self.defaults["probe_interval"] == 0:
            self._resample_probes(count)
        if count % self.defaults["update_freq"] == 0:
            self._maybe_reselect(count)
        return loss

    def _update_group(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        # Probes and excluded tensors may have gradients; only tensors with Adam state are updated.
        chosen = [i for i, s in enumerate(states) if s]
        if not chosen:
            return
        super()._update_group(
            group, [params[i] for i in chosen], [grads[i] for i in chosen], [states[i] for i in chosen]
        )

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        for param, grad, state in zip(params, grads, states, strict=True):
            adamw_step_(param, grad, state, group["lr"], group["betas"], group["eps"], group["weight_decay"])

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        foreach_adamw_step_(params, grads, states, group["lr"], group["betas"], group["eps"], group["weight_decay"])

    def _record_grad_norms(self) -> None:
        seen = [(i, p.grad) for i, (_, p) in enumerate(self._blocks()) if p.grad is not None and not p.grad.is_sparse]
        if seen:
            norms = torch._foreach_norm([g for _, g in seen])
            index = torch.tensor([i for i, _ in seen])
            self._selector["grad_norms"][index] = torch.stack(norms).to("cpu", torch.float64)

    def _resample_probes(self, count: int) -> None:
        candidates = torch.nonzero(self._eligible & ~self._selector["selected"]).flatten()
        probes = torch.zeros_like(self._selector["probes"])
        if len(candidates):
            draw = torch.randperm(len(candidates), generator=_generator(self.defaults["seed"], count, 2))
            probes[candidates[draw[: self.defaults["num_probes"]]]] = True
        self._selector["probes"] = probes
        self._apply_freeze()

    def _maybe_reselect(self, count: int) -> None:
        patience = self.defaults["patience"]
        if not self._losses and not self._warned_no_loss:
            self._warned_no_loss = True
            warnings.warn(
                "BlockLLM has recorded no loss: pass a closure to step() or call record_loss(loss) each step; "
                "without losses the selection is never revised",
                UserWarning,
                stacklevel=3,
            )
        history = self._losses
        if len(history) <= patience or sum(history) / len(history) >= sum(history[-patience:]) / patience:
            return
        self._reselect(count)

    def _reselect(self, count: int) -> None:
        sel = self._selector
        # Normalised already; dividing by the sum also reads a checkpoint that stored visit counts.
        frequency = sel["visits"] / sel["visits"].sum()
        scores = sel["grad_norms"] / torch.exp(frequency / count)
        known = self._eligible & ~torch.isnan(scores)
        order = [int(i) for i in torch.nonzero(known).flatten()[torch.argsort(-scores[known], stable=True)]]
        budget = int((1.0 - self.defaults["sparsity"]) * int(self._numels[self._eligible].sum()))
        chosen: list[int] = []
        running = 0
        for i in order:
            running += int(self._numels[i])
            if running >= budget:
                break
            chosen.append(i)
        if running < budget:
            # Every tensor with a known norm fits: top up with random tensors never seen (the
            # official rule), the last one allowed to cross the budget.
            taken = torch.zeros_like(sel["selected"])
            taken[chosen] = True
            unseen = torch.nonzero(self._eligible & ~taken).flatten()
            for i in unseen[torch.randperm(len(unseen), generator=_generator(self.defaults["seed"], count, 3))]:
                if running >= budget:
                    break
                chosen.append(int(i))
                running += int(self._numels[int(i)])
        if not chosen:
            chosen = order[:1] or [int(torch.nonzero(self._eligible).flatten()[0])]
        selected = torch.zeros_like(sel["selected"])
        selected[chosen] = True
        for _, p in self._blocks():
            self.state.pop(p, None)  # a new Adam for the new block, as the official code
        sel["selected"] = selected
        for i in sorted(chosen):  # one visit each, renormalised after each (the official order)
            frequency[i] += 1.0
            frequency /= frequency.sum()
        sel["visits"] = frequency
        sel["probes"] = torch.zeros_like(sel["probes"])
        self._losses = []
        self._apply_freeze()

    def _apply_freeze(self) -> None:
        if not self.defaults["freeze_unselected"]:
            return
        active = (self._selector["selected"] | self._selector["probes"]).tolist()
        for (_, p), on in zip(self._blocks(), active, strict=True):
            if p.requires_grad != on:  # touch only what changes: a probe swap costs two calls
                p.requires_grad_(on)
            if not on:
                p.grad = None
