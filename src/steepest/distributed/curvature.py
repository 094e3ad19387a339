"""Data-parallel training for optimizers that take Hessian-vector products (AdaHessian, Sophia-H, Newton-CG).

torch's DDP cannot wrap them: its reducer writes averaged gradients into ``.grad`` in place, which
autograd refuses for gradients built with ``backward(create_graph=True)`` ("a leaf Variable that
requires grad is being used in an in-place operation"), and the double-backward pass would not be
synchronized anyway. Instead every rank runs the *unwrapped* model on its shard and the optimizer
averages over the ranks what it computes locally:

* the gradients (once per step, after the Hessian-vector product is taken on the local graph),
* every Hessian-vector product (AdaHessian and Sophia-H: one per step; Newton-CG: one per CG
  iteration),
* Newton-CG's line-search gradients; its line-search losses come from
  :func:`~steepest.distributed.all_reduce_closure`, which every closure optimizer needs anyway.

The Hutchinson probes are drawn from per-parameter seeds (never the global RNG), so every rank
uses the same probes, and since the loss is a mean over equal shards, the average of the local
``H u`` is the global batch's ``H u``: the update equals a single process on the global batch, up
to float reduction order. Start every rank from the same parameters (same seed, or a broadcast).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from steepest.optim._estimators import RankAveraging


def average_over_ranks(tensors: list[Tensor], group: dist.ProcessGroup | None = None) -> None:
    """Replace each tensor by its mean over the ranks of ``group``, in place.

    One all-reduce per dtype: the tensors are flattened into one buffer, summed, divided by the
    world size and copied back.
    """
    world = dist.get_world_size(group)
    buckets: dict[torch.dtype, list[Tensor]] = {}
    for tensor in tensors:
        buckets.setdefault(tensor.dtype, []).append(tensor)
    for bucket in buckets.values():
        flat = torch.cat([t.detach().reshape(-1) for t in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat.div_(world)
        for tensor, mean in zip(bucket, flat.split([t.numel() for t in bucket]), strict=True):
            tensor.detach().copy_(mean.view_as(tensor))


def data_parallel_curvature(optimizer: torch.optim.Optimizer, group: dist.ProcessGroup | None = None) -> None:
    """Make a Hessian-vector-product optimizer average its gradients and products over ``group``.

    Use it instead of DDP (see the module docstring): train the unwrapped model, call this once
    after building the optimizer, and pass closures through :func:`all_reduce_closure`. Outside an
    initialized process group it does nothing, so the same script runs on one process.

    Example::

        model = Net()                       # not wrapped in DistributedDataParallel
        opt = steepest.AdaHessian(model.parameters(), lr=0.1)
        steepest.distributed.data_parallel_curvature(opt)

    Raises:
        TypeError: ``optimizer`` takes no Hessian-vector products (use DDP for it).
    """
    if not isinstance(optimizer, RankAveraging):
        raise TypeError(
            f"data_parallel_curvature: {type(optimizer).__name__} takes no Hessian-vector products; "
            "wrap the model in DistributedDataParallel instead"
        )
    if not (dist.is_available() and dist.is_initialized()):
        return
    optimizer.rank_averager = lambda tensors: average_over_ranks(tensors, group)
