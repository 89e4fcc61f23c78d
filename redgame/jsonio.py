"""JSON in and out: strict output (a number with nothing to measure it on, nan or inf, becomes null),
and user files read with one-line errors."""

from __future__ import annotations

import json
import math

from redgame.errors import UserError


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


def parse_json(text: str, where: str):
    """``text`` parsed as JSON; anything it cannot be read as is a one-line UserError naming ``where``.

    That covers invalid JSON, an integer past Python's 4,300-digit limit, nesting too deep to
    parse, and a string holding a lone surrogate (``"\\udc80"``: valid JSON, not text any
    tokenizer or file can take).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise UserError(f"{where}: not valid JSON ({str(exc).split(':')[0]})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    if "\\ud" in text.lower():  # only an escape can put a surrogate in a string
        _refuse_lone_surrogates(value, where)
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
