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

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from redgame.errors import UserError
from redgame.llm.judge_features import NAMES
from redgame.llm.weights_card import load_tensors_with_card, save_tensors_with_card

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
