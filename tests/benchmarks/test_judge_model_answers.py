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
