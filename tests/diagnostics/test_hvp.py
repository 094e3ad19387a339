"""Hessian-vector products (double backward and torch.func) against torch.autograd.functional.hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steepest.diagnostics import (
    HessianOperator,
    grouped_blocks,
    hvp,
    hvp_func,
    module_blocks,
    parameter_blocks,
    resolve_blocks,
)
from tests.diagnostics._problems import exact_hessian, tiny_mlp


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_operator_equals_exact_hessian_times_v(method: str) -> None:
    model, loss_fn, batch = tiny_mlp()
    exact = exact_hessian(model, loss_fn, batch)
    op = HessianOperator(model, loss_fn, batch, method=method)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(op.dim, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(op.matvec_flat(v), exact @ v, rtol=1e-10, atol=1e-12)
    # not a trivially small matrix: some curvature couples different layers
    assert exact[:16, 16:].abs().max() > 1e-3


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_block_operator_is_the_diagonal_block(method: str) -> None:
    model, loss_fn, batch = tiny_mlp(seed=3)
    full = HessianOperator(model, loss_fn, batch, method=method)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(2)
    for names in (["2.weight"], ["0.weight", "2.bias"], ["0.bias"]):
        exact = exact_hessian(model, loss_fn, batch, names)
        for op in (full.block(names), HessianOperator(model, loss_fn, batch, names, method=method)):  # type: ignore[arg-type]
            v = torch.randn(op.dim, generator=gen, dtype=torch.float64)
            torch.testing.assert_close(op.matvec_flat(v), exact @ v, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(op.to_dense(), exact, rtol=1e-10, atol=1e-12)


def test_hvp_closure_and_hvp_func_agree_with_exact() -> None:
    model, loss_fn, batch = tiny_mlp(seed=5)
    params = dict(model.named_parameters())
    names = ["0.weight", "2.weight"]
    exact = exact_hessian(model, loss_fn, batch, names)
    vs = [torch.randn_like(params[n]) for n in names]
    flat_v = torch.cat([v.reshape(-1) for v in vs])
    by_autograd = hvp(lambda: loss_fn(model, batch), [params[n] for n in names], vs)
    by_func = hvp_func(model, loss_fn, batch, dict(zip(names, vs, strict=True)))
    expected = exact @ flat_v
    torch.testing.assert_close(torch.cat([h.reshape(-1) for h in by_autograd]), expected)
    torch.testing.assert_close(torch.cat([by_func[n].reshape(-1) for n in names]), expected)


def test_hvp_leaves_grad_untouched_and_handles_unused_parameters() -> None:
    model, loss_fn, batch = tiny_mlp()
    unused = nn.Parameter(torch.ones(3, dtype=torch.float64))
    model.register_parameter("unused", unused)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    op = HessianOperator(model, loss_fn, batch)
    out = op.unflatten(op.matvec_flat(torch.ones(op.dim, dtype=torch.float64)))
    assert torch.equal(out["unused"], torch.zeros(3, dtype=torch.float64))
    assert all(torch.all(p.grad == 7.0) for p in model.parameters())  # type: ignore[arg-type]
    func = hvp_func(model, loss_fn, batch, {"unused": torch.ones(3, dtype=torch.float64)})
    assert torch.equal(func["unused"], torch.zeros(3, dtype=torch.float64))


def test_operator_errors() -> None:
    model, loss_fn, batch = tiny_mlp()
    with pytest.raises(ValueError, match="not trainable"):
        HessianOperator(model, loss_fn, batch, ["nope"])
    with pytest.raises(ValueError, match="method"):
        HessianOperator(model, loss_fn, batch, method="finite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scalar"):
        HessianOperator(model, lambda m, b: m(b[0]), batch)
    op = HessianOperator(model, loss_fn, batch)
    with pytest.raises(ValueError, match="shape"):
        op.matvec_flat(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        op.block(["0.weight"]).block(["2.weight"])
    with pytest.raises(RuntimeError, match="process group"):
        HessianOperator(model, loss_fn, batch, all_reduce=True).matvec_flat(torch.ones(op.dim, dtype=torch.float64))


def test_block_partitions() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 3), nn.ReLU()), nn.Linear(3, 1))
    model[2].bias.requires_grad_(False)
    assert list(parameter_blocks(model)) == ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "2.weight"]
    assert module_blocks(model) == {
        "0": ["0.weight", "0.bias"],
        "1.0": ["1.0.weight", "1.0.bias"],
        "2": ["2.weight"],
    }
    assert module_blocks(model, depth=1)["1"] == ["1.0.weight", "1.0.bias"]
    by_type = module_blocks(model, module_types=(nn.Sequential,))
    assert by_type == {"": ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "2.weight"]}  # the root claims all
    inner = module_blocks(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), module_types=(nn.LayerNorm,))
    assert inner == {"1": ["1.weight", "1.bias"], "rest": ["0.weight", "0.bias"]}
    assert resolve_blocks(model, "model") == {"model": list(parameter_blocks(model))}
    assert grouped_blocks(model, {"a": ["0.weight", "2.weight"]}) == {"a": ["0.weight", "2.weight"]}
    for bad, msg in (
        ({"a": ["2.bias"]}, "not a trainable"),
        ({"a": ["0.weight"], "b": ["0.weight"]}, "both"),
        ({"a": []}, "empty"),
        ({"a": "0.weight"}, "string"),
    ):
        with pytest.raises(ValueError, match=msg):
            grouped_blocks(model, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown block spec"):
        resolve_blocks(model, "layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="either"):
        module_blocks(model, depth=1, module_types=(nn.Linear,))
