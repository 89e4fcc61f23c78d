"""Phase diagrams: every cell equals a plain run of its setting, the grid and its heatmaps as a user
runs them, and bad input as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from redgame.cli import main
from redgame.games.dynamics import DynamicsConfig, run_dynamics
from redgame.games.phase import parse_grid, phase_diagram
from redgame.games.stats import seed_summary
from redgame.theory.presets import make_spec


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _alone(regime, seeds, steps, k=4, **knobs):
    config = DynamicsConfig(regime=regime, runs=seeds, steps=steps, log_every=steps, **knobs)
    traj = run_dynamics(make_spec("mirror", k=k), config)
    return seed_summary(traj.metrics["selfplay_asr"][-1], traj.metrics["best_response_asr"][-1])


def test_each_cell_is_the_run_of_its_setting():
    """Batched knobs (g, init_scale), grouped ones (k) and horizons (steps) all give the numbers of
    one run_dynamics per cell."""
    diagram = phase_diagram("shared", {"g": ["0.5", "2"], "init_scale": [1, 3]}, seeds=3,
                            params={"k": "4", "steps": "60"})
    assert diagram.keys == ["g", "init_scale"] and [c["g"] for c in diagram.cells] == [0.5, 0.5, 2.0, 2.0]
    for cell in diagram.cells:
        want = _alone("shared", 3, 60, g=cell["g"], init_scale=cell["init_scale"])
        for name in ("selfplay_asr", "best_response_asr", "mirror_gap", "collapse_rate"):
            assert cell[name] == pytest.approx(float(want[name]), abs=1e-12), name
        np.testing.assert_allclose(cell["mirror_gap_ci"], want["mirror_gap_ci"], atol=1e-12)
        assert cell["tangent"]["start"]["coupling"] == pytest.approx(cell["g"])
    assert diagram.grid("mirror_gap").shape == (2, 2)
    recorded = diagram.to_json()  # phase.json names every fixed setting, so that a diagram can be rerun
    assert recorded["params"] == {"k": "4", "steps": "60"} and recorded["steps"] == 60
    assert "4" in recorded["spec"] and recorded["spec"] != recorded["game"]

    horizons = phase_diagram("bipolicy", {"steps": [20, 50], "k": [3, 4]}, seeds=2)
    assert horizons.to_json()["steps"] is None  # the grid sweeps them: no one count for every cell
    for cell in horizons.cells:
        want = _alone("bipolicy", 2, cell["steps"], k=cell["k"])
        assert cell["best_response_asr"] == pytest.approx(float(want["best_response_asr"]), abs=1e-12)


@pytest.mark.parametrize("regime", ["shared", "advgame"])
def test_a_sampled_cell_is_the_run_of_its_setting_whatever_the_grid_beside_it(regime):
    """estimator=sampled: every setting of a batch plays the same random draws (common random numbers),
    so a cell's numbers are those of its setting run alone (they changed with the other cells before)."""
    params = {"estimator": "sampled", "batch": "8", "steps": "40", **({"k": "4"} if regime == "shared" else {})}
    cells = [next(c for c in phase_diagram(regime, {"lr": grid}, seeds=3, params=params).cells if c["lr"] == 0.5)
             for grid in ([0.5], [0.1, 0.5], [0.5, 1.0, 2.0])]
    for cell in cells[1:]:
        for name in ("selfplay_asr", "best_response_asr"):
            assert cell[name] == pytest.approx(cells[0][name], abs=1e-12), name
    if regime == "shared":  # the mirror game, as _alone plays it
        alone = _alone(regime, 3, 40, lr=0.5, estimator="sampled", batch=8)
        assert cells[0]["best_response_asr"] == pytest.approx(float(alone["best_response_asr"]), abs=1e-12)


def test_phase_command_json_table_and_heatmaps(capsys, tmp_path):
    code, out, _ = run(capsys, "toy", "phase", "--regime", "shared", "--grid", "g=0.5,1", "--grid", "lam=0,1",
                       "--param", "benign=1", "--param", "k=3", "--param", "steps=40", "--seeds", "2",
                       "--out", str(tmp_path), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["grid"] == {"g": [0.5, 1.0], "lam": [0.0, 1.0]} and len(result["cells"]) == 4
    for cell in result["cells"]:
        assert cell["mirror_gap_ci"][0] <= cell["mirror_gap"] <= cell["mirror_gap_ci"][1]
        assert 0 <= cell["collapse_rate"] <= 1
    for metric in ("mirror_gap", "best_response_asr", "selfplay_asr", "collapse_rate"):
        assert (tmp_path / f"phase_{metric}.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "phase.json").read_text())["cells"] == result["cells"]
    assert result["files"] == json.loads((tmp_path / "phase.json").read_text())["files"] == \
        [str(tmp_path / name) for name in ("phase.json", "phase_mirror_gap.png", "phase_best_response_asr.png",
                                           "phase_selfplay_asr.png", "phase_collapse_rate.png")]
    code, out, _ = run(capsys, "toy", "phase", "--regime", "separate", "--grid", "k=2,3", "--seeds", "2",
                       "--param", "steps=10")
    assert code == 0 and "mirror gap" in out and out.count("\n") >= 5


def test_neural_phase(capsys):
    code, out, _ = run(capsys, "toy", "phase", "--regime", "shared", "--model", "neural", "--grid", "lr=0.05,0.5",
                       "--param", "k=3", "--param", "steps=20", "--param", "fit_steps=30", "--seeds", "2", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["model"] == "neural" and len(result["cells"]) == 2


def test_parse_grid():
    assert parse_grid(["g=0.5, 1,2", "k=4"]) == {"g": ["0.5", "1", "2"], "k": ["4"]}


@pytest.mark.parametrize("argv,culprit", [
    ([], "--grid: the grid is empty"),
    (["--grid", "g="], "--grid: g has no values"),
    (["--grid", "g"], "--grid: expected KEY=v1,v2"),
    (["--grid", "colour=1,2"], "colour: unknown parameter"),
    (["--grid", "g=1,1"], "--grid: g repeats a value"),
    (["--grid", "g=1,1.0"], "--grid: g repeats a value: 1, 1.0"),  # one value, as read
    (["--grid", "g=1", "--grid", "g=2"], "--grid: g is given twice"),
    (["--grid", "g=1", "--grid", "k=2", "--grid", "lr=1"], "--grid: at most 2 keys"),
    (["--grid", "g=1", "--seeds", "1"], "--seeds: must be >= 2"),
    (["--grid", "runs=2,3"], "--grid: runs is set by the phase diagram"),
    (["--grid", "model=neural"], "--grid: model is set by the phase diagram (use --regime / --seeds / --model)"),
    (["--grid", "g=1,2", "--param", "g=3"], "--grid: g is also given with --param"),
    (["--grid", "g=fast"], "g: expected float"),
    (["--grid", "k=0"], "k: need at least 1 style"),
])
def test_bad_input_is_one_line(capsys, argv, culprit):
    code, _, err = run(capsys, "toy", "phase", "--regime", "shared", "--param", "steps=2", *argv)
    assert code == 2
    assert err.startswith(f"redgame: error: {culprit}") and err.count("\n") == 1, err


def test_a_horizon_is_checked_as_a_runs_steps(capsys):
    code, _, err = run(capsys, "toy", "phase", "--regime", "shared", "--grid", "steps=0,5", "--param", "k=3")
    assert code == 2 and err == "redgame: error: steps: must be >= 1, got 0\n"


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "phase", "--help"])
    assert exit_info.value.code == 0 and "--grid" in capsys.readouterr().out


def test_an_earlier_phase_diagram_is_replaced_only_with_overwrite(capsys, tmp_path):
    small = ["toy", "phase", "--regime", "shared", "--grid", "g=0.5,1", "--param", "k=3", "--param", "steps=5",
             "--seeds", "2", "--out", str(tmp_path)]
    assert run(capsys, *small)[0] == 0
    before = (tmp_path / "phase.json").read_bytes()
    code, _, err = run(capsys, *small[:5], "g=1,2", *small[6:])
    assert code == 2 and "already holds a phase diagram (phase.json" in err and (tmp_path / "phase.json").read_bytes() == before
    assert run(capsys, *small[:5], "g=1,2", *small[6:], "--overwrite")[0] == 0
    assert json.loads((tmp_path / "phase.json").read_text())["grid"] == {"g": [1.0, 2.0]}


def test_a_failed_write_of_the_phase_diagram_still_prints_it(capsys, tmp_path, monkeypatch):
    import redgame.games.plots as plots

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_phase", full_disk)
    code, out, err = run(capsys, "toy", "phase", "--regime", "shared", "--grid", "g=0.5,1", "--param", "k=3",
                         "--param", "steps=5", "--seeds", "2", "--out", str(tmp_path / "phase"))
    assert code == 2 and "No space left on device" in err
    assert "mirror gap" in out and out.count("\n") >= 4 and "wrote" not in out
