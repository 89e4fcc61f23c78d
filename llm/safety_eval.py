"""``redgame llm eval``: attack success, over-refusal and a utility proxy of one model.

- **ASR**: the share of harmful prompts (a HarmBench-format file: its behaviours CSV, a
  JSONL/JSON file, or one prompt per line; Mazeika et al. 2024, arXiv 2402.04249) whose
  greedy answer the judge labels harmful.
- **Over-refusal**: the share of benign prompts the model refuses (a JSONL/JSON/text file,
  or XSTest's CSV with ``prompt``/``type``/``label`` columns, whose ``unsafe`` contrast
  rows are set aside; Röttger et al. 2024, arXiv 2308.01263).
- **Benign help**: the share of benign prompts whose answer the judge labels as doing what
  was asked; an echo or an announcement of help with none after it is neither refusal nor help.
- **Utility**: multiple-choice accuracy by log-likelihood (``redgame.llm.utility``).
- Beside the judge's rates, the same refusal rates by refusal strings (a refusal phrase in
  the answer's opening), which need no judge: a check on the judge, and the usual
  refusal-prefix metric of the literature.

Every result names the judge that produced it (``eval_judge``).

The answers come from :func:`redgame.llm.evaluation.evaluate_defender`; this module
loads the files, runs it on the base and/or an adapter, and formats the table.
Defaults are the held-out (test) split of the built-in seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

from redgame.errors import UserError
from redgame.llm.seeds import builtin_seeds, load_seeds

METRICS = ("asr", "harmful_refusal", "over_refusal", "benign_compliance", "benign_help", "harmful_refusal_strings",
           "over_refusal_strings", "loop_rate", "empty_rate", "utility")


def load_class(path, *, harmful: bool) -> tuple[list, int]:
    """(seeds of class ``harmful`` in the file, how many rows of the other class were set aside).

    Rows with a label keep it; a file without labels is taken to be all of class ``harmful``.
    """
    role = "harmful" if harmful else "benign"
    unlabelled_text = Path(path).suffix.lower() not in (".jsonl", ".json", ".ndjson", ".csv")
    seeds = load_seeds(path, harmful=harmful if unlabelled_text else None, unlabelled=harmful)
    kept = [s for s in seeds if s.harmful == harmful]
    if not kept:
        raise UserError(f"{role} file {path}: all {len(seeds)} rows are labelled "
                        f"{'benign' if harmful else 'harmful'}; none to evaluate as {role}")
    return kept, len(seeds) - len(kept)


def default_sets(split: str = "test") -> tuple[list, list]:
    """(harmful, benign) seeds of one built-in split: the held-out ``test`` one by default."""
    seeds = builtin_seeds(split)
    return [s for s in seeds if s.harmful], [s for s in seeds if not s.harmful]


def evaluate(model, tokenizer, judge, harmful: list, benign: list, questions: list | None, *,
             max_new_tokens: int = 48) -> dict:
    """Every metric of one model (its adapter already active), rates in [0, 1]."""
    from redgame.llm.evaluation import evaluate_defender
    from redgame.llm.utility import utility_accuracy

    result = evaluate_defender(model, tokenizer, judge, harmful + benign, max_new_tokens=max_new_tokens)
    out = {
        "eval_judge": result["judge"],
        "asr": result["attack_success"],
        "harmful_refusal": result["harmful_refusal"],
        "over_refusal": 1.0 - result["benign_compliance"],
        "benign_compliance": result["benign_compliance"],
        "benign_help": result["benign_help"],
        "harmful_refusal_strings": result["harmful_refusal_strings"],
        "over_refusal_strings": 1.0 - result["benign_compliance_strings"],
        "loop_rate": result["loop_rate"],
        "empty_rate": result["empty_rate"],  # empty answers count as refusals: a model that says nothing "refuses"
        "unjudged": result["unjudged"],
        "utility": math.nan,
        "n_harmful": result["n_harmful"],
        "n_benign": result["n_benign"],
        "answers": result["answers"],
    }
    if questions:
        util = utility_accuracy(model, tokenizer, questions)
        out.update(utility=util["accuracy"], utility_chance=util["chance"], n_utility=util["n"])
    return out


def markdown_table(results: dict[str, dict]) -> str:
    """One row per evaluated model, one column per metric, as percentages."""
    heads = ("model", "ASR", "harmful refusal", "over-refusal", "benign compliance", "benign help",
             "harmful refusal (strings)", "over-refusal (strings)", "loops", "empty", "utility (MC acc.)")
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, r in results.items():
        cells = [name] + ["–" if math.isnan(r[k]) else f"{r[k]:.0%}" for k in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
