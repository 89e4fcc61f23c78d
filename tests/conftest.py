import os
import sys

import pytest

# Offline always: no test may reach a model or data hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Under pytest-xdist each worker gets an equal share of the cores: torch's default (every core
# in every worker) oversubscribes them, and its threads then spin against each other (sampling
# on the embedded model ran 18x slower with 2 workers x 2 threads on 2 cores). Subprocesses
# (notebook kernels, CLI runs) inherit the setting through the environment.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))


@pytest.fixture(autouse=True)
def _keep_the_workers_thread_share():
    """A test that sets torch's thread count (a config's ``threads``) must not leave it to the tests
    that run after it in the same worker: they would oversubscribe the cores as above."""
    yield
    torch, share = sys.modules.get("torch"), os.environ.get("OMP_NUM_THREADS")
    if torch is not None and share and torch.get_num_threads() != int(share):
        torch.set_num_threads(int(share))


def pytest_collection_modifyitems(config, items):
    """The tests marked ``long`` first, in their own order: pytest-xdist hands tests out in collection order, and a
    long test that starts last keeps one worker busy while the other idles (up to 2.5 minutes of CI's 30).

    Only slow tests carry the mark. Where the fast suite's long tests (notebooks, the Triton interpreter) ran
    first, side by side, they slowed each other: that suite took 732 and 775 s on a 2-core EPYC, against 670
    and 701 s in collection order; the slow suite, all of it long, took 790 s against 805 and 845."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
