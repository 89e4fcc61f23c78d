"""The docs site builds offline with ``mkdocs build --strict`` and no warnings.

Outgoing HTTP(S) is pointed at a closed port, so a theme or plugin that fetches anything at
build time (web fonts, a remote script) fails the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")


def _command_paths(parser=None, path=("redgame",)):
    """("redgame toy solve", its option strings) for every command of the redgame CLI."""
    import argparse

    from redgame.cli import build_parser

    parser = parser or build_parser()
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    yield " ".join(path), flags
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_paths(sub, (*path, name))


def test_mkdocs_build_strict_offline(tmp_path):
    site = tmp_path / "site"
    dead = "http://127.0.0.1:9"  # nothing listens here: any download fails
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
           "NO_MKDOCS_2_WARNING": "1"}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    warnings = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "\n".join(warnings)

    # The CLI reference is generated from argparse: every command has a section with its flags.
    cli_page = (site / "cli" / "index.html").read_text()
    commands = list(_command_paths())
    assert {"redgame toy list", "redgame toy solve"} <= {c for c, _ in commands}
    for command, flags in commands:
        assert f"<code>{command}</code>" in cli_page, f"{command} missing from the CLI reference"
        assert all(flag in cli_page for flag in flags), f"{command}: a flag is missing from the CLI reference"
    assert "<!-- cli-reference -->" not in cli_page

    # A notebook's links to docs pages point at the built pages (mkdocs-jupyter kept them as ../theory.md).
    for page in (site / "notebooks").glob("*/index.html"):
        links = re.findall(r'href="(\.\./[^"#]*)(?:#[^"]*)?"', page.read_text())
        assert not [link for link in links if link.endswith(".md")], page
        for link in {link for link in links if link.endswith("/")}:
            assert (page.parent / link / "index.html").resolve().is_file(), f"{page}: {link} is no page"

    # Every notebook is rendered as a page, and no page pulls a web font.
    for notebook in sorted((REPO / "docs" / "notebooks").glob("*.ipynb")):
        assert (site / "notebooks" / notebook.stem / "index.html").is_file(), notebook.name
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()


def test_nav_lists_each_page_once_and_every_page():
    import yaml

    def pages(items):
        for item in items:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    nav = list(pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]))
    assert len(nav) == len(set(nav)), sorted(p for p in nav if nav.count(p) > 1)
    assert all((REPO / "docs" / p).is_file() for p in nav)
    written = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*") if p.suffix in (".md", ".ipynb")}
    assert written <= set(nav), f"pages no menu reaches: {sorted(written - set(nav))}"


def test_quickstart_links_every_notebook_and_the_docs_stand_alone():
    notebooks = sorted(p.name for p in (REPO / "docs" / "notebooks").glob("*.ipynb"))
    quickstart = (REPO / "docs" / "quickstart.md").read_text()
    assert notebooks and [n for n in notebooks if f"notebooks/{n}" not in quickstart] == []
    # Users get the repository only: no page, module or test may cite the developers' notes.
    outside = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared/")
    cited = [str(p.relative_to(REPO)) for pattern in ("*.md", "*.py", "*.ipynb", "*.toml", "*.yml")
             for p in REPO.rglob(pattern)
             if not {".venv", ".git", "site", "node_modules"} & set(p.relative_to(REPO).parts)
             and p != Path(__file__).resolve() and outside.search(p.read_text(errors="replace"))]
    assert cited == []
