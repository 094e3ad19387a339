"""Cost: ITD's memory grows linearly in the unrolled steps, AID's stays flat in the inner steps (exact bytes)."""

from __future__ import annotations

import torch

from steepest.bilevel import aid_hypergrad, inner_gradient_descent, itd_hypergrad
from steepest.bilevel._memory import LiveTensorBytes, peak_bytes
from tests.bilevel.problems import DT, make_ridge, perfeature_ridge_inner, validation_loss


def _setup():
    data = make_ridge(n=50, d=64, n_val=20, seed=0)
    g, f = perfeature_ridge_inner(data), validation_loss(data)
    lam = torch.full((64,), 30.0, dtype=DT)
    return f, g, torch.zeros(64, dtype=DT), lam


def test_tracker_counts_live_storages_exactly():
    with LiveTensorBytes() as mode:
        a = torch.zeros(100, dtype=DT)
        b = a[10:20]  # a view: no new storage
        c = torch.ones(50, dtype=torch.float32)
        assert mode.current == 800 + 200
        del a, b
        assert mode.current == 200
    assert mode.peak == 1000
    del c


def test_itd_memory_grows_linearly_and_aid_memory_is_flat():
    f, g, y0, lam = _setup()
    lr = 1e-3
    steps = [8, 16, 24, 32]

    def itd(t):
        return peak_bytes(lambda: itd_hypergrad(f, g, y0, lam, lr=lr, steps=t))

    def aid(t):
        def run():
            y = inner_gradient_descent(g, y0, lam, lr=lr, steps=t).y
            aid_hypergrad(f, g, y, lam, tol=0.0, max_iter=20)

        return peak_bytes(run)

    itd_bytes = [itd(t) for t in steps]
    aid_bytes = [aid(t) for t in steps]
    per_step = (itd_bytes[1] - itd_bytes[0]) / 8
    assert per_step >= 64 * 8  # each unrolled step keeps at least one iterate-sized tensor
    for t, b in zip(steps, itd_bytes, strict=True):  # affine in T: same bytes for every extra step
        assert b == itd_bytes[0] + per_step * (t - steps[0])
    assert len(set(aid_bytes)) == 1  # flat: independent of the number of inner steps
    assert itd_bytes[-1] > 4 * aid_bytes[-1]
    # truncated ITD grows with the kept steps only
    trunc = [peak_bytes(lambda t=t: itd_hypergrad(f, g, y0, lam, lr=lr, steps=t, truncate=8)) for t in steps]
    assert len(set(trunc)) == 1 and trunc[0] == itd_bytes[0]
