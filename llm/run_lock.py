"""One process at a time writes a run folder: an advisory lock on ``RUN/.redgame.lock`` while it trains.

Two ``redgame llm train`` commands on one ``--out`` would mix their runs: the second one's
``--overwrite`` or ``--resume`` rewrites the config and the metrics while the first goes on
writing checkpoints. The lock is ``flock`` (POSIX): the operating system releases it when the
process ends, however it ends, so a killed run leaves no stale lock (its file stays, unlocked,
and the next run takes it); a run that ends removes the file. Where ``fcntl`` is missing
(Windows) there is no lock.

``redgame llm probe`` reads a run while it trains a best response elsewhere: it holds the same
file's lock shared (:func:`read_lock`), so probes of one run go side by side, and a train of the
run (which would replace it) is refused until they end.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from redgame.errors import UserError

LOCK_FILE = ".redgame.lock"


@contextlib.contextmanager
def run_lock(out: str | Path, flag: str = "--out"):
    """Hold the lock of run folder ``out`` (created if missing) for the ``with`` block; a one-line
    UserError naming the holder's process id when another process holds it (``flag``: the option that
    named the folder, for that line)."""
    try:
        import fcntl
    except ImportError:  # no flock here: nothing to hold
        yield
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder")
    created = [p for p in [out, *out.parents] if not p.exists()]  # innermost first
    out.mkdir(parents=True, exist_ok=True)
    fd = None
    try:
        fd = _lock(out / LOCK_FILE, fcntl, flag, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if fd is not None:
            (out / LOCK_FILE).unlink(missing_ok=True)  # still held: a process that opened it re-checks, see _lock
            os.close(fd)  # closing the descriptor releases the lock
        for folder in created:  # a start that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def read_lock(run: str | Path, flag: str = "--run"):
    """A shared hold on run folder ``run`` for a command that reads it meanwhile (``redgame llm probe``): any
    number of readers at once; a train of the folder (:func:`run_lock`) is refused until they end, and a reader
    is refused while the folder trains. A folder this process cannot write, or one that is not there, is read
    without a hold."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = _lock(Path(run) / LOCK_FILE, fcntl, flag, fcntl.LOCK_SH)
        os.ftruncate(fd, 0)  # no trainer holds it now: a killed one's process id would name the wrong holder
    except (FileNotFoundError, NotADirectoryError):  # no such folder: nothing to hold; the reader's check says so
        fd = None
    except OSError as exc:
        if not isinstance(exc, PermissionError) and exc.errno != errno.EROFS:
            raise
        fd = None  # a read-only run (or file system): no lock file can be made, nor can it be trained by us
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # the file stays: another reader may hold it


def _lock(path: Path, fcntl, flag: str, mode: int) -> int:
    """A descriptor of ``path`` holding its lock in ``mode`` (``LOCK_EX`` or ``LOCK_SH``). A holder removes the
    file when it ends, so a lock won on a file that is no longer ``path`` (removed between open and lock) is let
    go and taken again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise UserError(f"{flag} {path.parent} is in use by a run or a probe in progress ({who}); wait for it "
                            "to end, or choose another folder") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
