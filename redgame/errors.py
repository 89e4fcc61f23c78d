"""Errors, and the one place that says which optional install provides a missing module.

- ``UserError``: a user mistake (a config key, a file, a parameter). The CLI prints its
  message in one line and exits 2. It is a ``ValueError``, so API callers that catch
  ``ValueError`` keep working.
- ``check_output_path``: an output path (``--out``, ``--plot``) that cannot be written, as one
  line before any work; ``check_not_replacing``: an ``--out`` that holds an earlier output,
  refused unless ``--overwrite``.
- A ``ModuleNotFoundError`` for a module of an optional install (an *extra*) becomes one
  line naming the ``pip install`` to run (``missing_extra_message``).
- A full or read-only disk is the user's to fix (``is_disk_error``), and a write that it stops names the
  file it was writing (``naming_the_file``).
- ``Terminated``: SIGTERM during a training run, after the run named its checkpoint; exit 143.
- A collective that failed because another process of a torchrun run died or stopped
  (``lost_peer``) is said in one line, exit 1: that process's own lines say why.
- Anything else is a bug: the CLI says "internal error", exits 1, and ``--debug`` shows
  the traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path


class UserError(ValueError):
    """Bad input from the user: a config, a file, a parameter. The message names the culprit."""


DISK_MESSAGES = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
                 errno.EDQUOT: "Disk quota exceeded"}


def is_disk_error(exc: BaseException) -> bool:
    """A disk that is full or read-only, as an OSError or as safetensors' own error (which wraps it)."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_MESSAGES
    return type(exc).__name__ == "SafetensorError" and any(m in str(exc) for m in DISK_MESSAGES.values())


@contextlib.contextmanager
def naming_the_file(path):
    """Where the block fails for a full or read-only disk, its error names ``path``: a write that fails when its
    file is closed, or inside safetensors, names none ("[Errno 28] No space left on device", after the work)."""
    try:
        yield
    except Exception as exc:
        if not is_disk_error(exc) or getattr(exc, "filename", None) is not None:
            raise
        code = exc.errno if isinstance(exc, OSError) else next(c for c, m in DISK_MESSAGES.items() if m in str(exc))
        raise OSError(code, os.strerror(code), str(path)) from exc


class Terminated(BaseException):
    """SIGTERM during a training run (a ``kill``, or torchrun stopping the processes of a run one of whose
    processes failed): raised so that the run names its last checkpoint before it ends (exit 143)."""


def check_output_path(flag: str, out, kind: str, example: str = "eval.json") -> None:
    """One line, before any work, when ``out`` cannot be written as a ``kind`` ("folder" or "file"):
    it is empty, it is a loop of links or a link to nothing, it is the other kind (or a device, a pipe or a
    socket, which the file's atomic write would replace), or its nearest existing parent is a file or is not
    writable."""
    if not str(out).strip():
        raise UserError(f"{flag} is empty; give a {kind} name")
    path = Path(out)
    try:
        path.stat()
    except OSError as exc:  # exists() reads a loop as "absent": the work ran, then the write failed
        if exc.errno == errno.ELOOP:
            raise UserError(f"{flag} {out}: a loop of symbolic links; give another {kind}") from exc
    dangling = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:  # the write would fail after the work (a folder), or replace the link (a file)
        raise UserError(f"{flag} {out}: {dangling} is a symbolic link to {os.readlink(dangling)}, which does not "
                        f"exist; give its target, or another {kind}")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder")
    if kind == "file" and path.is_dir():
        raise UserError(f"{flag} {out} is a folder; give a file name, such as {path / example}")
    if kind == "file" and path.exists() and not path.is_file():  # written by a rename, which would replace it
        raise UserError(f"{flag} {out} is not a regular file (a device, a pipe or a socket); give a file name")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{flag} {out}: {parent} is a file, not a folder")
    where = path if path.exists() else parent
    if where is not None and not can_write_in(where if where.is_dir() else where.parent):
        raise UserError(f"{flag} {out}: cannot write in {where if where.is_dir() else where.parent}")


def can_write_in(folder: Path) -> bool:
    """Whether a file can be made in ``folder``: tried, with a temporary file removed at once (``os.access`` says
    yes to root everywhere, /proc and /sys included, where the write then failed after the work)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        handle, name = tempfile.mkstemp(prefix=".redgame-check-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def check_not_replacing(out, names, overwrite: bool, what: str) -> None:
    """One line, before any work, when the folder ``out`` holds any of the files ``names`` (an earlier
    ``what``) and ``overwrite`` is not set: nothing a user ran is replaced silently."""
    held = [name for name in names if (Path(out) / name).exists()]
    if held and not overwrite:
        raise UserError(f"--out {out} already holds {what} ({', '.join(held)}); pass --overwrite to replace it, "
                        "or choose another folder")


# Top-level module -> the extra of pyproject.toml that installs it.
EXTRA_OF_MODULE = {
    "torch": "llm",
    "transformers": "llm",
    "peft": "llm",
    "safetensors": "llm",
    "gguf": "llm",
    "tensorboard": "llm",
    "triton": "kernels",
    "vllm": "vllm",
    "cvxpy": "lp",
    "ecos": "lp",
    "mkdocs": "docs",
    "nbclient": "docs",
    "nbformat": "docs",
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line naming the install that provides the missing module, or None if no extra does."""
    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    hint = " (install the torch build for your machine first: see the README)" if extra in ("llm", "kernels") else ""
    return f"{root} is not installed; run: pip install 'redgame[{extra}]'{hint}"


# gloo's words for a peer that went away, and NCCL's for a communicator aborted once one did
PEER_LOST = re.compile(r"Connection (closed|reset) by peer|remote worker|communicator was aborted", re.IGNORECASE)


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective (torch.distributed) that failed because another process of the run died
    or stopped: its error, not this one, says why. Read from the exception alone, without importing torch."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return ("DistBackendError" in names or isinstance(exc, RuntimeError)) and PEER_LOST.search(str(exc)) is not None
