"""Shared fixtures of the LLM-game tests: a fresh tiny base per test, one judge per session, Ctrl-C in a step."""

import contextlib
import os
import signal

import pytest


@pytest.fixture
def tiny():
    """A fresh (model, tokenizer): build_roles injects adapters into the base it is given."""
    from redgame.llm.models import load_base

    return load_base("tiny")


@pytest.fixture(scope="session")
def judge():
    from redgame.llm.judges import make_judge

    return make_judge("embedded")


@pytest.fixture(scope="session")
def _worker_minilm(judge):
    from redgame.llm.embedder import RememberingEmbedder

    return RememberingEmbedder(judge.embedder)


@pytest.fixture
def remembered_minilm(_worker_minilm, monkeypatch):
    """One remembering MiniLM per worker, which ``train-judge`` also gets in place of a fresh one: the tests that
    retrain the embedded judge embed the same built-in exchanges (a minute each on 2 cores) once. The vectors
    are the same text for text (the embedder is deterministic and frozen)."""
    from redgame.llm import embedder

    monkeypatch.setattr(embedder, "MiniLMEmbedder", lambda *args, **kwargs: _worker_minilm)
    return _worker_minilm


def _tiny_config(**overrides):
    from redgame.llm.config import TrainConfig

    values = dict(model="tiny", steps=2, save_every=0, seeds_per_step=2, attacks_per_seed=2,
                  responses_per_attack=2, explore_prefixes=("I'm sorry",), attack_tokens=6,
                  response_tokens=6, min_margin=0.0, lr=1e-2, lora_rank=4, lora_alpha=8)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def tiny_config():
    """Makes a few-token game config on the tiny model: fast enough for CI."""
    return _tiny_config


@pytest.fixture
def ctrl_c_in_each_step(monkeypatch):
    """A context manager: inside it, this process sends itself SIGINT as each game step's judging starts (the
    trainer then stops after that step, checkpointed), with Python's own SIGINT handler in place."""
    import redgame.llm.trainer as trainer

    real = trainer.judge_round

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    @contextlib.contextmanager
    def pressed():
        monkeypatch.setattr(trainer, "judge_round", ctrl_c)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            monkeypatch.setattr(trainer, "judge_round", real)
    return pressed

