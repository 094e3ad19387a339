r"""Compressed-gradient communication for ``torch.distributed`` DDP (``model.register_comm_hook``).

* :func:`ef_sign_hook` / :class:`SignCompressionState`: EF-SignSGD (Karimireddy, Rebjock, Stich, Jaggi,
  ICML 2019, arXiv:1901.09847), scaled sign with ``scale="l1"`` (the paper) or the 1-bit Adam form
  ``scale="l2"`` (Tang et al., arXiv:2102.02888); sign bits packed 8 per byte plus one scale per tensor.
* :func:`two_way_quantized_hook` / :class:`QuantizedCompressionState`: two-way quantization with worker
  and server error feedback, Efficient-Adam style (Chen, Shen, Liu, Luo, IEEE TSP 2023,
  arXiv:2205.14473); rank r is the "server" of chunk r of each bucket.
* :class:`CommStats`: bytes sent by the hook against an uncompressed all-reduce.
* :func:`compress_fsdp_gradients` / :class:`CompressedReduceScatter`: the same compressors (worker side,
  with error feedback) as FSDP2's reduce-scatter, through ``FSDPModule.set_custom_reduce_scatter``.
* :func:`all_reduce_closure`: a closure returning the global-batch loss, so that line searches,
  Polyak steps and zeroth-order methods make the same decision on every rank (ForwardGradient:
  the loss and its forward-mode tangent are both averaged).
* :func:`data_parallel_curvature`: AdaHessian, Sophia-H and Newton-CG, which DDP cannot wrap
  (``create_graph`` gradients), average their gradients and Hessian-vector products themselves.

Which engine each optimizer runs under (tested on gloo, 2 and 4 ranks, equal to one process on
the global batch):

* DDP (``DistributedDataParallel``): every registered optimizer except the three above; BlockLLM
  needs ``find_unused_parameters=True`` (it freezes the tensors it did not select).
* FSDP2 (``fully_shard``, DTensor parameters): the elementwise and norm-based optimizers, line
  searches, Polyak steps and zeroth-order methods (each rank draws the full-shape direction from
  the shared seed and keeps its shard). Refused at construction, with what they need: AdaHessian,
  Sophia-H, Newton-CG (create_graph gradients), BlockLLM and M-FAC (whole tensors / whole
  gradients), MDB (one flat coordinate vector), ForwardGradient (tangents), the projected groups
  of GaLore, Fira and FRUGAL (whole matrices), and Adam-mini's unevenly sharded blocked tensors.

Checkpoints: ``torch.distributed.checkpoint`` (``get_state_dict`` / ``set_state_dict`` with
``dcp.save`` / ``dcp.load``) round-trips every optimizer under DDP and FSDP2 bitwise (tested; DCP
keeps only ``state`` and ``param_groups``, so BlockLLM keeps its optimizer-wide selection in its
first param group). Before
``get_state_dict`` on a fresh optimizer, call ``optimizer.init_state()``: DCP would otherwise create
the state by calling ``step()`` with no closure, which closure and curvature optimizers refuse.

Failure behaviour: steepest adds no retries or fallbacks to torch.distributed. A rank that dies
mid-training makes the survivors' next collective raise (gloo: a connection error at once, or
after the process group's ``timeout``), so training stops with an error instead of continuing on
a subset of ranks with diverging replicas (tested: the survivor takes no further step).

Example::

    state = SignCompressionState()
    ddp_model.register_comm_hook(state, ef_sign_hook)
    ...
    torch.save({"model": ..., "optim": ..., "hook": state.state_dict()}, f"ckpt_rank{rank}.pt")
"""

from steepest.distributed.closures import all_reduce_closure
from steepest.distributed.compressors import (
    dequantize_rows,
    pack_signs,
    quantize_rows,
    scaled_sign,
    unpack_signs,
)
from steepest.distributed.curvature import average_over_ranks, data_parallel_curvature
from steepest.distributed.fsdp import CompressedReduceScatter, compress_fsdp_gradients
from steepest.distributed.hooks import (
    CommStats,
    CompressionState,
    QuantizedCompressionState,
    SignCompressionState,
    ef_sign_hook,
    two_way_quantized_hook,
)

__all__ = [
    "CommStats",
    "CompressedReduceScatter",
    "CompressionState",
    "QuantizedCompressionState",
    "SignCompressionState",
    "all_reduce_closure",
    "average_over_ranks",
    "compress_fsdp_gradients",
    "data_parallel_curvature",
    "dequantize_rows",
    "ef_sign_hook",
    "pack_signs",
    "quantize_rows",
    "scaled_sign",
    "two_way_quantized_hook",
    "unpack_signs",
]
