"""Hessian-diagonal estimators shared by the curvature optimizers (AdaHessian, Sophia).

Two estimators, one module, no copies in the optimizers:

* :class:`Hutchinson`: ``u ⊙ (H u)`` with a random probe ``u`` (Rademacher or Gaussian), one
  Hessian-vector product by double backward through gradients built with
  ``backward(create_graph=True)``. Its expectation is ``diag(H)`` (Bekas, Kokiopoulou, Saad 2007).
  AdaHessian (Yao et al. 2021) and Sophia-H (Liu et al. 2024) use it.
* :class:`GaussNewtonBartlett`: ``B · ĝ ⊙ ĝ`` where ``ĝ`` is the gradient of the mini-batch loss
  computed with labels **sampled from the model's own predictive distribution** (Sophia paper,
  Algorithm 2). Its expectation is the diagonal of the Gauss-Newton matrix for losses of the
  form ``ℓ(softmax(logits), y)``. Sophia-G uses it; :func:`sampled_cross_entropy` builds the loss.

Probes are reproducible and resumable: each probe tensor is drawn from a generator seeded by
``(seed, step, position of the parameter in the optimizer)`` (a counter-based stream), so the
random state *is* the optimizer's saved step counter and a ``state_dict`` round trip continues
bitwise without storing generator bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: Probe distributions: Rademacher (±1 with probability 1/2) or standard Gaussian.
PROBES = ("rademacher", "gaussian")

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One round of SplitMix64: a well-mixed 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def probe_seed(seed: int, step: int, index: int) -> int:
    """The generator seed for the probe of parameter ``index`` at ``step`` (63 bits, deterministic)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ step) ^ index) >> 1


def draw_probe(like: Tensor, distribution: str, seed: int) -> Tensor:
    """A probe shaped like ``like`` from a generator seeded with ``seed``.

    Rademacher entries are ±1 (probability 1/2 each); Gaussian entries are N(0, 1). Drawn in
    float32 (float64 for float64 tensors) on ``like``'s device, then cast to its dtype.
    """
    generator = torch.Generator(device=like.device).manual_seed(seed)
    draw_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if distribution == "rademacher":
        bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
        return (bits * 2 - 1).to(like.dtype)
    if distribution == "gaussian":
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=draw_dtype).to(like.dtype)
    raise ValueError(f"unknown probe distribution {distribution!r}; expected one of {PROBES}")


#: Averages a list of tensors in place over data-parallel ranks (see :class:`RankAveraging`).
TensorAverager = Callable[[list[Tensor]], None]


class RankAveraging:
    """Mixin for optimizers that take Hessian-vector products: optional averaging over ranks.

    DDP cannot synchronize ``backward(create_graph=True)`` gradients, so data-parallel training with
    these optimizers runs the unwrapped model on every rank and lets the optimizer average what it
    computes locally: gradients and Hessian-vector products (probes are seeded, so every rank draws
    the same ones). :func:`steepest.distributed.data_parallel_curvature` sets :attr:`rank_averager`;
    without it (the default) nothing is averaged.
    """

    rank_averager: TensorAverager | None = None

    def _average_over_ranks(self, tensors: list[Tensor]) -> None:
        if self.rank_averager is not None and tensors:
            self.rank_averager(tensors)


def require_graph(owner: str, grads: Sequence[Tensor]) -> None:
    """Raise ``RuntimeError`` unless the gradients were built with ``create_graph=True``.

    A gradient without ``grad_fn`` has a zero Hessian block only if the loss is linear in every
    parameter; when *no* gradient carries a graph, the caller forgot ``create_graph=True``.
    """
    if grads and all(g.grad_fn is None for g in grads):
        raise RuntimeError(
            f"{owner} needs Hessian-vector products: the gradients have no autograd graph. Compute them "
            "with loss.backward(create_graph=True) (a closure must do so when the optimizer's "
            "capabilities say needs_create_graph)."
        )


def hessian_vector_products(
    params: Sequence[Tensor], grads: Sequence[Tensor], vectors: Sequence[Tensor]
) -> list[Tensor]:
    """``H v`` for the Hessian of the loss whose gradients ``grads`` (with graph) w.r.t. ``params`` are given.

    One double-backward pass: ``∇_θ <grads, v>``. Gradients without a graph (constant in θ)
    contribute nothing; parameters the graph does not reach get a zero product. The graph is
    retained so the caller can take more products; release it with :func:`release_graph`.
    """
    outputs = [g for g in grads if g.grad_fn is not None]
    seeds = [v for g, v in zip(grads, vectors, strict=True) if g.grad_fn is not None]
    if not outputs:
        return [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        products = torch.autograd.grad(outputs, list(params), grad_outputs=seeds, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if hv is None else hv.detach() for p, hv in zip(params, products, strict=True)]


def release_graph(params: Sequence[Tensor]) -> None:
    """Replace each ``p.grad`` by a detached copy of its value, dropping the double-backward graph.

    ``backward(create_graph=True)`` makes a reference cycle parameter -> grad -> graph ->
    parameter that Python's collector cannot see; without this the graph of every step would be
    kept alive until the user next clears the gradients.
    """
    for p in params:
        if p.grad is not None and p.grad.grad_fn is not None:
            p.grad = p.grad.detach()


class Hutchinson:
    """Hutchinson's diagonal estimator ``D = u ⊙ (H u)``, ``E[D] = diag(H)``.

    Args:
        distribution: ``"rademacher"`` (AdaHessian, and the variance-minimising choice) or
            ``"gaussian"`` (the Sophia paper's ``u ~ N(0, I)``).

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> (g,) = torch.autograd.grad((w ** 2 * torch.tensor([3.0, 5.0])).sum(), w, create_graph=True)
        >>> d, _, _ = Hutchinson("rademacher").estimate([w], [g], seeds=[0])
        >>> d[0]
        tensor([ 6., 10.])
    """

    def __init__(self, distribution: str = "rademacher") -> None:
        if distribution not in PROBES:
            raise ValueError(f"unknown probe distribution {distribution!r}; expected one of {PROBES}")
        self.distribution = distribution

    def probes(self, params: Sequence[Tensor], seeds: Sequence[int]) -> list[Tensor]:
        """One probe per parameter, each from its own seeded generator."""
        return [draw_probe(p, self.distribution, s) for p, s in zip(params, seeds, strict=True)]

    def estimate(
        self, params: Sequence[Tensor], grads: Sequence[Tensor], seeds: Sequence[int]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Return ``(u ⊙ Hu, Hu, u)`` per parameter; ``grads`` must carry a graph."""
        probes = self.probes(params, seeds)
        products = hessian_vector_products(params, grads, probes)
        diagonal = [u * hv for u, hv in zip(probes, products, strict=True)]
        return diagonal, products, probes


class GaussNewtonBartlett:
    """The Gauss-Newton-Bartlett diagonal estimator ``ĥ = B · ĝ ⊙ ĝ`` (Sophia, Algorithm 2).

    ``ĝ`` is the gradient of the mean loss over a mini-batch of ``B`` examples whose labels were
    sampled from the model's predictive distribution (:func:`sampled_cross_entropy`). By
    Bartlett's second identity, ``E[B ĝ ĝᵀ]`` is the Gauss-Newton matrix of the batch loss.
    """

    def estimate(self, grads: Sequence[Tensor], batch_size: float = 1.0) -> list[Tensor]:
        """``batch_size · ĝ ⊙ ĝ`` per tensor (the official code folds ``B`` into the step instead)."""
        return [g.detach() * g.detach() * batch_size for g in grads]


def sample_labels(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Labels ``ŷ ~ Categorical(softmax(logits))`` over the last dimension (no gradient)."""
    with torch.no_grad():
        probs = torch.softmax(logits.detach().float(), dim=-1).reshape(-1, logits.shape[-1])
        labels = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])
    return labels


def sampled_cross_entropy(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mean cross-entropy of ``logits`` against labels sampled from ``softmax(logits)``.

    This is the loss whose gradient the Gauss-Newton-Bartlett estimator squares: use it in the
    closure given to :meth:`steepest.SophiaG.update_hessian`.

    Example:
        >>> import torch
        >>> logits = torch.zeros(4, 3, requires_grad=True)
        >>> loss = sampled_cross_entropy(logits, torch.Generator().manual_seed(0))
        >>> round(float(loss.detach()), 4)  # log(3): every label has probability 1/3
        1.0986
    """
    labels = sample_labels(logits, generator)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
