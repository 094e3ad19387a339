r"""Hessian-vector products, two ways, for the whole model or one block.

* :func:`hvp` — double backward (Pearlmutter's trick through reverse-over-reverse autograd):
  :math:`Hv = \nabla_\theta (\nabla_\theta L(\theta)^\top v)`, from a loss closure.
* :func:`hvp_func` — forward-over-reverse with :mod:`torch.func`: ``jvp(grad(f), (θ,), (v,))`` where
  ``f`` evaluates the loss through :func:`torch.func.functional_call` (falling back to
  reverse-over-forward, ``grad(θ ↦ jvp(f, θ, v))``, where a torch kernel lacks a working
  forward-over-reverse rule, e.g. ``mse_loss`` in torch 2.13).
* :class:`HessianOperator` — the (block of the) Hessian of ``loss_fn(model, batch)`` as a linear
  operator on flat vectors, backed by either method; what Hutchinson, Lanczos and SLQ consume.

Reference: Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 1994.

The loss function contract of the diagnostics: ``loss_fn(model, batch) -> Tensor`` runs the model on
the batch and returns the scalar loss, **without** calling ``backward`` (unlike an optimizer closure).
A model with dropout or batch-norm statistics should be in ``eval()`` mode (or otherwise
deterministic): the ``"func"`` method re-runs the forward pass for every product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

#: ``loss_fn(model, batch) -> scalar loss`` (no ``backward`` inside).
LossFn = Callable[[nn.Module, Any], Tensor]


def hvp(loss: Callable[[], Tensor], params: Sequence[Tensor], vectors: Sequence[Tensor]) -> list[Tensor]:
    r"""Hessian-vector product by double backward: :math:`\nabla_\theta(\nabla_\theta L^\top v)`.

    Args:
        loss: a closure returning the scalar loss as a function of ``params`` (it must not call
            ``backward``). Parameters outside ``params`` are held fixed, so with a subset of the
            model's parameters this is the block product :math:`H_{bb} v_b`.
        params: the tensors to differentiate with respect to (``requires_grad=True``).
        vectors: one tensor per parameter, same shapes.

    Returns:
        :math:`Hv`, one tensor per parameter. ``.grad`` fields are not touched.

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> hvp(lambda: (x**3).sum(), [x], [torch.tensor([1.0, 1.0])])  # H = diag(6x)
        [tensor([ 6., 12.])]
    """
    params = list(params)
    _check_vectors(params, vectors)
    with torch.enable_grad():
        value = loss()
        grads = torch.autograd.grad(value, params, create_graph=True, allow_unused=True)
        return _second_backward(params, list(grads), vectors, retain_graph=False)


def hvp_func(model: nn.Module, loss_fn: LossFn, batch: Any, vectors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    r"""Hessian-vector product by :mod:`torch.func`: forward-mode ``jvp`` over reverse-mode ``grad``.

    Args:
        model: the model; its current parameter values are the point :math:`\theta`.
        loss_fn: ``loss_fn(model, batch) -> scalar loss`` (it runs under
            :func:`torch.func.functional_call`, so it must be functorch-compatible: no ``.item()``).
        batch: passed to ``loss_fn`` unchanged.
        vectors: ``{parameter name: v}``; the keys choose the block, every other parameter is fixed.

    Returns:
        ``{parameter name: (H_{bb} v)}``.

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        >>> loss = lambda m, x: 0.5 * m(x).pow(2).sum()  # H = x^T x
        >>> hvp_func(lin, loss, torch.tensor([[1.0, 1.0]]), {"weight": torch.tensor([[1.0, 0.0]])})
        {'weight': tensor([[1., 1.]])}
    """
    backend = _FuncBackend(model, loss_fn, batch)
    names = list(vectors)
    return dict(zip(names, backend.matvec(names, [vectors[n] for n in names]), strict=True))


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric linear operator on flat vectors: what Hutchinson, Lanczos and SLQ need."""

    @property
    def dim(self) -> int:
        """Length of the vectors the operator acts on."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the vectors."""
        ...

    @property
    def device(self) -> torch.device:
        """Device of the vectors."""
        ...

    def matvec_flat(self, v: Tensor) -> Tensor:
        """The product with a flat vector of length :attr:`dim`."""
        ...


class MatrixOperator:
    """An explicit symmetric matrix as a :class:`LinearOperator` (for tests and small problems).

    Example:
        >>> MatrixOperator(torch.diag(torch.tensor([1.0, 2.0]))).matvec_flat(torch.ones(2))
        tensor([1., 2.])
    """

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix

    @property
    def dim(self) -> int:
        """Side of the matrix."""
        return int(self.matrix.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """The matrix dtype."""
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        """The matrix device."""
        return self.matrix.device

    def matvec_flat(self, v: Tensor) -> Tensor:
        """``matrix @ v``."""
        return self.matrix @ v


class HessianOperator:
    r"""The Hessian of ``loss_fn(model, batch)``, restricted to a block of parameters, as an operator.

    With ``params`` a subset of the model's parameters this is the diagonal block :math:`H_{bb}`
    (every other parameter held fixed); :meth:`block` derives such an operator from a whole-model one
    and, with the autograd method, shares its graph (one forward and one backward for all blocks).

    Args:
        model: the model (its parameters at call time are the point of evaluation).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``, without ``backward``.
        batch: passed to ``loss_fn``.
        params: parameter names of the block (default: every trainable parameter).
        method: ``"autograd"`` (default): one forward + backward with ``create_graph=True`` at
            construction, then each product is one more backward through the kept graph (the memory
            of that graph is held until the operator is dropped). ``"func"``: :func:`hvp_func`, which
            re-runs forward and backward for each product and keeps nothing between products.
        all_reduce: under :mod:`torch.distributed`, average each product over the default process
            group, so that the operator is the Hessian of the global-batch loss (every rank must then
            call with the same vectors: seed the probe generators identically). Default False: the
            Hessian of this rank's local batch.

    Example:
        >>> lin = nn.Linear(2, 1)
        >>> op = HessianOperator(lin, lambda m, x: m(x).pow(2).mean(), torch.ones(4, 2))
        >>> op.dim, op.names
        (3, ['weight', 'bias'])
        >>> op.matvec_flat(torch.tensor([0.0, 0.0, 1.0]))  # second derivative of mean (w.x+b)^2
        tensor([2., 2., 2.])
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        params: Sequence[str] | None = None,
        *,
        method: Literal["autograd", "func"] = "autograd",
        all_reduce: bool = False,
        _backend: _Backend | None = None,
    ) -> None:
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        names = list(trainable) if params is None else list(params)
        if not names:
            raise ValueError("the block has no parameters")
        unknown = [n for n in names if n not in trainable]
        if unknown:
            raise ValueError(f"not trainable parameters of the model: {unknown}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {names}")
        self.model, self.loss_fn, self.batch = model, loss_fn, batch
        self.names = names
        self.method = method
        self.all_reduce = all_reduce
        self.shapes = [trainable[n].shape for n in names]
        self.numels = [trainable[n].numel() for n in names]
        first = trainable[names[0]]
        self._dtype, self._device = first.dtype, first.device
        if _backend is not None:
            self._backend = _backend
        elif method == "autograd":
            self._backend = _AutogradBackend(model, loss_fn, batch, names)
        elif method == "func":
            self._backend = _FuncBackend(model, loss_fn, batch)
        else:
            raise ValueError(f"method must be 'autograd' or 'func', got {method!r}")

    @property
    def dim(self) -> int:
        """Number of scalar parameters in the block."""
        return sum(self.numels)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the block's (first) parameter."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Device of the block's (first) parameter."""
        return self._device

    @property
    def loss(self) -> float | None:
        """The loss value at the point (autograd method; ``None`` for ``"func"``)."""
        return self._backend.loss_value

    def block(self, params: Sequence[str]) -> HessianOperator:
        """The diagonal block :math:`H_{bb}` for a subset of this operator's parameters.

        Raises:
            ValueError: a name outside this operator's parameters.
        """
        outside = [n for n in params if n not in self.names]
        if outside:
            raise ValueError(f"parameters outside this operator: {outside}")
        return HessianOperator(
            self.model,
            self.loss_fn,
            self.batch,
            params,
            method=self.method,
            all_reduce=self.all_reduce,
            _backend=self._backend,
        )

    def matvec(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """The product with one tensor per parameter of the block (shapes as the parameters)."""
        if len(vectors) != len(self.names):
            raise ValueError(f"expected {len(self.names)} vectors, got {len(vectors)}")
        out = self._backend.matvec(self.names, list(vectors))
        if self.all_reduce:
            out = _average_over_ranks(out)
        return out

    def matvec_flat(self, v: Tensor) -> Tensor:
        """The product with a flat vector of length :attr:`dim` (parameter order of :attr:`names`)."""
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {tuple(v.shape)}")
        return self.flatten(self.matvec(self.unflatten_list(v)))

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Concatenate one tensor per parameter into a flat vector."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten_list(self, v: Tensor) -> list[Tensor]:
        """Split a flat vector into tensors shaped like the block's parameters."""
        return [part.view(shape) for part, shape in zip(v.split(self.numels), self.shapes, strict=True)]

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into ``{parameter name: tensor}``."""
        return dict(zip(self.names, self.unflatten_list(v), strict=True))

    def to_dense(self) -> Tensor:
        """The block as an explicit ``dim x dim`` matrix, one product per column (small blocks only)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec_flat(eye[i]) for i in range(self.dim)], dim=1)


class _Backend(Protocol):
    loss_value: float | None

    def matvec(self, names: list[str], vectors: list[Tensor]) -> list[Tensor]: ...


class _AutogradBackend:
    """Keeps the first-order gradients with their graph; each product is one more backward."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any, names: list[str]) -> None:
        params = dict(model.named_parameters())
        self.params = {n: params[n] for n in names}
        with torch.enable_grad():
            value = loss_fn(model, batch)
            _check_scalar(value)
            grads = torch.autograd.grad(value, list(self.params.values()), create_graph=True, allow_unused=True)
        self.grads = dict(zip(names, grads, strict=True))
        self.loss_value: float | None = float(value.detach())

    def matvec(self, names: list[str], vectors: list[Tensor]) -> list[Tensor]:
        params: list[Tensor] = [self.params[n] for n in names]
        _check_vectors(params, vectors)
        with torch.enable_grad():
            return _second_backward(params, [self.grads[n] for n in names], vectors, retain_graph=True)


class _FuncBackend:
    """Forward-over-reverse through :func:`torch.func.functional_call`; stateless between products."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> None:
        self.wrapper = _LossModule(model, loss_fn)
        self.batch = batch
        self.loss_value: float | None = None

    def matvec(self, names: list[str], vectors: list[Tensor]) -> list[Tensor]:
        all_params = dict(self.wrapper.model.named_parameters())
        unknown = [n for n in names if n not in all_params]
        if unknown:
            raise ValueError(f"not parameters of the model: {unknown}")
        block = {n: all_params[n].detach() for n in names}
        _check_vectors(list(block.values()), vectors)
        fixed = {f"model.{n}": p.detach() for n, p in all_params.items() if n not in block}
        buffers = {f"model.{n}": b for n, b in self.wrapper.model.named_buffers()}

        def loss_of(block_params: dict[str, Tensor]) -> Tensor:
            merged = {**fixed, **buffers, **{f"model.{n}": p for n, p in block_params.items()}}
            value = torch.func.functional_call(self.wrapper, merged, (self.batch,))
            _check_scalar(value)
            return value

        tangents = {n: v.to(block[n].dtype) for n, v in zip(names, vectors, strict=True)}
        try:
            out = torch.func.jvp(torch.func.grad(loss_of), (block,), (tangents,))[1]
        except RuntimeError as err:
            # torch 2.13: the forward-mode rule of some backward kernels (mse_loss_backward) writes into
            # an immutable ZeroTensor; reverse-over-forward computes the same product without it.
            if "ZeroTensor" not in str(err):
                raise
            out = torch.func.grad(lambda b: torch.func.jvp(loss_of, (b,), (tangents,))[1])(block)
        return [out[n] for n in names]


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``, so :func:`functional_call` can swap the parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def _second_backward(
    params: list[Tensor], grads: list[Tensor | None], vectors: Sequence[Tensor], *, retain_graph: bool
) -> list[Tensor]:
    # Parameters the loss does not depend on (or depends on only linearly) have a zero Hessian row.
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if not live:
        return out
    dot = torch.stack([(g * vectors[i]).sum() for i in live if (g := grads[i]) is not None]).sum()
    hv = torch.autograd.grad(dot, [params[i] for i in live], retain_graph=retain_graph, allow_unused=True)
    for i, h in zip(live, hv, strict=True):
        if h is not None:
            out[i] = h.detach()
    return out


def _check_vectors(params: Sequence[Tensor], vectors: Sequence[Tensor]) -> None:
    if len(params) != len(vectors):
        raise ValueError(f"expected {len(params)} vectors (one per parameter), got {len(vectors)}")
    for p, v in zip(params, vectors, strict=True):
        if p.shape != v.shape:
            raise ValueError(f"vector shape {tuple(v.shape)} does not match parameter shape {tuple(p.shape)}")


def _check_scalar(value: Tensor) -> None:
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor (reduce the loss over the batch)")


def _average_over_ranks(tensors: list[Tensor]) -> list[Tensor]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("all_reduce=True needs an initialized torch.distributed process group")
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]
