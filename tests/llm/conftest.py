"""Shared fixtures of the LLM-game tests: a fresh tiny base per test, one judge per session."""

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
