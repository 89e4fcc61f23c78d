"""JSON in and out: strict output (a number with nothing to measure it on, nan or inf, becomes null),
and user files read with one-line errors."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redgame.errors import UserError, naming_the_file

# A line break of a user's text file (and of markdown): \r\n, \r or \n; not U+2028 or a form feed, which
# may sit inside a prompt or a JSON string.
LINE_BREAK = re.compile(r"\r\n|\r|\n")

# The Python type of each parsed JSON value -> its JSON name, for error messages.
JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
                   type(None): "null"}


def json_type(value) -> str:
    """The JSON name of a parsed value's type ("object", "array", "null", ...), for error messages."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def strict_json(obj, indent: int | None = 1) -> str:
    """``obj`` as strict JSON: every non-finite float (a rate with nothing to measure it on) is null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), indent=indent, allow_nan=False)


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; renamed onto ``path`` when the block ends
    without an error, removed whatever happens. So ``path`` is never seen half written, and an old file
    stays whole when the write fails (a full disk). A link is followed: its target is replaced, the link kept."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    tmp = path.with_name(f".tmp.{path.name}")
    try:
        with naming_the_file(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``path`` through a temporary file beside it and a rename (:func:`replaced_atomically`)."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, indent: int | None = 1) -> None:
    """``obj`` as strict JSON (NaN and inf as null) in ``path``, written atomically."""
    write_text_atomically(path, strict_json(obj, indent=indent) + "\n")


class _RepeatedKey(Exception):
    """A key given twice in one JSON object (json keeps the last silently)."""


def _object_of_unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return obj


def parse_json(text: str, where: str):
    """``text`` parsed as JSON; anything it cannot be read as is a one-line UserError naming ``where``.

    That covers invalid JSON, an integer past Python's 4,300-digit limit, nesting too deep to
    parse, a string holding a lone surrogate (``"\\udc80"``: valid JSON, not text any
    tokenizer or file can take), and a key given twice in one object (json would keep the last
    silently: a second ``"harmful"`` flips a seed's class).
    """
    try:
        value = json.loads(text, object_pairs_hook=_object_of_unique_keys)
    except _RepeatedKey as exc:
        raise UserError(f"{where}: the key {exc.args[0]!r} appears twice in one JSON object; keep one") from None
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}" if "\n" in text.strip() else f"character {exc.pos + 1}"
        raise UserError(f"{where}: not valid JSON ({exc.msg.removesuffix(' at')} at {at})") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise UserError(f"{where}: not valid JSON ({str(exc).split(':')[0]})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    if "\\ud" in text.lower():  # only an escape can put a surrogate in a string
        _refuse_lone_surrogates(value, where)
    return value


def jsonl_rows(text: str, where: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of each non-blank line of JSONL text; invalid JSON is a one-line UserError
    naming ``"<where>, line N"``. Lines end at \\n alone (a \\r before it is JSON whitespace), not at U+2028."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield n, parse_json(line, f"{where}, line {n}")


def decode_utf8(data: bytes, where: str) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped); otherwise a one-line UserError naming
    ``where`` and the offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not UTF-8 text (byte {exc.start})") from None


def read_json_file(path: str | Path, where: str, kind: type = dict):
    """The JSON in file ``path``, whose top level must be a ``kind`` (dict: an object, list: an array).

    An unreadable file, bytes that are not UTF-8, invalid JSON or another top-level type is a
    one-line UserError naming ``where``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    value = parse_json(decode_utf8(data, where), where)
    if not isinstance(value, kind):
        raise UserError(f"{where}: expected a JSON {JSON_TYPE_NAMES[kind]}, got {json_type(value)}")
    return value


def _refuse_lone_surrogates(value, where: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise UserError(f"{where}: a string holds a lone surrogate (\\u{ord(item[exc.start]):04x}), "
                                "which is not text") from None
