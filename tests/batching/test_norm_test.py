"""Adaptive batch size: statistics against brute force, the controller's rule, a training run with a DataLoader."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import steepest
from steepest.batching import AdaptiveBatchSampler, AdaptiveBatchSize, gradient_statistics, per_example_gradients


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x).squeeze(-1) - y) ** 2).mean()


def _data(n: int = 64, noise: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = x @ torch.arange(1.0, 6.0, dtype=torch.float64) + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y


def test_per_example_gradients_match_a_loop() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    x, y = _data(6)
    fast = per_example_gradients(model, _mse, (x, y))
    rows = []
    for i in range(6):
        model.zero_grad()
        _mse(model, (x[i : i + 1], y[i : i + 1])).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(fast, torch.stack(rows))


def test_statistics_match_their_definitions() -> None:
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(7, 4, generator=gen, dtype=torch.float64) + 2.0
    mean = g.mean(0)
    sq, var = gradient_statistics(g, "norm")
    assert sq == pytest.approx(float(mean @ mean))
    assert var == pytest.approx(sum(float((row - mean) @ (row - mean)) for row in g) / 6)
    _, var_ip = gradient_statistics(g, "inner_product")
    assert var_ip == pytest.approx(sum((float(row @ mean) - sq) ** 2 for row in g) / 6)


def test_controller_rule() -> None:
    ctl = AdaptiveBatchSize(initial=8, eta=0.5, max_batch_size=300)
    assert ctl.update(1.0, 1.0, 8).passed and ctl.batch_size == 8  # 1/8 <= 0.25
    result = ctl.update(1.0, 100.0, 8)  # 12.5 > 0.25 -> ceil(100 / 0.25) = 400, capped at 300
    assert not result.passed and result.next_batch_size == 300
    assert ctl.update(10.0, 1.0, 300).next_batch_size == 300  # never shrinks
    ip = AdaptiveBatchSize(initial=4, eta=0.5, test="inner_product")
    assert ip.update(2.0, 10.0, 4).next_batch_size == math.ceil(10.0 / (0.25 * 4.0))


def test_chunked_estimate_is_close_to_the_exact_variance() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    x, y = _data(512, noise=2.0)
    exact = AdaptiveBatchSize(initial=4, eta=0.5).observe(model, _mse, (x, y))
    chunked = AdaptiveBatchSize(initial=4, eta=0.5, num_chunks=32).observe(model, _mse, (x, y))
    assert chunked.grad_sq_norm == pytest.approx(exact.grad_sq_norm, rel=1e-9)
    assert chunked.variance == pytest.approx(exact.variance, rel=0.5)


def test_batch_grows_as_adagrad_norm_approaches_the_noise_floor() -> None:
    """AdAdaGrad-Norm on noisy least squares: the norm test fails more as the gradient shrinks."""
    torch.manual_seed(0)
    x, y = _data(2048, noise=1.0)
    model = nn.Linear(5, 1).double()
    opt = steepest.AdaGradNorm(model.parameters(), lr=1.0)
    ctl = AdaptiveBatchSize(initial=4, eta=0.5, max_batch_size=2048)
    sampler = AdaptiveBatchSampler(TensorDataset(x, y), ctl, seed=0)
    loader = DataLoader(TensorDataset(x, y), batch_sampler=sampler)
    sizes, losses = [], []
    for _ in range(3):
        for batch in loader:
            ctl.observe(model, _mse, batch)
            opt.zero_grad()
            loss = _mse(model, batch)
            loss.backward()
            opt.step()
            sizes.append(len(batch[0]))
            losses.append(float(_mse(model, (x, y)).detach()))
    assert sizes[0] == 4 and max(sizes) >= 64, sizes[:20]
    full = [s for s in sizes if s == max(sizes)]
    assert full, "the controller moved the sampler's batch size"
    assert losses[-1] < 0.2 * losses[0]


def test_sampler_covers_each_epoch_once_and_is_seeded() -> None:
    ctl = AdaptiveBatchSize(initial=3)
    a = [i for batch in AdaptiveBatchSampler(10, ctl, seed=5) for i in batch]
    b = [i for batch in AdaptiveBatchSampler(10, ctl, seed=5) for i in batch]
    assert sorted(a) == list(range(10)) and a == b
    assert len(list(AdaptiveBatchSampler(10, ctl, drop_last=True))) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": 1}, "initial"),
        ({"initial": 4, "eta": 0.0}, "eta"),
        ({"initial": 4, "test": "variance"}, "test"),
        ({"initial": 4, "max_batch_size": 2}, "max_batch_size"),
        ({"initial": 4, "num_chunks": 1}, "num_chunks"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AdaptiveBatchSize(**kwargs)


def test_state_round_trip_and_corrupt_state() -> None:
    ctl = AdaptiveBatchSize(initial=4)
    ctl.update(1.0, 100.0, 4)
    other = AdaptiveBatchSize(initial=4)
    other.load_state_dict(ctl.state_dict())
    assert other.batch_size == ctl.batch_size
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict({"batch_size": "big"})
    assert other.batch_size == ctl.batch_size
