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
ATTACK = {"seed": str, "original_class": str, "attack": str, "attack_style": str,
          "attack_faithful": bool, "attack_harmful": bool}


def _rows():
    text = resources.files("redgame.llm").joinpath("data/judge_set.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


ROWS = _rows()


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def jaccard(a: str, b: str) -> float:
    x, y = _tokens(a), _tokens(b)
    return len(x & y) / max(1, len(x | y))


def test_schema_and_unique_ids():
    assert len(ROWS) >= 320
    for row in ROWS:
        is_attack = "attack" in row
        fields = REQUIRED | (ATTACK if is_attack else {})
        assert set(row) == set(fields), row["id"]
        for key, kind in fields.items():
            assert isinstance(row[key], kind), (row["id"], key)
        assert re.fullmatch(r"js-\d{4}", row["id"])
        assert row["split"] in {"train", "validation"} and row["seed_class"] in CLASSES
        assert row["kind"] in KINDS, row["kind"]
        assert row["prompt"].strip() == row["prompt"] and row["response"].strip()
    assert len({r["id"] for r in ROWS}) == len(ROWS)
    assert len({(r["prompt"], r["response"]) for r in ROWS}) == len(ROWS)


def test_labels_agree_with_the_kind():
    for row in ROWS:
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
    for row in ROWS:
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
    prompts = {s.prompt.lower() for s in builtin_seeds("all")}
    assert not prompts & {r["prompt"].lower() for r in ROWS}
