"""Zeroth-order optimizers: the estimator, the random stream, precision, and a tiny transformer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import steepest
from steepest.optim.mezo import direction

ZO_KEYS = ("mezo", "sparse_mezo", "zo_sign_sgd", "zo_adam")


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny models run ~10x faster on one thread than on a shared machine's contended pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spsa_estimates(loss_fn, x: torch.nn.Parameter, n: int, eps: float) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``n`` MeZO estimates g*z at the fixed point ``x``, read back from the optimizer's state."""
    start = x.detach().clone()
    opt = steepest.MeZO([x], lr=1e-300, eps=eps, seed=123)  # lr only needs to be nonzero
    estimates = []
    for _ in range(n):
        opt.step(lambda: loss_fn(x))
        state = opt.state[x]
        z = direction(x, int(state["seed"]))
        # projected_grad is stored in float32; recompute g in float64 from the same z instead
        plus, minus = loss_fn(start + eps * z), loss_fn(start - eps * z)
        g = (plus - minus) / (2 * eps)
        assert float(g) == pytest.approx(float(state["projected_grad"]), rel=1e-5, abs=1e-6)
        estimates.append(g * z)
        with torch.no_grad():
            x.copy_(start)
    return torch.stack(estimates)


def _clt_bound(samples: torch.Tensor, z: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    mean = samples.mean(0)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    return mean, z * stderr


@pytest.mark.usefixtures("one_thread")
def test_spsa_estimate_is_unbiased_on_a_quadratic() -> None:
    """E[g z] = H (x - c): the mean of many estimates is within 4 standard errors of the gradient."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    hessian = a @ a.T + torch.eye(3, dtype=torch.float64)
    center = torch.randn(3, generator=gen, dtype=torch.float64)

    def loss(x: torch.Tensor) -> torch.Tensor:
        d = x - center
        return 0.5 * d @ hessian @ d

    x = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    true_grad = hessian @ (x.detach() - center)
    mean, bound = _clt_bound(_spsa_estimates(loss, x, 1500, 1e-3))
    assert torch.all((mean - true_grad).abs() <= bound), (mean, true_grad, bound)
    # the bound is tight enough to mean something: a 30% wrong gradient falls outside it
    assert torch.any((mean - 1.3 * true_grad).abs() > bound)


@pytest.mark.usefixtures("one_thread")
def test_spsa_estimate_targets_the_smoothed_gradient() -> None:
    """For L = sum cos(x), E[g z] = grad E_u[L(x + eps u)] = -exp(-eps^2/2) sin(x), not -sin(x)."""
    eps = 1.0

    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x).sum()

    x = torch.nn.Parameter(torch.tensor([1.2, -0.9], dtype=torch.float64))
    smoothed = -math.exp(-(eps**2) / 2) * torch.sin(x.detach())
    mean, bound = _clt_bound(_spsa_estimates(loss, x, 1500, eps))
    assert torch.all((mean - smoothed).abs() <= bound), (mean, smoothed, bound)
    assert torch.all((mean + torch.sin(x.detach())).abs() > bound), "indistinguishable from the raw gradient"


@pytest.mark.parametrize("key", [*ZO_KEYS, "forward_gradient"])
def test_closure_runs_forward_only_under_no_grad(key: str) -> None:
    w = torch.nn.Parameter(torch.randn(5))
    calls: list[bool] = []

    def closure() -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        return (w**2).sum()

    opt = steepest.create_optimizer(key, [w], lr=1e-2)
    rng_before = torch.get_rng_state()
    opt.step(closure)
    assert calls == ([False] if key == "forward_gradient" else [False, False])
    assert w.grad is None
    assert torch.equal(torch.get_rng_state(), rng_before), "the global RNG must not be touched"


def test_freezing_a_parameter_does_not_shift_the_others_directions() -> None:
    def run(freeze: bool) -> torch.Tensor:
        a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))
        opt = steepest.MeZO([a, b], lr=0.1, seed=1)
        a.requires_grad_(not freeze)
        opt.step(lambda: (a**2).sum() + (b**2).sum())
        return direction(b, int(opt.state[b]["seed"]))

    assert torch.equal(run(False), run(True))


@pytest.mark.parametrize("key", ZO_KEYS)
def test_bfloat16_master_weights_round_trip_bitwise(key: str) -> None:
    """With master copies (float32 state of bfloat16 params), a state_dict round trip continues bitwise."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(6, 4, generator=gen)
    params = [torch.nn.Parameter(torch.randn(6, 4, generator=gen).to(torch.bfloat16))]

    def loss(ps: list[torch.nn.Parameter]) -> torch.Tensor:
        return ((ps[0].float() - target) ** 2).sum()

    opt = steepest.create_optimizer(key, params, lr=1e-2, eps=1e-2, master_weights=True)
    for _ in range(3):
        opt.step(lambda: loss(params))
    assert opt.state[params[0]]["master"].dtype == torch.float32
    saved_state, saved_params = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    expected = []
    for _ in range(3):
        opt.step(lambda: loss(params))
        expected.append(params[0].detach().clone())
    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    opt2 = steepest.create_optimizer(key, resumed, lr=1e-2, eps=1e-2, master_weights=True)
    opt2.load_state_dict(saved_state)
    for e in expected:
        opt2.step(lambda: loss(resumed))
        assert torch.equal(resumed[0].detach(), e)


def _drift_after(dtype: torch.dtype, steps: int, master: bool) -> float:
    """Largest |change| of the parameters after ``steps`` steps whose update is exactly zero.

    The closure returns a constant, so g = 0 and only the +eps/-2eps/+eps round trip acts.
    """
    w = torch.nn.Parameter((torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype))
    start = w.detach().clone()
    opt = steepest.MeZO([w], lr=1e-3, eps=1e-3, master_weights=master)
    for _ in range(steps):
        opt.step(lambda: torch.tensor(1.0))
    return float((w.detach().double() - start.double()).abs().max())


def test_round_trip_drift_and_the_master_weights_remedy() -> None:
    """The in-place round trip drifts (float32: about an ulp; bfloat16: far more); master copies do not."""
    drift32 = _drift_after(torch.float32, 20, master=False)
    drift16 = _drift_after(torch.bfloat16, 20, master=False)
    assert 0 < drift32 < 1e-6
    assert drift16 > 100 * drift32
    assert _drift_after(torch.bfloat16, 20, master=True) == 0.0
    assert _drift_after(torch.float16, 20, master=True) == 0.0


def test_master_weights_train_where_bfloat16_updates_are_lost() -> None:
    """Updates lr*g*z mostly under half a bfloat16 ulp: plain bfloat16 loses most, master copies keep them."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(64, generator=gen) * 0.1 + 1.0
    init = (torch.randn(64, generator=gen) * 0.1 + 1.0).to(torch.bfloat16)

    def run(master: bool) -> float:
        w = torch.nn.Parameter(init.clone())
        opt = steepest.MeZO([w], lr=1e-3, eps=1e-2, master_weights=master, seed=0)
        for _ in range(300):
            opt.step(lambda: ((w.float() - target) ** 2).sum())
        return float(((w.detach().float() - target) ** 2).sum())

    initial = float(((init.float() - target) ** 2).sum())
    with_master, without = run(True), run(False)
    assert with_master < 0.5 * initial
    assert with_master < 0.8 * without


def test_master_weights_do_nothing_for_float32() -> None:
    w = torch.nn.Parameter(torch.randn(4))
    opt = steepest.MeZO([w], lr=1e-2, master_weights=True)
    opt.step(lambda: (w**2).sum())
    assert "master" not in opt.state[w]


def test_weight_decay_skips_names_with_bias_and_layer_norm() -> None:
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(3, 3))
    model.add_module("layer_norm", nn.LayerNorm(3))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    opt = steepest.MeZO(model.named_parameters(), lr=0.1, weight_decay=0.5)
    opt.step(lambda: torch.tensor(0.0))  # g = 0: only decay (and the float32 round trip) acts
    params = dict(model.named_parameters())
    torch.testing.assert_close(params["proj.weight"].detach(), torch.full((3, 3), 0.95), atol=1e-6, rtol=0)
    for name in ("proj.bias", "layer_norm.weight", "layer_norm.bias"):
        torch.testing.assert_close(params[name].detach(), torch.ones_like(params[name]), atol=1e-6, rtol=0)


def test_sparse_mezo_moves_only_small_magnitude_entries() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(100, generator=gen, dtype=torch.float64))
    start = w.detach().clone()
    opt = steepest.SparseMeZO([w], lr=1e-3, eps=1e-3, sparsity=0.75)
    opt.step(lambda: (w**3).sum())
    threshold = float(opt.state[w]["threshold"])
    assert int((start.abs() <= threshold).sum()) == 25
    moved = (w.detach() - start).abs() > 1e-12
    assert torch.equal(moved, start.abs() <= threshold)


@pytest.mark.parametrize("numel", [1, 2, 3, 5])
def test_sparse_mezo_updates_tensors_of_a_few_entries(numel: int) -> None:
    """At the default sparsity 0.75 a bias of 1-5 entries still has ceil(0.25 n) entries updated."""
    gen = torch.Generator().manual_seed(numel)
    bias = torch.nn.Parameter(torch.randn(numel, generator=gen, dtype=torch.float64))
    start = bias.detach().clone()
    opt = steepest.SparseMeZO([bias], lr=1e-2, eps=1e-3)
    assert opt.defaults["sparsity"] == 0.75
    for _ in range(3):
        opt.step(lambda: ((bias - 3.0) ** 2).sum())
    threshold = float(opt.state[bias]["threshold"])
    expected = math.ceil(0.25 * numel)
    assert int((start.abs() <= threshold).sum()) == expected
    moved = (bias.detach() - start).abs() > 1e-12
    assert int(moved.sum()) == expected and torch.equal(moved, start.abs() <= threshold)


def test_sparse_mezo_selected_count_is_exact_under_float_rounding() -> None:
    from steepest.optim.sparse_mezo import selected_count

    # 0.29 * 100 = 28.999999999999996 and 0.7 * 10 = 7.000000000000001 in floats.
    assert selected_count(100, 0.29) == 71 and selected_count(10, 0.7) == 3
    assert [selected_count(n, 0.75) for n in (0, 1, 2, 4, 5, 8)] == [0, 1, 1, 1, 2, 2]
    assert selected_count(7, 0.0) == 7


def test_forward_gradient_is_the_exact_directional_derivative() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = list(model.parameters())
    loss = model(x).pow(2).mean()
    grads = torch.autograd.grad(loss, params)
    opt = steepest.ForwardGradient(params, lr=0.0 + 1e-3)
    before = [p.detach().clone() for p in params]
    returned = opt.step(lambda: model(x).pow(2).mean())
    tangents = [direction(p, int(opt.state[p]["seed"])) for p in params]
    expected = sum((g * v).sum() for g, v in zip(grads, tangents, strict=True))
    assert float(opt.state[params[0]]["projected_grad"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(returned) == pytest.approx(float(loss), rel=1e-12)
    for p, b, v in zip(params, before, tangents, strict=True):
        torch.testing.assert_close(p.detach(), b - 1e-3 * float(expected) * v, rtol=1e-6, atol=1e-9)


def test_forward_gradient_refuses_a_detached_loss() -> None:
    w = torch.nn.Parameter(torch.randn(3))
    opt = steepest.ForwardGradient([w], lr=0.1)
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match="tangent"):
        opt.step(lambda: (w**2).sum().detach())
    assert torch.equal(w.detach(), before)


class _TinyTransformer(nn.Module):
    """A one-block causal transformer LM (dropout off, math attention) for the fine-tuning check."""

    def __init__(self, vocab: int = 16, dim: int = 32, context: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(context, dim))
        self.block = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        h = self.block(h, src_mask=self.mask[: tokens.shape[1], : tokens.shape[1]], is_causal=True)
        return self.head(h)


@pytest.mark.usefixtures("one_thread")
def test_mezo_lowers_the_loss_of_a_tiny_transformer() -> None:
    """Fine-tune a tiny causal LM on a fixed batch of a repeating pattern with MeZO (2.76 -> 1.70)."""
    torch.manual_seed(0)
    model = _TinyTransformer().eval()
    tokens = (torch.arange(12)[None, :] * 3 + torch.arange(8)[:, None]) % 16

    def loss() -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, 16), tokens[:, 1:].reshape(-1))

    with torch.no_grad():
        initial = float(loss())
    opt = steepest.MeZO(model.named_parameters(), lr=3e-3, eps=1e-3, weight_decay=0.0)
    for _ in range(200):
        opt.step(loss)
    with torch.no_grad():
        final = float(loss())
    assert final < 0.7 * initial, (initial, final)


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failing_closure_leaves_the_parameters_in_place(failing_call: int) -> None:
    w = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    before = w.detach().clone()
    opt = steepest.MeZO([w], lr=0.1)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        if len(calls) == failing_call:
            raise KeyError("data loader broke")
        return (w**2).sum()

    with pytest.raises(KeyError):
        opt.step(closure)
    torch.testing.assert_close(w.detach(), before, rtol=0, atol=1e-15)  # up to the round trip's rounding
