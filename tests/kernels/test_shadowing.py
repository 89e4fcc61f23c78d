"""Python started in the checkout's root: the folder kernels/ must not hide PyPI's ``kernels``."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python_in_root(code: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _installed() -> bool:
    try:
        importlib.metadata.distribution("kernels")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="PyPI's kernels is not installed (transformers < 5.25 needs none)")
def test_import_kernels_in_the_root_is_the_installed_package_and_peft_loads():
    """It used to be the checkout's folder, and `import peft` (through transformers) failed with an ImportError."""
    done = _python_in_root(
        "import sys, kernels, peft\n"
        "import redgame.kernels as ours\n"
        "print(kernels.__file__); print(ours.__file__); print(callable(ours.lora_linear))\n"
        "print(sorted(k for k in sys.modules if k.startswith('kernels._shadowing')))\n")
    assert done.returncode == 0, done.stderr[-3000:]
    theirs, ours, api, leftover = done.stdout.splitlines()
    assert Path(theirs).parent != ROOT / "kernels" and Path(ours).parent == ROOT / "kernels"
    assert api == "True" and leftover == "[]"


def test_without_the_installed_package_the_name_is_an_import_error_that_says_where_ours_is():
    done = _python_in_root("import sys\nsys.path = [p for p in sys.path if 'packages' not in p]\nimport kernels\n")
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr or "ImportError" in done.stderr
    assert "the folder kernels/ there is redgame.kernels" in done.stderr


@pytest.mark.skipif(not _installed(), reason="PyPI's kernels is not installed")
def test_a_checkout_on_the_path_under_a_second_spelling_is_passed_too(tmp_path):
    """The root through a symbolic link as well: the hand-off found the checkout again, and recursed."""
    (tmp_path / "link").symlink_to(ROOT, target_is_directory=True)
    done = _python_in_root("import kernels\nprint(kernels.__file__)\n", pythonpath=str(tmp_path / "link"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()).parent.resolve() != ROOT / "kernels"
