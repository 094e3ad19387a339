"""Optimizers, one module per published algorithm, and the registry that lists them."""

from steepest.optim._base import Capabilities, SteepestOptimizer
from steepest.optim._memory import state_bytes
from steepest.optim._projectors import lowrank_param_groups
from steepest.optim._registry import (
    FAMILIES,
    REGISTRY,
    Paper,
    RegistryEntry,
    create_optimizer,
    list_optimizers,
    optimizer_info,
    optimizer_params,
)
from steepest.optim.adabelief import AdaBelief
from steepest.optim.adagrad_norm import AdaGradNorm
from steepest.optim.adam_mini import AdamMini
from steepest.optim.adan import Adan
from steepest.optim.baselines import SGD, AdamW
from steepest.optim.blockllm import BlockLLM
from steepest.optim.diffgrad import DiffGrad
from steepest.optim.fira import Fira
from steepest.optim.frugal import FRUGAL
from steepest.optim.galore import GaLoreAdamW
from steepest.optim.lamb import LAMB
from steepest.optim.lars import LARS
from steepest.optim.lion import Lion
from steepest.optim.normalized_sd import NormalizedSD
from steepest.optim.scale import SCALE, scale_param_groups
from steepest.optim.sign_sgd import SignSGD, Signum

__all__ = [
    "FAMILIES",
    "FRUGAL",
    "LAMB",
    "LARS",
    "REGISTRY",
    "SCALE",
    "SGD",
    "AdaBelief",
    "AdaGradNorm",
    "AdamMini",
    "AdamW",
    "Adan",
    "BlockLLM",
    "Capabilities",
    "DiffGrad",
    "Fira",
    "GaLoreAdamW",
    "Lion",
    "NormalizedSD",
    "Paper",
    "RegistryEntry",
    "SignSGD",
    "Signum",
    "SteepestOptimizer",
    "create_optimizer",
    "list_optimizers",
    "lowrank_param_groups",
    "optimizer_info",
    "optimizer_params",
    "scale_param_groups",
    "state_bytes",
]
