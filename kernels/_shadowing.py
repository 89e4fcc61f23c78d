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
    elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
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
