"""Constructor arguments from a model, for optimizers that need more than ``model.parameters()``.

Adam-mini partitions by parameter name and needs the model's ``dim`` and ``n_heads``; SCALE needs
to know the last layer; GaLore, Fira and FRUGAL project the weight matrices of linear layers. Each
adapter here turns ``(model, facts)`` into ``(params, extra_kwargs)`` for the constructor, so the
demo, the benchmark and users share one way of building them (:func:`steepest.optimizer_params`).

Facts a model may supply (all optional): ``dim``, ``n_heads``, ``n_kv_heads`` (Adam-mini),
``last_layer`` (module name of the output layer; default: the last ``nn.Linear``), ``rank`` and
``update_proj_gap`` (low-rank projection), ``targets`` (module-name substrings of the linear
layers to project; default: every linear layer but the last).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from steepest.optim._projectors import lowrank_param_groups
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


def _projection_targets(model: nn.Module, facts: Mapping[str, Any]) -> list[nn.Linear]:
    last = facts.get("last_layer") or last_linear_name(model)
    targets = tuple(facts.get("targets", ("",)))
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name != last and any(t in name for t in targets) and m.weight.requires_grad
    ]


def default_rank(model: nn.Module, facts: Mapping[str, Any]) -> int:
    """``facts["rank"]``, else a quarter of the smallest projected matrix side, at most 128.

    A quarter is GaLore's own ratio at small scale (rank 128 for its 60M model of width 512).
    """
    if "rank" in facts:
        return int(facts["rank"])
    sides = [min(m.weight.shape) for m in _projection_targets(model, facts)]
    return max(1, min(128, min(sides) // 4)) if sides else 1


def adam_mini_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Adam-mini: named parameters plus ``dim``, ``n_heads``, ``n_kv_heads`` when the model states them."""
    return list(model.named_parameters()), {k: facts[k] for k in _ADAM_MINI_FACTS if facts.get(k) is not None}


def scale_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """SCALE: :func:`steepest.scale_param_groups` with the last layer from ``facts`` or the last linear layer."""
    return scale_param_groups(model, last_layer=facts.get("last_layer") or last_linear_name(model)), {}


def lowrank_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """GaLore / Fira: linear weights (all but the last layer, or ``targets``) projected at :func:`default_rank`."""
    rank = default_rank(model, facts)
    projected = {id(m.weight) for m in _projection_targets(model, facts)}
    groups = lowrank_param_groups(
        model, rank=rank, update_proj_gap=int(facts.get("update_proj_gap", 200)), target_modules=("",)
    )
    # lowrank_param_groups takes every linear layer; move the excluded ones back to the plain group.
    plain = [p for g in groups for p in g["params"] if id(p) not in projected]
    out: list[dict[str, Any]] = [{"params": plain}] if plain else []
    lowrank = [g for g in groups if "rank" in g]
    if lowrank and projected:
        out.append({**lowrank[0], "params": [p for p in lowrank[0]["params"] if id(p) in projected]})
    return out, {}


def frugal_params(model: nn.Module, facts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """FRUGAL: linear weights (all but the last layer, or ``targets``) in a projected group, the rest AdamW.

    The projection is ``facts["proj_type"]`` (``"coord"``, the default, ``"svd"``, ``"random"`` or
    ``"block"``); the plain group is pinned to ``proj_type="none"``.
    """
    projected = [m.weight for m in _projection_targets(model, facts)]
    ids = {id(p) for p in projected}
    plain = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": plain, "proj_type": "none"}] if plain else []
    if projected:
        groups.append({"params": projected, "proj_type": facts.get("proj_type", "coord")})
    return groups, {}
