"""MkDocs hooks (mkdocs.yml ``hooks:``): serve MathJax from the site, check the API is documented.

* MathJax 3 comes from the ``django-static-mathjax`` wheel of the docs extra (no other
  dependency) and is copied into the site, so math renders without any network access.
* Every name in ``steepest.__all__`` must be rendered by a ``::: identifier`` directive on some
  page, every object a directive renders (and each public method of a class it renders) must
  have a docstring, and every generated page must match the registry (``docs/generate.py
  --check``); otherwise the build logs a warning, which ``mkdocs build --strict`` turns into a
  failure.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "src"))  # the checkout's steepest, whatever copy is installed


def load_helper(name: str) -> ModuleType:
    """``docs/<name>.py`` as a module under a name no installed package uses (docs/ is not on sys.path)."""
    module_name = f"_steepest_docs_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, DOCS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


generate = load_helper("generate")
checks = load_helper("checks")

logger = logging.getLogger("mkdocs.plugins.steepest_docs")

#: The script extra_javascript loads, as MathJax's wheel ships it (SVG output: no font files to serve).
MATHJAX_SCRIPT = "javascripts/mathjax/tex-svg-full.js"


def _mathjax_source() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError('MathJax is missing: pip install -e ".[docs]" (django-static-mathjax)')
    path = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5" / "tex-svg-full.js"
    if not path.is_file():
        raise PluginError(f"{path} not found: reinstall the docs extra")
    return path


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add MathJax to the site's files."""
    files.append(File.generated(config, MATHJAX_SCRIPT, abs_src_path=str(_mathjax_source())))
    return files


def on_pre_build(config: MkDocsConfig, **kwargs: Any) -> None:
    """Warn for public API that no page renders, and for generated pages out of date."""
    import steepest

    targets = checks.directive_targets(sorted(DOCS.rglob("*.md")))
    try:
        missing = checks.undocumented_names(steepest, targets)
        no_docstring = checks.missing_docstrings(targets)
    except (ImportError, AttributeError) as err:
        logger.warning("a ::: directive does not resolve: %s", err)
    else:
        if missing:
            logger.warning("public names no page documents (add a ::: directive): %s", ", ".join(missing))
        for identifier in no_docstring:
            page = targets.get(identifier) or targets.get(identifier.rsplit(".", 1)[0])
            logger.warning("%s is rendered on %s but has no docstring", identifier, page)
    for problem in generate.stale(generate.expected_files()):
        logger.warning("generated docs are stale (run python docs/generate.py):\n%s", problem)
