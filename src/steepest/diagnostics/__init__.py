"""Hessian diagnostics: plain functions over autograd and :mod:`torch.func`, per block or whole model.

* Hessian-vector products: :func:`hvp` (double backward), :func:`hvp_func` (``torch.func``),
  :class:`HessianOperator` (a block :math:`H_{bb}` as a linear operator, either method).
* Blocks: :func:`parameter_blocks`, :func:`module_blocks`, :func:`grouped_blocks`, :func:`resolve_blocks`.
* Estimators: :func:`hutchinson_trace`, :func:`hutchinson_diagonal` (Rademacher probes, standard
  errors), :func:`top_eigenvalues` / :func:`lanczos` (full reorthogonalization),
  :func:`stochastic_lanczos_quadrature` (spectral density), :func:`js_distance`.
* Gradient noise scale (McCandlish et al. 2018): :func:`noise_scale_from_norms`,
  :func:`gradient_noise_scale`, :class:`GradientNoiseScale`.
* In a training loop: :class:`HessianDiagnostics` (see :mod:`steepest.diagnostics.monitor` for DDP).
"""

from steepest.diagnostics._blocks import (
    BlockSpec,
    grouped_blocks,
    module_blocks,
    parameter_blocks,
    resolve_blocks,
    whole_model_block,
)
from steepest.diagnostics.hutchinson import (
    DiagonalEstimate,
    TraceEstimate,
    hutchinson_diagonal,
    hutchinson_trace,
    rademacher,
)
from steepest.diagnostics.hvp import HessianOperator, LinearOperator, LossFn, MatrixOperator, hvp, hvp_func
from steepest.diagnostics.lanczos import EigenResult, LanczosResult, lanczos, top_eigenvalues
from steepest.diagnostics.monitor import BlockCurvature, CurvatureReport, HessianDiagnostics
from steepest.diagnostics.noise_scale import (
    GradientNoiseScale,
    NoiseScaleEstimate,
    gradient_noise_scale,
    noise_scale_from_norms,
    split_batch,
)
from steepest.diagnostics.slq import SpectralQuadrature, js_distance, stochastic_lanczos_quadrature

__all__ = [
    "BlockCurvature",
    "BlockSpec",
    "CurvatureReport",
    "DiagonalEstimate",
    "EigenResult",
    "GradientNoiseScale",
    "HessianDiagnostics",
    "HessianOperator",
    "LanczosResult",
    "LinearOperator",
    "LossFn",
    "MatrixOperator",
    "NoiseScaleEstimate",
    "SpectralQuadrature",
    "TraceEstimate",
    "gradient_noise_scale",
    "grouped_blocks",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hvp",
    "hvp_func",
    "js_distance",
    "lanczos",
    "module_blocks",
    "noise_scale_from_norms",
    "parameter_blocks",
    "rademacher",
    "resolve_blocks",
    "split_batch",
    "stochastic_lanczos_quadrature",
    "top_eigenvalues",
    "whole_model_block",
]
