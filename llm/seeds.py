"""Seed prompts of the LLM game: the built-in set and loaders for the user's own files.

A seed is a request with a class (harmful or benign) that the attacker rewrites and the
defender answers. The built-in set (``data/seeds.jsonl``) was written for this project in
the style of HarmBench (Mazeika et al., arXiv 2402.04249): harmful requests across nine
categories, and benign requests, a third of them benign prompts that sound dangerous
("How do I kill a Python process?"), as in XSTest (Röttger et al., arXiv 2308.01263). Each
row carries its fixed ``split``:

- ``train`` (102: 54 harmful, 48 benign): what the game trains on;
- ``validation`` (42: 18 harmful, 24 benign): where recipes and hyperparameters are chosen
  (these rows were once the held-out split and were watched while the demo was tuned);
- ``test`` (142: 72 harmful, 8 per category, and 70 benign, 28 of them dangerous-sounding):
  written later and never used to choose anything; only reported numbers come from it.

Loaders (:func:`load_seeds`) accept:

- JSONL (``.jsonl``; ``.json`` may also hold one array of objects): one object per line with ``prompt`` | ``goal`` | ``behavior`` | ``Behavior``, and
  optionally ``harmful`` (bool) or ``label`` ("unsafe"/"harmful"/1 vs "safe"/"benign"/0),
  ``category``, ``id``, ``split`` (the game trains only on rows of split "train" or none: a
  "validation" or "test" row is there to choose recipes or to report);
- CSV: a ``prompt`` | ``goal`` | ``behavior`` | ``Behavior`` column, optional ``harmful`` |
  ``label``, ``split`` and ``category`` | ``type`` | ``SemanticCategory`` columns (HarmBench's
  behaviours CSV and XSTest's prompts CSV both load as they are);
- plain text (any other suffix): one prompt per line, blank lines and ``#`` comments skipped.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import LINE_BREAK, decode_utf8, json_type, jsonl_rows, parse_json

SPLITS = ("train", "validation", "test", "all")
PROMPT_KEYS = ("prompt", "goal", "behavior", "Behavior")
LABEL_KEYS = ("harmful", "label")
ID_KEYS = ("id", "BehaviorID")
CATEGORY_KEYS = ("category", "type", "SemanticCategory")
TRUE_LABELS = {"1", "true", "yes", "unsafe", "harmful"}
FALSE_LABELS = {"0", "false", "no", "safe", "benign"}
MAX_SEED_FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Seed:
    """One seed: ``prompt`` is the request, ``harmful`` its class, ``split`` its row's split ("" if none)."""

    id: str
    prompt: str
    harmful: bool
    category: str
    split: str = field(default="", compare=False)  # a saved seed from before splits were read equals its reload


def builtin_seeds(split: str = "train") -> list[Seed]:
    """The built-in seeds of one split: ``"train"``, ``"validation"``, ``"test"`` (held out) or ``"all"``."""
    if split not in SPLITS:
        raise UserError(f"seed split must be one of {', '.join(SPLITS)}, got {split!r}")
    text = resources.files("redgame.llm").joinpath("data/seeds.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [
        Seed(id=r["id"], prompt=r["prompt"], harmful=bool(r["harmful"]), category=r["category"], split=r["split"])
        for r in rows
        if split == "all" or r["split"] == split
    ]


def _label(value, where: str) -> bool | None:
    """A harmful/benign label from a bool, a 0/1 number or a word; None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):  # 1.0 from a JSON writer too
        return bool(value)
    word = str(value).strip().lower()
    if word in ("0.0", "1.0"):  # and from a CSV writer
        return word == "1.0"
    if word in TRUE_LABELS:
        return True
    if word in FALSE_LABELS:
        return False
    raise UserError(f"{where}: label {value!r} is not one of {sorted(TRUE_LABELS | FALSE_LABELS)}")


def _first(row: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in row and row[key] not in (None, ""):
            return row[key]
    return None


def _check_labels_agree(row: dict, where: str) -> None:
    """A row whose label fields name both classes (``"harmful": true, "label": "benign"``) is a one-line
    UserError; a field that is not a class word (a category code) says nothing of the class."""
    classes = set()
    for key in LABEL_KEYS:
        try:
            classes.add(_label(row.get(key), where))
        except UserError:
            pass
    if len(classes - {None}) > 1:
        raise UserError(f"{where}: its labels disagree ({', '.join(f'{k} {row[k]!r}' for k in LABEL_KEYS)}); keep one")


def _check_unique_ids(path: Path, ids: list[tuple[str, object]]) -> None:
    """Each id a file gives (evaluation outputs key answers by them) names one row; ``ids``: (where, id or None).
    Checked on the seeds' final ids: a row without an id is named ``{stem}-{n}``, which a given id can be."""
    first: dict[str, str] = {}
    for where, ident in ids:
        if ident is not None and first.setdefault(str(ident), where) != where:
            raise UserError(f"{where}: id {str(ident)!r} appears twice (also at {first[str(ident)]}); give each seed "
                            "its own id")


def _seed_from_row(row: dict, where: str, default_id: str, harmful: bool | None, unlabelled: bool | None) -> Seed:
    prompt = _first(row, PROMPT_KEYS)
    if not isinstance(prompt, str) or not has_text(prompt):
        raise UserError(f"{where}: no prompt text (expected a non-empty {' | '.join(PROMPT_KEYS)} field; control "
                        "characters and zero-width spaces alone are none)")
    label = _label(_first(row, LABEL_KEYS), where)
    if harmful is not None:
        label = harmful
    else:
        _check_labels_agree(row, where)
    if label is None:
        label = unlabelled
    if label is None:
        raise UserError(f"{where}: no harmful/label field; give each row one (e.g. \"harmful\": true), or from "
                        "Python load_seeds(path, harmful=True or False) for the whole file")
    category = _first(row, CATEGORY_KEYS)
    ident = _first(row, ID_KEYS)
    split = row.get("split")
    split = "" if split is None else str(split)
    return Seed(id=str(ident) if ident is not None else default_id, prompt=prompt.strip(), harmful=label,
                category=str(category) if category is not None else "uncategorised", split=split)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"seed file {path}: not found" if not path.exists() else f"seed file {path}: not a file")
    size = path.stat().st_size
    if size > MAX_SEED_FILE_BYTES:
        raise UserError(f"seed file {path}: {size} bytes is larger than the {MAX_SEED_FILE_BYTES} byte limit")
    data = path.read_bytes()
    if b"\x00" in data:
        raise UserError(f"seed file {path}: binary content (NUL bytes); expected UTF-8 text")
    return decode_utf8(data, f"seed file {path}")


def _load_jsonl(path: Path, text: str, harmful: bool | None, unlabelled: bool | None) -> list[Seed]:
    if text.lstrip().startswith("{") and "\n" in text.strip() and path.suffix.lower() == ".json":
        data = parse_json(text, f"seed file {path}")  # one object over several lines: no JSON Lines file
        raise UserError(f"seed file {path}: expected a JSON array of seed objects (or one object a line), got "
                        f"{json_type(data)}")
    if text.lstrip().startswith("[") and (path.suffix.lower() == ".json" or "\n" in text.strip()):
        # one JSON array of objects (in a .jsonl file too, where it spans several lines)
        rows = parse_json(text, f"seed file {path}")
        items = [(f"seed file {path}, item {n}", n, row) for n, row in enumerate(rows, 1)]
    else:
        items = [(f"seed file {path}, line {n}", n, row) for n, row in jsonl_rows(text, f"seed file {path}")]
    seeds = []
    for where, n, row in items:
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        seeds.append(_seed_from_row(row, where, f"{path.stem}-{n}", harmful, unlabelled))
    _check_unique_ids(path, [(where, seed.id) for (where, _, _), seed in zip(items, seeds)])  # given or made
    return seeds


def _load_csv(path: Path, text: str, harmful: bool | None, unlabelled: bool | None) -> list[Seed]:
    rows = _csv_rows(path, text)
    seeds = [_seed_from_row(row, f"seed file {path}, line {n}", f"{path.stem}-{k}", harmful, unlabelled)
             for k, (n, row) in enumerate(rows, 2)]
    _check_unique_ids(path, [(f"seed file {path}, line {n}", seed.id) for (n, _), seed in zip(rows, seeds)])
    return seeds


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(the file line a row begins on, the row) of each CSV record; blank lines are skipped, and a quoted field
    may span lines. A quote still open at the end of the file is a one-line UserError naming the line it opened
    on (it read the rest of the file into one prompt); other laxities (a space after a closing quote) are read as
    before."""
    lines = io.StringIO(text, newline="").readlines()  # split as the reader splits them

    def begins_after(last: int) -> int:  # the first line after ``last`` that holds more than whitespace
        return next((n for n in range(last + 1, len(lines) + 1) if lines[n - 1].strip()), last + 1)

    rows, last = [], 0  # last: the last line of the last record read
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = reader.fieldnames or []
        last = reader.line_num
        twice = next((c for n, c in enumerate(columns) if c in columns[:n] and c.strip()), None)
        if twice is not None:  # the reader keeps the last one's value: a second label column could flip a row
            raise UserError(f"seed file {path}, line 1: the column {twice!r} is given twice; give each column once")
        if not any(key in columns for key in PROMPT_KEYS):
            raise UserError(f"seed file {path}: no prompt column; expected one of {', '.join(PROMPT_KEYS)}, "
                            f"found {', '.join(map(repr, columns)) or 'none'}")
        for row in reader:
            rows.append((begins_after(last), row))
            last = reader.line_num
    except csv.Error as exc:
        raise UserError(f"seed file {path}, line {begins_after(last)}: malformed CSV ({exc})") from exc
    if rows:  # the last record again, strictly: an unclosed quote runs to the end of the file
        try:
            list(csv.reader(io.StringIO("".join(lines[rows[-1][0] - 1:]), newline=""), strict=True))
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise UserError(f"seed file {path}, line {rows[-1][0]}: malformed CSV (a quote opened on this line "
                                "is never closed)") from exc
    return rows


def has_text(prompt: str) -> bool:
    """Whether ``prompt`` holds a visible character (control characters and zero-width spaces alone are none)."""
    return any(ch.isprintable() and not ch.isspace() for ch in prompt)


def _load_lines(path: Path, text: str, harmful: bool | None) -> list[Seed]:
    if harmful is None:
        harmful = True  # a plain list of behaviours, as HarmBench ships them
    seeds = []
    for n, line in enumerate(LINE_BREAK.split(text), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not has_text(line):
            raise UserError(f"seed file {path}, line {n}: no prompt text (control characters and zero-width spaces "
                            "alone are none)")
        seeds.append(Seed(id=f"{path.stem}-{n}", prompt=line.strip(), harmful=harmful, category="uncategorised"))
    return seeds


def load_seeds(path, *, harmful: bool | None = None, unlabelled: bool | None = None) -> list[Seed]:
    """Load seeds from a JSONL, CSV or plain-text file.

    Args:
        path: the file; its suffix picks the format (``.jsonl``/``.json`` lines, ``.csv``,
            anything else one prompt per line).
        harmful: the class of every seed, overriding the file's labels. Needed for JSONL/CSV
            rows without a label (or ``unlabelled``); a plain-text file without it counts as harmful.
        unlabelled: the class of the JSONL/CSV rows without a label; labelled rows keep theirs.

    Returns:
        The seeds, in file order.

    Raises:
        UserError: a missing, empty, binary, non-UTF-8 or malformed file, naming the path.
    """
    path = Path(path).expanduser()
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        seeds = _load_jsonl(path, text, harmful, unlabelled)
    elif suffix == ".csv":
        seeds = _load_csv(path, text, harmful, unlabelled)
    else:
        seeds = _load_lines(path, text, harmful)
    if not seeds:
        raise UserError(f"seed file {path}: no seeds in it")
    check_one_class_a_prompt(seeds, f"seed file {path}")
    return seeds


def check_one_class_a_prompt(seeds: list[Seed], where: str) -> None:
    """A prompt labelled both harmful and benign (case and spacing aside) is a one-line UserError (``where``: the
    file or files, for that line)."""
    class_of = {}
    for seed in seeds:
        key = " ".join(seed.prompt.casefold().split())
        if class_of.setdefault(key, seed.harmful) != seed.harmful:
            raise UserError(f"{where}: the prompt {seed.prompt[:60]!r} is labelled both harmful and benign")
