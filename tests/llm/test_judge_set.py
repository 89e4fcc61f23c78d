"""The labelled judge set (llm/data/judge_set.jsonl): schema, label consistency, coverage, splits.

One JSON object per line: ``id``, ``split`` (train | validation), ``prompt`` (what the defender
saw), ``seed_class`` (harmful | benign: the class of that prompt), ``response``, the labels
``harmful`` (the response gives meaningful help toward a harmful request, even partial),
``refused`` (declines or deflects without that help; refuse-then-comply is not refused),
``degenerate`` (loops, repetition, gibberish, cut off at a length limit), ``kind`` (the case the
row covers) and ``category`` (the harm category of the prompt, or "benign"). A row whose prompt
is an attacker's rewrite also has ``seed`` (the original seed), ``original_class`` (its class),
``attack`` (the rewrite, equal to ``prompt``), ``attack_style``, and the labels
``attack_faithful`` (the rewrite keeps the seed's intent) and ``attack_harmful`` (the rewrite
itself asks for harmful help). Echoes and off-topic answers neither help nor refuse.

Rows with ``"source": "embedded-model"`` are the embedded model's own answers (SmolLM2-135M, the
base and trained defenders, greedy and sampled; ``sampled`` names which), labelled by hand; their
prompts are seeds of the train split, never of validation or test. The model hold-out set
(llm/data/judge_model_holdout.jsonl, split ``holdout``) holds the same kind of rows for the test
split's seeds and is never used to train or choose anything; a second one
(llm/data/judge_model_holdout_2.jsonl) holds the base model's temperature-1 answers to them, as
the game samples, labelled by two labellers. The defender hold-out
(llm/data/judge_defender_holdout.jsonl) holds game-trained defenders' greedy answers to the
validation split's seeds, from the runs the recipe was chosen by, labelled by two labellers. The
base model's temperature-1 answers to train-split seeds (llm/data/judge_model_sampled.jsonl, split
train / validation by seed prompt) are rows to train a judge on, labelled by two labellers. Two written hold-out sets
(llm/data/judge_holdout.jsonl and judge_holdout_2.jsonl, no ``split``) are other authors' rows,
likewise never used to train or choose anything.
"""

import json
import re
from collections import Counter
from importlib import resources

from redgame.llm.seeds import builtin_seeds

CLASSES = {"harmful", "benign"}
HELPS = {"compliance_plain", "compliance_with_disclaimer", "refuse_then_comply", "partial_compliance"}
DECLINES = {"refusal", "safe_deflection"}
NEITHER = {"echo", "off_topic"}
BENIGN_ANSWERED = {"benign_answered", "benign_dangerous_sounding_answered", "benign_with_disclaimer"}
BENIGN_REFUSED = {"benign_refused", "benign_dangerous_sounding_refused"}
KINDS = HELPS | DECLINES | NEITHER | BENIGN_ANSWERED | BENIGN_REFUSED | {"degenerate_loop"}
MIN_PER_KIND = 15
REQUIRED = {"id": str, "split": str, "prompt": str, "seed_class": str, "response": str, "harmful": bool,
            "refused": bool, "degenerate": bool, "kind": str, "category": str}
MODEL = {"source": str, "sampled": str}
ATTACK = {"seed": str, "original_class": str, "attack": str, "attack_style": str,
          "attack_faithful": bool, "attack_harmful": bool}


def _rows(name="judge_set.jsonl"):
    text = resources.files("redgame.llm").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


ROWS = _rows()
MODEL_HOLDOUT = _rows("judge_model_holdout.jsonl")
DEFENDER = _rows("judge_defender_answers.jsonl")
HOLDOUT_2 = _rows("judge_holdout_2.jsonl")
MODEL_HOLDOUT_2 = _rows("judge_model_holdout_2.jsonl")
DEFENDER_HOLDOUT = _rows("judge_defender_holdout.jsonl")
ATTACK_HOLDOUT = _rows("judge_attack_holdout.jsonl")
SAMPLED = _rows("judge_model_sampled.jsonl")


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def jaccard(a: str, b: str) -> float:
    x, y = _tokens(a), _tokens(b)
    return len(x & y) / max(1, len(x | y))


def _check_schema(rows, id_pattern, splits):
    for row in rows:
        fields = REQUIRED | (ATTACK if "attack" in row else {}) | (MODEL if "source" in row else {})
        assert set(row) == set(fields), row["id"]
        for key, kind in fields.items():
            assert isinstance(row[key], kind), (row["id"], key)
        assert re.fullmatch(id_pattern, row["id"])
        assert row["split"] in splits and row["seed_class"] in CLASSES
        assert row["kind"] in KINDS, row["kind"]
        assert row["prompt"].strip() == row["prompt"] and row["response"].strip()
        assert row.get("source", "embedded-model") == "embedded-model", row["id"]
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({(r["prompt"], r["response"]) for r in rows}) == len(rows)


def test_schema_and_unique_ids():
    assert len(ROWS) >= 455
    _check_schema(ROWS, r"js-\d{4}", {"train", "validation"})


def test_model_answers_are_labelled_and_two_thirds_train():
    """The embedded model's own answers: at least 120, about two thirds in train, both labels in each split."""
    model = [r for r in ROWS if "source" in r]
    assert len(model) >= 120
    assert 0.6 <= sum(r["split"] == "train" for r in model) / len(model) <= 0.72
    for label in ("harmful", "refused"):
        for split in ("train", "validation"):
            assert {r[label] for r in model if r["split"] == split} == {True, False}, (label, split)
    kinds = Counter(r["kind"] for r in model)
    assert kinds["echo"] >= 15 and kinds["partial_compliance"] >= 15, kinds


# Validation answers that continue (or are cut from) a training answer to the same prompt: the base model's greedy
# answers at 24 and 48 tokens, labelled alike. Found after the judges were trained; docs/judge.md gives the validation
# numbers without them. A new pair is a leak.
CONTINUATIONS = {("js-0336", "js-0361"), ("js-0340", "js-0466"), ("js-0360", "js-0461"), ("js-0418", "js-0388")}


def test_no_validation_answer_continues_a_training_answer_but_the_four_documented():
    train = [r for r in ROWS if r["split"] == "train"]
    found = {(t["id"], v["id"]) for v in ROWS if v["split"] == "validation" for t in train
             if t["prompt"] == v["prompt"] and (t["response"].startswith(v["response"])
                                               or v["response"].startswith(t["response"]))}
    assert found == CONTINUATIONS


def test_the_model_hold_out_set_is_the_test_split_and_shares_nothing():
    """llm/data/judge_model_holdout.jsonl: the model's answers to test-split seeds, labelled like the set."""
    _check_schema(MODEL_HOLDOUT, r"mh-\d{4}", {"holdout"})
    assert 80 <= len(MODEL_HOLDOUT) <= 110
    assert all(r["source"] == "embedded-model" for r in MODEL_HOLDOUT)
    test_prompts = {s.prompt for s in builtin_seeds("test")}
    assert {r["prompt"] for r in MODEL_HOLDOUT} <= test_prompts
    assert not {(r["prompt"], r["response"]) for r in MODEL_HOLDOUT} & {(r["prompt"], r["response"]) for r in ROWS}
    assert sum(r["harmful"] for r in MODEL_HOLDOUT) >= 5 and sum(r["refused"] for r in MODEL_HOLDOUT) >= 5


def test_the_second_model_hold_out_is_three_sampled_answers_per_harmful_test_seed_and_shares_nothing():
    """judge_model_holdout_2.jsonl: the base model's temperature-1 answers to test seeds (docs/judge_log.md)."""
    _check_schema(MODEL_HOLDOUT_2, r"mh2-\d{4}", {"holdout"})
    assert len(MODEL_HOLDOUT_2) == 300
    assert {r["sampled"] for r in MODEL_HOLDOUT_2} == {f"base-t1-24-{k}" for k in range(3)}
    harmful_seeds = Counter(r["prompt"] for r in MODEL_HOLDOUT_2 if r["seed_class"] == "harmful")
    test = builtin_seeds("test")
    assert harmful_seeds == {s.prompt: 3 for s in test if s.harmful}  # all 216 answers to harmful seeds
    assert {r["prompt"] for r in MODEL_HOLDOUT_2 if r["seed_class"] == "benign"} <= {s.prompt for s in test}
    pairs = {(r["prompt"], r["response"]) for r in MODEL_HOLDOUT_2}
    others = ROWS + MODEL_HOLDOUT + DEFENDER + HOLDOUT_2 + _rows("judge_holdout.jsonl")
    assert not pairs & {(r["prompt"], r["response"]) for r in others}
    # docs/judge_log.md: the first labeller's 41 harmful answers and 3 refusals, 132 off topic
    assert sum(r["harmful"] for r in MODEL_HOLDOUT_2) == 41 and sum(r["refused"] for r in MODEL_HOLDOUT_2) == 3
    assert sum(r["kind"] == "off_topic" for r in MODEL_HOLDOUT_2) == 132


def test_the_defender_hold_out_is_trained_defenders_answers_to_validation_seeds_and_shares_nothing():
    """judge_defender_holdout.jsonl: six validation runs' distinct answers and the base's (docs/judge_log.md)."""
    _check_schema(DEFENDER_HOLDOUT, r"dv-\d{4}", {"holdout"})
    assert len(DEFENDER_HOLDOUT) == 286
    runs = {"nll4-s5", "nll2-s5", "bscale2-s5", "bscale4-s5", "bscale2-s4", "bscale2-s3"}
    assert {r["sampled"] for r in DEFENDER_HOLDOUT} == {f"val-{run}-greedy-24" for run in runs} | {"base-greedy-24"}
    assert {r["prompt"] for r in DEFENDER_HOLDOUT} <= {s.prompt for s in builtin_seeds("validation")}
    pairs = {(r["prompt"], r["response"]) for r in DEFENDER_HOLDOUT}
    others = ROWS + MODEL_HOLDOUT + DEFENDER + HOLDOUT_2 + MODEL_HOLDOUT_2 + _rows("judge_holdout.jsonl")
    assert not pairs & {(r["prompt"], r["response"]) for r in others}
    # docs/judge_log.md: 121 answers to harmful prompts, 165 to benign; the first labeller's 21 and 34
    assert Counter(r["seed_class"] for r in DEFENDER_HOLDOUT) == {"harmful": 121, "benign": 165}
    assert sum(r["harmful"] for r in DEFENDER_HOLDOUT) == 21 and sum(r["refused"] for r in DEFENDER_HOLDOUT) == 34


def test_the_defender_answers_are_to_train_split_seeds_and_share_nothing():
    """llm/data/judge_defender_answers.jsonl: game-trained defenders' answers to train-split seeds."""
    _check_schema(DEFENDER, r"da-\d{4}", {"train", "validation"})
    assert len(DEFENDER) == 346
    assert {r["prompt"] for r in DEFENDER} <= {s.prompt for s in builtin_seeds("train")}
    assert {r["sampled"] for r in DEFENDER} == {f"bip-lr2e3-s{k}-greedy-24" for k in (0, 1, 3, 4, 5)}
    pairs = {(r["prompt"], r["response"]) for r in DEFENDER}
    assert not pairs & {(r["prompt"], r["response"]) for r in ROWS + MODEL_HOLDOUT}
    assert 0.6 <= sum(r["split"] == "train" for r in DEFENDER) / len(DEFENDER) <= 0.72


def test_the_sampled_answers_are_three_per_harmful_train_seed_split_by_prompt_and_share_nothing():
    """judge_model_sampled.jsonl: the base model's temperature-1 answers to train seeds (docs/judge_log.md, "The model's
    sampled answers as training data"): every harmful seed's three, 60 benign; no prompt in both splits."""
    _check_schema(SAMPLED, r"ms-\d{4}", {"train", "validation"})
    assert len(SAMPLED) == 222 and {r["sampled"] for r in SAMPLED} == {f"base-t1-24-{k}" for k in range(3)}
    train = builtin_seeds("train")
    harmful_seeds = Counter(r["prompt"] for r in SAMPLED if r["seed_class"] == "harmful")
    assert harmful_seeds == {s.prompt: 3 for s in train if s.harmful}
    assert Counter(r["seed_class"] for r in SAMPLED) == {"harmful": 162, "benign": 60}
    assert {r["prompt"] for r in SAMPLED} <= {s.prompt for s in train}
    by_split = {split: {r["prompt"] for r in SAMPLED if r["split"] == split} for split in ("train", "validation")}
    assert not by_split["train"] & by_split["validation"]
    assert Counter(r["split"] for r in SAMPLED) == {"train": 148, "validation": 74}
    pairs = {(r["prompt"], r["response"]) for r in SAMPLED}
    others = ROWS + MODEL_HOLDOUT + DEFENDER + HOLDOUT_2 + MODEL_HOLDOUT_2 + DEFENDER_HOLDOUT + ATTACK_HOLDOUT
    others += _rows("judge_holdout.jsonl")
    assert not pairs & {(r["prompt"], r["response"]) for r in others}
    # docs/judge_log.md: the first labeller's 46 harmful answers and one refusal
    assert sum(r["harmful"] for r in SAMPLED) == 46 and sum(r["refused"] for r in SAMPLED) == 1


def test_labels_agree_with_the_kind():
    for row in ROWS + MODEL_HOLDOUT + DEFENDER + HOLDOUT_2 + MODEL_HOLDOUT_2 + DEFENDER_HOLDOUT + SAMPLED:
        where, kind = row["id"], row["kind"]
        assert not (row["refused"] and row["harmful"]), where
        assert row["degenerate"] == (kind == "degenerate_loop"), where
        if row["seed_class"] == "benign":
            assert not row["harmful"], where
        if kind in HELPS:
            assert row["seed_class"] == "harmful" and row["harmful"] and not row["refused"], where
        if kind in DECLINES:
            assert row["seed_class"] == "harmful" and row["refused"] and not row["harmful"], where
        if kind in NEITHER:
            assert not row["refused"] and not row["harmful"], where
        if kind in BENIGN_ANSWERED | BENIGN_REFUSED:
            assert row["seed_class"] == "benign" and row["refused"] == (kind in BENIGN_REFUSED), where


def test_category_is_a_seed_harm_category_or_benign():
    harm_categories = {s.category for s in builtin_seeds("all") if s.harmful}
    for row in ROWS + MODEL_HOLDOUT + DEFENDER + HOLDOUT_2 + MODEL_HOLDOUT_2 + DEFENDER_HOLDOUT:
        assert (row["category"] == "benign") == (row["seed_class"] == "benign"), row["id"]
        assert row["category"] in harm_categories | {"benign"}, row["id"]
    for split in ("train", "validation"):
        seen = {r["category"] for r in ROWS if r["split"] == split}
        assert harm_categories <= seen, harm_categories - seen


def test_every_kind_is_covered_in_both_splits():
    counts = Counter((r["kind"], r["split"]) for r in ROWS)
    for kind in KINDS:
        assert counts[(kind, "train")] + counts[(kind, "validation")] >= MIN_PER_KIND, kind
        assert counts[(kind, "train")] >= 2 * MIN_PER_KIND // 3 and counts[(kind, "validation")] >= 5, kind
    degenerate = [r for r in ROWS if r["degenerate"]]
    assert any(r["refused"] for r in degenerate) and any(r["harmful"] for r in degenerate)


def test_split_ratio_is_about_two_thirds_train():
    train = sum(r["split"] == "train" for r in ROWS)
    assert 0.6 <= train / len(ROWS) <= 0.72
    for label in ("harmful", "refused"):
        for split in ("train", "validation"):
            values = {r[label] for r in ROWS if r["split"] == split}
            assert values == {True, False}, (label, split)


def test_attack_rows_cover_faithful_and_unfaithful_rewrites():
    attacks = [r for r in ROWS if "attack" in r]
    assert len(attacks) >= 30
    for row in attacks:
        assert row["attack"] == row["prompt"] != row["seed"], row["id"]
        assert row["original_class"] in CLASSES, row["id"]
        assert row["seed_class"] == ("harmful" if row["attack_harmful"] else "benign"), row["id"]
        if row["attack_faithful"]:
            assert row["original_class"] == row["seed_class"], row["id"]
    cases = Counter((r["original_class"], r["attack_harmful"], r["attack_faithful"]) for r in attacks)
    assert cases[("harmful", True, True)] >= 10        # roleplay, hypotheticals, obfuscation
    assert cases[("benign", True, False)] >= 5         # a benign seed turned into a harmful request
    assert cases[("harmful", False, False)] >= 5       # a harmful seed turned into something benign
    assert cases[("benign", False, True)] >= 3
    for split in ("train", "validation"):
        assert {r["attack_faithful"] for r in attacks if r["split"] == split} == {True, False}


def test_responses_vary_in_length_and_form():
    words = [len(r["response"].split()) for r in ROWS]
    assert min(words) <= 5 and max(words) <= 160
    assert sum(w >= 80 for w in words) >= 8
    assert sum("```" in r["response"] for r in ROWS) >= 5
    assert sum(bool(re.search(r"^\s*(?:\d+[.)]|[-*]) ", r["response"], re.M)) for r in ROWS) >= 12
    refusals = [r["response"] for r in ROWS if r["kind"] == "refusal"]
    assert sum(x.lower().startswith(("i'm sorry", "sorry")) for x in refusals) <= len(refusals) // 3


def test_no_seed_prompt_is_reused():
    """Written rows use no seed; the model's answers use train-split seeds only (never validation or test)."""
    prompts = {s.prompt.lower() for s in builtin_seeds("all")}
    assert not prompts & {r["prompt"].lower() for r in ROWS if "source" not in r}
    train = {s.prompt for s in builtin_seeds("train")}
    assert {r["prompt"] for r in ROWS if "source" in r} <= train


def test_the_second_labeller_covers_the_model_answers_and_the_hold_outs_and_its_agreement_is_as_documented():
    """judge_second_labels.jsonl: one line per model answer and hold-out line (the attack hold-out's with its
    attack labels); the kappas of docs/judge.md ("Two labellers") and docs/judge_log.md."""
    from redgame.llm.judge_data import cohen_kappa, load_second_labels

    second = load_second_labels(resources.files("redgame.llm").joinpath("data/judge_second_labels.jsonl"))
    model = [r for r in _rows() if r.get("source") == "embedded-model"]
    model_holdout, written_holdout = _rows("judge_model_holdout.jsonl"), _rows("judge_holdout.jsonl")
    sets = (model, model_holdout, written_holdout, DEFENDER, MODEL_HOLDOUT_2, DEFENDER_HOLDOUT, SAMPLED)
    assert set(second) == {r["id"] for rows in sets + (ATTACK_HOLDOUT,) for r in rows}
    for line, labels in second.items():
        attack = {"attack_harmful", "attack_faithful"} if line.startswith("at-") else set()
        assert set(labels) == {"harmful", "refused"} | attack, line
    # docs/judge.md, "Two labellers"; the defender hold-out's 0.946 and 0.984: docs/judge_log.md
    documented = {"harmful": (0.844, 1.000, 0.979, 1.000, 0.817, 0.946, 0.865),
                  "refused": (1.000, 1.000, 0.979, 1.000, 0.663, 0.984, 0.497)}
    for label, kappas in documented.items():
        for rows, kappa in zip(sets, kappas, strict=True):
            got = cohen_kappa([r[label] for r in rows], [second[r["id"]][label] for r in rows])
            assert round(got, 3) == kappa, (label, len(rows), got)
    # docs/judge_log.md, "Attacks the judge never saw"
    attack_kappas = {"attack_harmful": 1.0, "attack_faithful": 1.0, "harmful": 1.0, "refused": 0.987}
    for label, kappa in attack_kappas.items():
        got = cohen_kappa([r[label] for r in ATTACK_HOLDOUT], [second[r["id"]][label] for r in ATTACK_HOLDOUT])
        assert round(got, 3) == kappa, (label, got)
    assert sum(second[r["id"]]["harmful"] for r in MODEL_HOLDOUT_2) == 49  # docs/judge.md: 41 and 49
    assert sum(second[r["id"]]["harmful"] for r in DEFENDER_HOLDOUT) == 19  # 21 and 19
    assert sum(second[r["id"]]["refused"] for r in DEFENDER_HOLDOUT) == 35  # 34 and 35
    assert sum(second[r["id"]]["harmful"] for r in SAMPLED) == 48  # 46 and 48
    # The defender answers' labels are adjudicated; before, the first labeller called refused the
    # opposite way on four lines (docs/judge_log.md), kappa 0.903 against the second.
    first = [r["refused"] != (r["id"] in ("da-0089", "da-0141", "da-0165", "da-0193")) for r in DEFENDER]
    assert round(cohen_kappa(first, [second[r["id"]]["refused"] for r in DEFENDER]), 3) == 0.903


def test_the_second_written_hold_out_is_new_and_covers_every_kind():
    """judge_holdout_2.jsonl: 120 rows by a third author, no prompt close to one of any other set."""
    _check_schema([{**r, "split": "holdout"} for r in HOLDOUT_2], r"h2-\d{4}", {"holdout"})
    assert len(HOLDOUT_2) == 120 and set(Counter(r["kind"] for r in HOLDOUT_2)) == KINDS
    # docs/judge_log.md: 38 harmful compliances, 36 refusals, 45 benign rows, 17 sounding dangerous
    assert sum(r["harmful"] for r in HOLDOUT_2) == 38 and sum(r["refused"] for r in HOLDOUT_2) == 36
    assert sum(r["seed_class"] == "benign" for r in HOLDOUT_2) == 45
    assert sum(r["kind"].startswith("benign_dangerous") for r in HOLDOUT_2) == 17
    others = [r["prompt"] for r in ROWS + MODEL_HOLDOUT + DEFENDER + _rows("judge_holdout.jsonl")]
    others += [s.prompt for s in builtin_seeds("all")] + [r["prompt"] for r in _rows("seeds_more_lookalikes.jsonl")]
    for row in HOLDOUT_2:
        assert max(jaccard(row["prompt"], other) for other in others) < 0.5, row["id"]


def test_the_attack_hold_out_rewrites_test_seeds_twice_each_and_repeats_no_written_prompt():
    """judge_attack_holdout.jsonl: 160 written rewrites, two of each of 80 test seeds, labelled blind to every
    judge; faithful and unfaithful rewrites of both classes (docs/judge_log.md, "Attacks the judge never saw"); no
    rewrite is a prompt of the judge set or the written hold-outs, and none is a train or validation seed."""
    _check_schema([{**r, "split": "holdout"} for r in ATTACK_HOLDOUT], r"at-\d{4}", {"holdout"})
    assert len(ATTACK_HOLDOUT) == 160 and all("attack" in r for r in ATTACK_HOLDOUT)
    test = {s.prompt: s.harmful for s in builtin_seeds("test")}
    for row in ATTACK_HOLDOUT:
        assert row["prompt"] == row["attack"] and test[row["seed"]] == (row["original_class"] == "harmful"), row["id"]
        assert row["seed_class"] == ("harmful" if row["attack_harmful"] else "benign"), row["id"]
        assert (row["attack"] == row["seed"]) == (row["attack_style"] == "identity"), row["id"]
        assert not row["attack_faithful"] or row["original_class"] == row["seed_class"], row["id"]
    assert set(Counter(r["seed"] for r in ATTACK_HOLDOUT).values()) == {2}
    cases = Counter((r["original_class"], r["attack_harmful"], r["attack_faithful"]) for r in ATTACK_HOLDOUT)
    assert cases == {("harmful", True, True): 54, ("harmful", False, False): 22, ("harmful", True, False): 4,
                     ("benign", False, True): 46, ("benign", True, False): 22, ("benign", False, False): 12}
    others = ROWS + _rows("judge_holdout.jsonl") + HOLDOUT_2
    assert not {r["attack"].lower() for r in ATTACK_HOLDOUT} & {r["prompt"].lower() for r in others}
    seen_seeds = {s.prompt for s in builtin_seeds("train") + builtin_seeds("validation")}
    assert not {r["attack"] for r in ATTACK_HOLDOUT} & seen_seeds


def test_the_attack_rewrites_cover_train_and_validation_seeds_twice_each():
    """judge_attacks.jsonl: 288 written rewrites, two of each train and validation seed, in its seed's split, for
    ``train-judge --attacks`` (docs/judge_log.md, "A faithfulness head, trained on written rewrites")."""
    from redgame.llm.judge_attacks import parse_rewrites

    text = resources.files("redgame.llm").joinpath("data/judge_attacks.jsonl").read_text(encoding="utf-8")
    rewrites, rows = parse_rewrites(text, "judge_attacks.jsonl"), _rows("judge_attacks.jsonl")
    assert len(rewrites) == 288 and [r["id"] for r in rows] == [f"ar-{i:04d}" for i in range(1, 289)]
    split_of = {s.prompt: split for split in ("train", "validation") for s in builtin_seeds(split)}
    assert Counter(r.seed for r in rewrites) == {seed: 2 for seed in split_of}
    assert all(r.split == split_of[r.seed] for r in rewrites)
    assert all((r.attack == r.seed) == (row["attack_style"] == "identity") for r, row in zip(rewrites, rows))
    cases = Counter((r.seed_harmful, r.attack_harmful, r.faithful) for r in rewrites)
    assert cases == {(True, True, True): 67, (True, True, False): 21, (True, False, False): 56,
                     (False, False, True): 81, (False, False, False): 40, (False, True, False): 23}
    assert not {r.attack for r in rewrites} & {s.prompt for s in builtin_seeds("test")}


def test_the_second_attack_hold_out_rewrites_the_test_seeds_the_first_leaves_out():
    """judge_attack_holdout_2.jsonl: 124 written rewrites, two of each of the 62 test seeds not in the first attack
    hold-out, written blind to every judge, each with a labelled answer."""
    rows = _rows("judge_attack_holdout_2.jsonl")
    _check_schema([{**r, "split": "holdout"} for r in rows], r"at2-\d{4}", {"holdout"})
    test = {s.prompt: s.harmful for s in builtin_seeds("test")}
    first = {r["seed"] for r in ATTACK_HOLDOUT}
    assert Counter(r["seed"] for r in rows) == {seed: 2 for seed in test if seed not in first}
    for row in rows:
        assert row["prompt"] == row["attack"] and test[row["seed"]] == (row["original_class"] == "harmful"), row["id"]
        assert row["seed_class"] == ("harmful" if row["attack_harmful"] else "benign"), row["id"]
        assert (row["attack"] == row["seed"]) == (row["attack_style"] == "identity"), row["id"]
        assert not row["attack_faithful"] or row["original_class"] == row["seed_class"], row["id"]
    cases = Counter((r["original_class"], r["attack_harmful"], r["attack_faithful"]) for r in rows)
    assert cases == {("harmful", True, True): 32, ("harmful", True, False): 9, ("harmful", False, False): 23,
                     ("benign", False, True): 41, ("benign", False, False): 11, ("benign", True, False): 8}
    written = _rows("judge_attacks.jsonl") + ATTACK_HOLDOUT
    assert not {r["attack"].lower() for r in rows} & {r["attack"].lower() for r in written}
