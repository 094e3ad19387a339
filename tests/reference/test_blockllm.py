"""BlockLLM against a float64 transcription of its selection rule and update, step by step.

The transcription (plain Python floats, written from the paper and the official code's rule:
integer budget, visit frequencies from 1/n renormalised after each visit) runs on a drifting
quadratic whose target moves every step, so the loss
rises and the re-selection rule fires several times within the run. Probes are off and every
tensor gets a gradient (``freeze_unselected=False``), so every norm is known at each re-selection;
the initial random draw is taken from the optimizer (it is a random shuffle by definition).
"""

from __future__ import annotations

import math

import torch

import steepest

SIZES = (6, 3, 8, 2, 5)
HP = {"lr": 0.05, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.01}
SPARSITY, UPDATE_FREQ, PATIENCE, STEPS = 0.6, 6, 3, 48


def _problem(t: int) -> tuple[list[list[float]], list[list[float]]]:
    """Curvatures and the target at step ``t``: the target of tensor b drifts at its own speed."""
    weights = [[0.5 + 0.25 * ((3 * b + i) % 5) for i in range(n)] for b, n in enumerate(SIZES)]
    targets = [[math.sin(i + b) + 0.05 * (b + 1) * t for i in range(n)] for b, n in enumerate(SIZES)]
    return weights, targets


def _loss_and_grads(x: list[list[float]], t: int) -> tuple[float, list[list[float]]]:
    w, c = _problem(t)
    loss = sum(0.5 * w[b][i] * (x[b][i] - c[b][i]) ** 2 for b in range(len(x)) for i in range(len(x[b])))
    grads = [[w[b][i] * (x[b][i] - c[b][i]) for i in range(len(x[b]))] for b in range(len(x))]
    return loss, grads


def _reference(x: list[list[float]], selected: set[int]) -> list[tuple[list[list[float]], set[int]]]:
    beta1, beta2 = HP["betas"]
    lr, eps, wd = HP["lr"], HP["eps"], HP["weight_decay"]
    moments: dict[int, list[list[float]]] = {}
    steps: dict[int, int] = {}
    visits = [1.0 / len(SIZES)] * len(SIZES)  # the official start: 1/n for every eligible tensor
    losses: list[float] = []
    out = []
    for t in range(1, STEPS + 1):
        loss, g = _loss_and_grads(x, t)
        losses.append(loss)
        norms = [math.sqrt(sum(v * v for v in gl)) for gl in g]
        for b in sorted(selected):
            m, v = moments.setdefault(b, [[0.0] * SIZES[b], [0.0] * SIZES[b]])
            steps[b] = steps.get(b, 0) + 1
            k = steps[b]
            for i in range(SIZES[b]):
                x[b][i] *= 1.0 - lr * wd
                m[i] = beta1 * m[i] + (1 - beta1) * g[b][i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[b][i] ** 2
                denom = math.sqrt(v[i]) / math.sqrt(1 - beta2**k) + eps
                x[b][i] -= lr / (1 - beta1**k) * m[i] / denom
        if t % UPDATE_FREQ == 0 and len(losses) > PATIENCE:
            if sum(losses) / len(losses) < sum(losses[-PATIENCE:]) / PATIENCE:
                scores = [norms[b] / math.exp(visits[b] / t) for b in range(len(SIZES))]
                order = sorted(range(len(SIZES)), key=lambda b: -scores[b])
                budget, running, chosen = int((1 - SPARSITY) * sum(SIZES)), 0, []
                for b in order:
                    running += SIZES[b]
                    if running >= budget:
                        break
                    chosen.append(b)
                # every norm is known here, so the official random top-up never runs
                assert running >= budget
                selected = set(chosen or order[:1])
                for b in sorted(selected):  # the official update: +1, then renormalise, per tensor
                    visits[b] += 1.0
                    visits = [v / sum(visits) for v in visits]
                moments, steps, losses = {}, {}, []
        out.append(([list(row) for row in x], set(selected)))
    return out


def test_blockllm_matches_the_float64_transcription() -> None:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64)) for n in SIZES]
    start = [p.detach().tolist() for p in params]
    opt = steepest.BlockLLM(
        [(f"layer{b}.weight", p) for b, p in enumerate(params)],
        **HP,
        sparsity=SPARSITY,
        update_freq=UPDATE_FREQ,
        patience=PATIENCE,
        num_probes=0,
        freeze_unselected=False,
        exclude=(),
    )
    names = [f"layer{b}.weight" for b in range(len(SIZES))]
    initial = {b for b, name in enumerate(names) if name in opt.selected_names()}
    expected = _reference(start, initial)
    selections = set()
    for t, (x_ref, selected_ref) in enumerate(expected, start=1):
        w, c = _problem(t)
        weights = [torch.tensor(row, dtype=torch.float64) for row in w]
        targets = [torch.tensor(row, dtype=torch.float64) for row in c]

        def closure(weights: list[torch.Tensor] = weights, targets: list[torch.Tensor] = targets) -> torch.Tensor:
            opt.zero_grad()
            loss = sum(0.5 * (wb * (p - cb) ** 2).sum() for p, wb, cb in zip(params, weights, targets, strict=True))
            assert isinstance(loss, torch.Tensor)
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        opt.step(closure)
        got = {int(name[5:].split(".")[0]) for name in opt.selected_names()}
        assert got == selected_ref, f"step {t}"
        selections.add(frozenset(got))
        for p, row in zip(params, x_ref, strict=True):
            torch.testing.assert_close(p.detach(), torch.tensor(row, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert len(selections) >= 2, "the run must exercise at least one re-selection"
