"""steepest with a real ``transformers.Trainer`` on a tiny GPT-2 and a tiny Llama built from a config.

Every run trains on one fixed batch (four sequences, batch size four), so "the loss moved" is
measured on the batch the optimizer saw: the loss after training is below the loss before.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
from transformers.pytorch_utils import Conv1D

import steepest
from steepest.integrations.huggingface import SteepestTrainer, model_facts, optimizer_cls_and_kwargs
from steepest.optim._registry import REGISTRY

VOCAB, SEQ = 32, 8


def gpt2(attention: str = "sdpa") -> GPT2LMHeadModel:
    """Tiny GPT-2; ``attention="eager"`` for double backward (torch's SDPA kernels have no second derivative)."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation=attention,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=16, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config)


class Batch(torch.utils.data.Dataset):
    """Four fixed token sequences: with batch size four, every step sees the same batch."""

    def __init__(self) -> None:
        self.tokens = torch.randint(0, VOCAB, (4, SEQ), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


def batch_loss(model: torch.nn.Module) -> float:
    tokens = Batch().tokens
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=tokens, labels=tokens).loss)


def args(tmp_path: Path, steps: int = 6, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "max_steps": steps,
        "per_device_train_batch_size": 4,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        **overrides,
    }
    return TrainingArguments(**settings)


def train(trainer: Trainer) -> tuple[float, float]:
    before = batch_loss(trainer.model)
    trainer.train()
    return before, batch_loss(trainer.model)


def suggested(key: str) -> tuple[float, dict[str, Any]]:
    hp = dict(REGISTRY[key].suggested)
    return hp.pop("weight_decay", 0.0), hp


# -- first-order optimizers: nothing from steepest.integrations is needed ---------------------


@pytest.mark.parametrize("build", [gpt2, llama])
def test_first_order_through_optimizers_and_optimizer_cls_and_kwargs(build: Any, tmp_path: Path) -> None:
    model = build()
    opt = steepest.Lion(steepest.param_groups(model, weight_decay=0.1), lr=1e-3)
    before, after = train(Trainer(model=model, args=args(tmp_path), train_dataset=Batch(), optimizers=(opt, None)))
    assert after < before
    model = build()
    trainer = Trainer(
        model=model,
        args=args(tmp_path, weight_decay=0.1),
        train_dataset=Batch(),
        optimizer_cls_and_kwargs=(steepest.Lion, {"lr": 1e-3}),
    )
    before, after = train(trainer)
    assert after < before
    assert type(trainer.optimizer.optimizer) is steepest.Lion
    # The Trainer's own decay / no-decay split reached the optimizer's groups.
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.1, 0.0]


# -- optimizers that need names or structured groups -----------------------------------------


def test_a_plain_pair_cannot_give_adam_mini_its_names(tmp_path: Path) -> None:
    trainer = Trainer(
        model=llama(), args=args(tmp_path), train_dataset=Batch(), optimizer_cls_and_kwargs=(steepest.AdamMini, {})
    )
    with pytest.raises(ValueError, match="needs parameter names"):
        trainer.train()


@pytest.mark.parametrize("key", ["adam_mini", "blockllm", "galore_adamw", "fira", "frugal", "scale"])
@pytest.mark.parametrize("build", [gpt2, llama])
def test_named_and_structured_optimizers_through_optimizer_cls_and_kwargs(
    key: str, build: Any, tmp_path: Path
) -> None:
    model = build()
    _, hp = suggested(key)
    if key == "scale" and build is gpt2:  # GPT-2's lm_head is tied to wte: SCALE must be told its last layer
        with pytest.raises(ValueError, match="tied to the embedding"):
            optimizer_cls_and_kwargs(key, model, weight_decay=0.1, **hp)
        return
    pair = optimizer_cls_and_kwargs(key, model, weight_decay=0.1, **hp)
    trainer = Trainer(model=model, args=args(tmp_path), train_dataset=Batch(), optimizer_cls_and_kwargs=pair)
    before, after = train(trainer)
    assert after < before
    opt = trainer.optimizer.optimizer
    assert type(opt) is REGISTRY[key].cls
    decays = {g["weight_decay"] for g in opt.param_groups}
    assert decays == {0.0, 0.1}
    if key == "adam_mini" and build is llama:  # dim and n_heads came from the config: Q/K by head
        report = opt.partition_report()
        assert "q_proj.weight  (16, 16)  head  (2, 1)" in report
        assert "k_proj.weight  (8, 16)  head  (1, 1)" in report  # one KV head (grouped-query attention)


def test_model_facts_read_the_config() -> None:
    assert model_facts(gpt2()) == {"dim": 16, "n_heads": 2}
    assert model_facts(llama()) == {"dim": 16, "n_heads": 2, "n_kv_heads": 1}
    assert model_facts(torch.nn.Linear(2, 2)) == {}


# -- closure optimizers and Sophia-G: SteepestTrainer ----------------------------------------

CLOSURE_KEYS = ["sls", "sls_adam", "ponos", "sps", "mezo", "zo_adam", "adahessian", "sophia_h", "newton_cg"]


@pytest.mark.parametrize("key", CLOSURE_KEYS)
def test_steepest_trainer_drives_closure_optimizers(key: str, tmp_path: Path) -> None:
    model = gpt2("eager" if REGISTRY[key].capabilities.needs_create_graph else "sdpa")
    weight_decay, hp = suggested(key)
    pair = optimizer_cls_and_kwargs(key, model, weight_decay=weight_decay, **hp)
    trainer = SteepestTrainer(
        model=model, args=args(tmp_path, max_grad_norm=0.0), train_dataset=Batch(), optimizer_cls_and_kwargs=pair
    )
    before, after = train(trainer)
    assert after < before
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged and all(torch.isfinite(torch.tensor(logged)))


def test_a_plain_trainer_cannot_drive_a_closure_optimizer(tmp_path: Path) -> None:
    model = gpt2()
    trainer = Trainer(
        model=model,
        args=args(tmp_path, max_grad_norm=0.0),
        train_dataset=Batch(),
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs("sls", model),
    )
    with pytest.raises(RuntimeError, match="requires a closure"):
        trainer.train()


def test_steepest_trainer_refuses_settings_a_closure_step_would_ignore(tmp_path: Path) -> None:
    refused = (({"max_grad_norm": 1.0}, "max_grad_norm=0"), ({"gradient_accumulation_steps": 2}, "accumulation"))
    for overrides, match in refused:
        model = gpt2()
        trainer = SteepestTrainer(
            model=model,
            args=args(tmp_path, **{"max_grad_norm": 0.0, **overrides}),
            train_dataset=Batch(),
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs("sls", model),
        )
        with pytest.raises(ValueError, match=match):
            trainer.train()


def test_steepest_trainer_refreshes_sophia_g_hessian(tmp_path: Path) -> None:
    """A plain Trainer never calls update_hessian: Sophia-G's h stays 0 (sign momentum); here it is refreshed."""
    hessians = {}
    for cls in (Trainer, SteepestTrainer):
        model = gpt2()
        pair = optimizer_cls_and_kwargs("sophia_g", model, lr=1e-3, update_period=2)
        trainer = cls(model=model, args=args(tmp_path, steps=4), train_dataset=Batch(), optimizer_cls_and_kwargs=pair)
        before, after = train(trainer)
        assert after < before
        opt = trainer.optimizer.optimizer
        hessians[cls] = torch.cat([opt.state[p]["hessian"].flatten() for p in model.parameters()])
    assert not hessians[Trainer].any()
    assert (hessians[SteepestTrainer] > 0).float().mean() > 0.5  # refreshed after steps 2 and 4


def test_steepest_trainer_leaves_first_order_optimizers_alone(tmp_path: Path) -> None:
    """The same Lion run under Trainer and SteepestTrainer: identical weights."""
    finals = []
    for cls in (Trainer, SteepestTrainer):
        model = gpt2()
        trainer = cls(
            model=model,
            args=args(tmp_path),
            train_dataset=Batch(),
            optimizer_cls_and_kwargs=(steepest.Lion, {"lr": 1e-3}),
        )
        trainer.train()
        assert type(trainer.optimizer.optimizer) is steepest.Lion
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals, strict=True):
        assert torch.equal(a, b)


# -- low-rank optimizers on GPT-2's Conv1D (issue 24 item 5) ---------------------------------


@pytest.mark.parametrize("key", ["galore_adamw", "fira", "frugal"])
def test_low_rank_optimizers_project_gpt2_conv1d_weights(key: str) -> None:
    model = gpt2()
    params, _ = steepest.optimizer_params(key, model)
    projected = next(g for g in params if g.get("rank") is not None or g.get("proj_type", "none") != "none")
    conv1d = [m.weight for m in model.modules() if isinstance(m, Conv1D)]
    assert {id(p) for p in projected["params"]} == {id(p) for p in conv1d}  # c_attn, c_proj, c_fc, mlp.c_proj
    assert len(conv1d) == 4
    embeddings = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    assert not embeddings & {id(p) for p in projected["params"]}  # lm_head is tied to wte: dense too
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing-projected would warn
        opt = steepest.create_optimizer(key, params, lr=1e-3)
    tokens = Batch().tokens
    model(input_ids=tokens, labels=tokens).loss.backward()
    opt.step()
    c_attn = model.transformer.h[0].attn.c_attn.weight  # Conv1D (in=16, out=48): 'std' reduces the smaller side
    state = opt.state[c_attn]
    if key != "frugal":
        assert state["proj_left"].shape == (16, 4) and state["exp_avg"].shape == (4, 48)
    else:  # blockwise: the first block in descending order (the last matrix) is state-full
        full = [p for p in projected["params"] if "exp_avg" in opt.state[p]]
        assert [id(p) for p in full] == [id(projected["params"][-1])]


@pytest.mark.parametrize("key", ["galore_adamw", "fira", "frugal"])
def test_low_rank_optimizer_with_nothing_projected_warns_at_the_callers_line(key: str) -> None:
    model = gpt2()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steepest.create_optimizer(key, model.parameters(), lr=1e-3)
    hits = [w for w in caught if "no param group is projected" in str(w.message)]
    assert [w.filename for w in hits] == [__file__]


def test_adam_mini_on_gpt2_names() -> None:
    """The documented GPT-2 mapping: wte/wpe per row, MLP per stored row, c_attn/attn.c_proj one v (warned)."""
    model = gpt2()
    params, extra = steepest.optimizer_params("adam_mini", model, **model_facts(model))
    with pytest.warns(UserWarning, match=r"attn\.c_attn\.weight.*attn\.c_proj\.weight"):
        opt = steepest.create_optimizer("adam_mini", params, **extra)
    report = {line.split("  ")[0]: line for line in opt.partition_report().splitlines()[1:]}
    assert "  row  (32, 1)" in report["transformer.wte.weight"]
    assert "  row  (16, 1)" in report["transformer.wpe.weight"]
    assert "  row  (16, 1)" in report["transformer.h.0.mlp.c_fc.weight"]  # (in=16, out=64): per input row
    assert "  tensor  ()" in report["transformer.h.0.attn.c_attn.weight"]
    assert "  tensor  ()" in report["transformer.h.0.attn.c_proj.weight"]
    assert "  full  " in report["transformer.h.0.attn.c_attn.bias"]
