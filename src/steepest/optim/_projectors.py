r"""Low-rank gradient projectors shared by GaLore, Fira and FRUGAL-style optimizers.

A :class:`LowRankProjector` maps the gradient :math:`G \in \mathbb{R}^{m\times n}` of a
matrix parameter to a rank-:math:`r` representation :math:`R` and maps an update computed
on :math:`R` back to :math:`\mathbb{R}^{m\times n}`:

* ``right`` side, basis :math:`P \in \mathbb{R}^{r\times n}` (orthonormal rows):
  :math:`R = G P^\top` (:math:`m\times r`), back: :math:`\alpha N P`;
* ``left`` side, basis :math:`Q \in \mathbb{R}^{m\times r}` (orthonormal columns):
  :math:`R = Q^\top G` (:math:`r\times n`), back: :math:`\alpha Q N`;
* both sides (``proj_type='full'``): :math:`R = Q^\top G P^\top` (:math:`r\times r`), back:
  :math:`\alpha Q N P`.

``proj_type`` picks the side as GaLore defines it (jiaweizzhao/GaLore, galore-torch 1.0):
``'std'`` reduces the smaller dimension (right when :math:`m \ge n`, else left), so the
state is :math:`\max(m, n)\times r`; ``'reverse_std'`` the larger one; ``'left'`` and
``'right'`` are fixed; ``'full'`` uses both. ``method`` picks the basis: ``'svd'`` takes the
top-:math:`r` singular vectors of the current gradient (:math:`G = U\Sigma V^\top`,
:math:`Q = U_{:, :r}`, :math:`P = V^\top_{:r, :}`), computed in float32 or wider (a bf16
gradient is decomposed in float32, as the official code does); ``'random'`` a random
orthonormal basis (QR of a Gaussian matrix) from a generator seeded with ``seed`` and the
step at which the basis is drawn, so a run is reproducible and resumes identically.

The basis is recomputed when ``step % update_proj_gap == 0``, where ``step`` is the number
of steps taken *before* the current one (0, T, 2T, ...), from the current gradient.

The projector itself holds no state: the basis lives in the optimizer's per-parameter state
as tensors, under ``proj_left`` (:math:`m\times r`) and/or ``proj_right`` (:math:`r\times n`),
so ``state_dict`` round-trips and ``deepcopy`` works. :func:`lowrank_param_groups` builds the
usual GaLore/Fira param groups from a model; :func:`matrix_weights` says which weights are
projected (every weight matrix of a linear map, ``nn.Linear`` and Hugging Face ``Conv1D`` alike,
never an embedding table).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from steepest.optim._names import user_stacklevel

#: Sides as GaLore's ``proj_type`` defines them.
PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")
#: How the basis is chosen.
PROJ_METHODS = ("svd", "random")
#: State keys of the two possible bases.
LEFT_KEY, RIGHT_KEY = "proj_left", "proj_right"


@dataclass(frozen=True)
class LowRankProjector:
    r"""Projects matrix gradients onto a rank-``rank`` subspace refreshed every ``update_proj_gap`` steps.

    Stateless: every method reads or writes the basis tensors in the ``state`` mapping it is
    given (the optimizer's per-parameter state). See the module docstring for the math.

    Attributes:
        rank: :math:`r`, the rank of the projection.
        proj_type: ``'std'``, ``'reverse_std'``, ``'left'``, ``'right'`` or ``'full'``.
        scale: :math:`\alpha`, multiplies every back-projection.
        update_proj_gap: :math:`T`, steps between basis refreshes.
        method: ``'svd'`` (GaLore) or ``'random'`` (seeded random orthonormal basis).
        seed: seed of the ``'random'`` method.
    """

    rank: int
    proj_type: str = "std"
    scale: float = 1.0
    update_proj_gap: int = 200
    method: str = "svd"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LowRankProjector: rank must be an integer >= 1, got {self.rank!r}")
        if self.proj_type not in PROJ_TYPES:
            raise ValueError(f"LowRankProjector: unknown proj_type {self.proj_type!r}; expected one of {PROJ_TYPES}")
        if self.method not in PROJ_METHODS:
            raise ValueError(f"LowRankProjector: unknown method {self.method!r}; expected one of {PROJ_METHODS}")
        gap = self.update_proj_gap
        if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
            raise ValueError(f"LowRankProjector: update_proj_gap must be an integer >= 1, got {gap!r}")

    # -- shapes ------------------------------------------------------------------------

    def sides(self, shape: tuple[int, ...]) -> tuple[bool, bool]:
        """``(left, right)``: which bases a parameter of ``shape`` gets."""
        m, n = shape
        if self.proj_type == "std":
            return (m < n, m >= n)
        if self.proj_type == "reverse_std":
            return (m >= n, m < n)
        if self.proj_type == "left":
            return (True, False)
        if self.proj_type == "right":
            return (False, True)
        return (True, True)

    def check(self, owner: str, param: Tensor) -> None:
        """Raise ``ValueError`` unless ``param`` is a matrix with ``rank < min(m, n)``.

        GaLore's 'std' and 'reverse_std' choose the back-projection side from the projected
        shape, which is ambiguous once ``rank >= min(m, n)``; a projection at full rank saves
        nothing either, so it is refused for every type.
        """
        if param.dim() != 2:
            raise ValueError(
                f"{owner}: a param group with a 'rank' may hold only 2-D (matrix) parameters; "
                f"got one of shape {tuple(param.shape)}. Put it in a group without 'rank'."
            )
        if self.rank >= min(param.shape):
            raise ValueError(
                f"{owner}: rank={self.rank} must be smaller than min(m, n)={min(param.shape)} "
                f"of the parameter of shape {tuple(param.shape)}"
            )

    def projected_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The shape of the projected gradient :math:`R` for a parameter of ``shape``."""
        m, n = shape
        left, right = self.sides(shape)
        return (self.rank if left else m, self.rank if right else n)

    def basis_shapes(self, shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
        """The basis tensors kept in the state: ``proj_left`` (m x r) and/or ``proj_right`` (r x n)."""
        m, n = shape
        left, right = self.sides(shape)
        shapes = {}
        if left:
            shapes[LEFT_KEY] = (m, self.rank)
        if right:
            shapes[RIGHT_KEY] = (self.rank, n)
        return shapes

    # -- projection --------------------------------------------------------------------

    def needs_refresh(self, step: int) -> bool:
        """Whether the basis is recomputed at ``step`` (the steps taken before this one)."""
        return step % self.update_proj_gap == 0

    def refresh_(self, grad: Tensor, state: Mapping[str, Tensor], step: int) -> None:
        """Recompute the basis from ``grad`` and write it into ``state`` in place."""
        left, right = self.sides(tuple(grad.shape))
        if self.method == "svd":
            u, vh = self._svd(grad)
            if left:
                state[LEFT_KEY].copy_(u[:, : self.rank])
            if right:
                state[RIGHT_KEY].copy_(vh[: self.rank, :])
            return
        m, n = grad.shape
        gen = torch.Generator(device="cpu").manual_seed(_mix(self.seed, step))
        dtype = torch.promote_types(grad.dtype, torch.float32)
        if left:
            state[LEFT_KEY].copy_(_random_orthonormal(m, self.rank, gen, dtype))
        if right:
            state[RIGHT_KEY].copy_(_random_orthonormal(n, self.rank, gen, dtype).T)

    def _svd(self, grad: Tensor) -> tuple[Tensor, Tensor]:
        matrix = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()
        try:
            u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        except torch.linalg.LinAlgError:
            # A non-finite gradient: let the NaN reach the parameter rather than raise mid-step.
            k = min(matrix.shape)
            nan = float("nan")
            return matrix.new_full((matrix.shape[0], k), nan), matrix.new_full((k, matrix.shape[1]), nan)
        return u, vh

    def project(self, grad: Tensor, state: Mapping[str, Tensor], step: int) -> Tensor:
        """:math:`R`, after refreshing the basis if ``step`` (steps taken before) calls for it."""
        if self.needs_refresh(step):
            self.refresh_(grad, state, step)
        return self.apply(grad, state)

    def apply(self, grad: Tensor, state: Mapping[str, Tensor]) -> Tensor:
        """:math:`R` on the basis in ``state``, as it is (no refresh)."""
        left, right = LEFT_KEY in state, RIGHT_KEY in state
        # P^T is made row-major: the layout the official code's SVD output gives it, so the
        # matmul rounds identically (it costs a copy of r x n entries, small next to G P^T).
        if left and right:
            return torch.matmul(state[LEFT_KEY].t(), grad) @ state[RIGHT_KEY].t().contiguous()
        if right:
            return torch.matmul(grad, state[RIGHT_KEY].t().contiguous())
        return torch.matmul(state[LEFT_KEY].t(), grad)

    def project_back(self, low_rank: Tensor, state: Mapping[str, Tensor]) -> Tensor:
        r""":math:`\alpha` times the back-projection of ``low_rank`` (a new tensor)."""
        left, right = LEFT_KEY in state, RIGHT_KEY in state
        if left and right:
            full = torch.matmul(state[LEFT_KEY], low_rank) @ state[RIGHT_KEY]
        elif right:
            full = torch.matmul(low_rank, state[RIGHT_KEY])
        else:
            full = torch.matmul(state[LEFT_KEY], low_rank)
        return full * self.scale


def _mix(seed: int, step: int) -> int:
    """A 63-bit seed from ``(seed, step)`` (splitmix64), so successive refreshes differ."""
    x = (seed * 0x9E3779B97F4A7C15 + step + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


def _random_orthonormal(size: int, rank: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """A ``size x rank`` matrix with orthonormal columns, Haar-distributed (QR with sign fix)."""
    gaussian = torch.randn(size, rank, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    return q.to(dtype)


#: Modules whose 2-D weight is a lookup table rather than a linear map; never projected.
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)


def matrix_weights(
    model: nn.Module, target_modules: Iterable[str] = ("",), exclude: Iterable[str] = ()
) -> list[tuple[str, Tensor]]:
    """``(module name, weight)`` of every trainable weight matrix of a linear map in ``model``.

    A weight matrix is a 2-D parameter named ``weight`` or ``*_weight`` held directly by a module
    that is not an embedding (:data:`EMBEDDING_TYPES`): the weights of :class:`torch.nn.Linear`,
    of Hugging Face's ``Conv1D`` (GPT-2; it stores the transpose, ``(in, out)``), the
    ``in_proj_weight`` of :class:`torch.nn.MultiheadAttention`, and any custom layer built the same
    way. Embedding tables, and any weight tied to one (a language model head sharing the token
    embedding), are left out: their gradient touches only the rows of the tokens in the batch, and
    GaLore, Fira and FRUGAL keep them dense in their own scripts. Tensors of other dimensions
    (biases, norm gains, convolution kernels) are never matrices here.

    Only modules whose name contains one of ``target_modules`` are taken (``("",)``: every module),
    and none whose name is in ``exclude``; a parameter shared between modules appears once.
    """
    targets, excluded = tuple(target_modules), set(exclude)
    tables = {id(p) for m in model.modules() if isinstance(m, EMBEDDING_TYPES) for p in m.parameters()}
    found: dict[int, tuple[str, Tensor]] = {}
    for name, module in model.named_modules():
        if isinstance(module, EMBEDDING_TYPES) or name in excluded or not any(t in name for t in targets):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if pname == "weight" or pname.endswith("_weight"):
                if p.dim() == 2 and p.requires_grad and id(p) not in tables:
                    found.setdefault(id(p), (name, p))
    return list(found.values())


def lowrank_param_groups(
    model: nn.Module,
    rank: int,
    update_proj_gap: int | None = None,
    scale: float | None = None,
    proj_type: str | None = None,
    target_modules: Iterable[str] = ("attn", "mlp"),
) -> list[dict[str, Any]]:
    """Param groups for GaLore / Fira: the target weight matrices projected, the rest plain.

    Every weight matrix (:func:`matrix_weights`: ``nn.Linear``, Hugging Face ``Conv1D`` and the
    like, never embeddings) of a module whose name contains one of ``target_modules`` goes in a
    group carrying ``rank``; every other parameter (biases, norms, embeddings, heads) goes in a
    plain group first, as the GaLore and Fira scripts do. ``update_proj_gap``, ``scale`` and
    ``proj_type`` are written into the projected group only when given (Fira's ``divide_params``
    calls ``scale`` ``alpha``); left as None, the projected group takes the optimizer's own
    value, so ``GaLoreAdamW(groups, scale=0.25)`` or ``create_optimizer("galore_adamw", groups,
    scale=0.25)`` projects at scale 0.25. Empty groups are left out; a parameter shared between
    modules appears once.

    ``std`` and ``reverse_std`` pick the side from the shape, so a ``Conv1D`` weight (stored as
    ``(in, out)``) is projected onto the same subspace as the equivalent ``nn.Linear`` weight
    (``(out, in)``); ``left`` and ``right`` name sides of the tensor as stored, so they swap
    between the two layouts.

    Example:
        >>> import torch, steepest
        >>> model = torch.nn.ModuleDict({"attn": torch.nn.Linear(8, 8), "head": torch.nn.Linear(8, 2)})
        >>> groups = steepest.lowrank_param_groups(model, rank=2)
        >>> [len(g["params"]) for g in groups], groups[1]["rank"]
        ([3, 1], 2)
        >>> opt = steepest.GaLoreAdamW(groups, lr=1e-3, scale=0.25)
        >>> opt.param_groups[1]["scale"]
        0.25
    """
    projected = {id(p): p for _, p in matrix_weights(model, target_modules)}
    plain = [p for p in model.parameters() if id(p) not in projected]
    groups: list[dict[str, Any]] = []
    if plain:
        groups.append({"params": plain})
    if projected:
        options = {"update_proj_gap": update_proj_gap, "scale": scale, "proj_type": proj_type}
        groups.append(
            {"params": list(projected.values()), "rank": rank, **{k: v for k, v in options.items() if v is not None}}
        )
    return groups


def warn_nothing_projected(owner: str, how: str) -> None:
    """Warn that a low-rank optimizer was built with no projected group (it then runs as dense AdamW).

    ``how`` says how to build projected groups. The warning points at the user's line (the first
    caller outside steepest and torch).
    """
    warnings.warn(
        f"{owner}: no param group is projected, so every parameter gets plain AdamW (full-size state, "
        f"no memory saved). {how}",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
