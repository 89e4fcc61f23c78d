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
    code, out, _ = run(capsys, "toy", "dynamics", "--regime", "shared", "--seeds", "2", "--steps", "50",
                       "--param", "k=4", "--out", str(tmp_path), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["regime"] == "shared" and summary["runs"] == 2 and summary["steps"] == 50
    assert 0 <= summary["selfplay_asr"] <= summary["best_response_asr"] <= 1
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 51 * 2
    last = json.loads(lines[-1])
    assert last["step"] == 50 and last["run"] == 1 and "nash_conv" in last and "defender_class" in last
    assert (tmp_path / "asr.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "refusal_by_style.png").stat().st_size > 1000
    assert json.loads((tmp_path / "config.json").read_text())["g"] == 1.0


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
    (["--regime", "shared", "--param", "g=2"], "g"),
    (["--regime", "shared", "--param", "nonsense=1"], "nonsense"),
    (["--regime", "shared", "--seeds", "2", "--param", "runs=3"], "--param"),
    (["--regime", "shared", "--game", "hidden_intent"], "regime"),
    (["--regime", "shared", "--steps", "0"], "--steps"),
    (["--regime", "shared", "--seeds", "-1"], "--seeds"),
    (["--regime", "shared", "--game", "chess"], "game"),
])
def test_bad_input_is_one_line_naming_the_culprit(capsys, argv, culprit):
    code, _, err = run(capsys, "toy", "dynamics", *argv)
    assert code == 2
    assert err.startswith(f"redgame: error: {culprit}") and err.count("\n") == 1


def test_cli_default_is_the_documented_reference_setting():
    from redgame.games.dynamics_cli import build_setting

    spec, config = build_setting("shared", None, None, None, None)
    assert (spec.n_seeds, spec.n_styles, spec.harmful_mask.tolist()) == (1, 8, [True])
    assert (config.steps, config.runs, config.lr, config.estimator, config.g) == (4000, 5, 0.5, "exact", 1.0)
    spec, config = build_setting("advgame", None, None, None, ["beta=0.2"])
    assert not spec.is_zero_sum and spec.name == "hidden_intent" and config.beta == 0.2
