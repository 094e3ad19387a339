"""Gradient noise scale (McCandlish et al. 2018) on a synthetic problem with known G and Sigma."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from steepest.diagnostics import GradientNoiseScale, gradient_noise_scale, noise_scale_from_norms, split_batch

Z = 4.0
DIM = 8


class _Linear(nn.Module):
    """loss(x) = mean_i x_i . w: the per-example gradient is exactly x_i."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(DIM, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.w).mean()


def _loss(model: nn.Module, batch: Tensor) -> Tensor:
    return model(batch)


G = torch.linspace(-0.5, 0.5, DIM, dtype=torch.float64) + 0.1
SIGMA_DIAG = torch.linspace(0.5, 3.0, DIM, dtype=torch.float64)


def _batch(gen: torch.Generator, size: int) -> Tensor:
    return G + SIGMA_DIAG.sqrt() * torch.randn(size, DIM, generator=gen, dtype=torch.float64)


def test_estimators_are_unbiased_for_known_g_and_sigma() -> None:
    model, gen = _Linear(), torch.Generator().manual_seed(0)
    estimates = [gradient_noise_scale(model, _loss, _batch(gen, 64), num_chunks=4) for _ in range(400)]
    assert {(e.small_batch, e.big_batch) for e in estimates} == {(16, 64)}
    grad_sq = torch.tensor([e.grad_sq_norm for e in estimates])
    trace = torch.tensor([e.trace_sigma for e in estimates])
    true_grad_sq, true_trace = float(G @ G), float(SIGMA_DIAG.sum())
    for values, truth in ((grad_sq, true_grad_sq), (trace, true_trace)):
        stderr = float(values.std() / len(values) ** 0.5)
        assert abs(float(values.mean()) - truth) < Z * stderr
        assert Z * stderr < 0.2 * truth  # informative: a 20% bias would be caught
    # the noise scale from the averaged estimators brackets the truth tr(Sigma)/|G|^2
    b_true = true_trace / true_grad_sq
    b_est = float(trace.mean() / grad_sq.mean())
    assert b_est == pytest.approx(b_true, rel=0.25)


def test_norm_formulas_invert_the_expected_norms() -> None:
    # E|G_B|^2 = |G|^2 + tr(Sigma)/B: feeding the expectations back recovers |G|^2 and tr(Sigma) exactly
    grad_sq, trace = 0.7, 12.0
    for small, big in ((1, 2), (8, 64), (32, 33)):
        est = noise_scale_from_norms(grad_sq + trace / small, grad_sq + trace / big, small, big)
        assert est.grad_sq_norm == pytest.approx(grad_sq)
        assert est.trace_sigma == pytest.approx(trace)
        assert est.b_simple == pytest.approx(trace / grad_sq)
    assert noise_scale_from_norms(1.0, 1.0, 1, 2).b_simple == 0.0
    assert noise_scale_from_norms(1.0, 0.4, 1, 2).b_simple == float("inf")  # |G|^2 estimate <= 0
    with pytest.raises(ValueError, match="small_batch"):
        noise_scale_from_norms(1.0, 1.0, 4, 4)


def test_tracker_keeps_bias_corrected_emas_of_both_estimators() -> None:
    tracker = GradientNoiseScale(num_chunks=2, beta=0.5)
    norms = ((3.0, 1.5), (5.0, 2.0), (2.5, 1.0))
    raws = [noise_scale_from_norms(s, b, 4, 16) for s, b in norms]
    for step, (small_sq, big_sq) in enumerate(norms, start=1):
        out = tracker.update(small_sq, big_sq, 4, 16)
        weights = [0.5 ** (step - i) * 0.5 for i in range(1, step + 1)]
        norm = 1 - 0.5**step
        grad_sq = sum(w * r.grad_sq_norm for w, r in zip(weights, raws, strict=False)) / norm
        trace = sum(w * r.trace_sigma for w, r in zip(weights, raws, strict=False)) / norm
        assert out.grad_sq_norm == pytest.approx(grad_sq)
        assert out.b_simple == pytest.approx(trace / grad_sq)
    first = GradientNoiseScale(beta=0.9).update(3.0, 1.5, 4, 16)
    assert first.b_simple == pytest.approx(raws[0].b_simple)  # bias correction: no shrinkage at step 1
    model, gen = _Linear(), torch.Generator().manual_seed(1)
    out = GradientNoiseScale(num_chunks=4)(model, _loss, _batch(gen, 32))
    assert out.small_batch == 8 and out.big_batch == 32
    for bad in ({"num_chunks": 1}, {"beta": 1.0}):
        with pytest.raises(ValueError):
            GradientNoiseScale(**bad)  # type: ignore[arg-type]


def test_split_batch_and_grads_untouched() -> None:
    x, y = torch.arange(12.0).view(6, 2), torch.arange(6)
    parts = split_batch({"x": x, "pair": (x, y)}, 3)
    assert len(parts) == 3 and torch.equal(parts[1]["x"], x[2:4]) and torch.equal(parts[2]["pair"][1], y[4:])
    for bad, msg in (((x, y[:5]), "same size"), (x[:5], "divisible"), ((x, "a"), "cannot split"), ((), "no tensors")):
        with pytest.raises(ValueError, match=msg):
            split_batch(bad, 3)
    model = _Linear()
    model.w.grad = torch.ones(DIM, dtype=torch.float64)
    gradient_noise_scale(model, _loss, _batch(torch.Generator().manual_seed(2), 8), num_chunks=2)
    assert torch.equal(model.w.grad, torch.ones(DIM, dtype=torch.float64))
