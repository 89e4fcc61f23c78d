"""Trained weights as a pair: a safetensors file and the JSON card that describes it.

The card is the pair's commit point. It names its weights file and records the file's SHA-256,
and a save writes the new weights under a name the current card does not use before it replaces
the card in one rename. A save that fails at any point, a full disk or a killed process, leaves
the old pair whole and loadable; a card that does not belong to its weights is refused on load.
Only safetensors and JSON are read: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from redgame.errors import UserError, naming_the_file
from redgame.jsonio import strict_json


def save_tensors_with_card(folder: str | Path, weights: str, card_name: str, tensors: dict, card: dict) -> Path:
    """Write ``tensors`` (as float32 safetensors) and ``card`` (strict JSON, with ``weights`` and
    ``weights_sha256`` added) into ``folder``. The weights go to ``weights`` where no card names that
    file, else to ``<stem>.<first 12 hex digits of their SHA-256>.safetensors``; the card is renamed
    into place last, and the weights it no longer names are removed after."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    old = _named_weights(folder, weights, card_name)
    _remove_unnamed(folder, weights, keep=old)  # left by a save that failed before its card
    tmp, tmp_card = folder / f".tmp.{weights}", folder / f".tmp.{card_name}"
    try:
        with naming_the_file(folder):  # a full disk's error inside safetensors, or at a close, names no file
            save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(tmp))
            tmp.chmod(0o644)  # package data: readable by everyone, like the other data files
            digest = file_sha256(tmp)
            name = weights if old != weights else f"{Path(weights).stem}.{digest[:12]}.safetensors"
            card.update(weights=name, weights_sha256=digest)
            tmp_card.write_text(strict_json(card) + "\n")  # a rate with nothing to measure it on is null, not NaN
            os.replace(tmp, folder / name)
            os.replace(tmp_card, folder / card_name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_card.unlink(missing_ok=True)
        raise
    if old is not None and old != name:
        (folder / old).unlink(missing_ok=True)
    return folder


def load_tensors_with_card(folder: Path, weights: str, card_name: str, names: tuple[str, ...],
                           command: str) -> tuple[dict, dict]:
    """The tensors ``names`` and the card written by :func:`save_tensors_with_card` (a card without
    ``weights`` names ``weights``); a missing, unreadable, incomplete or mismatched pair is a one-line
    UserError naming ``command``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    what = card_name.removesuffix(".json").replace("_", " ")
    card_path = folder / card_name
    if folder.is_file():  # the suggested command would be refused: its --out must be a folder
        raise UserError(f"{what}: {folder} is a file; give the folder that holds {weights} and {card_name}")
    if not card_path.is_file():
        missing = card_name if (folder / weights).is_file() else f"{weights} and {card_name}"  # said both
        raise UserError(f"{what}: {folder} lacks {missing}; write the pair with "
                        f"`redgame llm {command} --out {folder}`")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        name = _weights_name(card, weights, f"{what} in {folder}")
        path = folder / name
        if not path.is_file():
            raise UserError(f"{what} in {folder}: {card_name} names {name}, which is missing; write the pair "
                            f"again with `redgame llm {command} --out {folder}`")
        tensors = load_file(str(path))
    except UserError:
        raise
    except (SafetensorError, OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise UserError(f"{what} in {folder} is unreadable: {exc}") from None
    missing = [k for k in names if k not in tensors]
    if missing:
        raise UserError(f"{what} in {folder} is incomplete (missing {missing})")
    if card.get("weights_sha256") != file_sha256(path):
        raise UserError(f"{what} in {folder}: {card_name} does not belong to {name} (SHA-256 differs)")
    return tensors, card


def _weights_name(card, weights: str, where: str) -> str:
    """The weights file a card names: ``weights`` or its hashed twin, a plain name in the same folder."""
    if not isinstance(card, dict):
        raise UserError(f"{where} is incomplete (missing its card)")
    name = card.get("weights", weights)
    if name != weights and not (isinstance(name, str) and _hashed(weights).fullmatch(name)):
        raise UserError(f"{where}: the card's weights file {name!r} is neither {weights} nor "
                        f"{Path(weights).stem}.<12 hex digits>.safetensors")
    return name


def _named_weights(folder: Path, weights: str, card_name: str) -> str | None:
    """The weights file named by the card now in ``folder`` (None without a readable, valid card)."""
    try:
        return _weights_name(json.loads((folder / card_name).read_text(encoding="utf-8")), weights, "")
    except (OSError, ValueError, RecursionError, UserError):
        return None


def _remove_unnamed(folder: Path, weights: str, keep: str | None) -> None:
    for path in folder.iterdir():
        if _hashed(weights).fullmatch(path.name) and path.name != keep:
            path.unlink(missing_ok=True)


def _hashed(weights: str) -> re.Pattern:
    return re.compile(re.escape(Path(weights).stem) + r"\.[0-9a-f]{12}\.safetensors")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
