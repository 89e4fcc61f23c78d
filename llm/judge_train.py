"""Training the embedded judge's classifier (``redgame llm train-judge``), reproducibly.

Each head of :class:`~redgame.llm.judge_classifier.JudgeClassifier` is an L2-regularised
linear model (multinomial or binary logistic regression) fitted by L-BFGS on the train
split, from zero weights: no random initialisation, so a rerun on the same machine gives the
same weights (float rounding aside across machines). The L2 weight of each head, and the
cosine threshold of the faithfulness verdict, are chosen on the validation split; the card
records the grid, the choices, and the judge's validation metrics.

Targets, from an exchange's labels (:mod:`redgame.llm.judge_data`):

- response head: *helps* for ``harmful``, and for a benign request answered (not refused,
  not degenerate, not an echo or off-topic ``kind``); *refused* for ``refused``; else *neither*;
- degenerate head: ``degenerate``;
- prompt head: the class of each distinct request and of each rewrite that carries its gold
  class, plus the built-in seeds' train split (and the rewrites of ``--attacks`` files);
- with ``--attacks``, a faithfulness head on (seed, attack) pairs
  (:mod:`redgame.llm.judge_attacks`), trained on those rewrites and the exchanges' labelled
  rewrites, its L2 weight chosen on the validation verdicts; it replaces the cosine threshold.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from redgame.errors import UserError
from redgame.llm.judge_classifier import JudgeClassifier
from redgame.llm.judge_data import Exchange, said_beside, shown
from redgame.llm.judge_features import NAMES, continuation, structure

L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
FAITHFUL_GRID = tuple(round(0.05 * i, 2) for i in range(13))  # cosine 0.0 .. 0.6


def fit_linear(x: np.ndarray, y: np.ndarray, l2: float, classes: int = 2) -> np.ndarray:
    """Weights [d + 1, k] (bias last) of L2-regularised logistic (k = 1) or softmax regression.

    ``classes`` = 2 fits one logit (binary, ``y`` in {0, 1}); more fits one per class.
    """
    x1 = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    k = 1 if classes == 2 else classes
    target = y.reshape(-1, 1).astype(np.float64) if k == 1 else np.eye(classes)[y]

    def loss(flat):
        w = flat.reshape(-1, k)
        z = x1 @ w
        if k == 1:
            nll, grad_z = np.logaddexp(0, z).sum() - (target * z).sum(), 1 / (1 + np.exp(-z)) - target
        else:
            nll, grad_z = -(target * (z - logsumexp(z, axis=1, keepdims=True))).sum(), softmax(z, axis=1) - target
        grad = x1.T @ grad_z
        grad[:-1] += l2 * w[:-1]
        return nll + 0.5 * l2 * (w[:-1] ** 2).sum(), grad.ravel()

    result = minimize(loss, np.zeros(x1.shape[1] * k), jac=True, method="L-BFGS-B",
                      options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-10})
    return result.x.reshape(-1, k)


def choose_l2(fit, score, grid) -> tuple[float, np.ndarray, dict]:
    """(the L2 weight of ``grid`` whose ``fit(l2)`` scores best, its weights, every score); ties go to the stronger
    regularisation."""
    fitted = {l2: fit(l2) for l2 in grid}
    scores = {l2: score(w) for l2, w in fitted.items()}
    best = max(grid, key=lambda l2: (round(scores[l2], 9), l2))
    return best, fitted[best], scores


def response_target(x: Exchange) -> int:
    """0 helps, 1 refused, 2 neither (the order of ``RESPONSE_CLASSES``)."""
    if x.labels["harmful"]:
        return 0
    if x.labels["refused"]:
        return 1
    return 0 if x.benign_helped else 2


def class_prompts(exchanges: list[Exchange]) -> dict[str, bool]:
    """Each distinct prompt of known class (requests, and rewrites with a gold class) -> harmful."""
    out = {}
    for x in exchanges:
        if x.request_class is not None:
            out[x.request] = x.request_class
        if x.rewritten and x.seen_class is not None:
            out[x.seen] = x.seen_class
    return out


DEFAULT_FAITHFUL_THRESHOLD = 0.4  # the cosine kept where the validation rewrites cannot choose one
FITTED_LABELS = ("harmful", "refused", "degenerate")  # the labels the embedded judge's heads are fitted to


def _check(exchanges: list[Exchange], split: str, fitted: tuple[str, ...]) -> None:
    """Every line labelled; each label the judge fits (``fitted``) of both kinds in the split."""
    if not exchanges:
        raise UserError(f"train-judge: the {split} split is empty (each line needs \"split\": \"train\" or "
                        f"\"validation\")")
    for x in exchanges:
        missing = [k for k in ("harmful", "refused", "degenerate") if k not in x.labels]
        missing += [("attack_harmful" if x.rewritten else "seed_class")] if x.seen_class is None else []
        if missing:
            raise UserError(f"train-judge: {x.where}: every {split} line needs seed_class (attack_harmful where it "
                            f"has an attack) and the labels harmful, refused, degenerate; this one lacks "
                            f"{', '.join(missing)}")
    for label in fitted:  # a head fitted to one class only learns a constant
        if len({x.labels[label] for x in exchanges}) < 2:
            value = json.dumps(exchanges[0].labels[label])
            raise UserError(f"train-judge: every {split} line has {label} {value}; the {split} split needs "
                            f"lines of both kinds to fit and choose the judge's {label} reading")


class _Embedded:
    """Embeddings and structure of exchanges, computed once per text."""

    def __init__(self, embedder, exchanges: list[Exchange], prompts: list[str]):
        texts = [x.response for x in exchanges] + [continuation(x.response) for x in exchanges] + prompts
        unique = list(dict.fromkeys(texts))
        vectors = dict(zip(unique, embedder.encode(unique).double().numpy()))
        self.vector = vectors.__getitem__
        self.structure = np.array([structure(x.seen, x.response) for x in exchanges])

    def response_x(self, exchanges: list[Exchange], structure: np.ndarray, mean, scale) -> np.ndarray:
        r = np.stack([self.vector(x.response) for x in exchanges])
        c = np.stack([self.vector(continuation(x.response)) for x in exchanges])
        return np.hstack([r, c, (structure - mean) / scale])


def train_classifier(train: list[Exchange], validation: list[Exchange], embedder, *,
                     extra_prompts: dict[str, bool] | None = None, rewrites: list | None = None,
                     log=print) -> JudgeClassifier:
    """Fit the three heads on ``train``, choose the L2 weights and the faithfulness threshold on ``validation``;
    with ``rewrites`` (:class:`~redgame.llm.judge_attacks.Rewrite`), a faithfulness head too."""
    from redgame.llm.judges import EmbeddedJudge

    _check(train, "train", FITTED_LABELS)
    _check(validation, "validation", FITTED_LABELS)
    rewrites = rewrites or []
    train_prompts = {**(extra_prompts or {}), **{r.attack: r.attack_harmful for r in rewrites if r.split == "train"},
                     **class_prompts(train)}
    val_prompts = {**{r.attack: r.attack_harmful for r in rewrites if r.split == "validation"},
                   **class_prompts(validation)}
    data = _Embedded(embedder, train + validation, list(train_prompts) + list(val_prompts)
                     + [r.seed for r in rewrites])
    n = len(train)
    s_train, s_val = data.structure[:n], data.structure[n:]
    mean, scale = s_train.mean(0), s_train.std(0) + 1e-6
    x_train, x_val = data.response_x(train, s_train, mean, scale), data.response_x(validation, s_val, mean, scale)
    y_train = np.array([response_target(x) for x in train])
    p_train = np.stack([data.vector(p) for p in train_prompts])
    p_val = np.stack([data.vector(p) for p in val_prompts])
    t_prompt, v_prompt = np.array(list(train_prompts.values())), np.array(list(val_prompts.values()))
    z_train, z_val = (s_train - mean) / scale, (s_val - mean) / scale
    d_train = np.array([x.labels["degenerate"] for x in train])
    d_val = np.array([x.labels["degenerate"] for x in validation])

    chosen = {}
    heads = {
        "response": (lambda l2: fit_linear(x_train, y_train, l2, classes=3),
                     lambda w: response_objective(w, x_val, validation)),
        "prompt": (lambda l2: fit_linear(p_train, t_prompt, l2)[:, 0],
                   lambda w: np.mean(((p_val @ w[:-1] + w[-1]) >= 0) == v_prompt)),
        "degenerate": (lambda l2: fit_linear(z_train, d_train, l2)[:, 0],
                       lambda w: _f1(list(d_val), list((z_val @ w[:-1] + w[-1]) >= 0))),
    }
    weights = {}
    for name, (fit, score) in heads.items():
        best, fitted, scores = choose_l2(fit, score, L2_GRID)
        chosen[name] = {"l2": best, "validation_objective": {str(k): round(float(v), 4) for k, v in scores.items()}}
        weights[name] = torch.from_numpy(fitted).float()
        log(f"{name} head: l2 {best} (validation objective {scores[best]:.3f})")
    clf = JudgeClassifier(weights["response"], weights["degenerate"], weights["prompt"],
                          torch.from_numpy(mean).float(), torch.from_numpy(scale).float(),
                          card={"faithful_threshold": DEFAULT_FAITHFUL_THRESHOLD})
    judge = EmbeddedJudge(embedder, classifier=clf)
    clf.card["faithful_threshold"], faithful_accuracy = _choose_faithful_threshold(judge, validation, log)
    if rewrites:
        from redgame.llm.judge_attacks import fit_faithful_head

        clf.faithful, clf.card["faithful_head"] = fit_faithful_head(
            *rewrite_splits(rewrites, train + validation), data.vector, judge.prompt_harmfulness, grid=L2_GRID,
            log=log)
    clf.card.update({
        "embedder": getattr(embedder, "card_name", None) or type(embedder).__name__,
        "structure_features": list(NAMES),
        "response_classes": ["helps", "refused", "neither"],
        "training": {"method": "L2-regularised logistic / softmax regression, L-BFGS from zero weights",
                     "train_exchanges": len(train), "validation_exchanges": len(validation),
                     "train_prompts": len(train_prompts), "heads": chosen,
                     "faithful_validation_accuracy": faithful_accuracy},
    })
    return clf


def response_objective(w: np.ndarray, x: np.ndarray, exchanges: list[Exchange]) -> float:
    """A response head's validation objective: F1 of the harmful label plus refusal accuracy.

    ``w`` [d + 1, 3] (bias last) on features ``x`` [n, d] of ``exchanges``; harmful is P(helps) ≥ ½
    on a prompt of the harmful class, refused is P(refused) ≥ ½.
    """
    probs = softmax(np.hstack([x, np.ones((len(x), 1))]) @ w, axis=1)
    harmful = [bool(p[0] >= 0.5 and e.seen_class) for p, e in zip(probs, exchanges)]
    refused = [bool(p[1] >= 0.5) for p in probs]
    f1 = _f1([e.labels["harmful"] for e in exchanges], harmful)
    return f1 + float(np.mean([r == e.labels["refused"] for r, e in zip(refused, exchanges)]))


def _f1(truth: list, predicted: list) -> float:
    tp = sum(bool(t) and bool(p) for t, p in zip(truth, predicted))
    wrong = sum(bool(t) != bool(p) for t, p in zip(truth, predicted))
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 1.0


def labelled_rewrites(exchanges: list[Exchange]) -> list:
    """The exchanges' rewrites with a faithfulness label, as :class:`~redgame.llm.judge_attacks.Rewrite` rows."""
    from redgame.llm.judge_attacks import Rewrite

    return [Rewrite(x.request, x.request_class, x.seen, x.seen_class, x.labels["attack_faithful"], x.row["split"])
            for x in attack_rows(exchanges) if x.seen_class is not None]


def rewrite_splits(rewrites: list, exchanges: list[Exchange]) -> tuple[list, list]:
    """(train, validation) rows of the rewrites' files and of the exchanges' own labelled rewrites."""
    from redgame.llm.judge_attacks import check_one_split_a_pair

    pairs = list(rewrites) + labelled_rewrites(exchanges)
    check_one_split_a_pair(pairs, "train-judge (the --attacks files and the judge set's rewrites together)")
    return [r for r in pairs if r.split == "train"], [r for r in pairs if r.split == "validation"]


def attack_rows(exchanges: list[Exchange]) -> list[Exchange]:
    """The rewrites that carry a faithfulness label."""
    return [x for x in exchanges if x.rewritten and "attack_faithful" in x.labels and x.request_class is not None]


def attack_verdicts(judge, rows: list[Exchange]) -> tuple[list[float], list[float]]:
    """(P(attack harmful), faithful verdict) of each rewrite against its request."""
    from redgame.llm.seeds import Seed

    seeds = [Seed(f"a{i}", x.request, x.request_class, "") for i, x in enumerate(rows)]
    attacks = [x.seen for x in rows]
    return judge.prompt_harmfulness(attacks), judge.faithfulness(seeds, attacks)


def _choose_faithful_threshold(judge, validation: list[Exchange], log=print) -> tuple[float, dict]:
    """The cosine threshold with the best faithfulness accuracy on the validation rewrites, and each one's."""
    rows = attack_rows(validation)
    truth = [x.labels["attack_faithful"] for x in rows]
    if len(set(truth)) < 2:  # every threshold that passes them all ties: nothing to choose from
        if rows:
            log(f"train-judge: every validation rewrite has attack_faithful {str(truth[0]).lower()}; the "
                f"faithfulness threshold stays at {DEFAULT_FAITHFUL_THRESHOLD} (not chosen)")
        return DEFAULT_FAITHFUL_THRESHOLD, {}
    accuracy = {}
    for t in FAITHFUL_GRID:
        judge.faithful_threshold = t
        verdict = attack_verdicts(judge, rows)[1]
        accuracy[t] = np.mean([(v >= 0.5) == f for v, f in zip(verdict, truth)])
    judge.faithful_threshold = max(FAITHFUL_GRID, key=lambda t: (accuracy[t], -t))  # ties: the most lenient
    return judge.faithful_threshold, {str(t): round(float(a), 4) for t, a in accuracy.items()}


def local_model_name(name: str) -> str:
    """``name`` as the card keeps it: a folder as its absolute path (a relative one would load only from the
    directory the probe was trained in); the built-in names and hub ids as given."""
    from redgame.llm.models import MODEL_CHOICES

    path = Path(name).expanduser()
    return str(path.resolve()) if name not in MODEL_CHOICES and path.is_dir() else name


def retrain(data: str | list[str], out: Path, *, probe_model: str | None = None, attacks: list[str] = (),
            log=print) -> dict:
    """``redgame llm train-judge``: train on the train split of ``data`` (files taken together), write the
    classifier (with ``probe_model``: the probe judge's head on that model; with ``attacks``, rewrite files:
    a faithfulness head too, the probe's on the pair's states) into ``out``; the card."""
    from redgame.llm.embedder import MiniLMEmbedder, RememberingEmbedder
    from redgame.llm.judge_data import check_unique_ids, exchange_metrics, judge_exchanges
    from redgame.llm.judges import EmbeddedJudge
    from redgame.llm.seeds import builtin_seeds

    exchanges, rewrites, names, digest = _read_sources([data] if isinstance(data, str) else list(data), list(attacks))
    _check_splits(exchanges)
    train = [x for x in exchanges if x.row.get("split") == "train"]
    validation = [x for x in exchanges if x.row.get("split") == "validation"]
    _check_disjoint(train, validation)
    log(f"train-judge: {len(train)} train and {len(validation)} validation lines; "
        f"{len(exchanges) - len(train) - len(validation)} test or holdout lines left out")
    # before any model loads; the probe fits no degenerate head (it uses the embedded judge's)
    fitted = FITTED_LABELS if probe_model is None else tuple(k for k in FITTED_LABELS if k != "degenerate")
    _check(train, "train", fitted)
    _check(validation, "validation", fitted)
    # after the checks of each line and split, which name a fault more exactly than "given twice" does
    check_unique_ids(exchanges, "train-judge --data")  # a file given twice (builtin and its own copy) counts twice
    _check_once(exchanges)
    if rewrites:  # what the faithfulness head will read
        pair_train, pair_validation = rewrite_splits(rewrites, train + validation)
        if probe_model is not None:
            from redgame.llm.judge_probe import pair_head_texts

            pair_head_texts(pair_train + pair_validation)
        else:
            from redgame.llm.judge_attacks import check_faithful_splits

            check_faithful_splits(pair_train, pair_validation)
    if probe_model is not None:
        probe_model = local_model_name(probe_model)
    embedder = RememberingEmbedder(MiniLMEmbedder())  # the fit and the metrics read the same texts
    seeds = {s.prompt: s.harmful for s in builtin_seeds("train")}  # more prompts of known class for the prompt head
    extra = {"extra_prompts": f"{len(seeds)} built-in train-split seeds"}
    if probe_model is not None:
        from redgame.llm.judge_probe import ProbeJudge, train_probe
        from redgame.llm.models import load_base

        model, tokenizer = load_base(probe_model)
        trained, states = train_probe(train, validation, model, tokenizer, probe_model, extra_prompts=seeds,
                                      rewrites=rewrites, log=log)
        judge = ProbeJudge(model, tokenizer, head=trained, embedder=embedder, pooled=states)
    else:
        trained = train_classifier(train, validation, embedder, extra_prompts=seeds, rewrites=rewrites, log=log)
        judge = EmbeddedJudge(embedder, classifier=trained)
    trained.card["data"] = {"source": names[0] if len(names) == 1 else names, "sha256": digest, **extra}
    for name, split in (("train", train), ("validation", validation)):
        trained.card[f"{name}_metrics"] = exchange_metrics(split, judge_exchanges(judge, split))
    trained.save(out)
    metrics = trained.card["validation_metrics"]
    log(f"wrote {out}; validation: harmful precision {shown(metrics['harmful']['precision'])}, recall "
        f"{shown(metrics['harmful']['recall'])}; refusal accuracy {shown(metrics['refused']['accuracy'])}")
    return trained.card


TRAIN_JUDGE_SPLITS = ("train", "validation", "test", "holdout")  # test and holdout lines are left out


def _check_splits(exchanges: list[Exchange]) -> None:
    """Every line's ``split`` is one train-judge knows: a misspelt one ("Train", "val") is not silently dropped."""
    for x in exchanges:
        if x.row.get("split") not in TRAIN_JUDGE_SPLITS:
            where = "has no field 'split'" if "split" not in x.row else f"has split {x.row['split']!r}"
            raise UserError(f"train-judge: {x.where or repr(x.request[:60])} {where}; each line needs \"split\": "
                            f"{', '.join(map(repr, TRAIN_JUDGE_SPLITS))} (test and holdout lines are left out)")


def _check_once(exchanges: list[Exchange]) -> None:
    """No line twice in one split, by its request, prompt and answer (lines without an id, in a file given twice):
    the heads would be fitted to it twice, and the card's metrics count it twice."""
    first = {}
    for x in exchanges:
        seen = first.setdefault((x.row.get("split"), x.request, x.seen, x.response), x)
        if seen is not x:
            raise UserError(f"train-judge: {x.where} has the request, prompt and answer of "
                            f"{said_beside(x.where, seen.where)} in the same split; it would count twice (a file given "
                            "twice?): give each line once")


def _check_disjoint(train: list[Exchange], validation: list[Exchange]) -> None:
    """No line of validation is a line of train, by its id or by its prompt and answer: the settings chosen on
    validation (and its metrics on the card) would read lines the heads were fitted to."""
    ids = {x.row["id"]: x for x in train if isinstance(x.row.get("id"), str)}
    texts = {(x.request, x.seen, x.response): x for x in train}
    for x in validation:
        seen, how = ids.get(x.row.get("id")), f"id {x.row.get('id')!r}"
        if seen is None:
            seen, how = texts.get((x.request, x.seen, x.response)), "request, prompt and answer"
        if seen is not None:
            raise UserError(f"train-judge: {x.where} (validation) has the {how} of {said_beside(x.where, seen.where)} "
                            "(train); a line the heads are fitted to cannot choose their settings: keep it in one split")


def _read_sources(sources: list[str], rewrite_sources: list[str]) -> tuple[list[Exchange], list, list[str], str]:
    """The exchanges of every source and the rewrites of every rewrite file, taken together; every file's name; and
    one SHA-256 of their bytes. A missing or malformed file is a one-line UserError naming it."""
    from redgame.llm.judge_attacks import parse_rewrites
    from redgame.llm.judge_data import builtin_exchanges, parse_exchanges
    from redgame.llm.userfiles import read_user_text

    exchanges, rewrites, digest = [], [], hashlib.sha256()
    for source in sources:
        if source == "builtin":
            exchanges += builtin_exchanges()
            digest.update(resources.files("redgame.llm").joinpath("data/judge_set.jsonl").read_bytes())
        else:
            path, where, text = read_user_text(source, "judge input")
            exchanges += parse_exchanges(text, where)
            digest.update(path.read_bytes())
    for source in rewrite_sources:
        path, where, text = read_user_text(source, "attack rewrites")
        rewrites += parse_rewrites(text, where)
        digest.update(path.read_bytes())
    names = ["built-in judge set" if source == "builtin" else str(source) for source in sources + rewrite_sources]
    return exchanges, rewrites, names, digest.hexdigest()
