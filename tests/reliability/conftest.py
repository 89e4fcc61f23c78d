"""The reliability suite's fixtures."""

import pytest
from fault_runs import SMALL_GAME, ComputeStarted


@pytest.fixture(scope="module")
def small_game(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "small.toml"
    path.write_text(SMALL_GAME)
    return path


@pytest.fixture
def no_compute(monkeypatch):
    """Model loading and the judge replaced by :class:`ComputeStarted`: proof that no compute started."""
    from redgame.llm import judges, models

    def refuse(*args, **kwargs):
        raise ComputeStarted

    monkeypatch.setattr(models, "load_base", refuse)
    monkeypatch.setattr(judges, "make_judge", refuse)
