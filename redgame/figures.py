"""Figures written as every output file here is: through a temporary file beside the target and a
rename, so a plot is never seen half written and an old plot stays whole when the write fails."""

from __future__ import annotations

import os
from pathlib import Path


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` (its format from the suffix, as ``savefig``
    reads it, and without one the default format with its extension added; ``kwargs`` go to
    ``savefig``), atomically, then close the figure; returns the path written."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.suffix:  # as savefig: the default format, its extension added
        path = path.with_name(f"{path.name}.{matplotlib.rcParams['savefig.format']}")
    tmp = path.with_name(f".tmp.{path.name}")
    try:
        fig.savefig(tmp, format=path.suffix[1:], **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path
