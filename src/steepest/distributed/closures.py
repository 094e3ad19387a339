"""Closures whose loss is the same on every rank: what line searches and zeroth-order methods need.

Under DDP every rank sees its own shard of the global batch. Gradients are averaged by DDP during
``backward()``, but the *loss* a closure returns is the local shard's. Optimizers that decide
something from the loss value — a line search accepting or shrinking a step (SLS, PoNoS, MDB),
a Polyak step size (SPS), a zeroth-order estimate from two loss values (MeZO and kin) — would then
take different steps on different ranks and the replicas would silently diverge.

:func:`all_reduce_closure` wraps the training closure so that it returns the mean of the ranks'
losses, the loss of the global batch when shards have equal size. Every rank then makes the same
decision from the same numbers. The random perturbations of the zeroth-order methods are already
the same on every rank: they are regenerated from per-parameter seeds derived from the optimizer's
``seed`` hyperparameter and the parameter's position, never from the global RNG (see
:mod:`steepest.optim.mezo`); give every rank the same ``seed`` (the default) and the same model.

The mean costs one all-reduce of one scalar per closure call. The closure contract is unchanged:
the wrapped closure still zeroes the gradients, computes the loss and calls ``backward()`` only when
grad is enabled (DDP averages those gradients), and the wrapper only replaces the returned value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwad
import torch.distributed as dist
from torch import Tensor


def all_reduce_closure(
    closure: Callable[[], Tensor], group: dist.ProcessGroup | None = None
) -> Callable[[], Tensor]:
    """``closure`` returning the mean of its loss over the ranks of ``group`` (default: the world).

    The returned loss is a detached 0-dim tensor (the closure has already run ``backward()`` on the
    local loss when gradients are enabled). A forward-mode dual loss (ForwardGradient's closures)
    comes back as a dual number whose value and tangent are both averaged. Outside an initialized
    process group the closure is returned unchanged, so the same training script runs on one process.

    Example::

        def closure():
            optimizer.zero_grad()
            loss = loss_fn(ddp_model(x_shard), y_shard)
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        optimizer.step(all_reduce_closure(closure))
    """
    if not (dist.is_available() and dist.is_initialized()):
        return closure
    world = dist.get_world_size(group)

    def global_closure() -> Tensor:
        loss = closure()
        if not isinstance(loss, Tensor):
            raise TypeError(f"all_reduce_closure: the closure must return a tensor loss, got {type(loss).__name__}")
        primal, tangent = fwad.unpack_dual(loss)
        if tangent is None:
            total = loss.detach().to(torch.float64).clone()
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
            return (total / world).to(loss.dtype)
        # A forward-mode loss (ForwardGradient): average the value and its directional derivative.
        pair = torch.stack([primal.detach().reshape(()), tangent.detach().reshape(())]).to(torch.float64)
        dist.all_reduce(pair, op=dist.ReduceOp.SUM, group=group)
        mean = (pair / world).to(loss.dtype)
        return fwad.make_dual(mean[0], mean[1])

    return global_closure
