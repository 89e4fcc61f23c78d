"""``redgame toy dynamics`` and ``redgame toy crossplay`` run the way a user runs them."""

from __future__ import annotations

import json

import pytest

from redgame.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dynamics_json_and_outputs(capsys, tmp_path):
    code, out, _ = run(capsys, "toy", "dynamics", "--regime", "shared", "--seeds", "3", "--steps", "50",
                       "--param", "k=4", "--param", "log_every=1", "--param", "g=0.5", "--out", str(tmp_path),
                       "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["regime"] == "shared" and summary["seeds"] == 3 and summary["steps"] == 50
    assert summary["model"] == "tabular"
    assert 0 <= summary["selfplay_asr"] <= summary["best_response_asr"] <= 1
    # The per-seed numbers, and the means and intervals over them.
    per_seed = summary["per_seed"]
    assert [row["seed"] for row in per_seed] == [0, 1, 2]
    gaps = [row["best_response_asr"] - row["selfplay_asr"] for row in per_seed]
    assert summary["mirror_gap"] == pytest.approx(sum(gaps) / 3, abs=1e-12)
    low, high = summary["mirror_gap_ci"]
    assert min(gaps) - 1e-12 <= low <= summary["mirror_gap"] <= high <= max(gaps) + 1e-12
    hits = [row["selfplay_asr"] <= 0.05 and row["best_response_asr"] >= 0.5 for row in per_seed]
    assert [row["collapsed"] for row in per_seed] == hits and summary["collapse_rate"] == sum(hits) / 3
    assert summary["tangent"]["start"]["coupling"] == pytest.approx(0.5)  # the tabular coupling is g
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 51 * 3
    last = json.loads(lines[-1])
    assert last["step"] == 50 and last["run"] == 2 and "nash_conv" in last and "defender_class" in last
    assert summary["files"] == [str(tmp_path / name) for name in ("metrics.jsonl", "config.json", "asr.png",
                                                                  "refusal_by_style.png")]
    assert (tmp_path / "asr.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "refusal_by_style.png").stat().st_size > 1000
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["g"] == 0.5 and config["payoff"] == {"kind": "ZeroSum", "lam": 0.5, "unfaithful_penalty": 1.0,
                                                        "deflect_cost": 0.5}  # λ and the weights: the run rebuilds


def test_dynamics_neural_model(capsys):
    code, out, _ = run(capsys, "toy", "dynamics", "--regime", "bipolicy", "--model", "neural", "--seeds", "2",
                       "--steps", "30", "--param", "k=3", "--param", "fit_steps=50", "--param", "hidden=8", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["model"] == "neural" and len(summary["per_seed"]) == 2
    assert summary["tangent"]["start"]["coupling"] == 0.0  # one adapter per role: no coupling


@pytest.mark.parametrize("regime", ["bipolicy", "separate", "advgame", "sequential"])
def test_dynamics_table_for_every_regime(capsys, regime):
    code, out, _ = run(capsys, "toy", "dynamics", "--regime", regime, "--seeds", "2", "--steps", "20")
    assert code == 0
    assert f"regime: {regime}" in out and "mean" in out and "best_response_asr" in out


def test_crossplay_json(capsys):
    code, out, _ = run(capsys, "toy", "crossplay", "--seeds", "2", "--steps", "100", "--param", "k=4", "--json")
    assert code == 0
    meta = json.loads(out)
    for key in ("attackers", "defenders", "payoff_matrix", "attacker_mix", "defender_mix", "value"):
        assert key in meta
    assert meta["attackers"][-1] == "best_response"
    assert len(meta["payoff_matrix"]) == len(meta["attackers"]) == len(meta["attacker_mix"])
    assert abs(sum(meta["defender_mix"]) - 1) < 1e-9


@pytest.mark.parametrize("argv,culprit", [
    (["--regime", "shared", "--param", "lr=fast"], "lr"),
    (["--regime", "shared", "--param", "g=inf"], "g"),
    (["--regime", "shared", "--seeds", "1"], "--seeds"),
    (["--regime", "shared", "--model", "neural", "--param", "shift=1"], "shift"),
    (["--regime", "sequential", "--model", "neural"], "model"),
    (["--regime", "shared", "--model", "neural", "--param", "model=tabular"], "--param"),
    (["--regime", "shared", "--param", "nonsense=1"], "nonsense"),
    (["--regime", "shared", "--seeds", "2", "--param", "runs=3"], "--param"),
    (["--regime", "shared", "--game", "hidden_intent"], "regime"),
    (["--regime", "shared", "--steps", "0"], "--steps"),
    (["--regime", "shared", "--seeds", "-1"], "--seeds"),
    (["--regime", "shared", "--game", "chess"], "game"),
    (["--regime", "shared", "--param", "seed=-1"], "seed"),  # was numpy's ValueError, an internal error
    (["--regime", "shared", "--param", "lam=1e20"], "lam"),  # HiGHS failed in the solvers
    (["--regime", "shared", "--param", "init_scale=1e308", "--param", "g=1e308"], "init_scale"),  # was a TypeError
    (["--regime", "shared", "--param", "g=1e155"], "g"),  # --json printed Infinity, not JSON
    (["--regime", "shared", "--out", "/tmp/" + "y" * 300], "[Errno 36] File name too long"),
])
def test_bad_input_is_one_line_naming_the_culprit(capsys, argv, culprit):
    code, _, err = run(capsys, "toy", "dynamics", *argv)
    assert code == 2
    assert err.startswith(f"redgame: error: {culprit}") and err.count("\n") == 1


def test_cli_default_is_the_documented_reference_setting():
    from redgame.games.dynamics_cli import build_setting

    spec, config = build_setting("shared", None, None, None, None)
    assert (spec.n_seeds, spec.n_styles, spec.harmful_mask.tolist()) == (1, 8, [True])
    assert (config.steps, config.runs, config.lr, config.estimator, config.g) == (4000, 20, 0.5, "exact", 1.0)
    assert (config.model, config.init_scale, config.shift) == ("tabular", 1.0, 0)
    spec, config = build_setting("advgame", None, None, None, ["beta=0.2"])
    assert not spec.is_zero_sum and spec.name == "hidden_intent" and config.beta == 0.2


def test_an_earlier_run_is_replaced_only_with_overwrite_and_a_failed_write_keeps_it(capsys, tmp_path, monkeypatch):
    small = ["toy", "dynamics", "--regime", "shared", "--seeds", "2", "--steps", "5", "--param", "k=3",
             "--out", str(tmp_path)]
    assert run(capsys, *small)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, _, err = run(capsys, *small[:-2], "--regime", "bipolicy", "--out", str(tmp_path))
    assert code == 2 and "already holds a toy dynamics run (metrics.jsonl, config.json" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_text", full_disk)  # the metrics are written first
    code, out, err = run(capsys, *small, "--seeds", "3", "--overwrite")
    assert code == 2 and "No space left on device" in err
    assert "collapse" in out and "wrote" not in out  # the numbers were printed before the write failed
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # whole, and no temporary left
    assert run(capsys, *small, "--steps", "6", "--overwrite")[0] == 0
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 6
