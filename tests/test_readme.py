"""README.md: its optimizer table is the registry's, its set-up commands are CI's, its links resolve."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from steepest.optim import REGISTRY
from tests.test_docs_pages import expected_files, gen

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", TEXT, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _slug(heading: str) -> str:
    """GitHub's and MkDocs' anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_table_is_the_registry() -> None:
    assert expected_files()[gen.README] == TEXT, "README's optimizer table is stale: run `python docs/generate.py`"
    for key in REGISTRY:
        assert f"| `{key}` |" in TEXT


def test_readme_is_a_short_users_page() -> None:
    assert len(TEXT.splitlines()) < 220
    for title in ("Install", "Quick start", "Optimizers", "With Lightning, Hugging Face Trainer and timm", "Set-up"):
        _section(title)


def test_set_up_has_the_two_commands_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", _section("Set-up"), flags=re.DOTALL)
    commands = [line for block in blocks for line in block.strip().splitlines()]
    assert len(blocks) == 2 and len(commands) == 2, commands
    main_job, tests = commands
    assert 'pip install -e ".[bench]"' in main_job and "steepest bench run --config quick --report" in main_job
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci, "CI must run the README's test command verbatim"


def test_extras_named_in_the_readme_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = set(re.findall(r"steepest\[(\w+)\]", TEXT)) | set(re.findall(r'"\.\[(\w+)\]"', TEXT))
    assert named and named <= set(extras)
    assert "steepest[bench]" in extras["test"], "the test extra must pull the bench extra"


def test_keys_in_the_advice_are_registered() -> None:
    keys = set(re.findall(r"`([a-z][a-z0-9_]*)`", _section("Which one to try")))
    assert keys, "the advice names no optimizer"
    assert keys <= set(REGISTRY), sorted(keys - set(REGISTRY))


def test_relative_links_resolve() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", TEXT)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to missing {path}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, f"{path} has no heading for #{anchor}"
