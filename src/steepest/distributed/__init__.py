r"""Compressed-gradient communication for ``torch.distributed`` DDP (``model.register_comm_hook``).

* :func:`ef_sign_hook` / :class:`SignCompressionState`: EF-SignSGD (Karimireddy, Rebjock, Stich, Jaggi,
  ICML 2019, arXiv:1901.09847), scaled sign with ``scale="l1"`` (the paper) or the 1-bit Adam form
  ``scale="l2"`` (Tang et al., arXiv:2102.02888); sign bits packed 8 per byte plus one scale per tensor.
* :func:`two_way_quantized_hook` / :class:`QuantizedCompressionState`: two-way quantization with worker
  and server error feedback, Efficient-Adam style (Chen, Shen, Liu, Luo, IEEE TSP 2023,
  arXiv:2205.14473); rank r is the "server" of chunk r of each bucket.
* :class:`CommStats`: bytes sent by the hook against an uncompressed all-reduce.
* :func:`all_reduce_closure`: a closure returning the global-batch loss, so that line searches,
  Polyak steps and zeroth-order methods make the same decision on every rank.

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
    "CompressionState",
    "QuantizedCompressionState",
    "SignCompressionState",
    "all_reduce_closure",
    "dequantize_rows",
    "ef_sign_hook",
    "pack_signs",
    "quantize_rows",
    "scaled_sign",
    "two_way_quantized_hook",
    "unpack_signs",
]
