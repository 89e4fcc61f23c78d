"""Figures written as every output file here is: through a temporary file beside the target and a
rename (:func:`redgame.jsonio.replaced_atomically`), so a plot is never seen half written and an old
plot stays whole when the write fails."""

from __future__ import annotations

from pathlib import Path

from redgame.errors import UserError, check_output_path
from redgame.jsonio import replaced_atomically

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_figure_path(flag: str, out, example: str) -> None:
    """One line, before any work, when ``out`` names a file of another kind than PNG, SVG or PDF (a name
    without a suffix is saved as PNG, :func:`save_figure`), or cannot be written
    (:func:`redgame.errors.check_output_path`)."""
    if Path(out).suffix and Path(out).suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"{flag} {out}: name a {', '.join(PLOT_SUFFIXES)} file, such as {example}")
    check_output_path(flag, out, "file", example=example)


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` (its format from the suffix, as ``savefig``
    reads it, and without one the default format with its extension added; ``kwargs`` go to
    ``savefig``), atomically, then close the figure; returns the path written."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.suffix:  # as savefig: the default format, its extension added
        path = path.with_name(f"{path.name}.{matplotlib.rcParams['savefig.format']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], **kwargs)
    finally:
        plt.close(fig)
    return path
