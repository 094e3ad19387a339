r"""Griffe extension for the docs build (mkdocs.yml loads it): steepest's docstrings as Markdown.

Before griffe parses a docstring, ``checks.rst_to_markdown`` (``docs/checks.py``) rewrites its reStructuredText
markup as Markdown (math for MathJax, roles as code spans, literal blocks as fenced code). The
extension also warns, which fails ``mkdocs build --strict``, for every public class, function or
method of a public steepest module that has no docstring, and for a docstring holding a control
character (a literal tab, or ``\text`` / ``\beta`` / ``\frac`` in a docstring that is not a raw
string).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import griffe


def _load_checks() -> ModuleType:
    """``docs/checks.py`` under a name no installed package uses (docs/ is not on sys.path)."""
    name = "_steepest_docs_checks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "checks.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


checks = _load_checks()

#: Under ``mkdocs.``, so ``mkdocs build --strict`` counts its warnings.
logger = logging.getLogger("mkdocs.plugins.steepest_docs")


def _source(docstring: griffe.Docstring) -> str:
    """The docstring's lines as written in the file (griffe's value has tabs expanded)."""
    parent = docstring.parent
    if parent is None or docstring.lineno is None or docstring.endlineno is None:
        return docstring.value
    path = parent.filepath
    if isinstance(path, list) or not path.is_file():
        return docstring.value
    return "\n".join(_lines(path)[docstring.lineno - 1 : docstring.endlineno])


@functools.cache
def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _public(obj: griffe.Object) -> bool:
    parts = obj.path.split(".")
    return not any(part.startswith("_") for part in parts)


class SteepestDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded package as Markdown; warn for undocumented public API."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk the package once it is loaded (before any docstring is parsed)."""
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            bad = checks.control_characters(_source(obj.docstring))
            if bad:
                logger.warning(
                    "%s: docstring holds %s (a literal tab, or a backslash escape in a non-raw string; %s:%s)",
                    obj.path, ", ".join(bad), obj.relative_filepath, obj.docstring.lineno,
                )
            obj.docstring.value = checks.rst_to_markdown(obj.docstring.value)
        elif (obj.is_class or obj.is_function) and _public(obj) and obj.parent is not None:
            module = obj.module
            exported = module.exports is None or obj.name in module.exports or obj.parent.is_class
            if exported and not obj.is_alias:
                logger.warning("%s has no docstring (%s:%s)", obj.path, obj.relative_filepath, obj.lineno)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)
