r"""The compressors under FSDP2: a compressed reduce-scatter with error feedback (``set_custom_reduce_scatter``).

FSDP2 (``fully_shard``) reduces each module's gradients with one reduce-scatter over a flat buffer laid
out as ``N`` equal chunks, chunk ``r`` holding the gradient entries of rank ``r``'s shard. torch 2.13
lets a module replace that collective (``FSDPModule.set_custom_reduce_scatter``, a
``torch.distributed.fsdp`` ``ReduceScatter``); :class:`CompressedReduceScatter` is one, and
:func:`compress_fsdp_gradients` installs one per FSDP module:

* every rank adds its error-feedback memory to its input, :math:`q = x + e`, and compresses each
  destination chunk :math:`q_r` separately: scaled sign (EF-SignSGD; one float32 scale per chunk, signs
  packed 8 per byte) or ``bits``-bit uniform quantization (int8 codes, one float32 scale per chunk);
* the compressed chunks go to their owners with one all-to-all (plus one for the scales), and
  :math:`e \leftarrow q - C(q)`;
* rank ``r`` writes the sum (``SUM``) or mean (``AVG``) of the ``N`` decompressed chunks it received.

This is the worker side of both DDP hooks. The server side of the two-way scheme (Efficient-Adam's
compressed broadcast of the aggregate, with its own error feedback) has nothing to act on under FSDP2:
the reduced gradient shard stays on its owner, which updates its own parameter shard, and no gradient
is sent back. The first ``start_iter`` calls (default 1) use the plain reduce-scatter. The EF memory
is per module, sized like its flat input; save ``state_dict()`` with the checkpoint on every rank.

Byte accounting (:class:`~steepest.distributed.CommStats`): payload is what this rank hands to the
all-to-alls; wire assumes :math:`(N-1)/N` of it leaves the rank, as for a ring reduce-scatter of the
uncompressed input, the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_api import ReduceScatter

from steepest.distributed.compressors import (
    SignScale,
    dequantize_rows,
    pack_signs,
    quantize_rows,
    segment_scales,
    unpack_signs,
)
from steepest.distributed.hooks import CommStats

Compressor = Literal["sign", "quantized"]


class CompressedReduceScatter(ReduceScatter):
    """An FSDP2 reduce-scatter that sends compressed, error-feedback gradients (see the module docstring).

    Args:
        compressor: ``"sign"`` (scaled sign, EF-SignSGD) or ``"quantized"`` (``bits``-bit uniform).
        scale: sign scale, ``"l1"`` (mean absolute value, the EF-SignSGD paper) or ``"l2"``.
        bits: quantizer width, 2 to 8, or None for no quantization (float chunks: equals the plain
            reduce-scatter up to float summation order; a check of the plumbing).
        error_feedback: keep the EF memory (default True).
        start_iter: initial calls reduced with the plain reduce-scatter (default 1), >= 0.

    Raises:
        ValueError: a bad argument. ``TypeError`` at the first call whose gradients are not floating point.
    """

    def __init__(
        self,
        compressor: Compressor = "sign",
        *,
        scale: SignScale = "l1",
        bits: int | None = 8,
        error_feedback: bool = True,
        start_iter: int = 1,
    ) -> None:
        if compressor not in ("sign", "quantized"):
            raise ValueError(f"compressor must be 'sign' or 'quantized', got {compressor!r}")
        if scale not in ("l1", "l2"):
            raise ValueError(f"scale must be 'l1' or 'l2', got {scale!r}")
        if bits is not None and not 2 <= bits <= 8:
            raise ValueError(f"bits must be in [2, 8] or None, got {bits}")
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.compressor = compressor
        self.scale = scale
        self.bits = bits
        self.error_feedback = error_feedback
        self.start_iter = start_iter
        self.iteration = 0
        self.error: Tensor | None = None
        self.stats = CommStats()

    def allocate(self, size: Sequence[int | torch.SymInt], *, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A fresh buffer per call (FSDP2's default behaviour)."""
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(
        self,
        output_tensor: Tensor,
        input_tensor: Tensor,
        group: dist.ProcessGroup,
        op: Any,
        async_op: bool = False,
    ) -> dist.Work | None:
        """Reduce-scatter ``input_tensor`` (``N`` chunks) into ``output_tensor`` (this rank's chunk)."""
        if not input_tensor.is_floating_point():
            raise TypeError(
                f"CompressedReduceScatter: gradients must be floating point, got {input_tensor.dtype}"
            )
        if op not in (dist.ReduceOp.SUM, dist.ReduceOp.AVG):
            raise ValueError(f"CompressedReduceScatter: only SUM and AVG reductions, got {op}")
        n = group.size()
        chunk = output_tensor.numel()
        nbytes = input_tensor.numel() * input_tensor.element_size()
        if self.iteration < self.start_iter:
            self.iteration += 1
            self._count(nbytes, nbytes, n, compressed=False)
            return dist.reduce_scatter_tensor(output_tensor, input_tensor, op=op, group=group, async_op=async_op)
        q = input_tensor.detach().clone()
        if self.error_feedback:
            if self.error is None:
                self.error = torch.zeros_like(q)
            elif self.error.shape != q.shape or self.error.dtype != q.dtype:
                raise RuntimeError(
                    f"CompressedReduceScatter: input of {q.numel()} {q.dtype} entries, but the error-feedback "
                    f"memory holds {self.error.numel()} {self.error.dtype}: one instance per FSDP module"
                )
            q.add_(self.error)
        rows = q.view(n, chunk)
        received, decompressed, payload = self._exchange(rows, group)
        if self.error_feedback:
            assert self.error is not None
            torch.sub(q, decompressed.view(-1), out=self.error)
        total = received.sum(dim=0)
        if op == dist.ReduceOp.AVG:
            total.div_(n)
        output_tensor.copy_(total.view_as(output_tensor))
        self.iteration += 1
        self._count(payload, nbytes, n, compressed=True)
        return None

    def _count(self, payload: int, baseline: int, n: int, *, compressed: bool) -> None:
        """Record one call: ``payload`` bytes sent against ``baseline`` (the uncompressed input); (N-1)/N leave."""
        self.stats.calls += 1
        self.stats.compressed_calls += int(compressed)
        self.stats.payload_bytes += payload
        self.stats.wire_bytes += (n - 1) / n * payload
        self.stats.baseline_payload_bytes += baseline
        self.stats.baseline_wire_bytes += (n - 1) / n * baseline

    def _exchange(self, rows: Tensor, group: dist.ProcessGroup) -> tuple[Tensor, Tensor, int]:
        """Send compressed row ``r`` to rank ``r``; return (received rows decompressed, own C(rows), payload bytes)."""
        n, chunk = rows.shape
        if self.compressor == "sign":
            scales = segment_scales(rows.reshape(-1), [chunk] * n, self.scale)
            codes = torch.stack([pack_signs(row) for row in rows])
            decompressed = torch.where(rows >= 0, 1.0, -1.0).to(rows.dtype) * scales.to(rows.dtype).unsqueeze(1)
        elif self.bits is None:
            codes, scales, decompressed = rows, torch.ones(n, dtype=torch.float32, device=rows.device), rows
        else:
            codes, scales = quantize_rows(rows, self.bits)
            decompressed = dequantize_rows(codes, scales, rows.dtype)
        got_codes = torch.empty_like(codes)
        got_scales = torch.empty_like(scales)
        dist.all_to_all_single(got_codes, codes.contiguous(), group=group)
        dist.all_to_all_single(got_scales, scales, group=group)
        if self.compressor == "sign":
            received = unpack_signs(got_codes, chunk, rows.dtype) * got_scales.to(rows.dtype).unsqueeze(1)
        elif self.bits is None:
            received = got_codes
        else:
            received = dequantize_rows(got_codes, got_scales, rows.dtype)
        payload = codes.numel() * codes.element_size() + scales.numel() * scales.element_size()
        return received, decompressed, payload

    def state_dict(self) -> dict[str, Any]:
        """Iteration, EF memory and configuration; save it on every rank with the training checkpoint."""
        return {
            "iteration": self.iteration,
            "error": None if self.error is None else self.error.clone(),
            "config": self._config(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` (changing nothing) for another configuration."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"iteration", "error", "config"}:
            raise ValueError("CompressedReduceScatter.load_state_dict: expected keys iteration, error, config")
        if state_dict["config"] != self._config():
            raise ValueError(
                f"CompressedReduceScatter.load_state_dict: saved with {state_dict['config']}, "
                f"this instance is {self._config()}"
            )
        error = state_dict["error"]
        if error is not None and not (isinstance(error, Tensor) and error.is_floating_point() and error.dim() == 1):
            raise ValueError("CompressedReduceScatter.load_state_dict: 'error' is not a 1-D float tensor")
        self.iteration = int(state_dict["iteration"])
        self.error = None if error is None else error.clone()

    def _config(self) -> dict[str, Any]:
        return {
            "compressor": self.compressor,
            "scale": self.scale,
            "bits": self.bits,
            "error_feedback": self.error_feedback,
            "start_iter": self.start_iter,
        }


def compress_fsdp_gradients(
    model: nn.Module, compressor: Compressor = "sign", **options: Any
) -> dict[str, CompressedReduceScatter]:
    """Install a :class:`CompressedReduceScatter` on every FSDP2 module of ``model`` (its own EF memory each).

    Returns the instances by module name (``""`` for the root), to save and restore their
    ``state_dict()`` with the checkpoint.

    Raises:
        TypeError: ``model`` holds no ``fully_shard`` module.
    """
    comms: dict[str, CompressedReduceScatter] = {}
    for name, module in model.named_modules():
        if isinstance(module, FSDPModule):
            comm = CompressedReduceScatter(compressor, **options)
            module.set_custom_reduce_scatter(comm)
            comms[name] = comm
    if not comms:
        raise TypeError("compress_fsdp_gradients: the model has no fully_shard (FSDP2) module")
    return comms
