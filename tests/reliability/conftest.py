"""The reliability suite's fixtures."""

import pytest
from fault_runs import SMALL_GAME


@pytest.fixture(scope="module")
def small_game(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "small.toml"
    path.write_text(SMALL_GAME)
    return path
