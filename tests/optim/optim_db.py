"""One entry per registered optimizer: what the conformance matrix feeds it.

Adding an optimizer to the registry without an entry here fails ``test_db_covers_registry``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import steepest


@dataclass(frozen=True)
class ErrorInput:
    """Constructor keywords that must raise ``error`` with a message matching ``match``."""

    kwargs: dict[str, Any]
    error: type[Exception] = ValueError
    match: str = ""


@dataclass(frozen=True)
class OptimSpec:
    """How the matrix exercises one optimizer.

    Attributes:
        key: registry key.
        variants: hyperparameter sets every behavioural test runs with (cover each branch:
            weight decay on, options toggled). The first one is the plain default-like set.
        quadratic: hyperparameters under which it converges on the 20-d quadratic in
            ``steps`` steps with a cosine schedule to 0.
        logistic: the same for the logistic regression.
        steps: steps for the convergence tests.
        error_inputs: bad constructor inputs beyond the common ``lr=-1``.
        moves_with_lr_zero: whether parameters can change when ``lr == 0``.
        prepare: turns a plain list of parameters into what the constructor takes (named
            parameters, or param groups carrying options such as a projection rank); the
            matrix applies it to every parameter list and to each param group it builds.
    """

    key: str
    variants: tuple[dict[str, Any], ...]
    quadratic: dict[str, Any]
    logistic: dict[str, Any]
    steps: int = 300
    error_inputs: tuple[ErrorInput, ...] = ()
    moves_with_lr_zero: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[list[torch.nn.Parameter]], Any] | None = None


def _prepared(spec: OptimSpec, params: Any) -> Any:
    params = list(params)
    if spec.prepare is None:
        return params
    if params and isinstance(params[0], dict):
        groups = []
        for group in params:
            overrides = {k: v for k, v in group.items() if k != "params"}
            prepared = spec.prepare(list(group["params"]))
            if prepared and isinstance(prepared[0], dict):
                groups += [{**g, **overrides} for g in prepared]
            else:
                groups.append({**overrides, "params": prepared})
        return groups
    return spec.prepare(params)


def build(key: str, params: Any, **hyperparameters: Any) -> torch.optim.Optimizer:
    """Build optimizer ``key`` on ``params`` (a list of tensors or of param groups), prepared per its spec."""
    return steepest.create_optimizer(key, _prepared(DB[key], params), **hyperparameters)


def _lowrank_groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """GaLore / Fira: the matrix's (5, 4) parameter in a rank-2 projected group, the rest plain.

    Only that exact shape is projected: the foreach-scaling test's (3, 4) matrices stay plain,
    since a projection is per matrix (one SVD and matmuls each) by nature.
    """
    projected = [p for p in params if tuple(p.shape) == (5, 4)]
    plain = [p for p in params if tuple(p.shape) != (5, 4)]
    groups: list[dict[str, Any]] = [{"params": projected, "rank": 2}] if projected else []
    return groups + ([{"params": plain}] if plain or not groups else [])


def _scale_groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """SCALE: (5, 4) in a last-layer group, (3, 2, 2) in a matrix group with norm_dim=0, the rest plain."""
    last = [p for p in params if tuple(p.shape) == (5, 4)]
    embed = [p for p in params if tuple(p.shape) == (3, 2, 2)]
    plain = [p for p in params if tuple(p.shape) not in ((5, 4), (3, 2, 2))]
    groups: list[dict[str, Any]] = []
    if last:
        groups.append({"params": last, "role": "last_layer"})
    if embed:
        groups.append({"params": embed, "role": "matrix", "norm_dim": 0})
    return groups + ([{"params": plain}] if plain or not groups else [])


def _frugal_groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """FRUGAL: (5, 4) projected as the constructor's ``proj_type`` says, (4,) and (3, 2, 2) in a block group.

    The rest (and everything when no shape matches) is a plain AdamW group, so every variant
    exercises a coordinate, low-rank or plain matrix next to a two-tensor block group.
    """
    projected = [p for p in params if tuple(p.shape) == (5, 4)]
    block = [p for p in params if tuple(p.shape) in ((4,), (3, 2, 2))]
    plain = [p for p in params if tuple(p.shape) not in ((5, 4), (4,), (3, 2, 2))]
    groups: list[dict[str, Any]] = [{"params": projected}] if projected else []
    if block:
        groups.append({"params": block, "proj_type": "block"})
    return groups + ([{"params": plain, "proj_type": "none"}] if plain or not groups else [])


_LOWRANK_ERRORS = (
    ErrorInput({"betas": (1.0, 0.9)}, match="betas"),
    ErrorInput({"eps": -1e-6}, match="eps"),
    ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
    ErrorInput({"rank": 0}, match="rank"),
    ErrorInput({"update_proj_gap": 0}, match="update_proj_gap"),
    ErrorInput({"scale": 0.0}, match="scale"),
    ErrorInput({"proj_type": "diagonal"}, match="proj_type"),
    ErrorInput({"correct_bias": None}, match="correct_bias"),
    # A constructor-wide rank also applies to the plain group, whose parameters are not matrices.
    ErrorInput({"rank": 1}, match="2-D"),
)

_BETAS_ERRORS = (
    ErrorInput({"betas": (1.0, 0.9)}, match="betas"),
    ErrorInput({"betas": (0.9,)}, match="betas"),
    ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
)

_ZO_ERRORS = (
    ErrorInput({"eps": 0.0}, match="eps"),
    ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
    ErrorInput({"seed": -1}, match="seed"),
    ErrorInput({"master_weights": 1}, match="master_weights"),
)

_SLS_ERRORS = (
    ErrorInput({"c": 0.0}, match="c"),
    ErrorInput({"beta_b": 1.0}, match="beta_b"),
    ErrorInput({"reset_option": 3}, match="reset_option"),
    ErrorInput({"line_search": "wolfe"}, match="line_search"),
    ErrorInput({"gamma": 0.5}, match="gamma"),
    ErrorInput({"n_batches_per_epoch": 0}, match="n_batches_per_epoch"),
    ErrorInput({"max_backtracks": 0}, match="max_backtracks"),
)
_SPS_ERRORS = (
    ErrorInput({"c": 0.0}, match="c"),
    ErrorInput({"gamma_b": 0.0}, match="gamma_b"),
    ErrorInput({"smooth": None}, match="smooth"),
    ErrorInput({"n_batches_per_epoch": 0}, match="n_batches_per_epoch"),
)

DB: dict[str, OptimSpec] = {
    spec.key: spec
    for spec in (
        OptimSpec(
            "sgd",
            variants=({"lr": 0.05}, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "nesterov": True}),
            quadratic={"lr": 0.15, "momentum": 0.5},
            logistic={"lr": 0.5, "momentum": 0.9},
            error_inputs=(ErrorInput({"momentum": -0.5}, match="momentum"),),
        ),
        OptimSpec(
            "adamw",
            variants=({"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
            quadratic={"lr": 0.1, "weight_decay": 0.0},
            logistic={"lr": 0.05, "weight_decay": 0.0},
            error_inputs=(ErrorInput({"betas": (1.5, 0.9)}, match="beta"),),
        ),
        OptimSpec(
            "lion",
            variants=({"lr": 0.01}, {"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.5}),
            quadratic={"lr": 0.03},
            logistic={"lr": 0.01},
            error_inputs=_BETAS_ERRORS,
        ),
        OptimSpec(
            "adabelief",
            # betas=(0.9, 0.9): the rectified adaptive step starts at step 6 (rho_6 >= 5 > rho_5),
            # so the short runs cover both rectified branches, and the foreach test (one None
            # grad) covers a bucket whose parameters are in different branches.
            # degenerated_to_sgd=False is covered by tests/reference (its first steps do not move).
            variants=(
                {"lr": 0.01},
                {"lr": 0.01, "betas": (0.9, 0.9), "weight_decay": 0.1},
                {"lr": 0.01, "rectify": False},
                {"lr": 0.01, "rectify": False, "amsgrad": True, "weight_decay": 0.1, "weight_decouple": False},
                {"lr": 0.01, "rectify": False, "weight_decay": 0.1, "fixed_decay": True},
                {"lr": 0.01, "betas": (0.9, 0.9), "amsgrad": True, "weight_decay": 0.1, "weight_decouple": False},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.05},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"eps": -1e-8}, match="eps"),
                ErrorInput({"rectify": "yes"}, match="rectify"),
                ErrorInput({"amsgrad": 1}, match="amsgrad"),
                ErrorInput({"weight_decouple": None}, match="weight_decouple"),
            ),
        ),
        OptimSpec(
            "diffgrad",
            variants=({"lr": 0.01}, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.05},
            error_inputs=(*_BETAS_ERRORS, ErrorInput({"eps": -1e-8}, match="eps")),
        ),
        OptimSpec(
            "adan",
            # max_grad_norm=0.5 is below the gradient norm of the test problems, so the clip is active.
            variants=(
                {"lr": 0.01},
                {"lr": 0.01, "weight_decay": 0.1},
                {"lr": 0.01, "betas": (0.9, 0.9, 0.95), "weight_decay": 0.1, "no_prox": True},
                {"lr": 0.01, "weight_decay": 0.05, "max_grad_norm": 0.5},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.1},
            error_inputs=(
                ErrorInput({"betas": (0.9, 0.9)}, match="betas"),
                ErrorInput({"betas": (0.98, 1.0, 0.99)}, match="betas"),
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
                ErrorInput({"eps": -1e-8}, match="eps"),
                ErrorInput({"max_grad_norm": -1.0}, match="max_grad_norm"),
                ErrorInput({"no_prox": 1}, match="no_prox"),
            ),
        ),
        OptimSpec(
            "lamb",
            # clamp_value=0.5 is below the norms of the test parameters, so phi clamps.
            variants=(
                {"lr": 0.01},
                {"lr": 0.01, "weight_decay": 0.1},
                {"lr": 0.01, "weight_decay": 0.1, "bias_correction": False, "clamp_value": None},
                {"lr": 0.01, "betas": (0.8, 0.99), "clamp_value": 0.5, "weight_decay": 0.01},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.05},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"eps": -1e-8}, match="eps"),
                ErrorInput({"clamp_value": 0.0}, match="clamp_value"),
                ErrorInput({"bias_correction": None}, match="bias_correction"),
            ),
        ),
        OptimSpec(
            "lars",
            # The quadratic's parameter is 1-D: exclude_1d=False puts it under the trust ratio.
            variants=(
                {"lr": 1.0},
                {"lr": 1.0, "weight_decay": 0.01, "nesterov": True},
                {"lr": 1.0, "weight_decay": 0.01, "dampening": 0.5, "exclude_1d": False},
                {"lr": 1.0, "momentum": 0.0, "weight_decay": 0.01},
                {"lr": 1.0, "weight_decay": 0.01, "nesterov": True, "exclude_1d": False, "trust_coefficient": 0.01},
            ),
            quadratic={"lr": 50.0, "exclude_1d": False},
            logistic={"lr": 1.0},
            error_inputs=(
                ErrorInput({"momentum": 1.0}, match="momentum"),
                ErrorInput({"dampening": 1.5}, match="dampening"),
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
                ErrorInput({"trust_coefficient": 0.0}, match="trust_coefficient"),
                ErrorInput({"nesterov": "yes"}, match="nesterov"),
                ErrorInput({"exclude_1d": None}, match="exclude_1d"),
            ),
        ),
        OptimSpec(
            "sign_sgd",
            variants=({"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.5}),
            quadratic={"lr": 0.03},
            logistic={"lr": 0.03},
            error_inputs=(ErrorInput({"weight_decay": -0.1}, match="weight_decay"),),
        ),
        OptimSpec(
            "signum",
            variants=({"lr": 0.01}, {"lr": 0.01, "momentum": 0.0}, {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.5}),
            quadratic={"lr": 0.03},
            logistic={"lr": 0.03},
            error_inputs=(
                ErrorInput({"momentum": 1.0}, match="momentum"),
                ErrorInput({"momentum": -0.1}, match="momentum"),
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
            ),
        ),
        OptimSpec(
            "normalized_sd",
            # Every norm, normalized and dual-scaled. The quadratic runs l1 (one coordinate per
            # step, the slowest), the logistic regression l2.
            variants=(
                {"lr": 0.1},
                {"lr": 0.1, "dual_scaled": True, "weight_decay": 0.1},
                {"lr": 0.05, "norm": "linf"},
                {"lr": 0.005, "norm": "linf", "dual_scaled": True, "weight_decay": 0.1},
                {"lr": 0.1, "norm": "l1", "weight_decay": 0.1},
                {"lr": 0.1, "norm": "l1", "dual_scaled": True},
            ),
            quadratic={"lr": 0.1, "norm": "l1"},
            logistic={"lr": 0.1},
            error_inputs=(
                ErrorInput({"norm": "l3"}, match="norm"),
                ErrorInput({"norm": 2}, match="norm"),
                ErrorInput({"dual_scaled": "yes"}, match="dual_scaled"),
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
            ),
        ),
        OptimSpec(
            "adagrad_norm",
            variants=(
                {"lr": 1.0},
                {"lr": 0.5, "initial_accumulator": 1.0, "weight_decay": 0.1},
                {"lr": 1.0, "scope": "tensor", "weight_decay": 0.1},
            ),
            quadratic={"lr": 1.0},
            logistic={"lr": 1.0},
            error_inputs=(
                ErrorInput({"initial_accumulator": 0.0}, match="initial_accumulator"),
                ErrorInput({"initial_accumulator": -1.0}, match="initial_accumulator"),
                ErrorInput({"scope": "layer"}, match="scope"),
                ErrorInput({"scope": None}, match="scope"),
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
            ),
        ),
        OptimSpec(
            "adam_mini",
            # prepare names the matrix's (5,4), (4,), (0,3), (3,2,2) parameters so each partition
            # rule is used: per row (mlp, 5 rows), plain Adam (bias), one v per tensor (a norm, here
            # zero-size) and per head (q_proj: 3 heads of dim*dim/n_heads = 4 entries). A lone first
            # parameter (quadratic, logistic w, fuzzed constructor) is mlp-named and 1-D: one v per
            # tensor, so dim/n_heads are needed only where the q_proj name appears.
            variants=(
                {"lr": 0.01, "dim": 4, "n_heads": 4},
                {"lr": 0.01, "dim": 4, "n_heads": 4, "n_kv_heads": 2, "betas": (0.8, 0.99), "weight_decay": 0.1},
                {"lr": 0.01, "dim": 2, "n_heads": 2, "eps": 1e-6, "weight_decay": 0.1},
            ),
            quadratic={"lr": 0.1, "dim": 4, "n_heads": 4},
            logistic={"lr": 0.05, "dim": 4, "n_heads": 4},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"dim": 4}, match="n_heads"),
                ErrorInput({"dim": 0, "n_heads": 4}, match="dim"),
                ErrorInput({"dim": 4, "n_heads": 3}, match="n_heads"),
                ErrorInput({"dim": 4, "n_heads": 4, "n_kv_heads": 3}, match="n_kv_heads"),
                ErrorInput({"dim": 8, "n_heads": 2}, match="whole number of heads"),
                ErrorInput({"dim": 4.0, "n_heads": 4}, match="dim"),
            ),
            prepare=lambda ps: [
                (
                    f"model.layers.{i // 4}."
                    + ("mlp.up_proj.weight", "self_attn.q_proj.bias", "norm.weight", "self_attn.q_proj.weight")[i % 4],
                    p,
                )
                for i, p in enumerate(ps)
            ],
        ),
        OptimSpec(
            "galore_adamw",
            # update_proj_gap=2 or 3 refreshes the basis inside every short run (steps 0, 2, 4, ...),
            # including across the state_dict save point; each proj_type side is covered. The
            # quadratic and logistic problems have no matrix: plain AdamW (eps form A) there.
            variants=(
                {"lr": 0.01},
                {"lr": 0.01, "update_proj_gap": 2},
                {"lr": 0.01, "update_proj_gap": 2, "proj_type": "left", "weight_decay": 0.1},
                {"lr": 0.01, "update_proj_gap": 3, "proj_type": "right", "scale": 0.5, "correct_bias": False},
                {"lr": 0.01, "update_proj_gap": 2, "proj_type": "reverse_std", "betas": (0.8, 0.99)},
                {"lr": 0.01, "update_proj_gap": 2, "proj_type": "full", "weight_decay": 0.1},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.05},
            error_inputs=_LOWRANK_ERRORS,
            prepare=_lowrank_groups,
        ),
        OptimSpec(
            "fira",
            variants=(
                {"lr": 0.01},
                {"lr": 0.01, "update_proj_gap": 2},
                {"lr": 0.01, "update_proj_gap": 2, "proj_type": "left", "weight_decay": 0.1},
                {"lr": 0.01, "update_proj_gap": 3, "proj_type": "right", "scale": 0.25, "correct_bias": False},
                {"lr": 0.01, "update_proj_gap": 2, "proj_type": "reverse_std", "weight_decay": 0.1},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.05},
            error_inputs=(*_LOWRANK_ERRORS, ErrorInput({"proj_type": "full"}, match="proj_type")),
            prepare=_lowrank_groups,
        ),
        OptimSpec(
            "scale",
            # prepare: (5, 4) is the last layer (momentum), (3, 2, 2) a matrix normalized over
            # dim 0 (the embedding rule, reshaped to (3, 4)), the rest role="auto": (4,) AdamW,
            # (0, 3) and the foreach test's (3, 4) matrices momentum-free. Lone 1-D parameters
            # (quadratic, logistic) are vectors: AdamW at lr * adam_lr_ratio.
            variants=(
                {"lr": 0.01},
                {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.5, "adam_lr_ratio": 2.0},
                {"lr": 0.01, "norm_dim": 0, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.05},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"momentum": 1.0}, match="momentum"),
                ErrorInput({"eps": -1e-8}, match="eps"),
                ErrorInput({"adam_lr_ratio": -1.0}, match="adam_lr_ratio"),
                ErrorInput({"role": "embedding"}, match="role"),
                ErrorInput({"norm_dim": 2}, match="norm_dim"),
                # A constructor-wide role applies to the plain group, which holds a 1-D parameter.
                ErrorInput({"role": "matrix"}, match="2 dimensions"),
            ),
            prepare=_scale_groups,
        ),
        OptimSpec(
            "frugal",
            # update_gap=2 or 3 redraws inside every short run and across the state_dict save
            # point; each coord_choice and inactive rule is covered, with and without reset.
            # Every variant names the (5, 4) matrix's projection; the block group's two tensors get one
            # state-full slot at density 0.5 (none at 0.25: round(0.5) = 0), refreshed inside short runs.
            variants=(
                {"lr": 0.01, "proj_type": "coord"},
                {"lr": 0.01, "proj_type": "coord", "update_gap": 2, "density": 0.5, "weight_decay": 0.1},
                {"lr": 0.01, "proj_type": "coord", "update_gap": 2, "coord_choice": "rows",
                 "inactive_update_rule": "sgd"},
                {"lr": 0.01, "proj_type": "coord", "update_gap": 3, "coord_choice": "randk",
                 "reset_statistics": False},
                {"lr": 0.01, "proj_type": "coord", "update_gap": 2, "inactive_update_rule": "no",
                 "proj_params_lr_scale": 0.5},
                {"lr": 0.01, "proj_type": "svd", "update_gap": 2, "density": 0.5, "block_order": "ascending"},
                {"lr": 0.01, "proj_type": "random", "update_gap": 2, "density": 0.5, "reset_statistics": False,
                 "seed": 3},
                {"lr": 0.01, "proj_type": "svd", "update_gap": 3, "density": 0.5, "block_order": "descending",
                 "inactive_update_rule": "sgd", "weight_decay": 0.1},
                {"lr": 0.01, "proj_type": "coord", "update_gap": 2, "density": 1.0, "block_order": "mirror"},
                {"lr": 0.01, "proj_type": "coord", "update_gap": 2, "inactive_lr_scale": 0.1, "betas": (0.8, 0.99),
                 "eps": 1e-6, "density": 0.5},
            ),
            quadratic={"lr": 0.1, "weight_decay": 0.0},
            logistic={"lr": 0.05, "weight_decay": 0.0},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"eps": -1e-8}, match="eps"),
                ErrorInput({"density": 0.0}, match="density"),
                ErrorInput({"density": 1.5}, match="density"),
                ErrorInput({"update_gap": 0}, match="update_gap"),
                ErrorInput({"reset_statistics": None}, match="reset_statistics"),
                ErrorInput({"inactive_update_rule": "same"}, match="inactive_update_rule"),
                ErrorInput({"inactive_lr_scale": -1.0}, match="inactive_lr_scale"),
                ErrorInput({"proj_params_lr_scale": -1.0}, match="proj_params_lr_scale"),
                ErrorInput({"coord_choice": "diag"}, match="coord_choice"),
                ErrorInput({"seed": -1}, match="seed"),
                ErrorInput({"proj_type": "svd", "density": 1.0}, match="full rank"),
                ErrorInput({"block_order": "mirror", "density": 0.5}, match="even"),
                ErrorInput({"block_order": "zigzag"}, match="block_order"),
            ),
            prepare=_frugal_groups,
        ),
        OptimSpec(
            "blockllm",
            # Half of the four tensors selected (with and without freezing the rest), probes every
            # step or two; one variant with everything selected is plain AdamW. Re-selection needs
            # losses, which the matrix does not feed: tests/optim/test_blockllm.py covers it.
            variants=(
                {"lr": 0.01, "sparsity": 0.0, "exclude": ()},
                {"lr": 0.01, "sparsity": 0.5, "probe_interval": 2, "weight_decay": 0.1, "freeze_unselected": False},
                {"lr": 0.01, "sparsity": 0.5, "probe_interval": 1, "seed": 3, "betas": (0.8, 0.99), "eps": 1e-6},
            ),
            quadratic={"lr": 0.1, "sparsity": 0.0},
            logistic={"lr": 0.05, "sparsity": 0.0},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"sparsity": 1.0}, match="sparsity"),
                ErrorInput({"update_freq": 0}, match="update_freq"),
                ErrorInput({"patience": 0}, match="patience"),
                ErrorInput({"num_probes": -1}, match="num_probes"),
                ErrorInput({"exclude": "embed"}, match="exclude"),
                ErrorInput({"freeze_unselected": 1}, match="freeze_unselected"),
                ErrorInput({"exclude": ("p",)}, match="every parameter is excluded"),
            ),
            prepare=lambda ps: [(f"p{i}", p) for i, p in enumerate(ps)],
        ),
        # Curvature. AdaHessian / SophiaH get gradients with a graph (take_step reads
        # needs_create_graph); NewtonCG a closure. SophiaG's step alone never refreshes h (the
        # caller supplies sampled-label losses): the matrix checks its sign-momentum phase and
        # tests/optim/test_curvature.py its Hessian refresh.
        OptimSpec(
            "adahessian",
            variants=(
                {"lr": 0.05},
                {"lr": 0.05, "weight_decay": 0.01, "hessian_power": 0.5, "average_conv_kernel": False, "seed": 3},
            ),
            quadratic={"lr": 0.3},
            logistic={"lr": 0.3},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"hessian_power": 1.5}, match="hessian_power"),
                ErrorInput({"seed": -1}, match="seed"),
                ErrorInput({"eps": -1.0}, match="eps"),
            ),
        ),
        OptimSpec(
            "sophia_h",
            variants=(
                {"lr": 0.05},
                {"lr": 0.05, "weight_decay": 0.1, "update_period": 2, "probe": "rademacher", "rho": 0.5},
            ),
            quadratic={"lr": 0.3, "rho": 0.05, "update_period": 1},
            logistic={"lr": 0.3, "rho": 0.05, "update_period": 1},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"rho": 0.0}, match="rho"),
                ErrorInput({"update_period": 0}, match="update_period"),
                ErrorInput({"probe": "uniform"}, match="probe"),
            ),
        ),
        OptimSpec(
            "sophia_g",
            variants=({"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.2, "betas": (0.9, 0.95), "rho": 0.1, "bs": 10}),
            quadratic={"lr": 0.1, "weight_decay": 0.0},
            logistic={"lr": 0.05, "weight_decay": 0.0},
            error_inputs=(
                *_BETAS_ERRORS,
                ErrorInput({"rho": -1.0}, match="rho"),
                ErrorInput({"bs": 0}, match="bs"),
                ErrorInput({"update_period": 0}, match="update_period"),
            ),
        ),
        OptimSpec(
            "mfac",
            variants=(
                {"lr": 0.05, "ngrads": 4, "damp": 1.0},
                {"lr": 0.05, "ngrads": 3, "damp": 0.5, "momentum": 0.9, "weight_decay": 0.01},
            ),
            quadratic={"lr": 0.5, "ngrads": 8, "damp": 1.0},
            logistic={"lr": 0.5, "ngrads": 8, "damp": 0.1},
            error_inputs=(
                ErrorInput({"ngrads": 0}, match="ngrads"),
                ErrorInput({"damp": 0.0}, match="damp"),
                ErrorInput({"momentum": 1.0}, match="momentum"),
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
            ),
        ),
        OptimSpec(
            "newton_cg",
            variants=({"lr": 1.0}, {"lr": 0.5, "negative_steps": False, "cg_max_iter": 3, "c2": 0.5}),
            quadratic={"lr": 1.0},
            logistic={"lr": 1.0},
            steps=20,
            error_inputs=(
                ErrorInput({"cg_max_iter": 0}, match="cg_max_iter"),
                ErrorInput({"cg_tol": 0.0}, match="cg_tol"),
                ErrorInput({"c1": 0.5, "c2": 0.4}, match="c1"),
                ErrorInput({"max_evals": 0}, match="max_evals"),
                ErrorInput({"negative_steps": 1}, match="negative_steps"),
            ),
        ),
        # Zeroth-order: the matrix drives them with a closure that only computes the loss under
        # no_grad. eps=0.01 so that bfloat16 parameters (ulp ~ 4e-3 near 1) see the perturbation.
        OptimSpec(
            "mezo",
            variants=(
                {"lr": 0.02, "eps": 0.01},
                {"lr": 0.02, "weight_decay": 0.1, "seed": 3},
                {"lr": 0.02, "eps": 0.01, "master_weights": True},
            ),
            quadratic={"lr": 0.02},
            logistic={"lr": 0.5},
            steps=600,
            error_inputs=_ZO_ERRORS,
        ),
        OptimSpec(
            "sparse_mezo",
            # The convergence problems start at 0, where a magnitude threshold selects nothing
            # useful (every entry leaves |p| <= 0 after one step): sparsity 0 there; the behavioural
            # variants start from random parameters and freeze half or three quarters of them.
            variants=(
                {"lr": 0.02, "eps": 0.01, "sparsity": 0.5},
                {"lr": 0.02, "sparsity": 0.75, "weight_decay": 0.1, "seed": 5},
                {"lr": 0.02, "eps": 0.01, "sparsity": 0.5, "master_weights": True},
            ),
            quadratic={"lr": 0.02, "sparsity": 0.0},
            logistic={"lr": 0.5, "sparsity": 0.0},
            steps=600,
            error_inputs=(*_ZO_ERRORS, ErrorInput({"sparsity": 1.0}, match="sparsity")),
        ),
        OptimSpec(
            "zo_sign_sgd",
            variants=({"lr": 0.02, "eps": 0.01}, {"lr": 0.02, "weight_decay": 0.1, "seed": 7}),
            quadratic={"lr": 0.05},
            logistic={"lr": 0.05},
            steps=600,
            error_inputs=_ZO_ERRORS,
        ),
        OptimSpec(
            "zo_adam",
            variants=(
                {"lr": 0.05, "eps": 0.01},
                {"lr": 0.05, "weight_decay": 0.1, "betas": (0.8, 0.99), "adam_eps": 1e-6},
                {"lr": 0.05, "eps": 0.01, "master_weights": True},
            ),
            quadratic={"lr": 0.1},
            logistic={"lr": 0.1},
            steps=600,
            error_inputs=(
                *_ZO_ERRORS,
                ErrorInput({"betas": (1.0, 0.9)}, match="betas"),
                ErrorInput({"adam_eps": -1e-8}, match="adam_eps"),
            ),
        ),
        OptimSpec(
            "forward_gradient",
            variants=({"lr": 0.02}, {"lr": 0.02, "weight_decay": 0.1, "seed": 11}),
            quadratic={"lr": 0.02},
            logistic={"lr": 0.5},
            steps=600,
            error_inputs=(
                ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
                ErrorInput({"seed": -1}, match="seed"),
            ),
        ),
        # Step-size methods: lr is the step-size cap (sls, sls_adam, ponos, mdb) or the Polyak
        # step's multiplier (sps, sps_max); lr = 0 freezes a group for all of them.
        OptimSpec(
            "sls",
            variants=(
                {},
                {"reset_option": 0, "c": 0.5, "init_step_size": 0.5},
                {"reset_option": 2, "line_search": "goldstein", "lr": 2.0},
                {"init_step_size": 100.0, "beta_b": 0.5, "max_backtracks": 3, "same_randomness": False},
            ),
            quadratic={},
            logistic={},
            steps=100,
            error_inputs=_SLS_ERRORS,
        ),
        OptimSpec(
            "sls_adam",
            variants=({}, {"momentum": 0.9, "c": 0.5, "init_step_size": 10.0}, {"line_search": "goldstein"}),
            quadratic={"c": 0.5},
            logistic={"c": 0.5},
            steps=150,
            error_inputs=_SLS_ERRORS,
        ),
        OptimSpec(
            "ponos",
            variants=({}, {"xi": 0.0, "save_backtracks": False}, {"max_backtracks": 2, "f_star": -1.0, "lr": 1.0}),
            quadratic={"xi": 0.5},
            logistic={"xi": 0.5},
            steps=200,
            error_inputs=(
                ErrorInput({"c": 0.0}, match="c"),
                ErrorInput({"c_p": 0.0}, match="c_p"),
                ErrorInput({"delta": 1.0}, match="delta"),
                ErrorInput({"xi": 1.5}, match="xi"),
                ErrorInput({"min_eta": 0.0}, match="min_eta"),
                ErrorInput({"save_backtracks": 1}, match="save_backtracks"),
            ),
        ),
        OptimSpec(
            "sps",
            variants=({}, {"c": 1.0, "gamma_b": 0.5, "f_star": -0.5}, {"smooth": True, "n_batches_per_epoch": 5}),
            quadratic={},
            logistic={"gamma_b": 1.0},
            steps=200,
            error_inputs=_SPS_ERRORS,
        ),
        OptimSpec(
            "sps_max",
            variants=({}, {"gamma_b": 0.3, "c": 0.2}),
            quadratic={"init_step_size": 0.1},
            logistic={"gamma_b": 1.0},
            steps=200,
            error_inputs=_SPS_ERRORS,
        ),
        OptimSpec(
            "mdb",
            variants=(
                {},
                {"set": "box", "forward": 1.1},
                {"grad_dir": False, "max_backtracks": 3},
                {"set": "box", "initial_scale": 1e10},
            ),
            quadratic={},
            logistic={},
            steps=60,
            error_inputs=(
                ErrorInput({"set": "simplex"}, match="set"),
                ErrorInput({"forward": 0.5}, match="forward"),
                ErrorInput({"initial_scale": 0.0}, match="initial_scale"),
                ErrorInput({"max_backtracks": 0}, match="max_backtracks"),
            ),
        ),
    )
}
