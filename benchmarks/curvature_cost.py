"""Step cost of the curvature optimizers, Hessian-vector products included, as a ratio to one SGD step.

The unit is what an SGD training step costs on the same model and batch: zero the gradients,
forward, backward, ``SGD.step()``. Each row times one full training step of an optimizer the
way it must be driven (``backward(create_graph=True)`` and one Hessian-vector product for
AdaHessian; the same every ``k``-th step for Sophia-H; a sampled-label forward and backward every
``k``-th step for Sophia-G), alternated step by step with the SGD step, and reports the median
[min, max] of the per-pair ratios. Sophia's ``k``-periodic cost is shown for a refresh step
alone and amortised over a block of ``k`` steps. The AdaHessian paper reports a cost comparable
to first-order methods (about 2x an SGD step).

Model: an MLP (784-512-512-10, ~0.67M parameters) and a small CNN (two 3x3 conv layers and a
linear head, 28x28 inputs), batch 128, float32, CPU.

Run: ``python benchmarks/curvature_cost.py [--threads 2] [--repeats 15] [--models mlp cnn] [--idle-timeout 120]``.
The ``busy`` column is the fraction of the machine other processes used just before the row.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import steepest
from steepest.optim.sophia import sampled_cross_entropy

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import Timing, wait_for_idle

K = 10  # Sophia's refresh period (paper and official default)


def make_model(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    """The model and a fixed batch of 128 examples."""
    gen = torch.Generator().manual_seed(0)
    if name == "mlp":
        model: nn.Module = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 10)
        )
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        )
    x = torch.randn(128, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    return model, x, y


def step_fn(key: str, model: nn.Module, x: Tensor, y: Tensor, refresh_every: int) -> Callable[[], None]:
    """One full training step of ``key`` (forward, backward, optimizer work) as a callable."""
    params = list(model.parameters())
    loss_fn = nn.functional.cross_entropy
    if key == "sgd":
        sgd = torch.optim.SGD(params, lr=1e-3)

        def sgd_step() -> None:
            sgd.zero_grad()
            loss_fn(model(x), y).backward()
            sgd.step()

        return sgd_step
    if key in ("adahessian", "sophia_h"):
        kwargs: dict[str, object] = {"lr": 1e-3}
        if key == "sophia_h":
            kwargs["update_period"] = refresh_every
        opt = steepest.create_optimizer(key, params, **kwargs)
        count = [0]

        def hvp_step() -> None:
            opt.zero_grad()
            due = key == "adahessian" or count[0] % refresh_every == 0
            loss_fn(model(x), y).backward(create_graph=due)
            opt.step()
            count[0] += 1

        return hvp_step
    if key == "sophia_g":
        sophia = steepest.SophiaG(params, lr=1e-4, update_period=refresh_every)

        def sampled() -> Tensor:
            sophia.zero_grad()
            loss = sampled_cross_entropy(model(x))
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        def gnb_step() -> None:
            sophia.zero_grad()
            loss_fn(model(x), y).backward()
            sophia.step(hessian_closure=sampled)

        return gnb_step
    opt = steepest.create_optimizer(key, params, lr=1e-3, ngrads=32, damp=1e-2)

    def plain_step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return plain_step


def _time(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def measure(
    key: str, model_name: str, repeats: int, block: int, refresh_every: int, idle_timeout: float = 120.0
) -> tuple[Timing, Timing, float]:
    """Alternate blocks of ``block`` steps of ``key`` and of SGD; per-block ratio and timings."""
    model, x, y = make_model(model_name)
    ours = step_fn(key, model, x, y, refresh_every)
    sgd = step_fn("sgd", model, x, y, refresh_every)
    for _ in range(2 * block):
        ours()
        sgd()
    busy = wait_for_idle(timeout=idle_timeout)
    ratios, times = [], []
    for _ in range(repeats):
        t_sgd = _time(sgd, block)
        t_ours = _time(ours, block)
        ratios.append(t_ours / t_sgd)
        times.append(t_ours / block)
    return Timing.of(ratios), Timing.of(times), busy


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="*", default=["mlp", "cnn"])
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="seconds to wait for an idle machine per row")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# batch 128, float32, {args.threads} threads, torch {torch.__version__}, {args.repeats} alternated blocks")
    rows = [
        ("adahessian", "every step (1 HVP)", 1, 1),
        ("sophia_h", "refresh step (1 HVP)", 1, 1),
        ("sophia_h", f"amortised, k={K}", K, K),
        ("sophia_g", "refresh step (GNB)", 1, 1),
        ("sophia_g", f"amortised, k={K}", K, K),
        ("mfac", "every step (m=32)", 1, 1),
    ]
    header = (
        f"{'model':<5} {'optimizer':<11} {'which step':<22} {'ratio to SGD: median [min, max]':>32} "
        f"{'ms/step':>9} {'busy':>5}"
    )
    print(header)
    print("-" * len(header))
    for model_name in args.models:
        for key, label, block, refresh in rows:
            ratio, timing, busy = measure(key, model_name, args.repeats, block, refresh, args.idle_timeout)
            text = f"{ratio.median:.2f} [{ratio.low:.2f}, {ratio.high:.2f}]"
            ms = timing.median * 1e3
            print(f"{model_name:<5} {key:<11} {label:<22} {text:>32} {ms:>9.2f} {busy:>5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
