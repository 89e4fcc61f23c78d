"""This folder imported as a top-level ``kernels``: hand that name to the installed package of that name.

The folder is ``redgame.kernels``. Python started in the root of a checkout (``python -c``, a
REPL, ``python -m pytest``) puts the root on ``sys.path``, where the folder also answers to
``import kernels``, the name of Hugging Face's kernel-hub package that transformers (5.25 and
later) imports. :func:`install_the_real_package` loads the installed one under that name instead,
so the checkout's root hides nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def install_the_real_package(our_init: str) -> None:
    """Put the installed ``kernels`` package, found on ``sys.path`` without this checkout's root, in
    ``sys.modules["kernels"]``; an ImportError when none is installed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(our_init)))
    elsewhere = list(sys.path)
    while True:  # past every redgame checkout on the path (one may be there under two spellings, or several)
        spec = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
        if spec is None or not _is_a_redgame_checkout(spec):
            break
        found = os.path.realpath(os.path.dirname(os.path.dirname(spec.origin)))
        elsewhere = [p for p in elsewhere if os.path.realpath(p or os.curdir) != found]
    sys.modules.pop(__name__, None)  # kernels._shadowing: no submodule of the package that takes the name
    if spec is None:
        raise ImportError(f"No module named 'kernels' outside {root}; the folder kernels/ there is "
                          "redgame.kernels: import it as redgame.kernels", name="kernels")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("kernels", None)
        raise


def _is_a_redgame_checkout(spec) -> bool:
    """Whether a found ``kernels`` package is a redgame checkout's folder (it holds this very module)."""
    return spec.origin is not None and os.path.isfile(os.path.join(os.path.dirname(spec.origin), "_shadowing.py"))
