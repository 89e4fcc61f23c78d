"""The embedded judge's trained classifier: linear heads on MiniLM embeddings and structure.

Three heads, each a linear layer read through a softmax or a logistic (a linear probe on
sentence embeddings, as in Reimers & Gurevych, arXiv 1908.10084):

- **response**: P(helps), P(refused), P(neither) of an answer, a softmax over
  [MiniLM(response), MiniLM(continuation after the first sentence), standardised structure]
  (:mod:`redgame.llm.judge_features`). *helps* is meaningful help with what was asked
  (refuse-then-comply included), *refused* declines or deflects, *neither* is an echo, an
  off-topic answer or noise;
- **degenerate**: P(loop, repetition or gibberish), a logistic on the structure alone;
- **prompt**: P(the prompt asks for harmful help), a logistic on MiniLM(prompt);
- optionally **faithful**: P(an attack asks for the same thing as its seed), a logistic on the
  pair's MiniLM features (:mod:`redgame.llm.judge_attacks`), where the card has ``faithful_head``;
  without it, the cosine of seed and attack against ``faithful_threshold``.

The weights ship as ``data/judge_classifier.safetensors`` with a JSON card
(``data/judge_classifier.json``: the thresholds, how it was trained, its validation
metrics); ``redgame llm train-judge`` (:mod:`redgame.llm.judge_train`) writes both.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from redgame.errors import UserError
from redgame.jsonio import strict_json
from redgame.llm.judge_features import NAMES

WEIGHTS, CARD = "judge_classifier.safetensors", "judge_classifier.json"
RESPONSE_CLASSES = ("helps", "refused", "neither")
TENSORS = ("response", "degenerate", "prompt", "mean", "scale")


def default_folder() -> Path:
    """The package-data folder that holds the shipped classifier."""
    return Path(str(resources.files("redgame.llm").joinpath("data")))


@dataclass
class JudgeClassifier:
    """Weights (the last row of each head is its bias), structure standardisation and the card."""

    response: torch.Tensor    # [2 * dim + n_structure + 1, 3]
    degenerate: torch.Tensor  # [n_structure + 1]
    prompt: torch.Tensor      # [dim + 1]
    mean: torch.Tensor        # [n_structure]
    scale: torch.Tensor       # [n_structure]
    card: dict
    faithful: torch.Tensor | None = None  # [2 * dim + 2]: the faithfulness head, where the card has faithful_head

    @property
    def faithful_threshold(self) -> float:
        return float(self.card["faithful_threshold"])

    def _z(self, structure: torch.Tensor) -> torch.Tensor:
        return (structure - self.mean) / self.scale

    def response_probs(self, response: torch.Tensor, cont: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """[n, 3]: P(helps), P(refused), P(neither) from the response's embeddings and structure."""
        x = torch.cat([response, cont, self._z(structure)], dim=-1)
        return torch.softmax(x @ self.response[:-1] + self.response[-1], dim=-1)

    def degenerate_prob(self, structure: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._z(structure) @ self.degenerate[:-1] + self.degenerate[-1])

    def prompt_harmfulness(self, prompt: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(prompt @ self.prompt[:-1] + self.prompt[-1])

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/judge_classifier.{safetensors,json}`` (see :func:`save_tensors_with_card`)."""
        names = TENSORS + (("faithful",) if self.faithful is not None else ())
        return save_tensors_with_card(folder, WEIGHTS, CARD, {k: getattr(self, k) for k in names}, self.card)


def save_tensors_with_card(folder: str | Path, weights: str, card_name: str, tensors: dict, card: dict) -> Path:
    """Write ``folder/weights`` (safetensors) and ``folder/card_name`` (strict JSON): both are written
    in full to temporary files before either replaces an old one (a full disk loses nothing), then
    renamed. The card records the weights' SHA-256, so a card that does not belong to its weights is
    refused on load."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp, tmp_card = folder / f".tmp.{weights}", folder / f".tmp.{card_name}"
    try:
        save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(tmp))
        tmp.chmod(0o644)  # package data: readable by everyone, like the other data files
        card["weights_sha256"] = _sha256(tmp)
        tmp_card.write_text(strict_json(card) + "\n")  # a rate with nothing to measure it on is null, not NaN
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_card.unlink(missing_ok=True)
        raise
    os.replace(tmp, folder / weights)
    os.replace(tmp_card, folder / card_name)
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_tensors_with_card(folder: Path, weights: str, card_name: str, names: tuple[str, ...],
                           command: str) -> tuple[dict, dict]:
    """The tensors ``names`` and the card written by :func:`save_tensors_with_card`; a missing,
    unreadable, incomplete or mismatched pair is a one-line UserError naming ``command``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    what = card_name.removesuffix(".json").replace("_", " ")
    path, card_path = folder / weights, folder / card_name
    if not (path.is_file() and card_path.is_file()):
        raise UserError(f"{what}: {folder} lacks {weights} and {card_name}; write them with "
                        f"`redgame llm {command} --out {folder}`")
    try:
        tensors = load_file(str(path))
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{what} in {folder} is unreadable: {exc}") from None
    missing = [k for k in names if k not in tensors]
    if missing or not isinstance(card, dict):
        raise UserError(f"{what} in {folder} is incomplete (missing {missing or 'its card'})")
    if card.get("weights_sha256") != _sha256(path):
        raise UserError(f"{what} in {folder}: {card_name} does not belong to {weights} (SHA-256 differs)")
    return tensors, card


def load_classifier(folder: str | Path | None = None) -> JudgeClassifier:
    """The classifier in ``folder`` (default: the shipped one); safetensors and JSON only."""
    folder = default_folder() if folder is None else Path(folder)
    tensors, meta = load_tensors_with_card(folder, WEIGHTS, CARD, TENSORS, "train-judge")
    if "faithful_threshold" not in meta:
        raise UserError(f"judge classifier in {folder} is incomplete (missing faithful_threshold)")
    if meta.get("structure_features", list(NAMES)) != list(NAMES):
        raise UserError(f"judge classifier in {folder} was trained on other structural features; retrain it: "
                        f"redgame llm train-judge --out {folder}")
    if "faithful_head" in meta and "faithful" not in tensors:
        raise UserError(f"judge classifier in {folder} is incomplete (its card names a faithful head; the weights "
                        "lack it)")
    try:
        float(meta["faithful_threshold"])
    except (TypeError, ValueError):
        raise UserError(f"judge classifier in {folder}: faithful_threshold must be a number, got "
                        f"{meta['faithful_threshold']!r}") from None
    names = TENSORS + (("faithful",) if "faithful_head" in meta else ())
    _check_shapes(folder, {k: tensors[k] for k in names})
    faithful = tensors["faithful"].float() if "faithful_head" in meta else None
    return JudgeClassifier(**{k: tensors[k].float() for k in TENSORS}, card=meta, faithful=faithful)


def _check_shapes(folder: Path, tensors: dict) -> None:
    """Each head the shape its inputs give it (dim from the prompt head), every weight finite."""
    dim, n_structure = tensors["prompt"].numel() - 1, len(NAMES)
    want = {"response": (2 * dim + n_structure + 1, len(RESPONSE_CLASSES)), "degenerate": (n_structure + 1,),
            "prompt": (dim + 1,), "mean": (n_structure,), "scale": (n_structure,), "faithful": (2 * dim + 2,)}
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != want[name]:
            raise UserError(f"judge classifier in {folder}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                            f"expected {want[name]}; retrain it: redgame llm train-judge --out {folder}")
        if not torch.isfinite(tensor).all():
            raise UserError(f"judge classifier in {folder}: tensor {name!r} holds NaN or infinite values")
