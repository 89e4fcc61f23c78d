"""Figures written as every output file here is: through a temporary file beside the target and a
rename (:func:`redgame.jsonio.replaced_atomically`), so a plot is never seen half written and an old
plot stays whole when the write fails."""

from __future__ import annotations

from pathlib import Path

from redgame.errors import UserError, check_output_path
from redgame.jsonio import replaced_atomically

def figure_file(path: str | Path) -> Path:
    """The file :func:`save_figure` writes for ``path``: a name without a suffix gets the default format's
    (as ``savefig`` does)."""
    import matplotlib

    path = Path(path)
    return path if path.suffix else path.with_name(f"{path.name}.{matplotlib.rcParams['savefig.format']}")


def check_figure_path(flag: str, out, example: str) -> None:
    """One line, before any work, when ``out`` names a format matplotlib does not write, or when its file
    (:func:`figure_file`) cannot be written (:func:`redgame.errors.check_output_path`)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path, formats = figure_file(out), FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise UserError(f"{flag} {out}: name a .png, .svg, .pdf file (or another format matplotlib writes: "
                        f"{', '.join(sorted(formats))}), such as {example}")
    check_output_path(flag, path, "file", example=example)


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` (its format from the suffix, as ``savefig``
    reads it, and without one the default format with its extension added; ``kwargs`` go to
    ``savefig``), atomically, into a folder made if missing, then close the figure; returns the path written."""
    import matplotlib.pyplot as plt

    path = figure_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], **kwargs)
    finally:
        plt.close(fig)
    return path
