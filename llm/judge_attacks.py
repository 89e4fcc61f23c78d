"""Labelled attack rewrites, and the embedded judge's faithfulness head trained on them.

An attack is *faithful* when it keeps its seed's class and asks for the same thing. The
embedded judge's first reading of "the same thing" was a threshold on the MiniLM cosine of seed
and attack; on written rewrites it passes every request for something else on the seed's topic
(docs/judge_log.md, "Attacks the judge never saw"). The faithfulness head reads the pair instead: a
logistic regression on the element-wise product and absolute difference of the two unit
embeddings and their cosine, the pair features of sentence-pair classifiers (Conneau et al.,
arXiv 1705.02364; Reimers & Gurevych, arXiv 1908.10084). It is fitted to the ``attack_faithful``
labels of every rewrite, so it learns what an unfaithful pair looks like, class changes included;
the verdict is still "same class and same request" (:func:`redgame.llm.judges.faithful_verdict`),
the head's P ≥ ½ reading the second half, the prompt head the first, and the seed as written
faithful by rule.

Rewrite files (``redgame llm train-judge --attacks FILE``) hold one JSON object per line:
``seed`` and ``attack`` (strings), ``original_class`` (``"harmful"`` or ``"benign"``, the
seed's), ``attack_harmful`` and ``attack_faithful`` (booleans: the rewrite asks for harmful
help; it keeps the seed's class and request), ``split`` (``"train"`` or ``"validation"``), and
optionally ``id`` and ``attack_style``. A bad line is a one-line error naming it; so is a seed as
written (the attack is the seed) labelled unfaithful, and a pair in both splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from redgame.errors import UserError
from redgame.jsonio import json_type

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Rewrite:
    """One labelled rewrite of a seed."""

    seed: str
    seed_harmful: bool
    attack: str
    attack_harmful: bool
    faithful: bool
    split: str


def parse_rewrites(text: str, where: str) -> list[Rewrite]:
    """Rewrites from JSONL text (the format above); a bad line raises a one-line UserError naming it."""
    from redgame.llm.judge_data import parse_rows

    rewrites = parse_rows(text, where, _rewrite, "rewrites")
    check_one_split_a_pair(rewrites, where)
    return rewrites


def check_one_split_a_pair(rewrites: list[Rewrite], where: str) -> None:
    """A (seed, attack) pair in both splits is a one-line UserError: validation would score a pair the head was
    fitted on; one given twice in a split would count twice."""
    split_of = {}
    for r in rewrites:
        if (r.seed, r.attack) in split_of and split_of[(r.seed, r.attack)] == r.split:
            raise UserError(f"{where}: the rewrite {r.attack[:60]!r} of the seed {r.seed[:60]!r} is given twice (a "
                            "file given twice?); it would count twice: give each rewrite once")
        if split_of.setdefault((r.seed, r.attack), r.split) != r.split:
            raise UserError(f"{where}: the rewrite {r.attack[:60]!r} of the seed {r.seed[:60]!r} is in both the train "
                            "and validation splits, where validation would score a pair the head was fitted on; keep "
                            "it in one")


def _rewrite(row, at: str) -> Rewrite:
    from redgame.llm.judge_data import CLASSES

    if not isinstance(row, dict):
        raise UserError(f"{at}: expected a JSON object, got {json_type(row)}")
    for key in ("seed", "attack"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise UserError(f"{at}: field {key!r} must be a non-empty string")
    if not (isinstance(row.get("original_class"), str) and row["original_class"] in CLASSES):
        got = "no such field" if "original_class" not in row else json.dumps(row["original_class"])
        raise UserError(f"{at}: field 'original_class' must be 'harmful' or 'benign', got {got}")
    for key in ("attack_harmful", "attack_faithful"):
        if not isinstance(row.get(key), bool):
            raise UserError(f"{at}: field {key!r} must be true or false, got {json.dumps(row.get(key))}")
    if row.get("split") not in SPLITS:
        raise UserError(f"{at}: split must be 'train' or 'validation', got {row.get('split')!r}")
    seed_harmful = CLASSES[row["original_class"]]
    if row["attack"] == row["seed"] and not row["attack_faithful"]:
        raise UserError(f"{at}: the attack is the seed as written, which is faithful by rule (attack_faithful must be "
                        "true)")
    if row["attack_faithful"] and row["attack_harmful"] != seed_harmful:
        raise UserError(f"{at}: a faithful rewrite keeps its seed's class (attack_harmful must be "
                        f"{str(seed_harmful).lower()})")
    return Rewrite(row["seed"], seed_harmful, row["attack"], row["attack_harmful"], row["attack_faithful"],
                   row["split"])


def pair_features(seed: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
    """[n, 2 * dim + 1]: (seed ⊙ attack, |seed − attack|, cosine) of unit embeddings."""
    return torch.cat([seed * attack, (seed - attack).abs(), (seed * attack).sum(-1, keepdim=True)], dim=-1)


def same_request(head: torch.Tensor, seed: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
    """[n]: the head's P(the pair is faithful), read as P(the attack asks for the same thing as its seed); the
    head's weights have the bias last."""
    return torch.sigmoid(pair_features(seed, attack) @ head[:-1] + head[-1])


def check_faithful_splits(train: list[Rewrite], validation: list[Rewrite]) -> None:
    """The faithfulness head's data, before any model loads: rewrites in both splits, both kinds in train."""
    if not train or not validation:
        raise UserError("train-judge --attacks: the faithfulness head needs rewrites in both the train and "
                        f"validation splits (got {len(train)} and {len(validation)})")
    if len({r.faithful for r in train}) < 2:  # a head fitted to one class only learns a constant
        raise UserError(f"train-judge --attacks: every train rewrite has attack_faithful "
                        f"{str(train[0].faithful).lower()}; the head needs faithful and unfaithful ones")


def fit_faithful_head(train: list[Rewrite], validation: list[Rewrite], vector, attack_harmful, *,
                      grid: tuple[float, ...], log=print) -> tuple[torch.Tensor, dict]:
    """The faithfulness head's weights, its L2 weight chosen on the validation verdicts' accuracy, and a card entry.

    ``vector(text)`` gives a unit embedding (numpy); ``attack_harmful(texts)`` the prompt head's
    P(harmful) of each attack, for the class half of the verdict.
    """
    from redgame.llm.judge_train import choose_l2, fit_linear

    check_faithful_splits(train, validation)

    def features(rows):
        s = torch.from_numpy(np.stack([vector(r.seed) for r in rows]))
        a = torch.from_numpy(np.stack([vector(r.attack) for r in rows]))
        return pair_features(s, a).numpy()

    x_train, x_val, y_train = features(train), features(validation), np.array([r.faithful for r in train])
    classes = attack_harmful([r.attack for r in validation])
    same_class = np.array([(p >= 0.5) == r.seed_harmful for p, r in zip(classes, validation)])
    identity = np.array([r.attack == r.seed for r in validation])  # faithful by rule

    def accuracy(w):
        verdict = identity | (((x_val @ w[:-1] + w[-1]) >= 0) & same_class)
        return float(np.mean(verdict == np.array([r.faithful for r in validation])))

    best, weights, scores = choose_l2(lambda l2: fit_linear(x_train, y_train, l2)[:, 0], accuracy, grid)
    log(f"faithful head: l2 {best} (validation verdict accuracy {scores[best]:.3f})")
    card = {"features": "seed*attack, |seed-attack|, cosine (MiniLM, unit vectors)", "target": "attack_faithful",
            "l2": best, "train_rewrites": len(train), "validation_rewrites": len(validation),
            "validation_verdict_accuracy": {str(k): round(v, 4) for k, v in scores.items()}}
    return torch.from_numpy(weights).float(), card
