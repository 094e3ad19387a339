"""steepest: training optimizers from recent optimization research, for PyTorch.

Every optimizer is a drop-in :class:`torch.optim.Optimizer`, importable as
``steepest.<Class>`` and buildable by registry key:

>>> import torch, steepest
>>> model = torch.nn.Linear(4, 2)
>>> opt = steepest.create_optimizer("lion", model.parameters(), lr=3e-4)
>>> "lion" in steepest.list_optimizers(family="sign")
True
"""

from steepest.optim import *  # noqa: F403
from steepest.optim import __all__ as _optim_all

__version__ = "0.1.0"
__all__ = [*_optim_all, "__version__"]
