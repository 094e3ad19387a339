"""The write-back pass of compiled updates: each ``copy_`` into an input moves to just after its last reader."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, fx

import steepest
from steepest.optim import _fused
from steepest.optim._write_backs import move_write_backs_early, write_backs_pass

aten = torch.ops.aten


def _update(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    new_a = aten.mul.Tensor(a, aten.sum.default(a))
    new_c = aten.mul.Tensor(c, 2.0)
    new_b = aten.mul.Tensor(b, aten.sum.default(b))
    read_a = aten.sum.default(aten.view.default(a, [-1]))  # reads a's old value through a view, late
    use_b = aten.mul.Tensor(new_b, 3.0)  # uses b's new value, late
    out = aten.add.Tensor(read_a, aten.sum.default(use_b))
    aten.copy_.default(a, new_a)
    aten.copy_.default(b, new_b)
    aten.copy_.default(c, new_c)
    return out


def test_write_backs_move_to_just_after_the_last_node_that_depends_on_either_value() -> None:
    module = fx.symbolic_trace(_update)
    inputs = (torch.randn(3, 4), torch.randn(5), torch.randn(2))
    expected_inputs = tuple(t.clone() for t in inputs)
    expected = module(*expected_inputs)

    assert move_write_backs_early(module.graph) == 1  # c's; a and b are needed up to the last node
    module.recompile()
    nodes = list(module.graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    copy_of = {n.args[0].name: n for n in nodes if n.target is aten.copy_.default}
    new_c = copy_of["c"].args[1]
    last = next(n for n in reversed(nodes) if n.op == "call_function" and n.target is aten.add.Tensor)
    assert order[copy_of["c"]] == order[new_c] + 1  # nothing else depends on c or its new value
    assert order[copy_of["c"]] < order[next(n for n in nodes if n.target is aten.view.default)]
    assert order[copy_of["a"]] > order[last] and order[copy_of["b"]] > order[last]

    got_inputs = tuple(t.clone() for t in inputs)
    got = module(*got_inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for g, e in zip(got_inputs, expected_inputs, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_a_write_back_waits_for_a_read_through_a_view() -> None:
    def update(a: Tensor, c: Tensor) -> Tensor:
        new_a = aten.mul.Tensor(a, 2.0)
        new_c = aten.mul.Tensor(c, 2.0)
        read_a = aten.sum.default(aten.view.default(a, [-1]))
        aten.copy_.default(a, new_a)
        aten.copy_.default(c, new_c)
        return read_a

    module = fx.symbolic_trace(update)
    move_write_backs_early(module.graph)
    nodes = list(module.graph.nodes)
    copy_a = next(n for n in nodes if n.target is aten.copy_.default and n.args[0].name == "a")
    read_a = next(n for n in nodes if n.target is aten.sum.default)
    assert nodes.index(copy_a) == nodes.index(read_a) + 1


def test_inputs_written_back_twice_keep_their_order() -> None:
    def twice(a: Tensor) -> None:
        first = aten.add.Tensor(a, 1.0)
        aten.copy_.default(a, first)
        aten.copy_.default(a, aten.mul.Tensor(first, 2.0))

    module = fx.symbolic_trace(twice)
    before = [n.name for n in module.graph.nodes]
    assert move_write_backs_early(module.graph) == 0
    assert [n.name for n in module.graph.nodes] == before


def test_the_pass_is_in_the_fused_paths_inductor_options() -> None:
    options = _fused.inductor_options()
    assert options["post_grad_custom_post_pass"] is not None
    assert write_backs_pass().uuid() == options["post_grad_custom_post_pass"].uuid()


@pytest.mark.parametrize("name", ["LAMB", "LARS", "AdamMini"])
def test_the_pass_moves_kernels_not_values(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled with and without the pass, three steps agree bit for bit."""
    base = getattr(steepest, name)
    results = []
    for with_pass in (True, False):
        monkeypatch.setattr(_fused, "WRITE_BACKS_PASS", with_pass)
        cls = type(f"{name}Copy", (base,), {})  # compiled per class: a fresh compilation per variant
        gen = torch.Generator().manual_seed(0)
        shapes = [(64, 32), (32,), (16, 64), (64, 32)]
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        kwargs = {"dim": 32, "n_heads": 4} if name == "AdamMini" else {}
        named = [(f"layers.{i}.mlp.up_proj.weight", p) for i, p in enumerate(params)]
        opt = cls(named if name == "AdamMini" else params, lr=1e-2, weight_decay=0.1, fused=True, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        results.append([p.detach().clone() for p in params])
    for passed, without in zip(*results, strict=True):
        assert torch.equal(passed, without)


def test_lars_writes_each_tensor_right_after_its_norms() -> None:
    """The point of the pass: a tensor's write loop follows its own norms, not every tensor's norms."""
    from torch._inductor.utils import run_and_get_code

    params = [torch.nn.Parameter(torch.randn(256, 256)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn(p.shape)
    opt = steepest.LARS(params, lr=0.1, momentum=0.9, fused=True)
    opt.step()  # state exists; the fresh class below compiles anew

    class Fresh(steepest.LARS):
        pass

    fresh = Fresh(params, lr=0.1, momentum=0.9, fused=True)
    fresh.load_state_dict(opt.state_dict())
    with torch._inductor.config.patch(force_disable_caches=True):  # a cached graph would emit no code
        _, codes = run_and_get_code(fresh.step)
    kernel = "\n".join(codes)
    accumulate = re.compile(r"tmp_acc\d+_vec(_local)? = tmp_acc\d+_vec(_local)? \+ tmp\d+;")  # parallel or serial
    reductions = [i for i, line in enumerate(kernel.splitlines()) if accumulate.search(line)]
    stores = [i for i, line in enumerate(kernel.splitlines()) if ".store(" in line]
    assert len(reductions) == 6 and stores  # ||p|| and ||g|| of three tensors
    assert stores[0] < reductions[-1]  # the first tensor is written before the last one's norms
