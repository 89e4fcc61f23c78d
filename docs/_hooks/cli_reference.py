"""mkdocs hook: fill docs/cli.md with the help of every ``redgame`` command, read from argparse.

The marker ``<!-- cli-reference -->`` in a page is replaced by one section per command, walked
from ``redgame.cli.build_parser()``, so the reference lists exactly the commands that exist.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"
HELP_WIDTH = "100"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _sections(parser: argparse.ArgumentParser, path: list[str], depth: int) -> list[str]:
    title = " ".join(path)
    out = [f"{'#' * min(depth, 6)} `{title}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subcommands(parser):
        out += _sections(sub, [*path, name], depth + 1)
    return out


def cli_reference() -> str:
    """Markdown: the ``--help`` of ``redgame`` and of each of its subcommands, depth first."""
    from redgame.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps help to the terminal width; fix it
    try:
        return "\n".join(_sections(build_parser(), ["redgame"], 2))
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())
