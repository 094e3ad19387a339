r"""Docstring markup and documentation coverage, for the docs build (no MkDocs or griffe needed here).

:func:`rst_to_markdown` is what ``docs/griffe_steepest.py`` applies to every docstring before
mkdocstrings renders it; :func:`control_characters`, :func:`undocumented_names` and
:func:`missing_docstrings` are the checks that ``docs/griffe_steepest.py`` and ``docs/hooks.py``
turn into build warnings (failures under ``mkdocs build --strict``). ``tests/test_docs_pages.py``
tests them directly.

steepest's docstrings are Google style with reStructuredText markup inside (``:math:`...```,
``.. math::`` blocks, ``:class:`...``` and other roles, ``Example::`` literal blocks), as Sphinx
and ruff's pydocstyle rules expect. mkdocstrings renders Markdown, so :func:`rst_to_markdown`
rewrites

* ``:math:`x``` to ``\(x\)`` and ``.. math::`` blocks to ``$$`` blocks (an ``aligned``
  environment when the block has ``&`` or ``\\``), which pymdownx.arithmatex passes to MathJax;
* ``:class:`a.b.C``` (``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:exc:``,
  ``:obj:``) to the code span ```a.b.C``` (``~a.b.C`` to ```C```);
* a paragraph ending in ``::`` and its indented block to the paragraph and a fenced code block;
* the section title ``Example:`` to ``Examples:`` (griffe reads ``Example:`` as an admonition and
  renders its ``>>>`` lines as nested quotes; ``Examples:`` gets them as code).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ROLE = re.compile(r":(math|class|func|meth|mod|attr|data|exc|obj):`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_LITERAL = re.compile(r"^(\s*)(.*\S)::\s*$")
_CONTROL = set("\t\b\f\v\a\r")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
#: Google-style section titles: their content stays indented under them.
_SECTIONS = {"example", "examples", "note", "notes", "warning", "warnings"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role(match: re.Match[str]) -> str:
    kind, text = match.groups()
    text = re.sub(r"\n\s*", " ", text)  # a role broken over lines: one line (the next line joins this one)
    if kind == "math":
        return rf"\({text}\)"
    text = text.strip()
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return f"`{text}`"


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines after ``start`` indented deeper than ``indent`` (blank lines included), and the next index."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def rst_to_markdown(text: str) -> str:
    """Rewrite the reStructuredText markup of a docstring as Markdown (see the module docstring)."""
    lines = _ROLE.sub(_role, text).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        math = _MATH_DIRECTIVE.match(line)
        literal = None if math or line.lstrip().startswith(".. ") else _LITERAL.match(line)
        if math:
            pad, first = math.groups()
            body, i = _block(lines, i + 1, len(pad))
            content = [first] if first else []
            content += [row for row in textwrap.dedent("\n".join(body)).split("\n") if row.strip()]
            if any("&" in row or "\\\\" in row for row in content):
                content = ["\\begin{aligned}", *content, "\\end{aligned}"]
            if out and out[-1].strip():
                out.append("")
            out += [pad + "$$", *(pad + row for row in content), pad + "$$", ""]
            continue
        if literal and i + 1 < len(lines) and not lines[i + 1].strip():
            pad, title = literal.groups()
            body, end = _block(lines, i + 1, len(pad))
            if body:
                code = textwrap.dedent("\n".join(body)).strip("\n")
                try:
                    ast.parse(code)
                    language = "python"
                except SyntaxError:
                    language = "text"
                inner = pad + "    " if title.strip().lower() in _SECTIONS else pad
                out += [pad + title + ":", "", inner + "```" + language]
                out += [(inner + row) if row.strip() else "" for row in code.split("\n")]
                out += [inner + "```"]
                i = end
                continue
        example = _EXAMPLE.match(line)
        out.append(f"{example.group(1)}Examples:" if example else line)
        i += 1
    return "\n".join(out)


def control_characters(text: str) -> list[str]:
    r"""The control characters in ``text`` (a tab in a docstring is ``\t`` from ``\text`` or a typo)."""
    return sorted({repr(c) for c in text if c in _CONTROL})


_DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)


def directive_targets(pages: Iterable[Path]) -> dict[str, Path]:
    """Every ``::: identifier`` of ``pages`` and the page it is on."""
    return {identifier: page for page in pages for identifier in _DIRECTIVE.findall(page.read_text())}


def resolve(identifier: str) -> Any:
    """The Python object ``identifier`` names: the longest importable module prefix, then attributes."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(identifier)


def undocumented_names(module: Any, identifiers: Iterable[str]) -> list[str]:
    """Names of ``module.__all__`` (``__version__`` aside) that no identifier resolves to.

    Raises:
        ImportError, AttributeError: an identifier that does not resolve.
    """
    rendered = {id(resolve(identifier)) for identifier in identifiers}
    return [name for name in module.__all__ if name != "__version__" and id(getattr(module, name)) not in rendered]


def missing_docstrings(identifiers: Iterable[str]) -> list[str]:
    """The rendered objects without a docstring: each identifier's object, and a class's public methods.

    mkdocstrings shows an object without a docstring as a bare signature (or, for members, not at
    all); this names them instead. Methods count when the class itself defines them.
    """
    out = []
    for identifier in identifiers:
        obj = resolve(identifier)
        if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
            if not (obj.__doc__ or "").strip():
                out.append(identifier)
        if inspect.isclass(obj):
            for name, member in vars(obj).items():
                function = getattr(member, "__func__", member)  # staticmethod / classmethod
                if isinstance(member, property):
                    function = member.fget
                if name.startswith("_") or not inspect.isfunction(function):
                    continue
                if not (function.__doc__ or "").strip():
                    out.append(f"{identifier}.{name}")
    return out
