"""A run's ``metrics.jsonl``: its rows, checked, and the late mean of one metric."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import decode_utf8, parse_json


def read_metrics(run: Path, *, allow_empty: bool = False) -> list[dict]:
    """The rows of ``<run>/metrics.jsonl``, checked: one JSON object a line, at least one (none, or no
    metrics.jsonl yet, is enough with ``allow_empty``: a run that has not finished its first step).

    A last line that is not JSON (a run killed mid-write cut it short) is skipped with a warning
    on stderr; an unparsable line anywhere else is an error.
    """
    path = Path(run) / "metrics.jsonl"
    if allow_empty and not path.exists() and not path.is_symlink():  # made at the end of the run's set-up
        return []
    if not path.is_file():
        raise UserError(f"run {run}: no metrics.jsonl; expected a folder written by 'redgame llm train'")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    rows = [_parse_row(line, f"{path}, line {n}", last=n == lines[-1][0]) for n, line in lines]
    rows = [row for row in rows if row is not None]
    if not rows and not allow_empty:
        raise UserError(f"{path}: no rows in it")
    return rows


def _parse_row(line: bytes, where: str, *, last: bool) -> dict | None:
    """One line of metrics.jsonl as a JSON object; None (with a warning) for a last line that is not JSON."""
    try:
        row = parse_json(decode_utf8(line, where), where)
    except UserError as exc:
        if not last:
            raise
        print(f"redgame: warning: {exc}; skipped it (a run killed while writing its last line cuts it short)",
              file=sys.stderr)
        return None
    if not isinstance(row, dict):
        raise UserError(f"{where}: not a JSON object")
    return row


def last_step(rows: list[dict]) -> int:
    """The run's last step: the highest ``step`` of its rows (a row lost to damage does not lower it); 0 for
    none, and the number of rows where they do not all carry a finite step number."""
    return int(max((r["step"] for r in rows), default=0)) if _numbered(rows) else len(rows)


def tail_mean(rows: list[dict], key: str, k: int = 5) -> float:
    """The mean of ``key`` over the run's last ``k`` steps (:func:`last_step`), counting only its finite values
    (a step whose rate had nothing to count records NaN); NaN if none of those steps has one. A step without a
    reading, or whose row was lost, never reaches back to older steps. Rows without step numbers: the last
    ``k`` rows that hold ``key``."""
    if _numbered(rows):
        first = last_step(rows) - k
        window = [r[key] for r in rows if key in r and r["step"] > first]
    else:
        window = [r[key] for r in rows if key in r][-k:]
    values = [float(v) for v in window if is_number(v) and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def _numbered(rows: list[dict]) -> bool:
    """Whether every row carries a finite step number (a hand-edited NaN or 1e999 is none)."""
    return all(is_number(s := r.get("step")) and math.isfinite(s) for r in rows)


def is_number(value) -> bool:
    """A JSON number a float can hold: not a bool, nor an int of hundreds of digits (float() overflows)."""
    return type(value) is float or (type(value) is int and abs(value) < 2**1023)
