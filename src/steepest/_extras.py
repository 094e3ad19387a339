"""Optional dependencies: import them where a feature needs them, with an error naming the extra.

``pip install steepest`` installs torch and numpy only: every optimizer, ``steepest list`` and
``steepest info`` need nothing more. The benchmark (result store, tuning, report plots, progress
bars), the demo and some claims' experiments need the ``bench`` extra; Ray sweeps the ``ray``
extra. :func:`require` imports such a module and, when it is missing, raises
:class:`MissingExtraError` with the command that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Distribution names where they differ from the module's.
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


class MissingExtraError(ImportError):
    """A feature's optional dependency is not installed; the message names the extra to install."""


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``: ``pip install "steepest[bench]"``."""
    return f'pip install "steepest[{extra}]"'


def missing(module: str, feature: str, extra: str = "bench") -> MissingExtraError:
    """The error to raise when ``module`` cannot be imported for ``feature``.

    Example:
        >>> str(missing("optuna", "tuning"))
        'tuning needs optuna, which the base install leaves out: pip install "steepest[bench]"'
    """
    name = _DISTRIBUTIONS.get(module, module)
    return MissingExtraError(f"{feature} needs {name}, which the base install leaves out: {install_hint(extra)}")


def require(module: str, feature: str, extra: str = "bench") -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError` naming ``extra``.

    Only a missing ``module`` (or a missing package it is part of) becomes a
    :class:`MissingExtraError`; an installed module that fails on import raises its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise missing(module.split(".")[0], feature, extra) from err
        raise
