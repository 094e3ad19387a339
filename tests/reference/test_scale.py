"""SCALE against a float64 transcription of the official code (no oracle on PyPI).

The transcription follows OptimAI-Lab/Minimalist_LLM_Pretraining@f5bd4e7
``mem_eff_pt/pt_scale/scale_optimizer.py``: main / secondary / oned parameter lists, the
last-layer momentum without bias correction, the per-column RMS with a 1e-8 floor
(``col_dim = 0`` for ``embed_tokens``), and AdamW for 1-D parameters at
``adam_lr * lr_t / lr_0``. Only difference: parameters with more than 2 dimensions are
reshaped back (the official code fails there), as steepest documents.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import steepest
from steepest.optim import _base
from tests.reference._compare import assert_same_trajectory


class ReferenceSCALE(torch.optim.Optimizer):
    """Literal transcription: one group, explicit lists, the lr schedule read from the group."""

    def __init__(
        self,
        main_params: list[Tensor],
        secondary_params: list[Tensor],
        oned_params: list[Tensor],
        embed_params: list[Tensor],
        lr: float,
        wd: float = 0.0,
        momentum: float = 0.9,
        adam_lr: float | None = None,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
    ) -> None:
        params = [*main_params, *secondary_params, *oned_params]
        super().__init__(params, {"lr": lr})
        self.lr_0 = lr
        self.wd, self.momentum = wd, momentum
        self.adam_lr = lr if adam_lr is None else adam_lr
        self.betas, self.eps = adamw_betas, adamw_eps
        self.main = {id(p) for p in main_params}
        self.secondary = {id(p) for p in secondary_params}
        self.embed = {id(p) for p in embed_params}

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        group = self.param_groups[0]
        lr = group["lr"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad.to(torch.float64)
            state = self.state[p]
            if id(p) in self.main or id(p) in self.secondary:
                G = g.reshape(g.shape[0], -1) if g.ndim > 2 else g
                if id(p) in self.secondary:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(G)
                    m = state["momentum_buffer"]
                    m.mul_(self.momentum).add_((1 - self.momentum) * G)
                    G = m
                col_dim = 0 if id(p) in self.embed else 1
                s = torch.sqrt(torch.mean(G**2, dim=col_dim, keepdim=True)).clamp(min=1e-8)
                U = (G / s).reshape(p.shape)
                p.mul_(1 - lr * self.wd)
                p.add_(-lr * U)
            else:
                lr1d = self.adam_lr * lr / self.lr_0
                if "step" not in state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(g)
                    state["v"] = torch.zeros_like(g)
                state["step"] += 1
                t = state["step"]
                b1, b2 = self.betas
                state["m"] = b1 * state["m"] + (1 - b1) * g
                state["v"] = b2 * state["v"] + (1 - b2) * g * g
                step_size = lr1d * math.sqrt(1 - b2**t) / (1 - b1**t)
                p.copy_(p * (1 - lr1d * self.wd) - step_size * state["m"] / (state["v"].sqrt() + self.eps))


def _ours_groups(params: list[nn.Parameter], adam_ratio: float) -> list[dict]:
    # _compare's non-empty shapes: (5, 4) last layer, (4,) vector, (3, 2, 2) embedding-like matrix.
    last, vec, emb = params
    return [
        {"params": [last], "role": "last_layer"},
        {"params": [emb], "role": "matrix", "norm_dim": 0},
        {"params": [vec], "role": "vector", "adam_lr_ratio": adam_ratio},
    ]


def _theirs(params: list[nn.Parameter], **kwargs: float) -> ReferenceSCALE:
    last, vec, emb = params
    return ReferenceSCALE([emb], [last], [vec], [emb], **kwargs)  # type: ignore[arg-type]


#: The foreach path's two ways with matrices: stacked per shape (small ones) or one at a time with
#: no parameter-sized temporary (large ones); the test matrices are small, so "one at a time" lowers
#: the threshold to 0.
FOREACH_MODES = ["loop", "foreach-stacked", "foreach-one-at-a-time"]


def _set_foreach_mode(mode: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    if mode == "foreach-one-at-a-time":
        monkeypatch.setattr(_base, "FOREACH_STACK_MAX_NUMEL", 0)
    return mode != "loop"


@pytest.mark.parametrize("mode", FOREACH_MODES)
@pytest.mark.parametrize(
    ("lr", "wd", "momentum", "adam_lr"),
    [(1e-2, 0.0, 0.9, None), (3e-3, 0.1, 0.5, 2e-2)],
)
def test_scale_matches_official_transcription(
    lr: float, wd: float, momentum: float, adam_lr: float | None, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreach = _set_foreach_mode(mode, monkeypatch)
    ratio = 1.0 if adam_lr is None else adam_lr / lr
    assert_same_trajectory(
        lambda p: steepest.SCALE(
            _ours_groups(p, ratio), lr=lr, weight_decay=wd, momentum=momentum, foreach=foreach
        ),
        lambda p: _theirs(p, lr=lr, wd=wd, momentum=momentum, adam_lr=adam_lr),  # type: ignore[arg-type]
        steps=40,
        rtol=1e-12,
        atol=1e-13,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_scale_adam_lr_follows_the_schedule(foreach: bool) -> None:
    """lr1d = adam_lr * lr_t / lr_0: a scheduler scaling lr scales the vector lr identically."""
    lr, adam_lr, steps = 1e-2, 2e-2, 30
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((5, 4), (4,), (3, 2, 2))]
    ours_p = [nn.Parameter(t.clone()) for t in init]
    theirs_p = [nn.Parameter(t.clone()) for t in init]
    ours = steepest.SCALE(_ours_groups(ours_p, adam_lr / lr), lr=lr, weight_decay=0.1, foreach=foreach)
    theirs = _theirs(theirs_p, lr=lr, wd=0.1, adam_lr=adam_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ours, T_max=steps, eta_min=0.1 * lr)
    for t in range(steps):
        grads = [torch.randn(s.shape, generator=gen, dtype=torch.float64) for s in init]
        for params in (ours_p, theirs_p):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
        theirs.param_groups[0]["lr"] = ours.param_groups[0]["lr"]
        ours.step()
        theirs.step()
        sched.step()
        for a, b in zip(ours_p, theirs_p, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=f"step {t + 1}")


@pytest.mark.parametrize("norm_dim", [0, 1])
def test_scale_foreach_one_at_a_time_handles_non_contiguous_params(
    norm_dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permuted (non-contiguous) parameter cannot be viewed as ``(size0, -1)``: same step as the loop."""
    monkeypatch.setattr(_base, "FOREACH_STACK_MAX_NUMEL", 0)
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)
    grads = [torch.randn(2, 3, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    results = []
    for foreach in (False, True):
        w = nn.Parameter(base.clone().permute(2, 1, 0))
        assert not w.is_contiguous()
        opt = steepest.SCALE(
            [{"params": [w], "role": "matrix", "norm_dim": norm_dim}], lr=0.1, weight_decay=0.1, foreach=foreach
        )
        for g in grads:
            w.grad = g.clone()
            opt.step()
        results.append(w.detach().clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-14)
    assert not torch.equal(results[0], base.permute(2, 1, 0))


def test_scale_step_keeps_the_shape_of_3d_params() -> None:
    w = nn.Parameter(torch.ones(2, 3, 4))
    opt = steepest.SCALE([{"params": [w], "role": "matrix"}], lr=0.1)
    w.grad = torch.full((2, 3, 4), 2.0)
    opt.step()
    # each (size0, -1) row has RMS 2, so U = 1 everywhere
    torch.testing.assert_close(w.detach(), torch.full((2, 3, 4), 0.9))


def test_scale_rejects_matrix_roles_for_vectors() -> None:
    with pytest.raises(ValueError, match="2 dimensions"):
        steepest.SCALE([{"params": [nn.Parameter(torch.zeros(3))], "role": "last_layer"}])


class _TinyLM(nn.Module):
    """Transformer-shaped: embedding, one attention + MLP block with norms, final norm, lm_head."""

    def __init__(self, vocab: int = 16, d: int = 8) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.attn_norm = nn.LayerNorm(d, bias=False)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.mlp_norm = nn.LayerNorm(d, bias=False)
        self.up_proj = nn.Linear(d, 2 * d)
        self.down_proj = nn.Linear(2 * d, d, bias=False)
        self.norm = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed_tokens(tokens)
        h = self.attn_norm(x)
        att = torch.softmax(self.q_proj(h) @ self.k_proj(h).transpose(-1, -2), dim=-1)
        x = x + self.o_proj(att @ self.v_proj(h))
        x = x + self.down_proj(torch.relu(self.up_proj(self.mlp_norm(x))))
        return self.lm_head(self.norm(x))


def test_scale_param_groups_and_exact_state_bytes() -> None:
    torch.manual_seed(0)
    model = _TinyLM()
    groups = steepest.scale_param_groups(model, last_layer="lm_head", adam_lr_ratio=20.0)
    roles = {(g["role"], g.get("norm_dim", 1)): len(g["params"]) for g in groups}
    # q, k, v, o, up, down | embedding | lm_head | 3 norms + up_proj's bias
    assert roles == {("matrix", 1): 6, ("matrix", 0): 1, ("last_layer", 1): 1, ("vector", 1): 4}
    opt = steepest.SCALE(groups, lr=1e-3)
    tokens = torch.randint(0, 16, (2, 5))
    nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
    opt.step()
    # lm_head momentum: 16*8 float32 = 512 B; per 1-D param exp_avg + exp_avg_sq + a float32 step:
    # 3 norms of 8 -> 3 * (2*8*4 + 4) = 204 B; up_proj bias of 16 -> 2*16*4 + 4 = 132 B. Total 848 B.
    assert steepest.state_bytes(opt) == 512 + 204 + 132 == 848
    # AdamW on the same model keeps 2 * 4 * numel + 4 per parameter.
    n_params = sum(p.numel() for p in model.parameters())
    adam_bytes = 8 * n_params + 4 * len(list(model.parameters()))
    assert n_params == 808
    assert adam_bytes == 6512
    adamw = steepest.AdamW(model.parameters(), lr=1e-3)
    adamw.step()
    assert steepest.state_bytes(adamw) == adam_bytes
    assert steepest.state_bytes(opt) / adam_bytes < 0.14  # 848 / 6512 = 13%


def test_scale_param_groups_needs_the_last_layer() -> None:
    with pytest.raises(ValueError, match="output"):
        steepest.scale_param_groups(_TinyLM(), last_layer="output")
    tied = _TinyLM()
    tied.lm_head.weight = tied.embed_tokens.weight
    with pytest.raises(ValueError, match="tied"):
        steepest.scale_param_groups(tied, last_layer="lm_head")
