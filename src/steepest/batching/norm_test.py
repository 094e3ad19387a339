r"""Adaptive batch sizes from the norm test and the inner-product test.

AdAdaGrad and AdAdaGrad-Norm (Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for
Adaptive Gradient Methods", 2024, arXiv:2402.11215) pair AdaGrad(-Norm) with batch sizes chosen
by tests on the per-example gradients :math:`g_i` of the current batch :math:`B` (size :math:`b`),
whose mean is :math:`\bar g`:

* **norm test** (Byrd, Chin, Nocedal, Wu 2012): with the sample variance
  :math:`V = \frac{1}{b-1}\sum_{i\in B}\|g_i - \bar g\|^2`, the batch is large enough when
  :math:`V / b \le \eta^2 \|\bar g\|^2`; otherwise the next batch has
  :math:`\lceil V / (\eta^2 \|\bar g\|^2)\rceil` examples.
* **inner-product test** (Bollapragada, Byrd, Nocedal 2018): with
  :math:`V_{ip} = \frac{1}{b-1}\sum_i (\langle g_i, \bar g\rangle - \|\bar g\|^2)^2`, the batch is
  large enough when :math:`V_{ip} / b \le \vartheta^2 \|\bar g\|^4`; otherwise the next has
  :math:`\lceil V_{ip} / (\vartheta^2 \|\bar g\|^4)\rceil`.

The batch size never shrinks (as in the paper's schemes) and is capped by ``max_batch_size``. The
tests are optimizer-agnostic: :class:`AdaptiveBatchSize` only reads gradients, so the same controller
drives AdAdaGrad-Norm (``steepest.AdaGradNorm``), AdaGrad, Adam or SGD. Per-example gradients come
from ``torch.func`` (``vmap`` over ``grad``); for models where that is too costly, ``num_chunks``
estimates the variance from micro-batch gradients instead (their variance is :math:`V` over the
micro-batch size).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Sampler

#: ``loss_fn(model, batch) -> mean loss over the batch's examples``.
LossFn = Callable[[nn.Module, Any], Tensor]

TESTS = ("norm", "inner_product")


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple | list) else batch
    return int(first.shape[0])


def _slice(batch: Any, index: slice) -> Any:
    if isinstance(batch, tuple | list):
        return type(batch)(b[index] for b in batch)
    return batch[index]


def per_example_gradients(model: nn.Module, loss_fn: LossFn, batch: Any) -> Tensor:
    """The flattened gradient of every example's loss, shape ``(b, n_params)``, by ``torch.func``.

    ``loss_fn`` receives a one-example batch (leading dimension 1) for each example; buffers are
    used as they are (no batch-norm statistics update is wanted here).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def single(p: dict[str, Tensor], example: Any) -> Tensor:
        one = _unsqueeze(example)
        out = loss_fn(_FunctionalModel(model, p, buffers), one)
        return out

    grads = vmap(grad(single), in_dims=(None, 0))(params, batch)
    return torch.cat([grads[n].reshape(grads[n].shape[0], -1) for n in names], dim=1)


def _unsqueeze(example: Any) -> Any:
    if isinstance(example, tuple | list):
        return type(example)(e.unsqueeze(0) for e in example)
    return example.unsqueeze(0)


class _FunctionalModel(nn.Module):
    """Calls ``model`` with given parameter and buffer tensors (``torch.func.functional_call``)."""

    def __init__(self, model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        super().__init__()
        self._model = [model]  # not registered: no parameter is visible through this wrapper
        self._tensors = {**buffers, **params}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward with the given tensors."""
        return functional_call(self._model[0], self._tensors, args, kwargs)


@dataclass(frozen=True)
class BatchTestResult:
    r"""One test on one batch.

    Attributes:
        batch_size: :math:`b`, examples in the tested batch.
        grad_sq_norm: :math:`\|\bar g\|^2`.
        variance: :math:`V` (norm test) or :math:`V_{ip}` (inner-product test).
        passed: whether the batch was large enough.
        next_batch_size: the batch size the controller moves to.
    """

    batch_size: int
    grad_sq_norm: float
    variance: float
    passed: bool
    next_batch_size: int


def gradient_statistics(grads: Tensor, test: str = "norm") -> tuple[float, float]:
    r"""``(||mean||^2, V)`` from per-example (or per-chunk) gradients ``grads`` of shape ``(b, n)``, b >= 2."""
    if grads.shape[0] < 2:
        raise ValueError("the tests need at least two per-example gradients")
    g = grads.to(torch.float64)
    mean = g.mean(dim=0)
    sq = float(mean.dot(mean))
    if test == "norm":
        variance = float(((g - mean) ** 2).sum()) / (g.shape[0] - 1)
    else:
        variance = float(((g @ mean - sq) ** 2).sum()) / (g.shape[0] - 1)
    return sq, variance


class AdaptiveBatchSize:
    r"""The batch-size controller of AdAdaGrad(-Norm): call :meth:`observe` on each (or every k-th) batch.

    Args:
        initial: the first batch size.
        eta: the norm test's :math:`\eta` (or the inner-product test's :math:`\vartheta`); smaller values
            demand larger batches. No universal default exists: the paper tunes it; 0.5 is a middle value.
        test: ``"norm"`` (default) or ``"inner_product"``.
        max_batch_size: cap (e.g. the dataset size); ``None`` for none.
        num_chunks: 0 to use exact per-example gradients (``torch.func``); k >= 2 to estimate the
            variance from k micro-batch gradients (cheaper, noisier).

    Raises:
        ValueError: ``initial < 2``, ``eta <= 0``, an unknown test, ``max_batch_size < initial`` or
            ``num_chunks == 1``.

    Example:
        >>> ctl = AdaptiveBatchSize(initial=8, eta=0.5)
        >>> ctl.update(grad_sq_norm=1.0, variance=100.0, batch_size=8).next_batch_size  # 100/8 > 0.25
        400
        >>> ctl.batch_size
        400
    """

    def __init__(
        self,
        initial: int,
        eta: float = 0.5,
        test: str = "norm",
        max_batch_size: int | None = None,
        num_chunks: int = 0,
    ) -> None:
        if isinstance(initial, bool) or not isinstance(initial, int) or initial < 2:
            raise ValueError(f"initial batch size must be an integer >= 2, got {initial!r}")
        if not (isinstance(eta, int | float) and math.isfinite(eta) and eta > 0):
            raise ValueError(f"eta must be a positive finite number, got {eta!r}")
        if test not in TESTS:
            raise ValueError(f"unknown test {test!r}; expected one of {TESTS}")
        if max_batch_size is not None and max_batch_size < initial:
            raise ValueError(f"max_batch_size={max_batch_size} is below the initial batch size {initial}")
        if num_chunks == 1 or num_chunks < 0:
            raise ValueError(f"num_chunks must be 0 (per-example) or >= 2, got {num_chunks!r}")
        self.eta, self.test, self.max_batch_size, self.num_chunks = float(eta), test, max_batch_size, num_chunks
        self.batch_size = initial
        self.history: list[BatchTestResult] = []

    def update(self, grad_sq_norm: float, variance: float, batch_size: int) -> BatchTestResult:
        """Apply the test to statistics of a batch of ``batch_size`` examples; move the batch size."""
        power = 1 if self.test == "norm" else 2
        threshold = self.eta**2 * grad_sq_norm**power
        passed = variance / batch_size <= threshold
        target = self.batch_size
        if not passed:
            target = math.ceil(variance / threshold) if threshold > 0 else self.max_batch_size or self.batch_size
            target = max(target, self.batch_size)
        if self.max_batch_size is not None:
            target = min(target, self.max_batch_size)
        self.batch_size = int(target)
        result = BatchTestResult(batch_size, grad_sq_norm, variance, passed, self.batch_size)
        self.history.append(result)
        return result

    def observe(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> BatchTestResult:
        """Compute the test statistics on ``batch`` at the model's current parameters and update.

        ``loss_fn(model, batch)`` must return the mean loss over the batch. ``.grad`` is not touched.
        """
        b = _batch_size(batch)
        if self.num_chunks:
            k = min(self.num_chunks, b)
            size = b // k
            params = [p for p in model.parameters() if p.requires_grad]
            rows = []
            for c in range(k):
                loss = loss_fn(model, _slice(batch, slice(c * size, (c + 1) * size)))
                rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
            sq, chunk_variance = gradient_statistics(torch.stack(rows), self.test)
            # A chunk mean of `size` examples has 1/size of the per-example variance.
            return self.update(sq, chunk_variance * size, b)
        sq, variance = gradient_statistics(per_example_gradients(model, loss_fn, batch), self.test)
        return self.update(sq, variance, b)

    def state_dict(self) -> dict[str, Any]:
        """The current batch size (the history is a log, not state)."""
        return {"batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the batch size; raises ``ValueError`` on a malformed state."""
        size = state.get("batch_size") if isinstance(state, dict) else None
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"AdaptiveBatchSize.load_state_dict: invalid batch_size {size!r}")
        self.batch_size = size


class AdaptiveBatchSampler(Sampler[list[int]]):
    """A batch sampler whose batch size follows an :class:`AdaptiveBatchSize` (use as ``batch_sampler=``).

    Each epoch is a seeded permutation of the dataset; every batch takes the controller's current
    size, so a change made by :meth:`AdaptiveBatchSize.observe` applies from the next batch on.

    Example:
        >>> ctl = AdaptiveBatchSize(initial=4)
        >>> sampler = AdaptiveBatchSampler(10, ctl, seed=0)
        >>> [len(b) for b in sampler]
        [4, 4, 2]
    """

    def __init__(
        self, data: Sized | int, controller: AdaptiveBatchSize, seed: int = 0, drop_last: bool = False
    ) -> None:
        self.size = data if isinstance(data, int) else len(data)
        self.controller, self.seed, self.drop_last = controller, seed, drop_last
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        self.epoch += 1
        start = 0
        while start < self.size:
            end = start + self.controller.batch_size
            if end > self.size and self.drop_last:
                return
            yield order[start:end]
            start = end

    def __len__(self) -> int:
        """Batches in an epoch at the current batch size (the size may change during the epoch)."""
        b = self.controller.batch_size
        return self.size // b if self.drop_last else -(-self.size // b)
