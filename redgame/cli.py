"""The ``redgame`` command.

Each layer owns its subcommands in its own ``cli.py`` with a ``register(subparsers)``
function; this module only assembles them and turns user errors into one-line messages.
Layer CLIs must import heavy libraries (torch, transformers) inside their handlers so
that ``redgame toy ...`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from redgame import __version__

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = ("redgame.games.cli", "redgame.llm.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redgame",
        description="Red-team training as an Attacker-Defender game: toy games, the LLM game, kernels.",
    )
    parser.add_argument("--version", action="version", version=f"redgame {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a layer that is not built yet
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        # UserError is a ValueError: every documented bad-input path ends here, in one line.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"redgame: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("redgame: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
