"""Adam-mini: Adam with one second-moment value per parameter block."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim import _base
from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import (
    add_scaled_,
    addcdiv_scaled_,
    addcmul_scaled_,
    bias_correction,
    decay_weights_,
    foreach_decay_weights_,
    increment_step,
    increment_steps,
    lerp_,
    materialized,
    norm_dtype,
    scalar_sqrt,
    unevenly_sharded,
)
from steepest.optim._names import split_named_params, user_stacklevel
from steepest.optim._validation import Integer, Optional, check_hyperparameters

#: The four partition rules, in the words of :meth:`AdamMini.partition_report`.
RULE_FULL, RULE_HEAD, RULE_ROW, RULE_TENSOR = "full", "head", "row", "tensor"


@dataclass(frozen=True)
class Block:
    """How one parameter is partitioned: the rule that matched and its second-moment layout.

    Attributes:
        rule: ``"full"`` (one v per entry, plain Adam), ``"head"`` (one v per attention head),
            ``"row"`` (one v per output row / token) or ``"tensor"`` (one v for the tensor).
        blocks: number of blocks ``B``; the parameter is read as ``B`` rows of ``block_numel``.
        block_numel: entries per block.
        v_shape: shape of ``exp_avg_sq``: the parameter's (full), ``(B, 1)`` (head, row), ``()`` (tensor).
        decay: whether weight decay applies (not for names containing "norm", "ln" or "bias").
        reason: why the rule was chosen, for :meth:`AdamMini.partition_report`.
    """

    rule: str
    blocks: int
    block_numel: int
    v_shape: tuple[int, ...]
    decay: bool
    reason: str


@lru_cache(maxsize=4096)
def partition(
    name: str,
    shape: tuple[int, ...],
    dim: int | None,
    n_heads: int | None,
    name_sets: tuple[frozenset[str], ...],
) -> Block:
    """The Adam-mini v1.1 partition of one tensor, a pure function of its name and shape.

    ``name_sets`` is ``(bias, qk, row)`` substring sets, matched on the lowercased name.
    Raises ``ValueError`` for a Q/K tensor when ``dim``/``n_heads`` are missing or do not fit.
    """
    bias_names, qk_names, row_names = name_sets
    lowered = name.lower()
    numel = math.prod(shape)
    decay = not any(word in lowered for word in ("norm", "ln", "bias"))
    if any(word in lowered for word in bias_names):
        return Block(RULE_FULL, numel, 1, shape, decay, "bias: plain Adam")
    matched = next((word for word in sorted(qk_names) if word in lowered), None)
    if matched is not None:
        if dim is None or n_heads is None:
            raise ValueError(
                f"AdamMini: parameter {name!r} is a query/key (its name contains {matched!r}), so dim "
                "and n_heads are required (the model's hidden size and number of attention heads); "
                "the official code's silent defaults 2048/32 would give wrong heads"
            )
        head_numel = dim * dim // n_heads
        if numel % head_numel == 0:
            return Block(
                RULE_HEAD, numel // head_numel, head_numel, (numel // head_numel, 1), decay, f"query/key ({matched!r})"
            )
        if len(shape) >= 2:
            raise ValueError(
                f"AdamMini: query/key parameter {name!r} of shape {shape} ({numel} entries) is not a whole "
                f"number of heads of dim*dim/n_heads = {dim}*{dim}/{n_heads} = {head_numel} entries; "
                "check dim and n_heads"
            )
        return Block(RULE_TENSOR, 1, numel, (), decay, f"query/key-named ({matched!r}) but smaller than a head")
    matched = next((word for word in sorted(row_names) if word in lowered), None)
    if matched is not None:
        if len(shape) >= 2:
            rows = shape[0]
            return Block(RULE_ROW, rows, math.prod(shape[1:]), (rows, 1), decay, f"per row ({matched!r})")
        return Block(RULE_TENSOR, 1, numel, (), decay, f"row-named ({matched!r}) but not a matrix")
    reason = "norm" if "norm" in lowered else "no rule matched"
    return Block(RULE_TENSOR, 1, numel, (), decay, reason)


class AdamMini(SteepestOptimizer):
    r"""Adam-mini: Adam with one learning rate (second moment) per parameter block.

    Paper: Zhang, Chen, Li, Luo, Ye, Sun, "Adam-mini: Use Fewer Learning Rates To Gain More",
    ICLR 2025, arXiv:2406.16793. Follows the official code v1.1.1 (zyushun/Adam-mini, PyPI
    ``adam-mini`` 1.1.1).

    Each parameter is cut into blocks :math:`b` by its name (the partition principle of v1.1,
    substrings of the lowercased name, first match wins):

    1. ``bias`` in the name: every entry is its own block (plain Adam);
    2. a query or key (``q_proj``, ``k_proj``, ``wq``, ``wk``, ``query``, ``key``): one block
       per attention head, the tensor read as ``(numel / head_numel, head_numel)`` with
       ``head_numel = dim * dim / n_heads`` (with grouped-query attention, K has ``n_kv_heads``
       blocks by its size);
    3. embedding, output, value, attention output projection or MLP (``embed``, ``embd``,
       ``wte``, ``wpe``, ``lm_head``, ``output``, ``final_layer``, ``v_proj``, ``wv``, ``value``,
       ``o_proj``, ``wo``, ``attn.proj``, ``feed_forward``, ``linear``, ``mlp``), a tensor of
       two or more dimensions: one block per output row (per token for the embedding and
       ``lm_head``);
    4. everything else (norm gains, unmatched or non-transformer tensors, a fused
       ``in_proj_weight``): one block for the whole tensor.

    Update rule, with gradient :math:`g_t` and step :math:`t \ge 1`, for every block :math:`b`
    (:math:`|b|` entries; the eps form of ``torch.optim.Adam``):

    .. math::

        v_{t,b} &= \beta_2 v_{t-1,b} + (1-\beta_2)\,\tfrac{1}{|b|} \textstyle\sum_{i \in b} g_{t,i}^2 \\
        \theta_t &= \theta_{t-1}(1 - \eta\lambda) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        \theta_{t,i} &= \theta_{t,i} - \frac{\eta}{1-\beta_1^t}\,
            \frac{m_{t,i}}{\sqrt{v_{t,b}}/\sqrt{1-\beta_2^t} + \epsilon}, \quad i \in b

    The decoupled decay :math:`\lambda` is not applied to parameters whose lowercased name
    contains ``norm``, ``ln`` or ``bias``, as in the official code. ``ln`` is a plain
    substring: it also matches names such as ``kiln`` or ``vlnet``, which then get no decay.

    Differences from the official code (the math is the same for every tensor it accepts):

    * ``dim`` and ``n_heads`` have no defaults: they are required when a name matches a query
      or key (the official defaults 2048/32 silently give wrong heads), and a Q/K matrix that
      is not a whole number of heads raises ``ValueError`` at construction (the official code
      fails at the first step with a shape error). A Q/K-named tensor of fewer than two
      dimensions that is smaller than a head (a QK-norm gain) gets one v for the tensor.
    * A row-rule name on a tensor of fewer than two dimensions gets one v for the tensor; on
      more than two dimensions, one v per slice along dimension 0. (The official code fails.)
    * Parameters without names raise ``ValueError`` (the official code takes names to be
      mandatory too). Names are kept in each group's ``param_names`` (torch's mechanism),
      the param groups are the user's (the official code makes one group per parameter),
      and ``requires_grad=False`` parameters are kept (they have no gradient, so no update).
    * No printing: tensors of two or more dimensions that match no rule are reported with a
      ``UserWarning`` at construction; :meth:`partition_report` lists every tensor's rule.
    * The name sets are class attributes (``bias_names``, ``qk_names``, ``row_names``); to
      change them (the README's ``wv_names = {}`` for short runs), subclass and override
      ``row_names``. They cannot change on a live optimizer, so state shapes stay valid.
    * ``n_kv_heads`` is only validated (``n_heads`` must be a multiple of it), as in the
      official code (its issue #16). No distributed all-reduce: under sharding each rank
      would see only its shard (use it unsharded or with replicated optimizer state).
    * The step counter is a float32 tensor per parameter (the official code: a Python int).
    * ``wpe`` (GPT-2's position embedding) is an embedding here: one v per position, as for
      token embeddings. The official name sets miss it and give it one v for the whole table.

    Hugging Face GPT-2 (``transformers`` ``GPT2LMHeadModel``, ``Conv1D`` layers storing
    ``(in, out)``), rule by rule: ``wte`` and ``wpe`` one v per token/position; ``ln_*``
    one v per tensor (norm); biases plain Adam; ``mlp.c_fc`` and ``mlp.c_proj`` one v per
    row of the stored ``(in, out)`` weight, that is per *input* feature (on an ``nn.Linear``
    the rows are output neurons); ``attn.c_attn`` (queries, keys and values fused side by side
    in columns) and ``attn.c_proj`` match no rule and get one v per tensor, with the warning.
    No name can give ``c_attn`` the head rule: a head of a fused ``Conv1D`` is a block of
    columns, not a contiguous slice, so naming it a query would silently give wrong blocks. The
    official code does the same on these names. For the paper's partition use a model with
    separate ``q_proj``/``k_proj``/``v_proj``/``o_proj`` linear layers (Llama, Mistral, Qwen,
    ...), whose names match rules 2 and 3 directly, with ``dim``/``n_heads`` from its config
    (:func:`steepest.integrations.huggingface.model_facts` reads them).

    State per parameter: ``step`` (scalar), ``exp_avg`` (:math:`m`, like the parameter) and
    ``exp_avg_sq`` (:math:`v`, in the parameter's dtype): shape ``(heads, 1)`` for Q/K,
    ``(rows, 1)`` for the row rule, ``()`` for one v per tensor, the parameter's shape for
    biases. Memory: about one Adam moment instead of two.

    Args:
        named_parameters: ``model.named_parameters()``, or param groups whose ``params`` are
            ``(name, parameter)`` pairs.
        lr: step size :math:`\eta`. Default 1e-3 (official code).
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (official code).
        eps: :math:`\epsilon`, default 1e-8 (official code).
        weight_decay: decoupled decay :math:`\lambda`, default 0 (official code).
        dim: the model's hidden size. Required when a name matches a query/key.
        n_heads: number of attention heads. Required when a name matches a query/key;
            ``dim * dim`` must be a multiple of it.
        n_kv_heads: key/value heads (grouped-query attention); only validated.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: named parameters (and ``dim``/``n_heads`` for attention); gradients only.

    Example:
        >>> import torch, steepest
        >>> layer = torch.nn.Linear(2, 2)
        >>> named = [("mlp.weight", layer.weight), ("mlp.bias", layer.bias)]
        >>> opt = steepest.AdamMini(named, lr=0.1)
        >>> print(opt.partition_report())
        name  shape  rule  exp_avg_sq-shape  weight-decay  reason
        mlp.weight  (2, 2)  row  (2, 1)  decay  per row ('mlp')
        mlp.bias  (2,)  full  (2,)  no-decay  bias: plain Adam
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> layer.weight.grad = torch.tensor([[1.0, -1.0], [0.1, 0.3]])
        >>> layer.bias.grad = torch.zeros(2)
        >>> _ = opt.step()  # one v per row: the first row moves by 0.1 * g / sqrt(mean(g^2))
        >>> layer.weight.detach()
        tensor([[0.9000, 2.1000],
                [2.9553, 3.8658]])
    """

    capabilities = Capabilities(needs_named_parameters=True, supports_fused=True)
    param_state = ("exp_avg",)
    scalar_state = ("step",)
    hyperparameter_rules = MappingProxyType(
        {"dim": Optional(Integer(1)), "n_heads": Optional(Integer(1)), "n_kv_heads": Optional(Integer(1))}
    )
    #: Substrings that select plain Adam (one v per entry).
    bias_names: ClassVar[frozenset[str]] = frozenset({"bias"})
    #: Substrings that select one v per attention head.
    qk_names: ClassVar[frozenset[str]] = frozenset({"k_proj", "q_proj", "wq", "wk", "query", "key"})
    #: Substrings that select one v per output row: embedding, output, value, attention output, MLP.
    row_names: ClassVar[frozenset[str]] = frozenset(
        {"embed", "embd", "wte", "wpe", "lm_head", "output", "final_layer", "v_proj", "wv", "value"}
        | {"o_proj", "wo", "attn.proj", "feed_forward", "linear", "mlp"}
    )

    def __init__(
        self,
        named_parameters: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        dim: int | None = None,
        n_heads: int | None = None,
        n_kv_heads: int | None = None,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            named_parameters,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            dim=dim,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    # -- partition -----------------------------------------------------------------------

    @classmethod
    def _name_sets(cls) -> tuple[frozenset[str], ...]:
        return (frozenset(cls.bias_names), frozenset(cls.qk_names), frozenset(cls.row_names))

    def block_of(self, name: str, param: Tensor, group: Mapping[str, Any]) -> Block:
        """The partition of ``param`` named ``name`` under ``group``'s ``dim`` and ``n_heads``."""
        return partition(name, tuple(param.shape), group["dim"], group["n_heads"], self._name_sets())

    def _check_heads(self, group: Mapping[str, Any]) -> None:
        name = type(self).__name__
        dim, n_heads, n_kv_heads = group["dim"], group["n_heads"], group["n_kv_heads"]
        if dim is not None and n_heads is not None and (dim * dim) % n_heads != 0:
            raise ValueError(f"{name}: dim*dim = {dim * dim} must be a multiple of n_heads = {n_heads}")
        if n_kv_heads is not None and n_heads is not None and n_heads % n_kv_heads != 0:
            raise ValueError(f"{name}: n_heads = {n_heads} must be a multiple of n_kv_heads = {n_kv_heads}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of ``(name, parameter)`` pairs; names are checked and partitioned first."""
        name = type(self).__name__
        check_hyperparameters(name, self._rules(), {k: v for k, v in param_group.items() if k != "params"})
        names, params = split_named_params(name, param_group)
        group = {**self.defaults, **param_group}
        self._check_heads(group)
        unmatched = []
        for param_name, param in zip(names, params, strict=True):
            if isinstance(param, Tensor):
                block = self.block_of(param_name, param, group)
                if block.reason == "no rule matched" and param.dim() >= 2 and param.numel() > 0:
                    unmatched.append(f"{param_name} {tuple(param.shape)}")
        if unmatched:
            shown = ", ".join(unmatched[:10]) + (f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else "")
            warnings.warn(
                f"{name}: {len(unmatched)} tensor(s) of two or more dimensions match no partition rule and get "
                f"one second-moment value for the whole tensor: {shown}. If they are attention or MLP "
                "weights, rename them or subclass and extend qk_names/row_names; see partition_report().",
                UserWarning,
                stacklevel=user_stacklevel(),  # the user's line, not torch's Optimizer.__init__
            )
        super().add_param_group({**param_group, "params": params, "param_names": list(names)})

    def sharding_refusal(self, group: ParamGroup) -> str | None:
        """Blocked tensors must be evenly sharded: DTensor cannot regroup an uneven shard into blocks."""
        uneven = [
            f"{param_name} {tuple(p.shape)}"
            for param_name, p in zip(group["param_names"], group["params"], strict=True)
            if unevenly_sharded(p) and self.block_of(param_name, p, group).rule != RULE_FULL
        ]
        if uneven:
            return (
                "each blocked tensor sharded evenly (its sharded dimension a multiple of the mesh size); "
                f"uneven: {', '.join(uneven)}"
            )
        return None

    def partition_report(self) -> str:
        """One line per parameter: name, shape, rule, ``exp_avg_sq`` shape, decay, and why."""
        lines = ["name  shape  rule  exp_avg_sq-shape  weight-decay  reason"]
        for group in self.param_groups:
            for param_name, param in zip(group["param_names"], group["params"], strict=True):
                block = self.block_of(param_name, param, group)
                decay = "decay" if block.decay else "no-decay"
                lines.append(
                    f"{param_name}  {tuple(param.shape)}  {block.rule}  {block.v_shape}  {decay}  {block.reason}"
                )
        return "\n".join(lines)

    def _block_for(self, param: Tensor, group: ParamGroup) -> Block:
        for p, param_name in zip(group["params"], group["param_names"], strict=True):
            if p is param:
                return self.block_of(param_name, param, group)
        raise KeyError("parameter not in group")

    # -- state ---------------------------------------------------------------------------

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``step`` (scalar), ``exp_avg`` (like the parameter), ``exp_avg_sq`` (one value per block)."""
        block = self._block_for(param, group)
        return {
            "step": ((), SCALAR_DTYPE),
            "exp_avg": (tuple(param.shape), param.dtype),
            "exp_avg_sq": (block.v_shape, param.dtype),
        }

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return (
            "step (scalar), exp_avg (like the parameter), exp_avg_sq (one value per block: "
            "(heads, 1) for Q/K, (rows, 1) per row, () per tensor, like the parameter for biases)"
        )

    def _validate_state_dict(self, state_dict: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        saved_groups = super()._validate_state_dict(state_dict)
        name = type(self).__name__
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            saved_names = saved.get("param_names")
            if saved_names is None:
                continue
            if not isinstance(saved_names, list | tuple) or len(saved_names) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: param group {index} has a bad 'param_names' list")
            merged = {**group, **{k: v for k, v in saved.items() if k not in ("params", "param_names")}}
            for old, new, param in zip(group["param_names"], saved_names, group["params"], strict=True):
                if self.block_of(old, param, merged) != self.block_of(str(new), param, merged):
                    raise ValueError(
                        f"{name}.load_state_dict: saved name {new!r} partitions parameter {old!r} differently"
                    )
        return saved_groups

    # -- update --------------------------------------------------------------------------

    def _blocks(self, group: ParamGroup, params: list[Tensor]) -> list[Block]:
        if "_fused_blocks" in group:  # the fused path's group view (see fused_static_facts)
            return list(group["_fused_blocks"])
        names = {id(p): n for p, n in zip(group["params"], group["param_names"], strict=True)}
        return [self.block_of(names[id(p)], p, group) for p in params]

    def fused_static_facts(self, group: ParamGroup, params: list[Tensor]) -> dict[str, Any]:
        """Each parameter's :class:`Block`, looked up by name before compiling."""
        return {"_fused_blocks": tuple(self._blocks(group, params))}

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for param, grad, state, block in zip(params, grads, states, self._blocks(group, params), strict=True):
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            step = increment_step(state["step"])
            if block.rule != RULE_FULL:
                rows = grad.reshape(block.blocks, block.block_numel)
                v = exp_avg_sq.view(block.blocks, 1)
                # In the grad's dtype eagerly (as the official code); wider when compiled on CPU.
                wide = norm_dtype(rows) if torch.compiler.is_compiling() else rows.dtype
                mean_square = rows.square().sum(dim=1, keepdim=True, dtype=wide) / max(block.block_numel, 1)
                add_scaled_(v.mul_(beta2), mean_square.to(v.dtype), 1.0 - beta2)
            else:
                v = addcmul_scaled_(exp_avg_sq.mul_(beta2), grad, grad, 1.0 - beta2)
            if block.decay:
                decay_weights_(param, lr, wd)
            lerp_(exp_avg, grad, 1.0 - beta1)
            denom = (v.sqrt() / scalar_sqrt(bias_correction(beta2, step))).add_(eps)
            if block.rule != RULE_FULL:
                denom = materialized(denom)  # one value per block, stored once when compiled
                if tuple(param.shape) != (block.blocks, block.block_numel):
                    # Broadcast each block's value over its entries (heads, whole tensors). Rows
                    # broadcast as they are; the parameter is never viewed in another shape, since
                    # a compiled update then writes a temporary and copies it into the parameter.
                    denom = denom.expand(block.blocks, block.block_numel).reshape(param.shape)
            addcdiv_scaled_(param, exp_avg, denom, -lr / bias_correction(beta1, step))

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        blocks = self._blocks(group, params)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = increment_steps([s["step"] for s in states])
        full = [i for i, b in enumerate(blocks) if b.rule == RULE_FULL]
        # Blocked tensors, bucketed by (shape, blocks) so one stacked reduction serves each bucket.
        buckets: dict[tuple[tuple[int, ...], int, tuple[int, ...]], list[int]] = {}
        for i, b in enumerate(blocks):
            if b.rule != RULE_FULL:
                buckets.setdefault((tuple(params[i].shape), b.blocks, b.v_shape), []).append(i)
        if full:
            v_full = [exp_avg_sqs[i] for i in full]
            g_full = [grads[i] for i in full]
            torch._foreach_mul_(v_full, beta2)
            torch._foreach_addcmul_(v_full, g_full, g_full, value=1.0 - beta2)
        blocked = [i for indices in buckets.values() for i in indices]
        if blocked:
            mean_squares: list[Tensor] = []
            for (shape, n_blocks, _), indices in buckets.items():
                block = blocks[indices[0]]
                if math.prod(shape) >= _base.FOREACH_STACK_MAX_NUMEL:  # one norm per tensor: no stacked copy
                    # (for bfloat16 the norm accumulates in float32 where the stack squares in bfloat16:
                    # block means can differ by a rounding)
                    for i in indices:
                        rows = grads[i].reshape(n_blocks, block.block_numel)
                        norms = torch.linalg.vector_norm(rows, dim=1)
                        mean_squares.append(norms.square_().div_(max(block.block_numel, 1)).view(block.v_shape))
                    continue
                stacked = torch.stack([grads[i] for i in indices]).view(len(indices), n_blocks, block.block_numel)
                sums = stacked.square_().sum(dim=2) / max(block.block_numel, 1)
                mean_squares += sums.view(len(indices), *block.v_shape).unbind(0)
            v_blocked = [exp_avg_sqs[i] for i in blocked]
            torch._foreach_mul_(v_blocked, beta2)
            torch._foreach_add_(v_blocked, mean_squares, alpha=1.0 - beta2)
        decayed = [params[i] for i, b in enumerate(blocks) if b.decay]
        if decayed:
            foreach_decay_weights_(decayed, lr, wd)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        order = full + blocked
        denoms = torch._foreach_sqrt([exp_avg_sqs[i] for i in order])
        torch._foreach_div_(denoms, [math.sqrt(bias_correction(beta2, steps[i])) for i in order])
        torch._foreach_add_(denoms, eps)
        expanded = list(denoms[: len(full)])
        start = len(full)
        for (shape, n_blocks, _), indices in buckets.items():
            block = blocks[indices[0]]
            k = len(indices)
            stacked = torch.stack(denoms[start : start + k]).view(k, n_blocks, 1)
            expanded += stacked.expand(k, n_blocks, block.block_numel).reshape(k, *shape).unbind(0)
            start += k
        torch._foreach_addcdiv_(
            [params[i] for i in order],
            [exp_avgs[i] for i in order],
            expanded,
            [-lr / bias_correction(beta1, steps[i]) for i in order],
        )
