"""Optimizers, one module per published algorithm, and the registry that lists them."""

from steepest.optim._base import Capabilities, SteepestOptimizer
from steepest.optim._fused import FusedFallbackWarning
from steepest.optim._memory import state_bytes
from steepest.optim._param_groups import param_groups
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
from steepest.optim.scale import SCALE, scale_param_groups
from steepest.optim.sign_sgd import SignSGD, Signum
from steepest.optim.sls import SLS, SLSAdam
from steepest.optim.sophia import SophiaG, SophiaH
from steepest.optim.sparse_mezo import SparseMeZO
from steepest.optim.sps import SPS, SPSMax
from steepest.optim.zo_adam import ZOAdam
from steepest.optim.zo_sign_sgd import ZOSignSGD

__all__ = [
    "FAMILIES",
    "FRUGAL",
    "LAMB",
    "LARS",
    "MFAC",
    "REGISTRY",
    "SCALE",
    "SGD",
    "SLS",
    "SPS",
    "AdaBelief",
    "AdaGradNorm",
    "AdaHessian",
    "AdamMini",
    "AdamW",
    "Adan",
    "BlockLLM",
    "Capabilities",
    "DiffGrad",
    "Fira",
    "ForwardGradient",
    "FusedFallbackWarning",
    "GaLoreAdamW",
    "Lion",
    "MeZO",
    "MultidimensionalBacktracking",
    "NewtonCG",
    "NormalizedSD",
    "Paper",
    "PoNoS",
    "RegistryEntry",
    "SLSAdam",
    "SPSMax",
    "SignSGD",
    "Signum",
    "SophiaG",
    "SophiaH",
    "SparseMeZO",
    "SteepestOptimizer",
    "ZOAdam",
    "ZOSignSGD",
    "create_optimizer",
    "list_optimizers",
    "lowrank_param_groups",
    "optimizer_info",
    "optimizer_params",
    "param_groups",
    "scale_param_groups",
    "state_bytes",
]
