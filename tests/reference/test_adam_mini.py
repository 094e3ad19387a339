"""Adam-mini against the official code (PyPI adam-mini 1.1.1), and its other checked claims.

AdamW is its singleton-block limit; its state is about half of AdamW's; bad input raises.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import pytest
import torch
from adam_mini import Adam_mini
from torch import Tensor, nn

import steepest
from steepest.optim import _base
from tests.reference._compare import assert_same_trajectory

DIM, N_HEADS, N_KV_HEADS, VOCAB, FF = 16, 4, 2, 11, 32


class Attention(nn.Module):
    """Grouped-query attention with the Llama names the official code recognises."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        repeat = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, ff: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, n_kv_heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc_in", nn.Linear(dim, ff))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc_out", nn.Linear(ff, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """Embedding (wte), two blocks (q/k/v/o projections, MLP, LayerNorms), final norm, lm_head."""

    def __init__(
        self, dim: int = DIM, n_heads: int = N_HEADS, n_kv_heads: int = N_KV_HEADS, vocab: int = VOCAB, ff: int = FF
    ) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab, dim),
                "h": nn.ModuleList([Block(dim, n_heads, n_kv_heads, ff) for _ in range(2)]),
                "ln_f": nn.LayerNorm(dim),
            }
        )
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.transformer["wte"](tokens)
        for block in self.transformer["h"]:
            x = block(x)
        return self.lm_head(self.transformer["ln_f"](x))


def _model(dtype: torch.dtype, seed: int = 0, **sizes: int) -> TinyGPT:
    torch.manual_seed(seed)
    model = TinyGPT(**sizes).to(dtype)
    with torch.no_grad():  # LayerNorm gains and biases away from 1 and 0, so decay and blocks show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _loss(model: TinyGPT, tokens: Tensor) -> Tensor:
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


HYPER = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}


@pytest.mark.parametrize("mode", ["loop", "foreach-stacked", "foreach-one-at-a-time"])
@pytest.mark.parametrize(("dtype", "rtol", "atol"), [(torch.float64, 1e-12, 1e-14), (torch.float32, 1e-5, 1e-6)])
def test_matches_official_adam_mini_on_a_tiny_gpt(
    mode: str, dtype: torch.dtype, rtol: float, atol: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop and both foreach ways with blocked tensors.

    Stacked per shape (small ones) or one norm per tensor (large ones; the tiny GPT's tensors are
    small, so that mode lowers the threshold to 0).
    """
    foreach = mode != "loop"
    if mode == "foreach-one-at-a-time":
        monkeypatch.setattr(_base, "FOREACH_STACK_MAX_NUMEL", 0)
    ours_model = _model(dtype)
    theirs_model = copy.deepcopy(ours_model)
    sizes = {"dim": DIM, "n_heads": N_HEADS, "n_kv_heads": N_KV_HEADS}
    ours = steepest.AdamMini(ours_model.named_parameters(), **HYPER, **sizes, foreach=foreach)
    theirs = Adam_mini(theirs_model.named_parameters(), **HYPER, **sizes, verbose=False)
    gen = torch.Generator().manual_seed(7)
    for step in range(40):
        tokens = torch.randint(0, VOCAB, (4, 9), generator=gen)
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            opt.zero_grad()
            _loss(model, tokens).backward()
            opt.step()
        for (name, a), b in zip(ours_model.named_parameters(), theirs_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, n=name, s=step: f"{n} step {s}: {m}")
    # Same partition as the official code: compare the second-moment layouts.
    for a, b in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
        theirs_v = theirs.state[b].get("vmean", theirs.state[b].get("v"))
        assert ours.state[a]["exp_avg_sq"].shape == theirs_v.shape
        torch.testing.assert_close(ours.state[a]["exp_avg_sq"], theirs_v, rtol=10 * rtol, atol=atol)


def test_partition_of_the_tiny_gpt() -> None:
    opt = steepest.AdamMini(_model(torch.float64).named_parameters(), dim=DIM, n_heads=N_HEADS)
    rows = {line.split("  ")[0]: line.split("  ")[2:5] for line in opt.partition_report().splitlines()[1:]}
    assert rows["transformer.wte.weight"] == ["row", f"({VOCAB}, 1)", "decay"]
    assert rows["transformer.h.0.attn.q_proj.weight"] == ["head", f"({N_HEADS}, 1)", "decay"]
    assert rows["transformer.h.0.attn.k_proj.weight"] == ["head", f"({N_KV_HEADS}, 1)", "decay"]
    assert rows["transformer.h.0.attn.v_proj.weight"] == ["row", f"({N_KV_HEADS * DIM // N_HEADS}, 1)", "decay"]
    assert rows["transformer.h.0.attn.o_proj.weight"] == ["row", f"({DIM}, 1)", "decay"]
    assert rows["transformer.h.0.attn.o_proj.bias"] == ["full", f"({DIM},)", "no-decay"]
    assert rows["transformer.h.1.mlp.fc_in.weight"] == ["row", f"({FF}, 1)", "decay"]
    assert rows["transformer.h.1.ln_2.weight"] == ["tensor", "()", "no-decay"]
    assert rows["transformer.ln_f.weight"] == ["tensor", "()", "no-decay"]
    assert rows["lm_head.weight"] == ["row", f"({VOCAB}, 1)", "decay"]


def _named(prefix: str, suffix: str) -> Callable[[list[nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    return lambda params: [(f"{prefix}{i}{suffix}", p) for i, p in enumerate(params)]


@pytest.mark.parametrize("foreach", [False, True])
def test_singleton_blocks_equal_adamw(foreach: bool) -> None:
    # dim=1, n_heads=1: a head has dim*dim/n_heads = 1 entry, so every q_proj entry is its own
    # block and Adam-mini is AdamW (the same eps form, decoupled decay applied).
    hyper = {"lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}
    assert_same_trajectory(
        lambda p: steepest.AdamMini(_named("layer", ".q_proj.weight")(p), **hyper, dim=1, n_heads=1, foreach=foreach),
        lambda p: torch.optim.AdamW(p, **hyper, foreach=False),
        steps=40,
        rtol=1e-12,
        atol=1e-14,
    )
    # Bias-named tensors are plain Adam with no decay (the official code forces it to 0).
    assert_same_trajectory(
        lambda p: steepest.AdamMini(_named("layer", ".bias")(p), **hyper, foreach=foreach),
        lambda p: torch.optim.AdamW(p, **{**hyper, "weight_decay": 0.0}, foreach=False),
        steps=40,
        rtol=1e-12,
        atol=1e-14,
    )


def test_rows_of_one_entry_equal_adamw() -> None:
    hyper = {"lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}
    gen = torch.Generator().manual_seed(0)
    ours_p = [nn.Parameter(torch.randn(n, 1, generator=gen, dtype=torch.float64)) for n in (3, 5)]
    theirs_p = [nn.Parameter(p.detach().clone()) for p in ours_p]
    ours = steepest.AdamMini([(f"mlp.{i}.weight", p) for i, p in enumerate(ours_p)], **hyper)
    theirs = torch.optim.AdamW(theirs_p, **hyper, foreach=False)
    for _ in range(30):
        for params, opt in ((ours_p, ours), (theirs_p, theirs)):
            for p in params:
                p.grad = torch.sin(3.0 * p.detach()) + 0.1 * p.detach() ** 2
            opt.step()
    for a, b in zip(ours_p, theirs_p, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_state_bytes_are_at_most_051_of_adamw() -> None:
    sizes = {"dim": 64, "n_heads": 4, "n_kv_heads": 4, "vocab": 256, "ff": 256}
    model = _model(torch.float32, **sizes)
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    ours = steepest.AdamMini(model.named_parameters(), dim=64, n_heads=4)
    adamw = torch.optim.AdamW(model.parameters())
    for opt in (ours, adamw):
        opt.zero_grad()
        _loss(model, tokens).backward()
        opt.step()
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    # AdamW: exp_avg and exp_avg_sq like the parameter, a float32 step per parameter.
    assert steepest.state_bytes(adamw) == 8 * n + 4 * len(params)
    expected = 0
    for name, p in model.named_parameters():
        lowered = name.lower()
        if "bias" in lowered:
            v = p.numel()
        elif "q_proj" in lowered or "k_proj" in lowered:
            v = p.numel() // (64 * 64 // 4)
        elif p.dim() == 2:
            v = p.shape[0]
        else:
            v = 1
        expected += 4 * p.numel() + 4 * v + 4
    ratio = steepest.state_bytes(ours) / steepest.state_bytes(adamw)
    assert steepest.state_bytes(ours) == expected
    assert ratio <= 0.51, ratio


def test_state_dict_round_trip_on_the_tiny_gpt() -> None:
    model = _model(torch.float64)
    opt = steepest.AdamMini(model.named_parameters(), dim=DIM, n_heads=N_HEADS, weight_decay=0.1)
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        opt.zero_grad()
        _loss(model, tokens).backward()
        opt.step()
    copy_model = copy.deepcopy(model)
    copy_opt = steepest.AdamMini(copy_model.named_parameters(), dim=DIM, n_heads=N_HEADS, weight_decay=0.1)
    copy_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert copy_opt.param_groups[0]["param_names"] == [n for n, _ in model.named_parameters()]
    for m, o in ((model, opt), (copy_model, copy_opt)):
        o.zero_grad()
        _loss(m, tokens).backward()
        o.step()
    for a, b in zip(model.parameters(), copy_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # Saved names that partition a parameter differently are refused, and nothing changes.
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][0]["param_names"] = ["x.weight"] * len(state["param_groups"][0]["param_names"])
    with pytest.raises(ValueError, match="partitions"):
        copy_opt.load_state_dict(state)


def test_unnamed_parameters_raise() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="named_parameters"):
        steepest.AdamMini(model.parameters())
    with pytest.raises(ValueError, match="named_parameters"):
        steepest.AdamMini([{"params": list(model.parameters()), "lr": 0.1}])
    opt = steepest.AdamMini([("mlp.weight", model.weight)])
    with pytest.raises(ValueError, match="named_parameters"):
        opt.add_param_group({"params": [model.bias]})
    assert len(opt.param_groups) == 1


def test_query_key_names_need_dim_and_n_heads() -> None:
    named = list(_model(torch.float32).named_parameters())
    with pytest.raises(ValueError, match="dim and n_heads are required"):
        steepest.AdamMini(named)
    with pytest.raises(ValueError, match="dim and n_heads are required"):
        steepest.AdamMini(named, dim=DIM)
    with pytest.raises(ValueError, match="whole number of heads"):
        steepest.AdamMini(named, dim=DIM, n_heads=1)  # a head of 256 entries: k_proj has 128
    with pytest.raises(ValueError, match="n_kv_heads"):
        steepest.AdamMini(named, dim=DIM, n_heads=N_HEADS, n_kv_heads=3)
    # Without any query/key name, dim and n_heads may be left out.
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    steepest.AdamMini([(f"mlp.{n}", p) for n, p in mlp.named_parameters()])


def test_unmatched_matrices_are_reported() -> None:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    with pytest.warns(UserWarning, match=r"in_proj_weight.*out_proj\.weight"):
        opt = steepest.AdamMini(layer.named_parameters())
    report = opt.partition_report()
    assert "self_attn.in_proj_weight  (24, 8)  tensor  ()  decay  no rule matched" in report
    assert "linear1.weight  (16, 8)  row  (16, 1)  decay" in report
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steepest.AdamMini(_model(torch.float32).named_parameters(), dim=DIM, n_heads=N_HEADS)


def test_partition_warning_points_at_the_callers_line() -> None:
    """The warning is raised inside torch's Optimizer.__init__; it must name this file, on every path."""
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    for build in (
        lambda: steepest.AdamMini(layer.named_parameters()),
        lambda: steepest.create_optimizer("adam_mini", list(layer.named_parameters())),
        lambda: steepest.AdamMini([("mlp.weight", nn.Parameter(torch.ones(2, 2)))]).add_param_group(
            {"params": [("self_attn.in_proj_weight", layer.self_attn.in_proj_weight)]}
        ),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build()
        assert [w.filename for w in caught if "partition rule" in str(w.message)] == [__file__]


def test_ln_substring_disables_decay() -> None:
    # The official rule: "norm", "ln" or "bias" anywhere in the name means no weight decay.
    w, k = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    opt = steepest.AdamMini([("mlp.weight", w), ("kiln.mlp.weight", k)], lr=0.1, weight_decay=0.5)
    w.grad, k.grad = torch.zeros(2, 2), torch.zeros(2, 2)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((2, 2), 1 - 0.1 * 0.5))
    assert torch.equal(k.detach(), torch.ones(2, 2))
    assert math.isclose(float(w.detach()[0, 0]), 0.95, rel_tol=1e-6)
