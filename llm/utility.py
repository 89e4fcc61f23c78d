"""A utility proxy: multiple-choice accuracy scored by the model's log-likelihood.

Each question goes to the model as a user turn; each choice is scored as the assistant's
answer by its mean per-token log-probability, and the highest-scoring choice is the
model's pick (a length-normalised log-likelihood score for MMLU-style questions, Hendrycks et
al. 2021, arXiv 2009.03300; lm-evaluation-harness's ``acc_norm`` normalises by the choice's
characters instead of its tokens, so the two can pick differently).
Nothing is sampled, so the score is deterministic and cheap. It says whether safety training
kept the model's general knowledge, not how good an assistant it is.

The built-in set (``data/utility_mc.jsonl``, 32 general-knowledge questions, 4 choices each)
was written for this project. A user file is JSONL with ``question``, ``choices`` (a list
of at least two strings) and ``answer`` (the 0-based index of the right choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from redgame.errors import UserError
from redgame.jsonio import jsonl_rows
from redgame.llm.losses import completion_logprobs
from redgame.llm.prompts import chat_text, context_limit
from redgame.llm.userfiles import read_user_text


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int


def _question(row, where: str, default_id: str) -> Question:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
    q, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if not isinstance(q, str) or not q.strip():
        raise UserError(f"{where}: 'question' must be a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise UserError(f"{where}: 'choices' must be a list of at least two non-empty strings")
    twice = next((c for n, c in enumerate(choices) if c.strip() in [d.strip() for d in choices[:n]]), None)
    if twice is not None:  # the model scores both alike, so which one is the answer decides the score
        raise UserError(f"{where}: 'choices' holds {twice.strip()!r} twice")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise UserError(f"{where}: 'answer' must be an index in 0..{len(choices) - 1}, got {answer!r}")
    return Question(str(row.get("id", default_id)), q.strip(), tuple(c.strip() for c in choices), answer)


def load_questions(path: str | Path | None = None) -> list[Question]:
    """The built-in questions (``path`` None) or those of a user JSONL file."""
    if path is None:
        where, text = "built-in utility set", resources.files("redgame.llm").joinpath(
            "data/utility_mc.jsonl").read_text(encoding="utf-8")
    else:
        _, where, text = read_user_text(path, "utility")
    out = [_question(row, f"{where}, line {n}", f"q{n}") for n, row in jsonl_rows(text, where)]
    if not out:
        raise UserError(f"{where}: no questions in it")
    return out


def choice_jobs(model, tokenizer, questions: list[Question]) -> list[tuple[list[int], list[int]]]:
    """(prompt tokens, choice tokens) of every choice of every question, in order; a question that does not fit
    ``model``'s context with one of its choices is a one-line UserError (``llm eval`` checks before it generates)."""
    jobs, limit = [], context_limit(model)
    for q in questions:
        prompt = tokenizer(chat_text(tokenizer, [{"role": "user", "content": q.question}]),
                           add_special_tokens=False)["input_ids"]
        for choice in q.choices:
            jobs.append((prompt, tokenizer(choice, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]))
            if limit is not None and len(prompt) + len(jobs[-1][1]) > limit:
                raise UserError(f"utility question {q.id!r}: with its choice {choice[:40]!r} it is "
                                f"{len(prompt) + len(jobs[-1][1])} tokens, past the model's context of {limit}; "
                                "shorten it")
    return jobs


@torch.no_grad()
def choice_scores(model, tokenizer, questions: list[Question], batch_size: int = 32) -> list[list[float]]:
    """Mean per-token log-probability of every choice of every question, as the answer."""
    jobs, means = choice_jobs(model, tokenizer, questions), []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        lp = completion_logprobs(model, [p for p, _ in chunk], [c for _, c in chunk], tokenizer.pad_token_id)
        sums = lp.sums()
        means += (sums / torch.tensor([len(c) for _, c in chunk], device=sums.device)).tolist()
    out, k = [], 0
    for q in questions:
        out.append(means[k:k + len(q.choices)])
        k += len(q.choices)
    return out


def utility_accuracy(model, tokenizer, questions: list[Question]) -> dict:
    """``{"accuracy", "chance", "n"}``: the share of questions whose best-scored choice is right."""
    scores = choice_scores(model, tokenizer, questions)
    right = [max(range(len(s)), key=s.__getitem__) == q.answer for s, q in zip(scores, questions)]
    return {"accuracy": sum(right) / len(right),
            "chance": sum(1 / len(q.choices) for q in questions) / len(questions),
            "n": len(questions)}
