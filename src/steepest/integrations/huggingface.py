"""Hugging Face ``transformers.Trainer`` with steepest optimizers.

Importing this module imports ``transformers`` (``import steepest`` does not).

* First-order optimizers need nothing from here: ``Trainer(..., optimizers=(steepest.Lion(...),
  None))`` or ``optimizer_cls_and_kwargs=(steepest.Lion, {"lr": 3e-4})`` (the Trainer then builds
  its own decay / no-decay groups and passes them as the first argument).
* Optimizers that need parameter names (Adam-mini, BlockLLM) or structured groups (GaLore, Fira,
  FRUGAL, SCALE): :func:`optimizer_cls_and_kwargs` builds the pair from the model, with the
  Trainer's weight-decay split.
* Optimizers whose ``step`` needs a closure (line searches, Polyak steps, zeroth-order methods,
  Newton-CG) or ``create_graph=True`` (AdaHessian, Sophia-H), and Sophia-G, whose Hessian refresh
  a plain Trainer never calls: :class:`SteepestTrainer`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer

from steepest.integrations._build import build_params
from steepest.optim._estimators import sampled_cross_entropy
from steepest.optim._param_groups import NoDecay
from steepest.optim._registry import optimizer_info
from steepest.optim.sophia import SophiaG

__all__ = ["SteepestTrainer", "model_facts", "optimizer_cls_and_kwargs"]

# (config attribute for dim, for n_heads, for n_kv_heads), in the order tried: Llama/Mistral/Qwen, GPT-2.
_CONFIG_NAMES = (("hidden_size", "num_attention_heads", "num_key_value_heads"), ("n_embd", "n_head", None))


def model_facts(model: nn.Module) -> dict[str, int]:
    """``dim``, ``n_heads`` and ``n_kv_heads`` of a Hugging Face model, read from ``model.config``.

    What Adam-mini needs to partition queries and keys by head (see
    :func:`steepest.optimizer_params`); empty when the model has no such config.
    """
    config = getattr(model, "config", None)
    for dim_name, heads_name, kv_name in _CONFIG_NAMES:
        dim, heads = getattr(config, dim_name, None), getattr(config, heads_name, None)
        if isinstance(dim, int) and isinstance(heads, int):
            facts = {"dim": dim, "n_heads": heads}
            kv = getattr(config, kv_name, None) if kv_name else None
            if isinstance(kv, int) and kv != heads:
                facts["n_kv_heads"] = kv
            return facts
    return {}


def optimizer_cls_and_kwargs(
    name: str,
    model: nn.Module,
    *,
    weight_decay: float = 0.0,
    no_decay: NoDecay = None,
    facts: dict[str, Any] | None = None,
    **hyperparameters: Any,
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """``Trainer(optimizer_cls_and_kwargs=...)`` for the registry entry ``name`` on ``model``.

    The kwargs carry ``params``, built by :func:`steepest.optimizer_params` (names for Adam-mini and
    BlockLLM, projected groups for GaLore/Fira/FRUGAL, SCALE's roles) with :func:`model_facts` and
    ``facts``, and split by weight decay as the Trainer splits its own groups (biases and
    normalization weights at 0, the rest at ``weight_decay``; pass ``TrainingArguments``'
    ``weight_decay`` here). The Trainer uses a ``params`` entry in place of its own groups and
    removes it from the dict, so build one pair per Trainer.

    Raises:
        KeyError: ``name`` is not registered.
        TypeError: a hyperparameter the optimizer does not take.
        ValueError: a bad fact, or ``weight_decay > 0`` for an optimizer without weight decay.
    """
    entry = optimizer_info(name)
    known = entry.defaults()
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise TypeError(f"{name}: unknown hyperparameter(s) {unknown}; accepted: {', '.join(known)}")
    params, extra = build_params(name, model, weight_decay, no_decay, {**model_facts(model), **(facts or {})})
    return entry.cls, {"params": params, **extra, **hyperparameters}


def _capabilities(optimizer: Any) -> Any:
    return getattr(optimizer, "capabilities", None)


def _driven_by_closure(optimizer: Any) -> bool:
    caps = _capabilities(optimizer)
    return caps is not None and (caps.requires_closure or caps.needs_create_graph)


class _TrainerDriven:
    """Mixed into the optimizer's class by :class:`SteepestTrainer` (a dynamic subclass, as Lightning does).

    The Trainer's loop calls ``optimizer.step()`` with no arguments after ``training_step``. For a
    closure optimizer ``training_step`` has already taken the step with its closure, so that call
    does nothing; for Sophia-G it hands over the Hessian closure ``training_step`` prepared.
    """

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        """The step, with what :class:`SteepestTrainer` prepared for it."""
        if closure is None and self.__dict__.pop("_steepest_stepped", False):
            return None
        hessian = self.__dict__.pop("_steepest_hessian_closure", None)
        if hessian is not None:
            kwargs["hessian_closure"] = hessian
        return super().step(closure, **kwargs)  # type: ignore[misc]


_DRIVEN_CLASSES: dict[type, type] = {}


def _drive(optimizer: torch.optim.Optimizer) -> None:
    cls = type(optimizer)
    if isinstance(optimizer, _TrainerDriven):
        return
    if cls not in _DRIVEN_CLASSES:
        _DRIVEN_CLASSES[cls] = type(f"TrainerDriven{cls.__name__}", (_TrainerDriven, cls), {})
    optimizer.__class__ = _DRIVEN_CLASSES[cls]


class SteepestTrainer(Trainer):
    """A ``transformers.Trainer`` that drives every steepest optimizer as its paper does.

    * Closure optimizers (``capabilities.requires_closure``: SLS, SLS-Adam, PoNoS, SPS, SPS-max,
      MDB, Newton-CG, MeZO and the other zeroth-order methods) and the Hessian-vector-product
      methods (``capabilities.needs_create_graph``: AdaHessian, Sophia-H): ``training_step``
      calls ``optimizer.step(closure)`` with a closure that re-evaluates ``compute_loss`` on the
      batch (backward with ``create_graph=True`` where needed, none for forward-only methods); the
      Trainer's own ``optimizer.step()`` after it is then a no-op. These need
      ``gradient_accumulation_steps=1`` (a closure re-evaluates one batch) and ``max_grad_norm=0``
      (the closure recomputes the gradient after the Trainer would clip it); other values are
      refused with ``ValueError`` rather than ignored.
    * Sophia-G: every ``update_period`` steps its Hessian estimate is refreshed from a loss with
      labels sampled from the model's own logits on the current batch (the official training
      loop's Gauss-Newton-Bartlett estimator). A plain Trainer never calls ``update_hessian``, so
      Sophia-G there is sign momentum with a frozen zero Hessian.
    * Every other optimizer runs exactly as in ``Trainer``.

    The optimizer's class is swapped for a subclass that knows about this (as Lightning does); its
    state, ``state_dict`` and checkpoints are unchanged.
    """

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, prepared for closure steps or Sophia-G's refresh when it needs them."""
        optimizer = super().create_optimizer(model)
        if _driven_by_closure(optimizer):
            if self.args.gradient_accumulation_steps != 1:
                raise ValueError(
                    f"{type(optimizer).__name__} takes its step with a closure over one batch: "
                    "set gradient_accumulation_steps=1 (got "
                    f"{self.args.gradient_accumulation_steps})"
                )
            if self.args.max_grad_norm and self.args.max_grad_norm > 0:
                raise ValueError(
                    f"{type(optimizer).__name__} recomputes the gradient inside its closure, after the Trainer "
                    f"would clip it: set max_grad_norm=0 (got {self.args.max_grad_norm})"
                )
            _drive(optimizer)
        elif isinstance(optimizer, SophiaG):
            _drive(optimizer)
        return optimizer

    def _closure(self, raw: Any, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any) -> Any:
        create_graph = bool(_capabilities(raw).needs_create_graph)

        def closure() -> Tensor:
            model.zero_grad()
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            assert isinstance(loss, Tensor)  # return_outputs=False
            if torch.is_grad_enabled():
                self.accelerator.backward(loss, create_graph=create_graph)
            return loss

        return closure

    def _hessian_closure(self, model: nn.Module, inputs: dict[str, Any]) -> Any:
        features = {k: v for k, v in inputs.items() if k != "labels"}

        def sampled() -> Tensor:
            model.zero_grad()
            with self.compute_loss_context_manager():
                outputs = model(**features)
                logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
                loss = sampled_cross_entropy(logits)
            if torch.is_grad_enabled():
                self.accelerator.backward(loss)
            return loss

        return sampled

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> Tensor:
        """``Trainer.training_step``, or the whole closure step for the optimizers that need one."""
        optimizer = self.optimizer
        raw: Any = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps ours
        if isinstance(raw, SophiaG):
            raw.__dict__["_steepest_hessian_closure"] = self._hessian_closure(model, self._prepare_inputs(inputs))
            return super().training_step(model, inputs, num_items_in_batch)
        if not _driven_by_closure(raw):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        prepared = self._prepare_inputs(inputs)
        # The optimizer itself, not accelerate's wrapper: the wrapper's step returns no loss.
        loss = raw.step(self._closure(raw, model, prepared, num_items_in_batch))
        raw.__dict__["_steepest_stepped"] = True
        if loss is None:
            raise RuntimeError(f"{type(raw).__name__}.step(closure) returned no loss")
        return torch.as_tensor(loss).detach().to(self.args.device)
