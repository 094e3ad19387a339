r"""Gradient compressors used by the DDP communication hooks (pure tensor functions, no communication).

* Scaled sign, L1 form (EF-SignSGD; Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback Fixes SignSGD
  and other Gradient Compression Schemes", ICML 2019, arXiv:1901.09847):
  :math:`C(x) = \frac{\|x\|_1}{d}\,s(x)`, the least-squares scale for a :math:`\pm 1` vector.
* Scaled sign, L2 form (1-bit Adam; Tang et al., arXiv:2102.02888): :math:`C(x) = \frac{\|x\|_2}{\sqrt d}\,s(x)`.
* :math:`b`-bit uniform quantization with one scale per row: :math:`s = \|x\|_\infty / (2^{b-1}-1)`,
  :math:`C(x) = s\cdot\mathrm{round}(x/s)` (the quantizer :math:`Q_w, Q_s` of Efficient-Adam; Chen, Shen,
  Liu, Luo, IEEE TSP 2023, arXiv:2205.14473).

Differences from the papers: to send exactly one bit per coordinate, :math:`s(x) = +1` for
:math:`x \ge 0` (``sign(0) = +1``, as DeepSpeed's 1-bit Adam), where EF-SignSGD's ``sign(0) = 0``. The
L1 scale stays the least-squares scale for :math:`\pm 1` vectors, so the δ-approximation bound
:math:`\|C(x)-x\|^2 = \|x\|_2^2 - \|x\|_1^2/d` is unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

SignScale = Literal["l1", "l2"]

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_signs(x: Tensor) -> Tensor:
    """Pack ``x >= 0`` of a 1-D tensor into ``ceil(numel / 8)`` uint8 bytes (most significant bit first)."""
    bits = (x >= 0).to(torch.uint8)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=x.device)
    return (bits.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_signs(packed: Tensor, numel: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`pack_signs`: ``±1`` values, ``numel`` per row (``packed`` may have leading batch dims)."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    bits = bits.flatten(start_dim=-2)[..., :numel]
    return bits.to(dtype) * 2 - 1


def segment_scales(x: Tensor, lengths: list[int], scale: SignScale) -> Tensor:
    """One sign scale per consecutive segment of the 1-D ``x`` (L1: ``|x|_1 / d``, L2: ``|x|_2 / sqrt(d)``)."""
    parts = torch.split(x, lengths)
    if scale == "l1":
        vals = [p.abs().sum() / p.numel() for p in parts]
    else:
        vals = [p.norm() / p.numel() ** 0.5 for p in parts]
    return torch.stack(vals).to(torch.float32)


def scaled_sign(x: Tensor, lengths: list[int], scale: SignScale = "l1") -> tuple[Tensor, Tensor, Tensor]:
    """Compress the 1-D ``x`` with a scaled sign per segment.

    Returns ``(packed_signs, scales, decompressed)``: the uint8 bit-packed signs, the float32 scale of each
    segment of ``lengths`` and the decompressed value :math:`C(x)` (dtype of ``x``).
    """
    scales = segment_scales(x, lengths, scale)
    packed = pack_signs(x)
    signs = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    per_elem = torch.repeat_interleave(scales.to(x.dtype), torch.tensor(lengths, device=x.device))
    return packed, scales, signs * per_elem


def quantize_rows(x: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Uniform symmetric ``bits``-bit quantization of each row of the 2-D ``x``; returns ``(int8 codes, scales)``.

    ``scale = max|row| / (2^(bits-1) - 1)``; a zero row gets scale 0 and codes 0.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    levels = 2 ** (bits - 1) - 1
    scales = x.abs().amax(dim=1).to(torch.float32) / levels
    safe = torch.where(scales > 0, scales, torch.ones_like(scales)).to(x.dtype)
    codes = torch.round(x / safe.unsqueeze(1)).clamp_(-levels, levels).to(torch.int8)
    return codes, scales


def dequantize_rows(codes: Tensor, scales: Tensor, dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`quantize_rows`: ``codes * scale`` per row, in ``dtype``."""
    return codes.to(dtype) * scales.to(dtype).unsqueeze(1)
