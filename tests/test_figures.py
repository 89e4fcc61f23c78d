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


def test_a_plot_name_is_checked_for_a_format_matplotlib_writes_and_its_folder_is_made(tmp_path):
    from redgame.errors import UserError
    from redgame.figures import check_figure_path

    for name in ("a.png", "a.JPG", "a.eps", "bare"):  # any format savefig writes; a bare name becomes a.png
        check_figure_path("--plot", tmp_path / name, example="roc.png")
    with pytest.raises(UserError, match="--plot .*a.txt: name a .png, .svg, .pdf file .or another format"):
        check_figure_path("--plot", tmp_path / "a.txt", example="roc.png")
    (tmp_path / "taken.png").mkdir()  # the file a bare name writes is checked, not the bare name
    with pytest.raises(UserError, match="is a folder"):
        check_figure_path("--plot", tmp_path / "taken", example="roc.png")
    fig = plt.figure()
    assert save_figure(fig, tmp_path / "new" / "f.svg") == tmp_path / "new" / "f.svg"
    (tmp_path / "file").write_text("")
    fig = plt.figure()
    with pytest.raises(OSError):  # the folder cannot be made: the figure is closed all the same
        save_figure(fig, tmp_path / "file" / "f.png")
    assert not plt.fignum_exists(fig.number)
