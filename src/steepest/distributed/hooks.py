r"""DDP communication hooks that compress gradients with error feedback (EF).

Register with ``ddp_model.register_comm_hook(state, hook)`` once, before the first backward. Both hooks
return the **average** gradient over ranks (DDP does not pre-divide), as ``allreduce_hook`` does.

* :func:`ef_sign_hook` with :class:`SignCompressionState` -- EF-SignSGD (Karimireddy, Rebjock, Stich,
  Jaggi, "Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML 2019,
  arXiv:1901.09847), in the distributed worker-side-EF form of epfml/ChocoSGD ``EF_SignSGD``:

  .. math::

      q_i = g_i + e_i,\quad \Delta_i = C(q_i),\quad e_i \leftarrow q_i - \Delta_i,\quad
      \bar g = \tfrac1N \textstyle\sum_i \Delta_i

  with :math:`C` the scaled sign (``scale="l1"``: :math:`\|q\|_1/d`, the paper's; ``scale="l2"``:
  :math:`\|q\|_2/\sqrt d`, the 1-bit Adam compressor of Tang et al., arXiv:2102.02888). Each rank sends
  its sign bits packed 8 per uint8 plus one float32 scale per parameter tensor (``granularity="tensor"``,
  the papers' rule) or per bucket (``granularity="bucket"``) with ``all_gather``, and every rank
  decompresses and averages locally.
* :func:`two_way_quantized_hook` with :class:`QuantizedCompressionState` -- two-way quantization with
  two-way EF in the style of Efficient-Adam (Chen, Shen, Liu, Luo, "Efficient-Adam: Communication-Efficient
  Distributed Adam", IEEE TSP 71, 2023, arXiv:2205.14473) and QAdam-EF (Chen, Shen, Huang, Liu, ACM TIST
  2021, arXiv:2004.14180). **What "server" means under all-reduce:** there is no parameter server; the
  bucket is padded to :math:`N c` and cut into :math:`N` chunks, and rank :math:`r` acts as the server of
  chunk :math:`r` (DeepSpeed's ``compressed_allreduce`` layout). Per step:

  1. worker: :math:`p = g_i + e_i`; :math:`\Delta_i = Q_w(p)` (``bits``-bit, one scale per chunk);
     :math:`e_i \leftarrow p - \Delta_i`; ``all_to_all`` the int8 codes and scales;
  2. server of chunk :math:`r`: :math:`y = \frac1N\sum_i \Delta_i[r] + \tilde e_r`;
     :math:`\tilde\Delta = Q_s(y)`; :math:`\tilde e_r \leftarrow y - \tilde\Delta`; ``all_gather`` the codes;
  3. everyone decodes :math:`\tilde\Delta` for the whole bucket.

Differences from the papers:

* The hooks compress the **gradient** (lr applied afterwards by the optimizer, ChocoSGD's convention), not
  the lr-scaled update :math:`\gamma g` of Karimireddy et al. nor the Adam update :math:`\delta_i` of
  Efficient-Adam. With a constant lr and SGD the two are equivalent; with a schedule the EF memory is not
  rescaled. To transmit updates instead, run the optimizer's update inside the hook (the "hook as
  optimizer" pattern) -- not provided here.
* ``sign(0) = +1`` so that one bit per coordinate suffices (see :mod:`steepest.distributed.compressors`).
* The quantizers are deterministic uniform (nearest) rounding, int8 codes for any ``bits`` (no sub-byte
  packing), so the payload is 1 byte per coordinate.
* The first ``start_iter`` iterations (default 1) are plain all-reduce: DDP rebuilds its buckets after
  iteration 0, so EF buffers keyed by bucket index are created only once the layout is final.
* The collectives inside the hooks are synchronous; the returned future is already completed (no overlap
  of the compressed communication with the rest of backward).

EF state lives in the hook state, per bucket index, on each rank (it differs between ranks); save it with
``state.state_dict()`` on every rank next to the training checkpoint, and restore it with
``load_state_dict`` before resuming.

Byte accounting (:class:`CommStats`): ``payload`` counts the bytes of the tensors this rank hands to
collectives; ``wire`` estimates the bytes it sends with the usual algorithms (ring all-reduce
:math:`2(N-1)/N\cdot B`, all-gather :math:`(N-1)B`, all-to-all :math:`(N-1)/N\cdot B`). Both are
compared with an uncompressed all-reduce of the bucket in its own dtype.
"""

# No `from __future__ import annotations`: DDP checks the hook annotations are the real dist.GradBucket
# and torch.futures.Future types.
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from steepest.distributed.compressors import (
    SignScale,
    dequantize_rows,
    quantize_rows,
    scaled_sign,
    unpack_signs,
)

Granularity = Literal["tensor", "bucket"]

__all__ = [
    "CommStats",
    "CompressionState",
    "QuantizedCompressionState",
    "SignCompressionState",
    "ef_sign_hook",
    "two_way_quantized_hook",
]


@dataclass
class CommStats:
    """Bytes communicated by a hook, against an uncompressed float all-reduce of the same buckets."""

    payload_bytes: int = 0
    wire_bytes: float = 0.0
    baseline_payload_bytes: int = 0
    baseline_wire_bytes: float = 0.0
    calls: int = 0
    compressed_calls: int = 0

    @property
    def payload_ratio(self) -> float:
        """Uncompressed / compressed payload bytes (``inf`` before any communication)."""
        return self.baseline_payload_bytes / self.payload_bytes if self.payload_bytes else float("inf")

    @property
    def wire_ratio(self) -> float:
        """Uncompressed / compressed estimated wire bytes (``inf`` when nothing was sent, e.g. one rank)."""
        return self.baseline_wire_bytes / self.wire_bytes if self.wire_bytes else float("inf")


class CompressionState:
    """Common hook state: process group, warm-up iterations, EF memory (per bucket or parameter), byte counters.

    Args:
        process_group: the group to communicate over (default: the default group).
        error_feedback: keep the worker EF memory :math:`e` (default True; False gives plain compression).
        start_iter: number of initial iterations reduced with a plain all-reduce (default 1, see the module
            docstring). Must be >= 0.
        module: the model (or its DDP wrapper). When given, the EF memory is stored per parameter name, which
            survives DDP's bucket rebuild and a checkpoint resume (needed for an exact resume; costs a full
            parameter-sized server buffer per rank for the two-way hook). When None, it is stored per bucket
            index and a changed bucket layout raises RuntimeError.
    """

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        *,
        error_feedback: bool = True,
        start_iter: int = 1,
        module: nn.Module | None = None,
    ) -> None:
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.process_group = process_group
        self.error_feedback = error_feedback
        self.start_iter = start_iter
        self.iteration = 0
        self.errors: dict[Any, Tensor] = {}
        self.stats = CommStats()
        self._names: dict[nn.Parameter, str] = {}
        if module is not None:
            self._names = {p: name for name, p in module.named_parameters()}
        self._layouts: dict[tuple[int, int], tuple[Any, ...]] = {}

    def world_size(self) -> int:
        """Number of ranks in the hook's process group."""
        return dist.get_world_size(self.process_group)

    def reset_stats(self) -> None:
        """Zero the byte counters (e.g. after warm-up, to measure the compressed steps only)."""
        self.stats = CommStats()

    def _segments(self, bucket: Any) -> list[tuple[str, int, int]]:
        """``(parameter name, offset, numel)`` of each parameter in the bucket's flat buffer."""
        out, off = [], 0
        for p in bucket.parameters():
            if p not in self._names:
                raise RuntimeError("a bucket parameter is not in the module given to the hook state")
            out.append((self._names[p], off, p.numel()))
            off += p.numel()
        return out

    def _load_error(self, store: dict[Any, Tensor], bucket: Any, start: int, length: int, like: Tensor) -> Tensor:
        """EF memory for positions ``[start, start + length)`` of the (padded) bucket, as a new tensor."""
        if self._names:
            out = torch.zeros(length, dtype=like.dtype, device=like.device)
            for name, off, numel in self._segments(bucket):
                lo, hi = max(off, start), min(off + numel, start + length)
                if lo < hi and name in store:
                    out[lo - start : hi - start] = store[name][lo - off : hi - off]
            return out
        key = bucket.index()
        layout = (start, length, tuple(tuple(g.shape) for g in bucket.gradients()))
        if key in store and self._layouts.get((id(store), key), layout) != layout:
            raise RuntimeError(
                f"the layout of DDP bucket {key} changed since its error-feedback memory was stored (DDP rebuilds "
                "its buckets after iteration 0, also after a resume); pass `module=` to the hook state to key the "
                "memory by parameter name, or use start_iter >= 1 without resuming"
            )
        self._layouts[(id(store), key)] = layout
        buf = store.get(key)
        return buf.clone() if buf is not None else torch.zeros(length, dtype=like.dtype, device=like.device)

    def _save_error(self, store: dict[Any, Tensor], bucket: Any, start: int, value: Tensor) -> None:
        if not self._names:
            store[bucket.index()] = value.detach().clone()
            return
        for name, off, numel in self._segments(bucket):
            lo, hi = max(off, start), min(off + numel, start + value.numel())
            if lo < hi:
                if name not in store:
                    store[name] = torch.zeros(numel, dtype=value.dtype, device=value.device)
                store[name][lo - off : hi - off] = value[lo - start : hi - start]

    def state_dict(self) -> dict[str, Any]:
        """Return this rank's hook state (EF buffers, iteration, counters, config) for the training checkpoint."""
        return {
            "iteration": self.iteration,
            "errors": {k: v.clone() for k, v in self.errors.items()},
            "stats": asdict(self.stats),
            "config": self._config(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved by the same rank with the same configuration."""
        if state_dict["config"] != self._config():
            raise ValueError(f"hook state config {state_dict['config']} does not match {self._config()}")
        self.iteration = int(state_dict["iteration"])
        self.errors = {k: v.clone() for k, v in state_dict["errors"].items()}
        self.stats = CommStats(**state_dict["stats"])

    def _config(self) -> dict[str, Any]:
        return {
            "error_feedback": self.error_feedback,
            "start_iter": self.start_iter,
            "keyed_by": "parameter" if self._names else "bucket",
        }

    def __getstate__(self) -> dict[str, Any]:
        # Process groups do not pickle (same as PowerSGDState); the default group is used after unpickling.
        state = self.__dict__.copy()
        state["process_group"] = None
        return state


class SignCompressionState(CompressionState):
    r"""State of :func:`ef_sign_hook` (EF-SignSGD, arXiv:1901.09847).

    Args:
        process_group: the group to communicate over (default: the default group).
        scale: ``"l1"`` (EF-SignSGD's :math:`\|x\|_1/d`, default) or ``"l2"`` (1-bit Adam's
            :math:`\|x\|_2/\sqrt d`).
        granularity: ``"tensor"`` (one scale per parameter tensor, the papers' rule, default) or
            ``"bucket"`` (one scale per DDP bucket).
        error_feedback: keep the EF memory (default True).
        start_iter: plain all-reduce iterations before compressing (default 1).
        module: the model, to key the EF memory by parameter name (see :class:`CompressionState`).
    """

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        *,
        scale: SignScale = "l1",
        granularity: Granularity = "tensor",
        error_feedback: bool = True,
        start_iter: int = 1,
        module: nn.Module | None = None,
    ) -> None:
        if scale not in ("l1", "l2"):
            raise ValueError(f"scale must be 'l1' or 'l2', got {scale!r}")
        if granularity not in ("tensor", "bucket"):
            raise ValueError(f"granularity must be 'tensor' or 'bucket', got {granularity!r}")
        super().__init__(process_group, error_feedback=error_feedback, start_iter=start_iter, module=module)
        self.scale: SignScale = scale
        self.granularity: Granularity = granularity

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "scale": self.scale, "granularity": self.granularity}


class QuantizedCompressionState(CompressionState):
    r"""State of :func:`two_way_quantized_hook` (two-way quantization, worker and server EF).

    Args:
        process_group: the group to communicate over (default: the default group).
        bits: worker quantizer :math:`Q_w` bits in [2, 8] (default 8), or None for no quantization (identity;
            the hook then equals an all-reduce up to float summation order).
        server_bits: server quantizer :math:`Q_s` bits (default: ``bits``), or None for identity.
        error_feedback: keep the worker EF memory :math:`e_i` (default True).
        server_error_feedback: keep the server EF memory :math:`\tilde e` of this rank's chunk (default True).
        start_iter: plain all-reduce iterations before compressing (default 1).
        module: the model, to key the EF memory by parameter name (see :class:`CompressionState`).
    """

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        *,
        bits: int | None = 8,
        server_bits: int | Literal["same"] | None = "same",
        error_feedback: bool = True,
        server_error_feedback: bool = True,
        start_iter: int = 1,
        module: nn.Module | None = None,
    ) -> None:
        sbits = bits if server_bits == "same" else server_bits
        for name, b in (("bits", bits), ("server_bits", sbits)):
            if b is not None and not 2 <= b <= 8:
                raise ValueError(f"{name} must be in [2, 8] or None, got {b}")
        super().__init__(process_group, error_feedback=error_feedback, start_iter=start_iter, module=module)
        self.bits = bits
        self.server_bits: int | None = sbits
        self.server_error_feedback = server_error_feedback
        self.server_errors: dict[Any, Tensor] = {}

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "bits": self.bits,
            "server_bits": self.server_bits,
            "server_error_feedback": self.server_error_feedback,
        }

    def state_dict(self) -> dict[str, Any]:
        """Return this rank's worker and server EF buffers, iteration, counters and config."""
        out = super().state_dict()
        out["server_errors"] = {k: v.clone() for k, v in self.server_errors.items()}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved by the same rank with the same configuration."""
        super().load_state_dict(state_dict)
        self.server_errors = {k: v.clone() for k, v in state_dict["server_errors"].items()}


def _check_bucket(bucket: Any) -> Tensor:
    buf: Tensor = bucket.buffer()
    if not buf.is_floating_point():
        raise TypeError(
            f"compression hooks need floating-point gradients, but bucket {bucket.index()} holds {buf.dtype} "
            "(complex or integer parameters); use the default all-reduce for this model"
        )
    return buf


def _completed(t: Tensor) -> torch.futures.Future[Tensor]:
    fut: torch.futures.Future[Tensor] = torch.futures.Future()
    fut.set_result(t)
    return fut


def _plain_allreduce(state: CompressionState, buf: Tensor, n: int) -> torch.futures.Future[Tensor]:
    nbytes = buf.numel() * buf.element_size()
    _count(state, nbytes, 2 * (n - 1) / n * nbytes, buf, n, compressed=False)
    buf.div_(n)
    dist.all_reduce(buf, group=state.process_group)
    return _completed(buf)


def _count(state: CompressionState, payload: int, wire: float, buf: Tensor, n: int, *, compressed: bool) -> None:
    nbytes = buf.numel() * buf.element_size()
    s = state.stats
    s.payload_bytes += payload
    s.wire_bytes += wire
    s.baseline_payload_bytes += nbytes
    s.baseline_wire_bytes += 2 * (n - 1) / n * nbytes
    s.calls += 1
    s.compressed_calls += int(compressed)


def _advance(state: CompressionState, bucket: Any) -> None:
    # The last bucket reduced in an iteration is bucket 0; count iterations there (as PowerSGD does).
    if bucket.is_last():
        state.iteration += 1


def ef_sign_hook(state: SignCompressionState, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """DDP comm hook: scaled-sign compression with worker-side error feedback (EF-SignSGD).

    See the module docstring for the rule; ``state`` holds the EF memory per bucket index and the byte
    counters. Raises TypeError when the bucket's gradients are not floating point.
    """
    buf = _check_bucket(bucket)
    n = state.world_size()
    if state.iteration < state.start_iter:
        fut = _plain_allreduce(state, buf, n)
        _advance(state, bucket)
        return fut

    d = buf.numel()
    q = buf.clone()
    if state.error_feedback:
        q.add_(state._load_error(state.errors, bucket, 0, d, buf))
    if state.granularity == "tensor":
        lengths = [g.numel() for g in bucket.gradients()]
        if sum(lengths) != d:
            raise RuntimeError(f"bucket {bucket.index()} gradients cover {sum(lengths)} of {d} elements")
    else:
        lengths = [d]
    packed, scales, decompressed = scaled_sign(q, lengths, state.scale)
    if state.error_feedback:
        state._save_error(state.errors, bucket, 0, q - decompressed)

    all_packed = [torch.empty_like(packed) for _ in range(n)]
    all_scales = [torch.empty_like(scales) for _ in range(n)]
    dist.all_gather(all_packed, packed, group=state.process_group)
    dist.all_gather(all_scales, scales, group=state.process_group)
    payload = packed.numel() * packed.element_size() + scales.numel() * scales.element_size()
    _count(state, payload, (n - 1) * payload, buf, n, compressed=True)

    signs = unpack_signs(torch.stack(all_packed), d, buf.dtype)  # (n, d)
    idx = torch.tensor(lengths, device=buf.device)
    per_elem = torch.repeat_interleave(torch.stack(all_scales).to(buf.dtype), idx, dim=1)
    buf.copy_((signs * per_elem).mean(dim=0))
    _advance(state, bucket)
    return _completed(buf)


def two_way_quantized_hook(state: QuantizedCompressionState, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """DDP comm hook: two-way quantization with worker and server error feedback (Efficient-Adam style).

    See the module docstring: rank ``r`` is the "server" of chunk ``r`` of the padded bucket. Raises
    TypeError when the bucket's gradients are not floating point.
    """
    buf = _check_bucket(bucket)
    n = state.world_size()
    if state.iteration < state.start_iter:
        fut = _plain_allreduce(state, buf, n)
        _advance(state, bucket)
        return fut

    d = buf.numel()
    chunk = -(-d // n)
    padded = torch.zeros(n * chunk, dtype=buf.dtype, device=buf.device)
    padded[:d] = buf
    if state.error_feedback:
        padded.add_(state._load_error(state.errors, bucket, 0, n * chunk, buf))
    rows = padded.view(n, chunk)
    group = state.process_group
    payload = 0
    wire = 0.0

    # Uplink: worker quantizer, then all-to-all so that rank r receives every rank's chunk r.
    if state.bits is None:
        send = rows.contiguous()
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=group)
        received = recv
        up = send.numel() * send.element_size()
    else:
        codes, scales = quantize_rows(rows, state.bits)
        if state.error_feedback:
            state._save_error(state.errors, bucket, 0, (rows - dequantize_rows(codes, scales, buf.dtype)).view(-1))
        recv_codes = torch.empty_like(codes)
        recv_scales = torch.empty_like(scales)
        dist.all_to_all_single(recv_codes, codes, group=group)
        dist.all_to_all_single(recv_scales, scales, group=group)
        received = dequantize_rows(recv_codes, recv_scales, buf.dtype)
        up = codes.numel() * codes.element_size() + scales.numel() * scales.element_size()
    payload += up
    wire += (n - 1) / n * up

    # Server of this rank's chunk: average, server EF, server quantizer, then all-gather.
    y = received.mean(dim=0)
    if state.server_error_feedback and state.server_bits is not None:
        rank = dist.get_rank(group)
        y.add_(state._load_error(state.server_errors, bucket, rank * chunk, chunk, buf))
    if state.server_bits is None:
        gathered = [torch.empty_like(y) for _ in range(n)]
        dist.all_gather(gathered, y.contiguous(), group=group)
        down = y.numel() * y.element_size()
        out = torch.stack(gathered)
    else:
        scodes, sscale = quantize_rows(y.unsqueeze(0), state.server_bits)
        if state.server_error_feedback:
            state._save_error(
                state.server_errors, bucket, rank * chunk, y - dequantize_rows(scodes, sscale, buf.dtype).view(-1)
            )
        code_list = [torch.empty(chunk, dtype=torch.int8, device=buf.device) for _ in range(n)]
        scale_list = [torch.empty_like(sscale) for _ in range(n)]
        dist.all_gather(code_list, scodes.view(-1), group=group)
        dist.all_gather(scale_list, sscale, group=group)
        out = dequantize_rows(torch.stack(code_list), torch.cat(scale_list), buf.dtype)
        down = scodes.numel() * scodes.element_size() + sscale.numel() * sscale.element_size()
    payload += down
    wire += (n - 1) * down
    _count(state, payload, wire, buf, n, compressed=True)

    buf.copy_(out.view(-1)[:d])
    _advance(state, bucket)
    return _completed(buf)
