"""Reading a user's small text file (templates, questions) with one-line errors naming it."""

from __future__ import annotations

from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import decode_utf8


def read_user_text(path: str | Path, what: str) -> tuple[Path, str, str]:
    """(path, ``"<what> file <path>"`` for error messages, its UTF-8 text).

    Raises:
        UserError: the file is missing, a folder, or not UTF-8.
    """
    path = Path(path).expanduser()
    where = f"{what} file {path}"
    if not path.is_file():
        raise UserError(f"{where}: not found" if not path.exists() else f"{where}: not a file")
    return path, where, decode_utf8(path.read_bytes(), where)
