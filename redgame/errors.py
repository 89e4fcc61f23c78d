"""Errors, and the one place that says which optional install provides a missing module.

- ``UserError``: a user mistake (a config key, a file, a parameter). The CLI prints its
  message in one line and exits 2. It is a ``ValueError``, so API callers that catch
  ``ValueError`` keep working.
- A ``ModuleNotFoundError`` for a module of an optional install (an *extra*) becomes one
  line naming the ``pip install`` to run (``missing_extra_message``).
- Anything else is a bug: the CLI says "internal error", exits 1, and ``--debug`` shows
  the traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a config, a file, a parameter. The message names the culprit."""


# Top-level module -> the extra of pyproject.toml that installs it.
EXTRA_OF_MODULE = {
    "torch": "llm",
    "transformers": "llm",
    "peft": "llm",
    "safetensors": "llm",
    "gguf": "llm",
    "tensorboard": "llm",
    "triton": "kernels",
    "vllm": "vllm",
    "cvxpy": "lp",
    "ecos": "lp",
    "mkdocs": "docs",
    "nbclient": "docs",
    "nbformat": "docs",
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line naming the install that provides the missing module, or None if no extra does."""
    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    hint = " (install the torch build for your machine first: see the README)" if extra in ("llm", "kernels") else ""
    return f"{root} is not installed; run: pip install 'redgame[{extra}]'{hint}"
