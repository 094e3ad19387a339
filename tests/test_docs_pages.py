"""The documentation: generated pages match the registry, every public name has a page, docstring markup.

The strict MkDocs build itself runs in ``.ci/docs`` (it needs the docs extra); these checks need
only the test environment: ``docs/generate.py`` (the pages and the README table from the registry)
and ``docs/checks.py`` (the docstring rewriting and the coverage check the build applies).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import steepest
from steepest.optim import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load_docs_module(name: str) -> ModuleType:
    """``docs/<name>.py``, loaded once per test session under a private name (docs/ is not a package)."""
    module_name = f"_steepest_docs_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, DOCS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


_EXPECTED: dict[Path, str] = {}


def expected_files() -> dict[Path, str]:
    """What ``docs/generate.py`` would write (computed once: it steps every optimizer)."""
    if not _EXPECTED:
        with warnings.catch_warnings():  # Adam-mini's partition notes, create_graph's reference cycle
            warnings.simplefilter("ignore")
            _EXPECTED.update(load_docs_module("generate").expected_files())
    return _EXPECTED


gen = load_docs_module("generate")
checks = load_docs_module("checks")


def test_generated_pages_match_the_registry() -> None:
    files = {p: t for p, t in expected_files().items() if p != gen.README}
    problems = gen.stale(files)
    assert not problems, "\n".join(problems) + "\nrun `python docs/generate.py`"
    assert {p.stem for p in gen.PAGES.glob("*.md")} == {*REGISTRY, "index"}


def test_the_staleness_check_sees_a_change() -> None:
    files = dict(expected_files())
    page = gen.PAGES / "lion.md"
    files[page] = files[page].replace("lion-pytorch 0.2.5", "something else")
    problems = gen.stale(files)
    assert len(problems) == 1 and "lion.md" in problems[0] and "something else" in problems[0]


def test_every_optimizer_has_a_reference_and_a_page_in_the_nav() -> None:
    assert set(gen.REFERENCES) == set(REGISTRY)
    assert set(gen.NEEDS_MORE) <= set(REGISTRY)
    nav = re.findall(r"optimizers/(\w+)\.md", (ROOT / "mkdocs.yml").read_text())
    assert sorted(k for k in nav if k != "index") == sorted(REGISTRY), "mkdocs.yml's nav must list every page once"


def test_state_column_is_exact_bytes() -> None:
    # Lion keeps one buffer like each parameter; AdamW two and a scalar step per tensor.
    model = gen.ReferenceModel()
    numel, tensors = sum(p.numel() for p in model.parameters()), len(list(model.parameters()))
    assert gen.measured_state_bytes("lion") == 4 * numel
    assert gen.measured_state_bytes("adamw") == 8 * numel + 4 * tensors
    row = next(r for r in gen.rows() if r.key == "lion")
    assert row.state == f"{4 * numel / (8 * numel + 4 * tensors):.2f}x"


def test_every_public_name_has_a_page() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    assert checks.undocumented_names(steepest, checks.directive_targets(pages)) == []


def test_a_public_name_without_a_page_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "one.md"
    page.write_text("# One\n\n::: steepest.Lion\n\n::: steepest.optim.adamw_like_missing\n")
    with pytest.raises(AttributeError):
        checks.undocumented_names(steepest, checks.directive_targets([page]))
    page.write_text("# One\n\n::: steepest.optim.lion.Lion\n    options:\n      heading_level: 2\n")
    missing = checks.undocumented_names(steepest, checks.directive_targets([page]))
    assert "Lion" not in missing and "AdamW" in missing and "create_optimizer" in missing
    assert "__version__" not in missing


def test_rendered_objects_without_docstrings_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "doc_probe_module.py").write_text(
        '"""A module."""\n\n'
        "class Documented:\n"
        '    """A class."""\n\n'
        "    def fine(self):\n"
        '        """Has one."""\n\n'
        "    def bare(self):\n"
        "        pass\n\n"
        "    def _private(self):\n"
        "        pass\n\n"
        "def naked():\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = checks.missing_docstrings(["doc_probe_module", "doc_probe_module.Documented", "doc_probe_module.naked"])
    assert found == ["doc_probe_module.Documented.bare", "doc_probe_module.naked"]
    assert checks.missing_docstrings(["steepest.Lion", "steepest.SteepestOptimizer", "steepest.create_optimizer"]) == []


@pytest.mark.parametrize(
    ("rst", "markdown"),
    [
        ("step size :math:`\\eta`.", "step size \\(\\eta\\)."),
        ("see :class:`torch.optim.Optimizer` and :func:`~steepest.optim._memory.state_bytes`",
         "see `torch.optim.Optimizer` and `state_bytes`"),
        (":meth:`step`, :mod:`steepest.optim._fused`, :data:`REGISTRY`", "`step`, `steepest.optim._fused`, `REGISTRY`"),
        ("the norm :math:`\\|g\n    \\|_2` of g", "the norm \\(\\|g \\|_2\\) of g"),
        ("Example:\n    >>> 1 + 1\n    2", "Examples:\n    >>> 1 + 1\n    2"),
        ("``state[\"x\"]`` stays", "``state[\"x\"]`` stays"),
    ],
    ids=["math", "roles", "more-roles", "role-over-lines", "example-section", "code-untouched"],
)
def test_rst_inline_markup_becomes_markdown(rst: str, markdown: str) -> None:
    assert checks.rst_to_markdown(rst) == markdown


def test_math_blocks_become_display_math() -> None:
    rst = "Update:\n\n.. math::\n\n    c &= a \\\\\n    d &= b\n\nThen :math:`x`."
    assert checks.rst_to_markdown(rst) == (
        "Update:\n\n$$\n\\begin{aligned}\nc &= a \\\\\nd &= b\n\\end{aligned}\n$$\n\n\nThen \\(x\\)."
    )
    single = "Args:\n    x: the value\n\n        .. math:: y = x^2\n"
    assert "        $$\n        y = x^2\n        $$" in checks.rst_to_markdown(single)
    assert "aligned" not in checks.rst_to_markdown(single)


def test_literal_blocks_become_fenced_code() -> None:
    rst = "Example::\n\n    import steepest\n    x = 1\n\nLayout::\n\n    key = value with spaces\n\nAfter."
    assert checks.rst_to_markdown(rst) == (
        "Example:\n\n    ```python\n    import steepest\n    x = 1\n    ```\n\n"
        "Layout:\n\n```text\nkey = value with spaces\n```\n\nAfter."
    )


def test_control_characters_are_found() -> None:
    assert checks.control_characters(r"plain \text and \beta") == []
    assert set(checks.control_characters("broken \text and \beta")) == {"'\\t'", "'\\x08'"}
