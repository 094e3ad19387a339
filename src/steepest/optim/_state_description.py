"""The state an optimizer keeps per parameter, in one line, derived from the state it declares.

``steepest info NAME`` prints this line. It is read off the optimizer itself, never written by
hand: :func:`describe_state` builds the optimizer on a small sample model (three hidden linear
layers and an output layer, each with a bias) the way :func:`steepest.optimizer_params` prepares
it, creates the state a first step would (:meth:`~steepest.optim._base.SteepestOptimizer.init_state`,
which the conformance tests hold to a real first step), and says each entry's shape relative to
its parameter. Parameters that keep different state (a projected weight matrix and a bias, the
output layer SCALE treats apart) are described separately. Boolean hyperparameters that add state
when switched on (``amsgrad``) are tried as well and named.

Optimizers whose state is their class attributes alone (``param_state`` / ``scalar_state``, no
:meth:`state_shapes` override) are described from those attributes without building anything:
constructing any :class:`torch.optim.Optimizer` imports ``torch._dynamo`` (about a second), which
``steepest info lion`` does not need.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from steepest.optim._base import StateShape, SteepestOptimizer

#: Hyperparameters that choose how a step runs or its sign, not what state it keeps.
_NOT_STATE_FLAGS = frozenset({"maximize", "foreach", "fused", "capturable", "differentiable"})

#: (label, which sample parameters) in the order the description lists them.
_KINDS = (
    ("weight matrices", "hidden"),
    ("the output layer's weight", "output"),
    ("vectors", "vector"),
)
#: Labels for kinds that keep the same state.
_MERGED_LABELS = {
    ("hidden", "output"): "matrices",
    ("output", "vector"): "other tensors",
    ("hidden", "vector"): "weight matrices and vectors",
}

#: One state entry as described: its name, its shape said relative to the parameter, a dtype note.
_Entry = tuple[str, str, str]
#: One sample parameter: its name, the tensor, its entries.
_Described = tuple[str, Tensor, list[_Entry]]


class _SampleModel(nn.Module):
    """Three hidden linear layers (16 x 12, 20 x 16, 24 x 20) and an output layer (4 x 24), with biases.

    Three hidden matrices so that block methods have a state-full tensor at their default
    fraction (FRUGAL: ``round(3 * 0.25) = 1``); no two sides equal, so rows and columns can be
    told apart in the shapes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 20), nn.Tanh(), nn.Linear(20, 24))
        self.head = nn.Linear(24, 4)

    def forward(self, x: Tensor) -> Tensor:
        """The outputs for inputs ``x`` of shape (batch, 12)."""
        return self.head(torch.tanh(self.hidden(x)))


def _kind(name: str, param: Tensor) -> str:
    if param.ndim < 2:
        return "vector"
    return "output" if name.startswith("head.") else "hidden"


def _resolve(key_or_cls: str | type[Optimizer]) -> tuple[str | None, type[Optimizer]]:
    """The registry key (None for an unregistered class) and the class."""
    from steepest.optim._registry import REGISTRY

    if isinstance(key_or_cls, str):
        if key_or_cls not in REGISTRY:
            raise KeyError(f"unknown optimizer {key_or_cls!r}; see steepest.list_optimizers()")
        return key_or_cls, REGISTRY[key_or_cls].cls
    for key, entry in REGISTRY.items():
        if entry.cls is key_or_cls:
            return key, key_or_cls
    # A subclass of a registered optimizer is prepared as its nearest registered parent is.
    for parent in key_or_cls.__mro__[1:]:
        for key, entry in REGISTRY.items():
            if entry.cls is parent:
                return key, key_or_cls
    return None, key_or_cls


def _declares_by_attributes(cls: type[Optimizer]) -> bool:
    """Whether the state is exactly ``param_state`` / ``scalar_state`` (the base's :meth:`state_shapes`)."""
    if not issubclass(cls, SteepestOptimizer):
        return False
    return all(
        getattr(cls, name) is getattr(SteepestOptimizer, name)
        for name in ("state_shapes", "_init_state", "_init_param_state", "init_state")
    )


def _dims(shape: tuple[int, ...], param: Tensor, sizes: dict[int, str]) -> list[str]:
    """Each size of ``shape`` named: a hyperparameter, ``rows``/``cols`` (``n`` for a vector), or the number."""
    if param.ndim == 1:
        sides = {int(param.shape[0]): "n"}
    elif param.ndim == 2:
        sides = {int(param.shape[0]): "rows", int(param.shape[1]): "cols"}
    else:
        sides = {}
    return [sizes.get(size) or sides.get(size) or str(size) for size in shape]


def _shape_text(shape: tuple[int, ...], param: Tensor, sizes: dict[int, str]) -> str:
    if tuple(shape) == tuple(param.shape):
        return "like the parameter"
    if not shape:
        return "scalar"
    lead = len(shape) - param.ndim
    if lead > 0 and tuple(shape[lead:]) == tuple(param.shape):
        # Stacked copies of the parameter (M-FAC's gradient window): (m, *shape).
        return " x ".join(_dims(tuple(shape[:lead]), param, sizes)) + " copies of the parameter"
    dims = _dims(tuple(shape), param, sizes)
    return f"{dims[0]} entries" if len(dims) == 1 else " x ".join(dims)


def _size_names(group: Mapping[str, Any]) -> dict[int, str]:
    """Integer hyperparameters of ``group`` that can name a state size (``rank``, ``ngrads``)."""
    out: dict[int, str] = {}
    for name, value in group.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 1 and name != "params":
            out.setdefault(value, name)
    return out


def _entries(param: Tensor, group: Mapping[str, Any], shapes: Mapping[str, StateShape]) -> list[_Entry]:
    sizes = _size_names(group)
    out = []
    for name, (shape, dtype) in shapes.items():
        note = "" if dtype.is_floating_point or dtype.is_complex else str(dtype).removeprefix("torch.")
        out.append((name, _shape_text(tuple(shape), param, sizes), note))
    return out


def _sample_closure(model: nn.Module, opt: Optimizer, create_graph: bool) -> Callable[[], Any]:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 12, generator=gen), torch.randn(5, 4, generator=gen)

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (model(x) - y).square().mean()
        if torch.is_grad_enabled():
            loss.backward(create_graph=create_graph)
        return loss

    return closure


def _built_state(
    key: str | None, cls: type[Optimizer], overrides: dict[str, Any]
) -> list[_Described] | None:
    """``(name, parameter, entries)`` for every sample parameter, or None if ``overrides`` are refused."""
    from steepest.optim._registry import optimizer_params

    model = _SampleModel()
    names = {id(p): n for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nothing projected" and similar advice is not for this model
        try:
            if key is not None:
                params, extra = optimizer_params(key, model)
            else:
                params = list(model.named_parameters()) if _needs_names(cls) else list(model.parameters())
                extra = {}
            opt = cls(params, **{**extra, **overrides})
        except (TypeError, ValueError):
            if overrides:
                return None
            raise
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    init_state = getattr(opt, "init_state", None)
    declared = getattr(opt, "state_shapes", None)
    if callable(init_state):
        init_state()  # the state a first step creates (the conformance tests hold it to one)
    elif not callable(declared):
        # Neither: an optimizer from outside the library; its state is what one step leaves.
        caps = getattr(cls, "capabilities", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step(_sample_closure(model, opt, bool(getattr(caps, "needs_create_graph", False))))
    out: list[_Described] = []
    for param in model.parameters():
        group = group_of[id(param)]
        if callable(init_state) or not callable(declared):
            entry = opt.state.get(param, {})
            shapes = {k: (tuple(v.shape), v.dtype) for k, v in entry.items() if isinstance(v, Tensor)}
        else:
            shapes = dict(declared(param, group))
        out.append((names[id(param)], param, _entries(param, group, shapes)))
    return out


def _needs_names(cls: type[Optimizer]) -> bool:
    caps = getattr(cls, "capabilities", None)
    return bool(getattr(caps, "needs_named_parameters", False))


def _attribute_state(cls: type[SteepestOptimizer]) -> list[_Described]:
    """What the base's :meth:`state_shapes` gives for each sample parameter, without building the optimizer."""
    from steepest.optim._base import SCALAR_DTYPE

    out: list[_Described] = []
    for name, param in _SampleModel().named_parameters():
        shapes = {n: (tuple(param.shape), param.dtype) for n in cls.param_state}
        shapes.update({n: ((), SCALAR_DTYPE) for n in cls.scalar_state})
        out.append((name, param, _entries(param, {}, shapes)))
    return out


def _render_entries(entries: list[_Entry]) -> str:
    """``a, b (like the parameter), step (scalar)``: names with the same shape joined, in first-seen order."""
    order: list[tuple[str, str]] = []
    grouped: dict[tuple[str, str], list[str]] = {}
    for name, shape, note in entries:
        slot = (shape, note)
        if slot not in grouped:
            grouped[slot] = []
            order.append(slot)
        grouped[slot].append(name)
    parts = []
    for shape, note in order:
        detail = f"{shape}, {note}" if note else shape
        parts.append(f"{', '.join(grouped[(shape, note)])} ({detail})")
    return ", ".join(parts)


def _render_kind(members: list[_Described]) -> str:
    """One kind of parameter: the entries they all keep, then those only some keep."""
    keys_per_param = [{name for name, _, _ in entries} for _, _, entries in members]
    common = set.intersection(*keys_per_param)
    seen: dict[str, _Entry] = {}
    for _, _, entries in members:
        for entry in entries:
            seen.setdefault(entry[0], entry)
    always = [e for k, e in seen.items() if k in common]
    some = [e for k, e in seen.items() if k not in common]
    text = _render_entries(always) if always else ("none" if not some else "")
    if some:
        rest = _render_entries(some)
        text = f"{text}; {rest} on some of them" if text else f"{rest} on some of them, none on the others"
    literal = [e for e in always + some if any(c.isdigit() for c in e[1])]
    if literal:
        first = next(p for _, p, entries in members if any(e[0] == literal[0][0] for e in entries))
        text += f" (sizes for a {' x '.join(str(s) for s in first.shape)} tensor)"
    return text


def _selection(state: list[_Described]) -> str | None:
    """``X for some tensors, none for the others`` when state is kept for a selection, not by kind.

    That is: some parameters keep nothing, the others all keep the same entries, and some kind of
    parameter has members of both (BlockLLM's selected tensors).
    """
    kept = {tuple(entries) for _, _, entries in state if entries}
    if len(kept) != 1 or all(entries for _, _, entries in state):
        return None
    kinds: dict[str, set[bool]] = {}
    for name, param, entries in state:
        kinds.setdefault(_kind(name, param), set()).add(bool(entries))
    if not any(len(seen) == 2 for seen in kinds.values()):
        return None
    return f"{_render_entries(list(next(iter(kept))))} for some tensors, none for the others"


def _render(state: list[_Described]) -> str:
    selection = _selection(state)
    if selection is not None:
        return selection
    by_kind: dict[str, list[_Described]] = {}
    for name, param, entries in state:
        by_kind.setdefault(_kind(name, param), []).append((name, param, entries))
    texts = {kind: _render_kind(members) for kind, members in by_kind.items()}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    labels = {kind: label for label, kind in _KINDS}
    kinds = [kind for _, kind in _KINDS if kind in texts]
    # Kinds that keep the same state are named together.
    parts: list[str] = []
    done: set[str] = set()
    for kind in kinds:
        if kind in done:
            continue
        same = [k for k in kinds if k not in done and texts[k] == texts[kind]]
        label = labels[kind] if len(same) == 1 else _MERGED_LABELS[(same[0], same[1])]
        parts.append(f"{label}: {texts[kind]}")
        done.update(same)
    return "; ".join(parts)


def _flag_additions(key: str | None, cls: type[Optimizer], base: list[_Described]) -> str:
    """``x (like the parameter) with flag=True`` for each boolean hyperparameter that adds state entries."""
    import inspect

    signature = inspect.signature(cls.__init__)
    flags = [
        (name, p.default)
        for name, p in signature.parameters.items()
        if isinstance(p.default, bool) and name not in _NOT_STATE_FLAGS
    ]
    base_keys = {e[0] for _, _, entries in base for e in entries}
    notes = []
    for name, default in flags:
        flipped = _built_state(key, cls, {name: not default})
        if flipped is None:
            continue
        added: dict[str, _Entry] = {}
        for _, _, entries in flipped:
            for entry in entries:
                if entry[0] not in base_keys:
                    added.setdefault(entry[0], entry)
        if added:
            notes.append(f"{_render_entries(list(added.values()))} with {name}={not default}")
    return "; ".join(notes)


def describe_state(key_or_cls: str | type[Optimizer]) -> str:
    """One line saying what the optimizer keeps per parameter, derived from its declared state.

    Args:
        key_or_cls: a registry key (``"frugal"``) or an optimizer class. A registered class (or a
            subclass of one) is built through :func:`steepest.optimizer_params` as the registry
            prepares it; any other class on ``model.parameters()`` with its defaults.

    Returns:
        The entries at the default hyperparameters with their shapes relative to the parameter
        ("like the parameter", "scalar", "rank x cols"), separately for weight matrices, the output
        layer and vectors where they differ, then the entries a boolean hyperparameter adds
        ("max_exp_avg_sq (like the parameter) with amsgrad=True"); "none" when nothing is kept.

    Raises:
        KeyError: an unknown registry key.

    Example:
        >>> from steepest.optim._state_description import describe_state
        >>> describe_state("lion")
        'exp_avg (like the parameter)'
        >>> describe_state("mfac")
        'step (scalar), grad_window (ngrads copies of the parameter), gram (ngrads x ngrads)'
    """
    key, cls = _resolve(key_or_cls)
    if _declares_by_attributes(cls):
        return _render(_attribute_state(cls))  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):  # building a model draws from the global generator
        state = _built_state(key, cls, {})
        assert state is not None
        text = _render(state)
        additions = _flag_additions(key, cls, state)
    return f"{text}; {additions}" if additions else text
