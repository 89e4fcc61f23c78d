"""benchmarks/judge_model_answers.py draw: a hold-out set to label, drawn from sampled answers."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import judge_model_answers  # noqa: E402


def _answers(path: Path) -> Path:
    rows = [{"seed_id": f"s{k}", "prompt": f"request {k}", "seed_class": "harmful" if k < 6 else "benign",
             "category": "cyber" if k < 6 else "benign", "response": f"answer {k}", "source": f"base-t1-24-{k % 3}"}
            for k in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_draw_keeps_every_harmful_answer_draws_the_benign_ones_and_numbers_them(tmp_path):
    path = _answers(tmp_path / "answers.jsonl")
    drawn = judge_model_answers.draw(str(path), benign=4, prefix="mh9", seed=3)
    assert [r["id"] for r in drawn] == [f"mh9-{i:04d}" for i in range(1, 11)]
    prompts = Counter(r["prompt"] for r in drawn)
    assert all(prompts[f"request {k}"] == 1 for k in range(6))  # every harmful answer, once
    assert sum(r["seed_class"] == "benign" for r in drawn) == 4 and max(prompts.values()) == 1
    for row in drawn:
        k = int(row["prompt"].split()[1])
        assert row["response"] == f"answer {k}" and row["sampled"] == f"base-t1-24-{k % 3}"
        assert row["split"] == "holdout" and row["source"] == "embedded-model"
    assert drawn == judge_model_answers.draw(str(path), benign=4, prefix="mh9", seed=3)  # the seed fixes it
    other = judge_model_answers.draw(str(path), benign=4, prefix="mh9", seed=4)
    assert [r["prompt"] for r in other] != [r["prompt"] for r in drawn]


def test_bad_input_is_one_line_naming_it(tmp_path):
    import pytest

    from redgame.errors import UserError

    path = _answers(tmp_path / "answers.jsonl")
    for benign in (-1, 11):  # 10 answers to benign seeds
        with pytest.raises(UserError, match=f"--benign {benign}: .* has 10 answers to benign seeds"):
            judge_model_answers.draw(str(path), benign=benign, prefix="x", seed=0)
    with pytest.raises(UserError, match="cannot be read"):
        judge_model_answers.draw(str(tmp_path / "missing.jsonl"), benign=1, prefix="x", seed=0)
    (tmp_path / "demo.json").write_text('{"split": "test"}')
    with pytest.raises(UserError, match="exchange 1 is not a line of 'sample'"):
        judge_model_answers.draw(str(tmp_path / "demo.json"), benign=1, prefix="x", seed=0)
    with pytest.raises(UserError, match="answers.json .*cannot be read"):
        judge_model_answers.from_demo([str(tmp_path / "no-demo")])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "answers.json").write_text("{}")
    with pytest.raises(UserError, match="no list of 'base' answers"):
        judge_model_answers.from_demo([str(tmp_path / "d")])


def test_a_line_or_answer_missing_a_field_is_one_line_not_an_internal_error(tmp_path, capsys):
    """A line without its category, or a demo answer to an unknown seed id, was an internal KeyError; a negative
    --draws loaded the model and wrote an empty file."""
    import pytest

    from redgame.errors import UserError
    from redgame.llm.seeds import builtin_seeds

    path = _answers(tmp_path / "answers.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for field in ("category", "prompt"):
        del rows[0][field]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(UserError, match="exchange 1 is not a line of 'sample'"):
            judge_model_answers.draw(str(path), benign=1, prefix="x", seed=0)
    seed = builtin_seeds("validation")[0]
    good = {"id": seed.id, "prompt": seed.prompt, "answer": "No.", "harmful": seed.harmful}
    (tmp_path / "d").mkdir()
    for bad in ({**good, "id": "nope"}, {"id": seed.id, "harmful": seed.harmful}):
        (tmp_path / "d" / "answers.json").write_text(json.dumps({"base": [good, bad], "trained": []}))
        with pytest.raises(UserError, match="'base' answer 2 is not a demo's answer to a built-in seed"):
            judge_model_answers.from_demo([str(tmp_path / "d")])
    with pytest.raises(SystemExit):
        judge_model_answers.main(["sample", "--draws", "-1", "--out", str(tmp_path / "s.jsonl")])
    assert "--draws must be at least 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        judge_model_answers.main(["sample", "--threads", "0", "--out", str(tmp_path / "s.jsonl")])
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="empty.jsonl: no exchanges in it"):  # wrote an empty set, before
        judge_model_answers.draw(str(tmp_path / "empty.jsonl"), 0, "p", 0)
    with pytest.raises(UserError, match="--runs: 2 runs give 1 names"):  # emb/s0/run and x/s0/run: both "s0"
        judge_model_answers.sample("validation", ["emb/s0/run", "x/s0/run"], 0, with_base=False, draws=0)
    with pytest.raises(UserError, match="a run named 'base'"):  # it replaced the base model's greedy answers
        judge_model_answers.sample("validation", ["runs/base/run"], 0, with_base=True, draws=0)
