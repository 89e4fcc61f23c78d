"""Figures written as every output file here is: through a temporary file beside the target and a
rename (:func:`redgame.jsonio.replaced_atomically`), so a plot is never seen half written and an old
plot stays whole when the write fails."""

from __future__ import annotations

from pathlib import Path

from redgame.jsonio import replaced_atomically


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` (its format from the suffix, as ``savefig``
    reads it, and without one the default format with its extension added; ``kwargs`` go to
    ``savefig``), atomically, then close the figure; returns the path written."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.suffix:  # as savefig: the default format, its extension added
        path = path.with_name(f"{path.name}.{matplotlib.rcParams['savefig.format']}")
    try:
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], **kwargs)
    finally:
        plt.close(fig)
    return path
