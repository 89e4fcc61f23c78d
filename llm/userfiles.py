"""Reading a user's small text file (templates, questions) with one-line errors naming it."""

from __future__ import annotations

from pathlib import Path

from redgame.errors import UserError


def read_user_text(path: str | Path, what: str) -> tuple[Path, str, str]:
    """(path, ``"<what> file <path>"`` for error messages, its UTF-8 text).

    Raises:
        UserError: the file is missing, a folder, or not UTF-8.
    """
    path = Path(path).expanduser()
    where = f"{what} file {path}"
    if not path.is_file():
        raise UserError(f"{where}: not found" if not path.exists() else f"{where}: not a file")
    try:
        return path, where, path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
