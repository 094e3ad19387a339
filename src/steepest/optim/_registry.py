"""The optimizer registry: one explicit entry per optimizer.

Each :class:`RegistryEntry` names the class, its family tags, its paper, a one-line update
rule, and the hyperparameter search space the benchmark tunes over. Entries are written out
by hand (no import-time discovery) so the registry reads as the library's table of contents.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from steepest.optim import _model_params
from steepest.optim._base import Capabilities
from steepest.optim._model_params import ModelParams
from steepest.optim._param_groups import NoDecay, split_weight_decay
from steepest.optim.adabelief import AdaBelief
from steepest.optim.adagrad_norm import AdaGradNorm
from steepest.optim.adahessian import AdaHessian
from steepest.optim.adam_mini import AdamMini
from steepest.optim.adan import Adan
from steepest.optim.baselines import SGD, AdamW
from steepest.optim.blockllm import BlockLLM
from steepest.optim.diffgrad import DiffGrad
from steepest.optim.fira import Fira
from steepest.optim.forward_gradient import ForwardGradient
from steepest.optim.frugal import FRUGAL
from steepest.optim.galore import GaLoreAdamW
from steepest.optim.lamb import LAMB
from steepest.optim.lars import LARS
from steepest.optim.lion import Lion
from steepest.optim.mdb import MultidimensionalBacktracking
from steepest.optim.mezo import MeZO
from steepest.optim.mfac import MFAC
from steepest.optim.newton_cg import NewtonCG
from steepest.optim.normalized_sd import NormalizedSD
from steepest.optim.ponos import PoNoS
from steepest.optim.scale import SCALE
from steepest.optim.sign_sgd import SignSGD, Signum
from steepest.optim.sls import SLS, SLSAdam
from steepest.optim.sophia import SophiaG, SophiaH
from steepest.optim.sparse_mezo import SparseMeZO
from steepest.optim.sps import SPS, SPSMax
from steepest.optim.zo_adam import ZOAdam
from steepest.optim.zo_sign_sgd import ZOSignSGD

#: Family tags. Algorithms may carry several.
FAMILIES = ("baseline", "sign", "adaptive", "layerwise", "memory", "curvature", "step_size", "zeroth_order")


@dataclass(frozen=True)
class Paper:
    """Where an algorithm was published."""

    title: str
    authors: str
    year: int
    arxiv: str | None = None
    venue: str | None = None

    def cite(self) -> str:
        """Short citation: authors, title, venue, year, arXiv id."""
        parts = [self.authors, f'"{self.title}"']
        if self.venue:
            parts.append(self.venue)
        parts.append(str(self.year))
        if self.arxiv:
            parts.append(f"arXiv:{self.arxiv}")
        return ", ".join(parts)


@dataclass(frozen=True)
class SearchDim:
    """One hyperparameter's tuning range: ``log`` uniform, ``uniform`` or ``choice``."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("log", "uniform", "choice"):
            raise ValueError(f"unknown search kind {self.kind!r}")


def log_uniform(low: float, high: float) -> SearchDim:
    """A log-uniform range ``[low, high]``."""
    return SearchDim("log", low, high)


def uniform(low: float, high: float) -> SearchDim:
    """A uniform range ``[low, high]``."""
    return SearchDim("uniform", low, high)


def choice(*choices: Any) -> SearchDim:
    """A categorical choice."""
    return SearchDim("choice", choices=tuple(choices))


@dataclass(frozen=True)
class RegistryEntry:
    """One optimizer in the registry."""

    key: str
    cls: type[Optimizer]
    families: tuple[str, ...]
    paper: Paper
    update_rule: str
    search_space: Mapping[str, SearchDim] = field(default_factory=dict)
    #: Hyperparameters that train a small MLP well (used by ``steepest demo``); lr at least.
    suggested: Mapping[str, Any] = field(default_factory=dict)
    #: Builds ``(params, extra kwargs)`` from a model when ``model.parameters()`` is not enough
    #: (names, projected groups, a last layer); see :func:`optimizer_params`.
    model_params: ModelParams | None = None

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"{self.key}: unknown families {sorted(unknown)}")

    @property
    def capabilities(self) -> Capabilities:
        """What the optimizer needs and supports."""
        return getattr(self.cls, "capabilities", Capabilities())

    def defaults(self) -> dict[str, Any]:
        """Hyperparameter defaults, read from the class signature."""
        signature = inspect.signature(self.cls.__init__)
        return {
            name: p.default
            for name, p in list(signature.parameters.items())[2:]
            if p.default is not p.empty and p.kind is not p.VAR_KEYWORD
        }

    def state_description(self) -> str:
        """What the optimizer keeps per parameter."""
        describe = getattr(self.cls, "describe_state", None)
        return describe() if describe is not None else "see the class docstring"


_ENTRIES: tuple[RegistryEntry, ...] = (
    RegistryEntry(
        key="sgd",
        cls=SGD,
        families=("baseline",),
        paper=Paper("A Stochastic Approximation Method", "Robbins, Monro", 1951, venue="Ann. Math. Statist."),
        update_rule="b <- mu*b + g; p <- p - lr*b (torch.optim.SGD)",
        search_space={"lr": log_uniform(1e-3, 1.0), "momentum": choice(0.0, 0.9)},
        suggested={"lr": 0.1, "momentum": 0.9},
    ),
    RegistryEntry(
        key="adamw",
        cls=AdamW,
        families=("baseline", "adaptive"),
        paper=Paper("Decoupled Weight Decay Regularization", "Loshchilov, Hutter", 2019, "1711.05101", "ICLR"),
        update_rule="p <- p(1 - lr*wd) - lr * m_hat / (sqrt(v_hat) + eps) (torch.optim.AdamW)",
        search_space={"lr": log_uniform(1e-4, 1e-1), "weight_decay": log_uniform(1e-5, 1e-1)},
        suggested={"lr": 1e-3, "weight_decay": 1e-2},
    ),
    RegistryEntry(
        key="lion",
        cls=Lion,
        families=("sign",),
        paper=Paper(
            "Symbolic Discovery of Optimization Algorithms", "Chen et al.", 2023, "2302.06675", "NeurIPS"
        ),
        update_rule="p <- p(1 - lr*wd) - lr*sign(b1*m + (1-b1)*g); m <- b2*m + (1-b2)*g",
        search_space={"lr": log_uniform(1e-5, 1e-2), "weight_decay": log_uniform(1e-4, 1.0)},
        suggested={"lr": 3e-4, "weight_decay": 0.1},
    ),
    RegistryEntry(
        key="adabelief",
        cls=AdaBelief,
        families=("adaptive",),
        paper=Paper(
            "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
            "Zhuang et al.",
            2020,
            "2010.07468",
            "NeurIPS",
        ),
        update_rule="m <- b1*m + (1-b1)*g; s <- b2*s + (1-b2)*(g-m)^2 + eps; "
        "p <- p(1 - lr*wd) - lr * m_hat / (sqrt(s_hat) + eps) (RAdam-rectified by default)",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "weight_decay": log_uniform(1e-5, 1e-1),
            "eps": choice(1e-16, 1e-12, 1e-8),
        },
        # Above the paper's 1e-3: the RAdam rectification ramps the step up over ~1/(1-b2) steps.
        suggested={"lr": 1e-2},
    ),
    RegistryEntry(
        key="diffgrad",
        cls=DiffGrad,
        families=("adaptive",),
        paper=Paper(
            "diffGrad: An Optimization Method for Convolutional Neural Networks",
            "Dubey et al.",
            2020,
            "1909.11015",
            "IEEE TNNLS",
        ),
        update_rule="Adam with m scaled by sigmoid(|g_prev - g|): "
        "p <- p - lr*sqrt(1-b2^t)/(1-b1^t) * sigmoid(|g_prev - g|)*m / (sqrt(v) + eps)",
        search_space={"lr": log_uniform(1e-4, 1e-1), "weight_decay": log_uniform(1e-6, 1e-2)},
        # Above the paper's 1e-3: the friction xi in [0.5, 1) shrinks Adam's step.
        suggested={"lr": 1e-2},
    ),
    RegistryEntry(
        key="adan",
        cls=Adan,
        families=("adaptive",),
        paper=Paper(
            "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models",
            "Xie, Zhou, Li, Lin, Yan",
            2024,
            "2208.06677",
            "IEEE TPAMI",
        ),
        update_rule="d = g - g_prev; m, v, n <- EMAs of g, d, (g + b2*d)^2; "
        "p <- (p - lr*(m_hat + b2*v_hat) / (sqrt(n_hat) + eps)) / (1 + lr*wd)",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "weight_decay": log_uniform(1e-4, 1e-1),
            "betas": choice((0.98, 0.92, 0.99), (0.98, 0.92, 0.999)),
        },
        suggested={"lr": 5e-3, "weight_decay": 0.02},
    ),
    RegistryEntry(
        key="lamb",
        cls=LAMB,
        families=("adaptive", "layerwise"),
        paper=Paper(
            "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
            "You et al.",
            2020,
            "1904.00962",
            "ICLR",
        ),
        update_rule="u = m_hat / (sqrt(v_hat) + eps) + wd*p; p <- p - lr * min(|p|, clamp) / |u| * u (per tensor)",
        search_space={"lr": log_uniform(1e-4, 1e-1), "weight_decay": log_uniform(1e-4, 1e-1)},
        suggested={"lr": 1e-2, "weight_decay": 1e-2},
    ),
    RegistryEntry(
        key="lars",
        cls=LARS,
        families=("layerwise",),
        paper=Paper("Large Batch Training of Convolutional Networks", "You, Gitman, Ginsburg", 2017, "1708.03888"),
        update_rule="l = tc*|p| / (|g| + wd*|p|) (per tensor); b <- mu*b + l*(g + wd*p); p <- p - lr*b",
        search_space={"lr": log_uniform(1e-2, 10.0), "weight_decay": log_uniform(1e-5, 1e-2)},
        suggested={"lr": 1.0},
    ),
    RegistryEntry(
        key="sign_sgd",
        cls=SignSGD,
        families=("sign",),
        paper=Paper(
            "signSGD: Compressed Optimisation for Non-Convex Problems",
            "Bernstein, Wang, Azizzadenesheli, Anandkumar",
            2018,
            "1802.04434",
            "ICML",
        ),
        update_rule="p <- p(1 - lr*wd) - lr*sign(g)",
        search_space={"lr": log_uniform(1e-5, 1e-2), "weight_decay": log_uniform(1e-4, 1.0)},
        suggested={"lr": 3e-3},
    ),
    RegistryEntry(
        key="signum",
        cls=Signum,
        families=("sign",),
        paper=Paper(
            "signSGD: Compressed Optimisation for Non-Convex Problems",
            "Bernstein, Wang, Azizzadenesheli, Anandkumar",
            2018,
            "1802.04434",
            "ICML",
        ),
        update_rule="m <- b*m + (1-b)*g; p <- p(1 - lr*wd) - lr*sign(m)",
        search_space={
            "lr": log_uniform(1e-5, 1e-2),
            "momentum": choice(0.9, 0.95, 0.99),
            "weight_decay": log_uniform(1e-4, 1.0),
        },
        suggested={"lr": 3e-3},
    ),
    RegistryEntry(
        key="normalized_sd",
        cls=NormalizedSD,
        families=("sign",),
        paper=Paper(
            "Characterizing Implicit Bias in Terms of Optimization Geometry",
            "Gunasekar, Lee, Soudry, Srebro",
            2018,
            "1802.08246",
            "ICML",
        ),
        update_rule="p <- p(1 - lr*wd) - lr * argmax_{|v|<=1} <g, v> over the whole group "
        "(l2: g/|g|_2, linf: sign(g), l1: largest coordinate); dual_scaled: times |g|_*",
        search_space={
            "lr": log_uniform(1e-3, 1.0),
            "norm": choice("l2", "linf"),
            "weight_decay": log_uniform(1e-5, 1e-2),
        },
        suggested={"lr": 0.3},
    ),
    RegistryEntry(
        key="adagrad_norm",
        cls=AdaGradNorm,
        families=("adaptive", "step_size"),
        paper=Paper(
            "AdaGrad stepsizes: Sharp convergence over nonconvex landscapes",
            "Ward, Wu, Bottou",
            2019,
            "1806.01811",
            "ICML",
        ),
        update_rule="b^2 <- b^2 + |g|^2 (whole group); p <- p(1 - lr*wd) - lr/b * g",
        search_space={
            "lr": log_uniform(1e-2, 10.0),
            "initial_accumulator": log_uniform(1e-4, 10.0),
            "scope": choice("global", "tensor"),
        },
        suggested={"lr": 1.0},
    ),
    RegistryEntry(
        key="adam_mini",
        cls=AdamMini,
        families=("memory", "adaptive"),
        paper=Paper(
            "Adam-mini: Use Fewer Learning Rates To Gain More",
            "Zhang, Chen, Li, Luo, Ye, Sun",
            2025,
            "2406.16793",
            "ICLR",
        ),
        update_rule="v_b <- b2*v_b + (1-b2)*mean_{i in b}(g_i^2) per block b (head, row, tensor; entry for biases); "
        "p <- p(1 - lr*wd) - lr * m_hat / (sqrt(v_hat_b) + eps); needs named parameters",
        search_space={"lr": log_uniform(1e-4, 1e-1), "weight_decay": log_uniform(1e-5, 1e-1)},
        suggested={"lr": 1e-3},
        model_params=_model_params.adam_mini_params,
    ),
    RegistryEntry(
        key="galore_adamw",
        cls=GaLoreAdamW,
        families=("memory",),
        paper=Paper(
            "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
            "Zhao, Zhang, Chen, Wang, Anandkumar, Tian",
            2024,
            "2403.03507",
            "ICML",
        ),
        update_rule="groups with a rank: every T steps P <- top-r singular vectors of G; R = proj_P(G); "
        "Adam moments of R; p <- p - lr*sqrt(1-b2^t)/(1-b1^t) * scale*back_P(m/(sqrt(v)+eps)); "
        "then p <- p(1 - lr*wd); other groups: the same AdamW without projection",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "scale": choice(0.25, 1.0),
            "weight_decay": log_uniform(1e-5, 1e-1),
        },
        # The paper's lr=0.01 with scale=0.25; projection needs groups with a rank
        # (steepest.lowrank_param_groups), plain parameters get AdamW.
        suggested={"lr": 1e-2, "scale": 0.25},
        model_params=_model_params.lowrank_params,
    ),
    RegistryEntry(
        key="fira",
        cls=Fira,
        families=("memory",),
        paper=Paper(
            "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?",
            "Chen, Zhang, Li, Zhang, Zheng, Chen",
            2024,
            "2410.01623",
        ),
        update_rule="GaLore-AdamW plus the residual S = (G - scale*back_P(R)) * |N|/|R| (per row or column), "
        "its norm growth limited to 1.01x per step: p <- p - lr*sqrt(1-b2^t)/(1-b1^t) * (scale*back_P(N) + S)",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "scale": choice(0.0625, 0.25, 1.0),
            "weight_decay": log_uniform(1e-5, 1e-1),
        },
        suggested={"lr": 1e-2, "scale": 0.25},
        model_params=_model_params.lowrank_params,
    ),
    RegistryEntry(
        key="scale",
        cls=SCALE,
        families=("memory",),
        paper=Paper(
            "A Minimalist Optimizer Design for LLM Pretraining",
            "Glentis, Li, Han, Hong",
            2025,
            "2506.16659",
        ),
        update_rule="matrices: U = G / max(rms over columns, 1e-8); p <- p(1 - lr*wd) - lr*U; "
        "last layer: G <- m = b*m + (1-b)*G first; 1-D: AdamW at lr*adam_lr_ratio (steepest.scale_param_groups)",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "adam_lr_ratio": log_uniform(1.0, 30.0),
            "weight_decay": choice(0.0, 0.1),
        },
        # A small MLP: plain parameters are matrix (no momentum) or vector (AdamW) under role="auto".
        suggested={"lr": 1e-2, "adam_lr_ratio": 1.0},
        model_params=_model_params.scale_params,
    ),
    RegistryEntry(
        key="frugal",
        cls=FRUGAL,
        families=("memory",),
        paper=Paper(
            "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training",
            "Zmushko, Beznosikov, Takáč, Horváth",
            2025,
            "2411.07837",
            "ICML",
        ),
        update_rule="projected groups: every update_gap steps choose a state-full subspace S (density*n columns/rows/"
        "entries, a rank-density SVD or random basis, or density*L whole tensors); "
        "p <- p(1 - lr*wd) - lr*up(Adam(G_S)) - lr*sign(G - up(G_S)); other groups: AdamW",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "density": choice(0.125, 0.25, 0.5),
            "inactive_lr_scale": choice(0.1, 1.0),
        },
        # The official pre-training scripts' lr and weight decay (--lr 0.001 --weight_decay 0.00). Plain
        # parameters get AdamW; optimizer_params puts the weight matrices in a projected group.
        suggested={"lr": 1e-3, "weight_decay": 0.0},
        model_params=_model_params.frugal_params,
    ),
    RegistryEntry(
        key="blockllm",
        cls=BlockLLM,
        families=("memory",),
        paper=Paper(
            "BlockLLM: Memory-Efficient Adaptation of LLMs by Selecting and Optimizing the Right Coordinate Blocks",
            "Ramesh, Ganapathiraman, Laradji, Schmidt",
            2024,
            "2406.17296",
        ),
        update_rule="AdamW on the selected tensors S only (state only for S); every update_freq steps, if the "
        "loss is rising, S <- top tensors by ||g_l|| / exp(f_l / t) within (1-sparsity) of the parameters",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "sparsity": choice(0.5, 0.75, 0.9),
            "update_freq": choice(50, 200, 1000),
        },
        # A small model: half the tensors at a time, re-selection checked every 100 steps.
        suggested={"lr": 3e-3, "sparsity": 0.5, "update_freq": 100, "patience": 20, "exclude": ()},
    ),
    # Zeroth-order: forward passes only (the closure is called under no_grad); lrs for small
    # models from scratch are far above the papers' LLM fine-tuning values (1e-6, 1e-7).
    RegistryEntry(
        key="mezo",
        cls=MeZO,
        families=("zeroth_order", "memory"),
        paper=Paper(
            "Fine-Tuning Language Models with Just Forward Passes",
            "Malladi, Gao, Nichani, Damian, Lee, Chen, Arora",
            2023,
            "2305.17333",
            "NeurIPS",
        ),
        update_rule="z ~ N(0, I) from a seed; g = (L(p + eps*z) - L(p - eps*z)) / (2*eps); p <- p - lr*(g*z + wd*p)",
        search_space={"lr": log_uniform(1e-5, 1e-1), "eps": choice(1e-4, 1e-3, 1e-2)},
        suggested={"lr": 1e-3},
    ),
    RegistryEntry(
        key="sparse_mezo",
        cls=SparseMeZO,
        families=("zeroth_order", "memory"),
        paper=Paper(
            "Sparse MeZO: Less Parameters for Better Performance in Zeroth-Order LLM Fine-Tuning",
            "Liu, Zhu, Gong, Cheng, Hsieh, You",
            2024,
            "2402.15751",
        ),
        update_rule="m = |p| <= h (h: per-tensor quantile fixed at step 1); z_hat = m*z; "
        "g = (L(p + eps*z_hat) - L(p - eps*z_hat)) / (2*eps); p <- p - lr*(g*z_hat + wd*m*p)",
        search_space={
            "lr": log_uniform(1e-5, 1e-1),
            "sparsity": choice(0.5, 0.75, 0.8),
            "eps": choice(1e-4, 1e-3, 1e-2),
        },
        suggested={"lr": 1e-3, "sparsity": 0.5},
    ),
    RegistryEntry(
        key="zo_sign_sgd",
        cls=ZOSignSGD,
        families=("zeroth_order", "sign"),
        paper=Paper("signSGD via Zeroth-Order Oracle", "Liu, Chen, Chen, Hong", 2019, venue="ICLR"),
        update_rule="g = (L(p + eps*z) - L(p - eps*z)) / (2*eps); p <- p(1 - lr*wd) - lr*sign(g*z)",
        search_space={"lr": log_uniform(1e-6, 1e-2), "eps": choice(1e-4, 1e-3, 1e-2)},
        suggested={"lr": 1e-4},
    ),
    RegistryEntry(
        key="zo_adam",
        cls=ZOAdam,
        families=("zeroth_order", "adaptive"),
        paper=Paper(
            "ZO-AdaMM: Zeroth-Order Adaptive Momentum Method for Black-Box Optimization",
            "Chen, Zhou, Xu, Hong, Liu",
            2019,
            "1910.06513",
            "NeurIPS",
        ),
        update_rule="g_hat = (L(p + eps*z) - L(p - eps*z)) / (2*eps) * z + wd*p; Adam on g_hat "
        "(m, v EMAs, bias-corrected): p <- p - lr * m_hat / (sqrt(v_hat) + adam_eps)",
        search_space={"lr": log_uniform(1e-5, 1e-1), "eps": choice(1e-4, 1e-3, 1e-2)},
        suggested={"lr": 1e-3},
    ),
    RegistryEntry(
        key="forward_gradient",
        cls=ForwardGradient,
        families=("zeroth_order",),
        paper=Paper(
            "Gradients without Backpropagation", "Baydin, Pearlmutter, Syme, Wood, Torr", 2022, "2202.08524"
        ),
        update_rule="v ~ N(0, I) from a seed; d = grad L(p) . v (one forward-mode JVP); p <- p - lr*(d*v + wd*p)",
        search_space={"lr": log_uniform(1e-5, 1e-1)},
        suggested={"lr": 1e-3},
    ),
    # Curvature: Hessian-diagonal preconditioners (Hutchinson / GNB), M-FAC, Newton-CG.
    RegistryEntry(
        key="adahessian",
        cls=AdaHessian,
        families=("curvature", "adaptive"),
        paper=Paper(
            "ADAHESSIAN: An Adaptive Second Order Optimizer for Machine Learning",
            "Yao, Gholami, Shen, Mustafa, Keutzer, Mahoney",
            2021,
            "2006.00719",
            "AAAI",
        ),
        update_rule="D = spatial_avg|H z| (Rademacher z, one HVP per step); m, v <- EMAs of g, D^2; "
        "p <- p - lr*(m_hat / ((sqrt(v_hat))^k + eps) + wd*p); needs backward(create_graph=True)",
        search_space={"lr": log_uniform(1e-3, 1.0), "hessian_power": choice(0.5, 1.0)},
        # float32. Under bf16 autocast 0.15 diverges on a small model (loss 5.7 -> 52 in 12 steps) and 0.03
        # trains (see AdaHessian's docstring). No torch.compile(model): the HVP needs double backward.
        suggested={"lr": 0.15},
    ),
    RegistryEntry(
        key="sophia_h",
        cls=SophiaH,
        families=("curvature",),
        paper=Paper(
            "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model Pre-training",
            "Liu, Li, Hall, Liang, Ma",
            2024,
            "2305.14342",
            "ICLR",
        ),
        update_rule="m <- b1*m + (1-b1)*g; every k steps h <- b2*h + (1-b2)*u*(H u); "
        "p <- p(1 - lr*wd) - lr*clip(m / max(rho*h, eps), 1); needs backward(create_graph=True)",
        search_space={"lr": log_uniform(1e-4, 1e-1), "rho": log_uniform(1e-3, 1e-1)},
        suggested={"lr": 1e-2, "rho": 0.01},
    ),
    RegistryEntry(
        key="sophia_g",
        cls=SophiaG,
        families=("curvature", "sign"),
        paper=Paper(
            "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model Pre-training",
            "Liu, Li, Hall, Liang, Ma",
            2024,
            "2305.14342",
            "ICLR",
        ),
        update_rule="p <- p(1 - lr*wd); m <- b1*m + (1-b1)*g; "
        "p <- p - lr*sign(m)*min(|m| / (rho*bs*h + 1e-15), 1); "
        "update_hessian(sampled-label closure): h <- b2*h + (1-b2)*g_hat^2 (official code)",
        search_space={
            "lr": log_uniform(1e-5, 1e-2),
            "rho": log_uniform(1e-3, 1e-1),
            "weight_decay": choice(0.0, 0.1, 0.2),
        },
        suggested={"lr": 1e-3, "weight_decay": 0.0},
    ),
    RegistryEntry(
        key="mfac",
        cls=MFAC,
        families=("curvature",),
        paper=Paper(
            "M-FAC: Efficient Matrix-Free Approximations of Second-Order Information",
            "Frantar, Kurtic, Alistarh",
            2021,
            "2107.03356",
            "NeurIPS",
        ),
        update_rule="window G of the last m gradients; u = (damp*I + G^T G / m)^{-1} (g + wd*p) by Woodbury in O(dm); "
        "v <- mu*v + (1-mu)*u if momentum; p <- p - lr*u",
        search_space={
            "lr": log_uniform(1e-4, 1e-1),
            "damp": log_uniform(1e-6, 1e-1),
            "ngrads": choice(64, 256, 1024),
        },
        suggested={"lr": 1e-3, "ngrads": 64, "damp": 1e-2},
    ),
    RegistryEntry(
        key="newton_cg",
        cls=NewtonCG,
        families=("curvature", "step_size"),
        paper=Paper(
            "Don't Be So Positive: Negative Step Sizes in Second-Order Methods", "Shea, Schmidt", 2024, "2411.11224"
        ),
        update_rule="d = CG solve of H d = -g, kept through negative curvature; alpha by strong Wolfe, "
        "negative when g.d > 0; p <- p + alpha*lr*d (needs a closure with backward(create_graph=True))",
        search_space={"lr": choice(1.0), "cg_max_iter": choice(10, 50, 200)},
        # A few CG products and trial points per step keep a small model's step cheap.
        suggested={"lr": 1.0, "cg_max_iter": 10, "max_evals": 10},
    ),
    # Step-size methods: `lr` is the step-size cap (SLS, PoNoS, MDB) or a multiplier of the
    # Polyak step (SPS); each class docstring says which.
    RegistryEntry(
        key="sls",
        cls=SLS,
        families=("step_size",),
        paper=Paper(
            "Painless Stochastic Gradient: Interpolation, Line-Search, and Convergence Rates",
            "Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien",
            2019,
            "1905.09997",
            "NeurIPS",
        ),
        update_rule="eta0 = min(reset(eta_prev), lr); eta <- beta_b*eta until f(w - eta*g) <= f - c*eta*|g|^2 "
        "(same batch, same RNG); w <- w - eta*g (needs a closure)",
        search_space={"c": choice(0.1, 0.2, 0.5), "reset_option": choice(0, 1, 2), "init_step_size": choice(1.0, 10.0)},
        suggested={"lr": 10.0},
    ),
    RegistryEntry(
        key="sls_adam",
        cls=SLSAdam,
        families=("step_size", "adaptive"),
        paper=Paper(
            "Adaptive Gradient Methods Converge Faster with Over-Parameterization (but you should do a line-search)",
            "Vaswani, Laradji, Kunstner, Meng, Schmidt, Lacoste-Julien",
            2020,
            "2006.06835",
        ),
        update_rule="v <- beta*v + (1-beta)*g^2; P = 1/(sqrt(v/(1-beta^t)) + eps); Armijo search on "
        "w - eta*P*g with decrease sum(P*g^2); w <- w - eta*P*g (needs a closure)",
        search_space={"c": choice(0.1, 0.2, 0.5), "init_step_size": choice(1.0, 100.0), "reset_option": choice(0, 1)},
        suggested={"lr": 10.0},
    ),
    RegistryEntry(
        key="ponos",
        cls=PoNoS,
        families=("step_size",),
        paper=Paper(
            "Don't be so Monotone: Relaxing Stochastic Line Search in Over-Parameterized Models",
            "Galli, Rauhut, Schmidt",
            2023,
            "2306.12747",
            "NeurIPS",
        ),
        update_rule="eta0 = clip(delta^l * f/(c_p*|g|^2), min_eta, lr); eta <- delta*eta until "
        "f(w - eta*g) <= max(C, f) - c*eta*|g|^2 (C: Zhang-Hager mean); l <- max(l + cuts - 1, 0)",
        search_space={"c": choice(0.1, 0.5), "c_p": choice(0.1, 0.2, 0.5), "xi": choice(0.0, 0.5, 1.0)},
        suggested={"lr": 10.0},
    ),
    RegistryEntry(
        key="sps",
        cls=SPS,
        families=("step_size",),
        paper=Paper(
            "Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast Convergence",
            "Loizou, Vaswani, Laradji, Lacoste-Julien",
            2021,
            "2002.10542",
            "AISTATS",
        ),
        update_rule="gamma = (f - f*)_+ / (c*|g|^2 + eps); w <- w - lr*gamma*g",
        search_space={"c": choice(0.2, 0.5, 1.0), "lr": choice(1.0)},
        suggested={"lr": 1.0},
    ),
    RegistryEntry(
        key="sps_max",
        cls=SPSMax,
        families=("step_size",),
        paper=Paper(
            "Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast Convergence",
            "Loizou, Vaswani, Laradji, Lacoste-Julien",
            2021,
            "2002.10542",
            "AISTATS",
        ),
        update_rule="gamma = min((f - f*)_+ / (c*|g|^2 + eps), gamma_b, 2^(1/n_b)*gamma_prev); w <- w - lr*gamma*g",
        search_space={"c": choice(0.2, 0.5), "gamma_b": choice(None, 1.0, 5.0, 100.0)},
        suggested={"lr": 1.0, "c": 0.2},
    ),
    RegistryEntry(
        key="mdb",
        cls=MultidimensionalBacktracking,
        families=("step_size", "adaptive"),
        paper=Paper(
            "Searching for Optimal Per-Coordinate Step-sizes with Multidimensional Backtracking",
            "Kunstner, Portella, Schmidt, Harvey",
            2023,
            "2306.02527",
            "NeurIPS",
        ),
        update_rule="P from the candidate set (ellipsoid/box); y = x - P*g; accept if f(y) <= f - g'Pg/2 and grow "
        "the set, else cut it with u = max(0, (g^2/2 - g_y*g)/(f - f(y) - g_y'Pg)) (full batch, needs a closure)",
        search_space={"set": choice("ellipsoid", "box"), "forward": choice(1.1, 2.0), "lr": choice(1.0, 1e2, 1e10)},
        # lr bounds each coordinate's step. The paper's 1e10 (no bound) suits its convex problems; on a
        # network, trial points at huge steps overflow and every evaluation slows down (measured on a tiny
        # transformer: 20 steps took 1076 evaluations at lr=10 and 44 at lr=1, with a lower final loss).
        suggested={"lr": 1.0},
    ),
)

REGISTRY: Mapping[str, RegistryEntry] = {entry.key: entry for entry in _ENTRIES}


def _entry(name: str) -> RegistryEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def list_optimizers(family: str | None = None) -> list[str]:
    """Registry keys, optionally only those tagged with ``family``."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return [key for key, e in REGISTRY.items() if family is None or family in e.families]


def optimizer_info(name: str) -> RegistryEntry:
    """The registry entry for ``name``: class, paper, update rule, defaults, state, needs."""
    return _entry(name)


def create_optimizer(
    name: str, params: ParamsT, **hyperparameters: Any
) -> Optimizer:
    """Build the optimizer registered as ``name``.

    Raises:
        KeyError: ``name`` is not registered.
        TypeError: a hyperparameter name the optimizer does not take.
        ValueError: a hyperparameter value out of range.
    """
    entry = _entry(name)
    known = entry.defaults()
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise TypeError(f"{name}: unknown hyperparameter(s) {unknown}; accepted: {', '.join(known)}")
    return entry.cls(params, **hyperparameters)


def optimizer_params(
    name: str,
    model: nn.Module,
    *,
    weight_decay: float | None = None,
    no_decay: NoDecay = None,
    **facts: Any,
) -> tuple[Any, dict[str, Any]]:
    """What to give :func:`create_optimizer` for ``model``: ``(params, extra_hyperparameters)``.

    Plain optimizers get ``model.parameters()``; optimizers that need names (Adam-mini, BlockLLM),
    a last layer (SCALE) or projected groups (GaLore, Fira, FRUGAL) get them built from ``model``
    and ``facts``. Facts that describe the model (``dim``, ``n_heads``, ``n_kv_heads``,
    ``last_layer``) are accepted for every optimizer; settings of one optimizer's groups
    (``rank``, ``update_proj_gap``, ``targets``, ``proj_type``) only for the optimizers that read
    them (see :mod:`steepest.optim._model_params`).

    With ``weight_decay``, every group is split into a decayed part at ``weight_decay`` and a part
    at 0 for biases and normalization weights (:func:`steepest.param_groups`' rule, or
    ``no_decay``); projected groups stay projected.

    Raises:
        KeyError: ``name`` is not registered.
        ValueError: a keyword no adapter reads, a setting this optimizer does not read, ``no_decay``
            without ``weight_decay``, or ``weight_decay`` for an optimizer without weight decay.

    Example:
        >>> import torch, steepest
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> params, extra = steepest.optimizer_params("galore_adamw", model, rank=2)
        >>> [len(g["params"]) for g in params], params[1]["rank"], extra
        ([3, 1], 2, {})
        >>> opt = steepest.create_optimizer("galore_adamw", params, lr=1e-3, scale=0.25, **extra)
        >>> opt.param_groups[1]["scale"]
        0.25
    """
    entry = _entry(name)
    adapter = entry.model_params
    settings = _model_params.SETTINGS.get(adapter, ()) if adapter is not None else ()
    unknown = sorted(set(facts) - set(_model_params.MODEL_FACTS) - set(settings))
    if unknown:
        every = {s for names in _model_params.SETTINGS.values() for s in names}
        misplaced = [k for k in unknown if k in every]
        if misplaced:
            readers = sorted(
                key
                for key, e in REGISTRY.items()
                if e.model_params is not None and set(misplaced) & set(_model_params.SETTINGS.get(e.model_params, ()))
            )
            raise ValueError(
                f"optimizer_params({name!r}): {misplaced} would be ignored: only {', '.join(readers)} read them"
            )
        accepted = sorted({*_model_params.MODEL_FACTS, *settings, "weight_decay", "no_decay"})
        raise ValueError(f"optimizer_params({name!r}): unknown keyword(s) {unknown}; accepted: {', '.join(accepted)}")
    if weight_decay is None and no_decay is not None:
        raise ValueError(f"optimizer_params({name!r}): no_decay= needs weight_decay= (the decay of the other group)")
    if adapter is not None:
        params, extra = adapter(model, facts)
    elif entry.capabilities.needs_named_parameters:
        params, extra = list(model.named_parameters()), {}
    else:
        params, extra = model.parameters(), {}
    if weight_decay is not None:
        if "weight_decay" not in entry.defaults():
            raise ValueError(f"optimizer_params({name!r}): {entry.cls.__name__} has no weight_decay hyperparameter")
        params = split_weight_decay(params, model, weight_decay, no_decay)
    return params, extra
