"""Weight-decay param groups as practitioners build them: no decay on biases and normalization weights.

:func:`param_groups` splits a model's parameters into a decayed group and a group with
``weight_decay=0``, with the rule timm (``filter_bias_and_bn``) and Hugging Face's ``Trainer``
(``get_decay_parameter_names``) apply by default; :func:`split_weight_decay` does the same to
param groups already built (the projected groups of GaLore, Fira and FRUGAL, SCALE's roles), which
is how :func:`steepest.optimizer_params` offers ``weight_decay=`` / ``no_decay=`` for every
optimizer in the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

#: Normalization layers whose parameters are never decayed (besides any class named ``*Norm``).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

#: ``no_decay`` as :func:`param_groups` takes it: None (the default rule), name substrings, or a
#: predicate ``(name, parameter) -> True`` for no decay.
NoDecay = Callable[[str, Tensor], bool] | Iterable[str] | None


def _is_norm(module: nn.Module) -> bool:
    # Custom norms (Hugging Face's LlamaRMSNorm, T5LayerNorm, timm's LayerNorm2d) are recognised by name.
    return isinstance(module, NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters the default rule exempts from weight decay.

    A parameter gets no decay when it has fewer than two dimensions (biases, norm gains, scalar
    temperatures: timm's ``filter_bias_and_bn``), its name ends in ``bias``, it belongs to a
    normalization layer (:data:`NORM_TYPES` or any class whose name ends in ``Norm``, as Hugging
    Face's name patterns ``layernorm``/``rmsnorm``/``norm`` catch), or the model lists it in
    ``model.no_weight_decay()`` (timm's convention for ``pos_embed``, ``cls_token``, ...).
    Embedding tables and every other weight matrix are decayed, as in both libraries.
    """
    names: set[str] = set()
    for module_name, module in model.named_modules():
        norm = _is_norm(module)
        for name, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if norm or p.dim() < 2 or name.endswith("bias"):
                names.add(full)
    listed = getattr(model, "no_weight_decay", None)
    if callable(listed):
        names |= set(listed())
    return names


def _no_decay_ids(model: nn.Module, no_decay: NoDecay) -> set[int]:
    named = list(model.named_parameters())
    if no_decay is None:
        exempt = no_decay_names(model)
        return {id(p) for n, p in named if n in exempt}
    if callable(no_decay):
        return {id(p) for n, p in named if no_decay(n, p)}
    if isinstance(no_decay, str):
        raise ValueError("no_decay: pass an iterable of name substrings, e.g. ('bias', 'norm'), not one string")
    words = tuple(no_decay)
    if not all(isinstance(w, str) for w in words):
        raise ValueError(f"no_decay: expected name substrings (strings), got {words!r}")
    return {id(p) for n, p in named if any(w in n for w in words)}


def _check_weight_decay(weight_decay: Any) -> float:
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float) or not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    return float(weight_decay)


def param_groups(
    model: nn.Module, weight_decay: float, no_decay: NoDecay = None, *, named: bool = False
) -> list[dict[str, Any]]:
    """Two param groups for ``model``: the decayed parameters at ``weight_decay``, the rest at 0.

    Args:
        model: the model; only parameters with ``requires_grad`` are included, each once.
        weight_decay: the decay of the first group (the optimizer's own form of decay: decoupled
            for AdamW-like methods, L2 for SGD).
        no_decay: which parameters get no decay: None for the default rule
            (:func:`no_decay_names`: biases, normalization weights, every tensor of fewer than two
            dimensions, ``model.no_weight_decay()``), an iterable of name substrings (replaces the
            rule), or a predicate ``(name, parameter) -> bool`` (True: no decay).
        named: give ``(name, parameter)`` pairs instead of tensors, for the optimizers that need
            names (Adam-mini, BlockLLM).

    Empty groups are left out. For optimizers that need structured groups (GaLore, Fira, FRUGAL,
    SCALE) use ``steepest.optimizer_params(name, model, weight_decay=..., no_decay=...)``, which
    splits those groups the same way.

    Example:
        >>> import torch, steepest
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> groups = steepest.param_groups(model, weight_decay=0.1)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
        [(1, 0.1), (3, 0.0)]
        >>> opt = steepest.Lion(groups, lr=1e-4)
    """
    decay = _check_weight_decay(weight_decay)
    exempt = _no_decay_ids(model, no_decay)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out: list[dict[str, Any]] = []
    for rate, members in (
        (decay, [(n, p) for n, p in trainable if id(p) not in exempt]),
        (0.0, [(n, p) for n, p in trainable if id(p) in exempt]),
    ):
        if members:
            out.append({"params": members if named else [p for _, p in members], "weight_decay": rate})
    return out


def split_weight_decay(
    groups: Any, model: nn.Module, weight_decay: float, no_decay: NoDecay = None
) -> list[dict[str, Any]]:
    """Split each of ``groups`` into its decayed part (at ``weight_decay``) and the rest (at 0).

    ``groups`` is whatever an optimizer takes: an iterable of tensors or ``(name, tensor)`` pairs,
    or a list of param groups (every other key of a group is kept on both parts, so a projected
    group stays projected). The rule is :func:`param_groups`'. A group that already sets its own
    ``weight_decay`` is refused: the split would overwrite it.
    """
    decay = _check_weight_decay(weight_decay)
    exempt = _no_decay_ids(model, no_decay)
    given: list[Any] = [groups] if isinstance(groups, Tensor) else list(groups)
    items: list[dict[str, Any]] = given if given and isinstance(given[0], dict) else [{"params": given}]
    out: list[dict[str, Any]] = []
    for group in items:
        if "weight_decay" in group:
            raise ValueError("split_weight_decay: a group already sets weight_decay; leave it out or split by hand")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)

        def tensor(item: Any) -> Tensor:
            return item[1] if isinstance(item, tuple) else item

        for rate, members in (
            (decay, [q for q in params if id(tensor(q)) not in exempt]),
            (0.0, [q for q in params if id(tensor(q)) in exempt]),
        ):
            if members:
                out.append({**group, "params": members, "weight_decay": rate})
    return out
