"""Figures are written atomically: never half written, an old one kept whole when a write fails."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from redgame.figures import save_figure  # noqa: E402


def test_a_failed_write_keeps_the_old_figure_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "plot.png"
    fig, _ = plt.subplots()
    assert save_figure(fig, path) == path and path.read_bytes()[:4] == b"\x89PNG"
    before = path.read_bytes()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(fig), "savefig", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_figure(fig, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert not plt.fignum_exists(fig.number)  # closed either way


@pytest.mark.parametrize("name, written, magic", [("plot.svg", "plot.svg", b"<?xml"), ("plot.PDF", "plot.PDF", b"%PDF"),
                                                 ("plot", "plot.png", b"\x89PNG")])
def test_the_format_comes_from_the_name_as_savefig_reads_it(tmp_path, name, written, magic):
    fig, _ = plt.subplots()
    assert save_figure(fig, tmp_path / name) == tmp_path / written
    assert (tmp_path / written).read_bytes()[:len(magic)] == magic and len(list(tmp_path.iterdir())) == 1
