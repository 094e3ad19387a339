"""Constructor arguments from a model, for optimizers that need more than ``model.parameters()``.

Adam-mini partitions by parameter name and needs the model's ``dim`` and ``n_heads``; SCALE needs
to know the last layer; GaLore, Fira and FRUGAL project the weight matrices of linear maps
(``nn.Linear``, Hugging Face ``Conv1D``, ...; see :func:`steepest.optim._projectors.matrix_weights`).
Each adapter here turns ``(model, facts)`` into ``(params, extra_kwargs)`` for the constructor, so
the demo, the benchmark and users share one way of building them (:func:`steepest.optimizer_params`).

Facts that describe the model (:data:`MODEL_FACTS`; accepted for every optimizer, used by those
that need them): ``dim``, ``n_heads``, ``n_kv_heads`` (Adam-mini), ``last_layer`` (module name of
the output layer; default: the last ``nn.Linear``). Settings of one adapter (:data:`SETTINGS`;
refused for the others): ``rank`` and ``update_proj_gap`` (GaLore, Fira), ``targets`` (module-name
substrings of the weight matrices to project; default: every weight matrix but the last layer's;
GaLore, Fira, FRUGAL), ``proj_type`` (FRUGAL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from steepest.optim._projectors import matrix_weights
from steepest.optim.scale import scale_param_groups

#: ``(model, facts) -> (params, extra constructor keywords)``.
ModelParams = Callable[[nn.Module, Mapping[str, Any]], tuple[Any, dict[str, Any]]]

_ADAM_MINI_FACTS = ("dim", "n_heads", "n_kv_heads")


def last_linear_name(model: nn.Module) -> str:
    """The name of the last :class:`torch.nn.Linear` module registered in ``model``.

    Raises:
        ValueError: ``model`` has no linear layer.
    """
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass last_layer= explicitly")
    return names[-1]


def _projection_targets(model: nn.Module, facts: Mapping[str, Any]) -> list[Tensor]:
    """The weight matrices to project: :func:`matrix_weights` of ``targets``, less the last layer's."""
    last = facts.get("last_layer")
    if last is None:
        linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        last = linear[-1] if linear else None
    targets = tuple(facts.get("targets", ("",)))
    return [p for _, p in matrix_weights(model, targets, exclude=() if last is None else (last,))]


def default_rank(model: nn.Module, facts: Mapping[str, Any]) -> int:
    """``facts["rank"]``, else a quarter of the smallest projected matrix side, at most 128.

    A quarter is GaLore's own ratio at small scale (rank 128 for its 60M model of width 512).
    """
    if "rank" in facts:
        return int(facts["rank"])
    sides = [min(p.shape) for p in _projection_targets(model, facts)]
    return max(1, min(128, min(sides) // 4)) if sides else 1


def adam_mini_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Adam-mini: named parameters plus ``dim``, ``n_heads``, ``n_kv_heads`` when the model states them."""
    return list(model.named_parameters()), {k: facts[k] for k in _ADAM_MINI_FACTS if facts.get(k) is not None}


def scale_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """SCALE: :func:`steepest.scale_param_groups` with the last layer from ``facts`` or the last linear layer."""
    return scale_param_groups(model, last_layer=facts.get("last_layer") or last_linear_name(model)), {}


def lowrank_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """GaLore / Fira: weight matrices (all but the last layer's, or ``targets``) projected at :func:`default_rank`.

    The projected group carries ``rank`` (and ``update_proj_gap`` when the facts give one) and
    nothing else, so ``scale``, ``proj_type`` and the gap given to the constructor apply to it.
    """
    projected = _projection_targets(model, facts)
    ids = {id(p) for p in projected}
    plain = [p for p in model.parameters() if id(p) not in ids]
    out: list[dict[str, Any]] = [{"params": plain}] if plain else []
    if projected:
        group: dict[str, Any] = {"params": projected, "rank": default_rank(model, facts)}
        if "update_proj_gap" in facts:
            group["update_proj_gap"] = int(facts["update_proj_gap"])
        out.append(group)
    return out, {}


def frugal_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """FRUGAL: weight matrices (all but the last layer's, or ``targets``) in a projected group, the rest AdamW.

    The projection is ``facts["proj_type"]``: ``"block"``, the default (the paper's main method:
    whole tensors state-full in turn, in descending order), then ``"coord"``, ``"svd"`` or
    ``"random"``; the plain group is pinned to ``proj_type="none"``.
    """
    projected = _projection_targets(model, facts)
    ids = {id(p) for p in projected}
    plain = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": plain, "proj_type": "none"}] if plain else []
    if projected:
        groups.append({"params": projected, "proj_type": facts.get("proj_type", "block")})
    return groups, {}


#: Facts that describe the model; every optimizer accepts them (those that do not need one ignore it).
MODEL_FACTS = ("dim", "n_heads", "n_kv_heads", "last_layer")

#: The settings each adapter reads besides :data:`MODEL_FACTS`; any other keyword is refused.
SETTINGS: Mapping[ModelParams, tuple[str, ...]] = {
    adam_mini_params: (),
    scale_params: (),
    lowrank_params: ("rank", "update_proj_gap", "targets"),
    frugal_params: ("targets", "proj_type"),
}
