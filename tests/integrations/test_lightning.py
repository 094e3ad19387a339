"""steepest under a real ``lightning.Trainer`` (automatic optimization) and a real ``lightning.Fabric``.

Lightning wraps the optimizer in a dynamic subclass (``LightningLion``); closure optimizers get
Lightning's own closure (training step, zero_grad, backward). The Hessian-vector-product methods
need ``backward(create_graph=True)``: :class:`steepest.integrations.lightning.CreateGraphBackward`.
Every run trains on one fixed batch, so "the loss moved" is measured on the batch it saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn

import steepest
from steepest.integrations.lightning import CreateGraphBackward, configure_optimizer
from steepest.optim._registry import REGISTRY

GEN = torch.Generator().manual_seed(0)
X = torch.randn(16, 4, generator=GEN)
Y = torch.tanh(X @ torch.randn(4, 1, generator=GEN))

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),  # Lightning's DataLoader advice
    pytest.mark.filterwarnings("ignore:.*reference cycle"),  # torch, on backward(create_graph=True)
]


def loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=16)


class Regression(CreateGraphBackward, L.LightningModule):
    def __init__(self, key: str, **hyperparameters: Any) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.key, self.hyperparameters = key, hyperparameters
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
        return self.loss(*batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = {**REGISTRY[self.key].suggested, **self.hyperparameters}
        return configure_optimizer(self.key, self.net, weight_decay=hp.pop("weight_decay", None), **hp)


def trainer(root: Path, steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )


def batch_loss(module: Regression) -> float:
    with torch.no_grad():
        return float(module.loss(X, Y))


FIRST_ORDER = ["lion"]
CLOSURE = ["sls", "sps", "ponos", "mezo", "adahessian", "sophia_h"]


@pytest.mark.parametrize("key", FIRST_ORDER + CLOSURE)
def test_trainer_automatic_optimization_trains(key: str, tmp_path: Path) -> None:
    module = Regression(key)
    before = batch_loss(module)
    fit = trainer(tmp_path, steps=8)
    fit.fit(module, loader())
    assert isinstance(fit.optimizers[0], REGISTRY[key].cls)
    assert batch_loss(module) < before


def test_hessian_methods_fail_clearly_without_the_mixin(tmp_path: Path) -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 1)

        def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return steepest.AdaHessian(self.parameters())

    with pytest.raises(RuntimeError, match="create_graph=True"):
        trainer(tmp_path, steps=2).fit(Plain(), loader())


def _weights_and_state(module: Regression, optimizer: torch.optim.Optimizer) -> list[Tensor]:
    out = [p.detach().clone() for p in module.parameters()]
    for p in module.parameters():
        out += [v.detach().clone() for v in optimizer.state[p].values() if isinstance(v, Tensor)]
    return out


@pytest.mark.parametrize("key", ["lion", "sls", "adahessian"])
def test_trainer_checkpoint_resume_continues_the_same_trajectory(key: str, tmp_path: Path) -> None:
    straight = Regression(key)
    run = trainer(tmp_path / "straight", steps=6)
    run.fit(straight, loader())
    expected = _weights_and_state(straight, run.optimizers[0])

    first = Regression(key)
    half = trainer(tmp_path / "half", steps=3)
    half.fit(first, loader())
    checkpoint = tmp_path / "half.ckpt"
    half.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=False)["optimizer_states"][0]
    assert saved["state"], "the checkpoint holds the optimizer state"

    resumed = Regression(key)  # fresh weights: everything must come from the checkpoint
    rest = trainer(tmp_path / "rest", steps=6)
    rest.fit(resumed, loader(), ckpt_path=str(checkpoint))
    got = _weights_and_state(resumed, rest.optimizers[0])
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def _fabric_run(key: str, steps: int, load: Path | None = None, save: Path | None = None) -> list[Tensor]:
    fabric = L.Fabric(accelerator="cpu", devices=1)
    module = Regression(key)
    caps = REGISTRY[key].cls.capabilities
    model, optimizer = fabric.setup(module, module.configure_optimizers())
    start = 0
    if load is not None:
        state = {"model": model, "optimizer": optimizer, "step": 0}
        fabric.load(load, state)
        start = state["step"]

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = module.loss(X, Y)
        if torch.is_grad_enabled():
            fabric.backward(loss, create_graph=caps.needs_create_graph)
        return loss

    for _ in range(start, steps):
        if caps.requires_closure:
            optimizer.step(closure)
        else:
            with torch.enable_grad():
                closure()
            optimizer.step()
    if save is not None:
        fabric.save(save, {"model": model, "optimizer": optimizer, "step": steps})
    return _weights_and_state(module, optimizer.optimizer)


@pytest.mark.parametrize("key", ["lion", "sls", "adahessian", "mezo"])
def test_fabric_trains_and_resumes(key: str, tmp_path: Path) -> None:
    before = batch_loss(Regression(key))
    expected = _fabric_run(key, steps=6)
    module = Regression(key)
    with torch.no_grad():
        for p, value in zip(module.parameters(), expected, strict=False):
            p.copy_(value)
    assert batch_loss(module) < before
    _fabric_run(key, steps=3, save=tmp_path / "fabric.ckpt")
    resumed = _fabric_run(key, steps=6, load=tmp_path / "fabric.ckpt")
    for a, b in zip(resumed, expected, strict=True):
        assert torch.equal(a, b)


def test_a_users_kwargs_subclass_runs_under_lightning(tmp_path: Path) -> None:
    class MyLion(steepest.Lion):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            super().__init__(params, **kwargs)

    class Module(Regression):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return MyLion(self.parameters(), lr=1e-3)

    module = Module("lion")
    before = batch_loss(module)
    trainer(tmp_path, steps=4).fit(module, loader())
    assert batch_loss(module) < before
