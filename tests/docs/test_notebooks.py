"""Every teaching notebook in docs/notebooks runs top to bottom from a clean kernel.

The notebooks are stored without outputs (the site renders them as stored; the outputs come
from running them). Each runs in a fresh ipykernel of this very interpreter, whose kernelspec is
written to a temporary directory, so no kernelspec installed elsewhere can pick another Python.
Notebooks assert their own results (values against closed forms, classes), so a wrong result
fails here too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the docs extra is not installed: pip install -e '.[docs]'")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "docs" / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 600  # per cell; the issue allows 10 minutes per notebook on a 2-core CPU
KERNEL = "redgame-test"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(str(root / KERNEL))  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    return root


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks under docs/notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, f"{path.name}: cells {with_outputs} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, kernel_dir, tmp_path):
    nb = nbformat.read(path, as_version=4)
    # The kernel gets matplotlib's inline backend (not the Agg of conftest) and stays offline.
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(
        nb, km=km, timeout=TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)  # raises CellExecutionError, with the traceback, on the first failing cell
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors
    stderr = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
                     if out.output_type == "stream" and out.get("name") == "stderr")
    assert "IProgress not found" not in stderr, f"{path.name}: tqdm's widget warning reached the reader"
    if "plt.show()" in "".join(c.source for c in nb.cells if c.cell_type == "code"):
        assert images, f"{path.name}: its plots produced no images"
