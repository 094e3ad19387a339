"""Partitions of a model's parameters into Hessian blocks.

A *block* is a named set of parameters; the diagnostics restrict the Hessian to it (the diagonal
block :math:`H_{bb}`: second derivatives with respect to the block's parameters only, every other
parameter held fixed). A partition is a ``dict`` from block name to a list of parameter names as
:meth:`torch.nn.Module.named_parameters` spells them. Only parameters with ``requires_grad`` take part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypeAlias

from torch import nn

#: What the diagnostics accept as a block specification: ``"model"`` (one block, every parameter),
#: ``"parameter"`` (one block per parameter tensor), ``"module"`` (one block per leaf module that owns
#: parameters) or an explicit grouping ``{block name: [parameter names]}``.
BlockSpec: TypeAlias = Literal["model", "parameter", "module"] | Mapping[str, Sequence[str]]


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def whole_model_block(model: nn.Module, name: str = "model") -> dict[str, list[str]]:
    """One block holding every trainable parameter of ``model``.

    Example:
        >>> from torch import nn
        >>> whole_model_block(nn.Linear(2, 3))
        {'model': ['weight', 'bias']}
    """
    return {name: list(_trainable(model))}


def parameter_blocks(model: nn.Module) -> dict[str, list[str]]:
    """One block per trainable parameter tensor, named after the parameter.

    Example:
        >>> from torch import nn
        >>> parameter_blocks(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, bias=False)))
        {'0.weight': ['0.weight'], '0.bias': ['0.bias'], '1.weight': ['1.weight']}
    """
    return {name: [name] for name in _trainable(model)}


def module_blocks(
    model: nn.Module,
    *,
    depth: int | None = None,
    module_types: tuple[type[nn.Module], ...] | None = None,
    include_rest: bool = True,
) -> dict[str, list[str]]:
    """One block per module.

    Args:
        model: the model.
        depth: group parameters by the first ``depth`` components of their owning module's dotted
            path (``depth=2`` puts ``layers.0.attn.q.weight`` in block ``layers.0``). Parameters owned
            by a shallower module form a block named after that module (``""`` is the root). ``None``
            (default, and without ``module_types``): one block per module that directly owns parameters.
        module_types: instead of a depth, one block per module that is an instance of one of these
            types (its parameters recursively; an outer match claims its inner matches).
        include_rest: with ``module_types``, put the parameters no matching module owns in a block
            named ``"rest"`` (default True); otherwise leave them out.

    Raises:
        ValueError: both ``depth`` and ``module_types`` given, or ``depth < 1``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> list(module_blocks(net))
        ['0', '2']
        >>> module_blocks(net, module_types=(nn.Linear,))["2"]
        ['2.weight', '2.bias']
    """
    if depth is not None and module_types is not None:
        raise ValueError("pass either depth or module_types, not both")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    trainable = _trainable(model)
    blocks: dict[str, list[str]] = {}
    if module_types is not None:
        claimed: set[str] = set()
        for mod_name, module in model.named_modules():
            if not isinstance(module, module_types):
                continue
            prefix = f"{mod_name}." if mod_name else ""
            names = [
                prefix + n
                for n, p in module.named_parameters()
                if p.requires_grad and prefix + n in trainable and prefix + n not in claimed
            ]
            if names:
                blocks[mod_name] = names
                claimed.update(names)
        rest = [n for n in trainable if n not in claimed]
        if include_rest and rest:
            blocks["rest"] = rest
        return blocks
    for name in trainable:
        owner = name.split(".")[:-1]
        key = ".".join(owner if depth is None else owner[:depth])
        blocks.setdefault(key, []).append(name)
    return blocks


def grouped_blocks(model: nn.Module, groups: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """A user grouping ``{block name: [parameter names]}``, checked against ``model``.

    Raises:
        ValueError: an unknown or frozen parameter name, a parameter in two blocks, or an empty block.
    """
    trainable = _trainable(model)
    seen: dict[str, str] = {}
    blocks: dict[str, list[str]] = {}
    for block, names in groups.items():
        if isinstance(names, str):
            raise ValueError(f"block {block!r}: expected a list of parameter names, got the string {names!r}")
        if not names:
            raise ValueError(f"block {block!r} is empty")
        for n in names:
            if n not in trainable:
                raise ValueError(f"block {block!r}: {n!r} is not a trainable parameter of the model")
            if n in seen:
                raise ValueError(f"parameter {n!r} is in both block {seen[n]!r} and block {block!r}")
            seen[n] = block
        blocks[str(block)] = list(names)
    return blocks


def resolve_blocks(model: nn.Module, spec: BlockSpec) -> dict[str, list[str]]:
    """Turn a :data:`BlockSpec` into a partition ``{block name: [parameter names]}``.

    Raises:
        ValueError: an unknown string spec, or an invalid grouping (see :func:`grouped_blocks`).
    """
    if isinstance(spec, str):
        if spec == "model":
            return whole_model_block(model)
        if spec == "parameter":
            return parameter_blocks(model)
        if spec == "module":
            return module_blocks(model)
        raise ValueError(f"unknown block spec {spec!r}; expected 'model', 'parameter', 'module' or a dict")
    return grouped_blocks(model, spec)
