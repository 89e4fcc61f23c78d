import os

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
