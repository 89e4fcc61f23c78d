"""The ``redgame`` command.

Each layer owns its subcommands in its own ``cli.py`` with a ``register(subparsers)``
function; this module only assembles them and reports errors: a user mistake
(``UserError``) or a missing optional install in one line with exit 2, anything else as
an internal error with exit 1 (``--debug`` prints its traceback).
Layer CLIs must import heavy libraries (torch, transformers) inside their handlers so
that ``redgame toy ...`` starts fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback
import warnings

from redgame import __version__
from redgame.errors import (Terminated, UserError, check_output_path, is_disk_error, lost_peer,
                            missing_extra_message)

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = ("redgame.games.cli", "redgame.llm.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redgame",
        description="Red-team training as an Attacker-Defender game: toy games and the LLM game (its fused kernels: the redgame.kernels library).",
    )
    parser.add_argument("--version", action="version", version=f"redgame {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error, print the traceback (accepted anywhere on the line)")
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


def subcommand_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the innermost subcommand that ``argv`` names (``redgame llm train``'s for ``llm train ...``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for i, word in enumerate(argv):
                if word in action.choices:
                    return subcommand_parser(action.choices[word], argv[i + 1:])
    return parser


def quiet_libraries() -> None:
    """transformers' progress bar of every weight load, and a deprecation warning it raises on its own
    attribute: noise on every command (``HF_HUB_DISABLE_PROGRESS_BARS=0`` brings the bars back). And
    ``HF_HUB_OFFLINE=1`` where it is not set, before huggingface_hub is imported: redgame never downloads,
    and huggingface_hub may go online on its own (it fetched a registry for its request headers while
    transformers read a local folder)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a notebook without ipywidgets


def main(argv: list[str] | None = None) -> int:
    """The command: its exit status. Ctrl-C anywhere, in the imports of the parser as in the work, is one line."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return interrupted("redgame")
    except ImportError as exc:  # Ctrl-C inside a C extension's import (pyspiel's) arrives as its ImportError
        if not ctrl_c_caused(exc):
            raise
        return interrupted("redgame")


def interrupted(prog: str) -> int:
    """Ctrl-C: one line, and the exit status a shell gives it."""
    print(f"{prog}: interrupted", file=sys.stderr)
    return 130


def ctrl_c_caused(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in ``exc``'s chain of causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_libraries()
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report them from the top parser, with redgame's usage, not the subcommand's
        subcommand_parser(parser, argv).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not hasattr(args, "func"):  # the usage and one error line on stderr, exit 2, as for `redgame llm` (it printed
        parser.error("the following arguments are required: COMMAND")  # the whole help on stdout)

    def work():
        check_out(args)
        return args.func(args)
    return report_errors("redgame", work, debug)


def report_errors(prog: str, work, debug: bool = False) -> int:
    """``work()``'s exit status (0 unless it returns an int), or one line ``prog: error: ...`` for what it
    raised: exit 2 for the user's mistakes, 1 for a bug (``debug`` adds the traceback), 130 for Ctrl-C, 143 for
    a SIGTERM that a training run turned into :class:`~redgame.errors.Terminated`."""
    try:
        result = work()
    except KeyboardInterrupt:
        return interrupted(prog)
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except UserError as exc:
        return _report(exc, "error", 2, debug, prog)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        return _report(exc, "error", 2, debug, prog)  # a path the user gave, or a folder they cannot write
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            return _report(exc, "internal error", 1, debug, prog)
        return _report(UserError(message), "error", 2, debug, prog)
    except ImportError as exc:
        if ctrl_c_caused(exc):  # Ctrl-C in a C extension's import (pyspiel's), turned into its ImportError
            return interrupted(prog)
        return _report(exc, "internal error", 1, debug, prog)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # a bug: say so, and how to see where; a full or read-only disk is the user's
        if "TORCHELASTIC_RUN_ID" in os.environ and lost_peer(exc):  # another process stopped first: not a bug here
            if debug:
                traceback.print_exception(exc)
            print(f"{prog}: error: {PEER_STOPPED}", file=sys.stderr)
            return 1
        users = is_disk_error(exc) or (isinstance(exc, OSError) and exc.errno in PATH_ERRNOS)
        return _report(exc, "error", 2, debug, prog) if users else _report(exc, "internal error", 1, debug, prog)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def script_main(prog: str, main) -> int:
    """A benchmark script's entry: ``main(argv)`` under :func:`report_errors`; ``--debug`` anywhere on the
    line shows the traceback of a bug, as for ``redgame``."""
    argv = sys.argv[1:]
    quiet_libraries()
    return report_errors(prog, lambda: main([a for a in argv if a != "--debug"]), "--debug" in argv)


def check_out(args) -> None:
    """A command's ``--out`` that cannot take its output: one line before any work (a folder by default;
    a file where the command sets ``out_kind="file"``)."""
    out = getattr(args, "out", None)
    if out is not None:
        check_output_path("--out", out, getattr(args, "out_kind", "folder"))


PATH_ERRNOS = (errno.ENAMETOOLONG, errno.ELOOP)  # a path the user gave that no file system takes


PEER_STOPPED = ("another process of this torchrun run stopped (its own lines say why), and this one stopped "
                "with it")


def _report(exc: BaseException, kind: str, code: int, debug: bool, prog: str = "redgame") -> int:
    """Print ``<prog>: <kind>: <first line>`` (the traceback too under --debug); return ``code``."""
    if debug:
        traceback.print_exception(exc)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if kind == "internal error":
        message = f"{type(exc).__name__}: {message}"
    hint = "" if debug or code != 1 else " (re-run with --debug for the traceback)"
    print(f"{prog}: {kind}: {message}{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
