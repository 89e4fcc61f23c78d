"""The claims experiment's statistics (against closed forms) and its --smoke run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from redgame.llm.claims import comparisons, diff_ci, markdown, regime_table

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_claims.py"


def test_difference_interval_approaches_the_normal_theory_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 2.0, 300)
    half = 1.96 * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    lo, hi = diff_ci(a, b)
    centre = a.mean() - b.mean()
    assert lo == pytest.approx(centre - half, abs=0.05) and hi == pytest.approx(centre + half, abs=0.05)


def test_constant_samples_give_a_point_interval_that_decides_nothing():
    assert diff_ci([0.5, 0.5, 0.5], [0.25, 0.25]) == pytest.approx((0.25, 0.25))
    table = regime_table(_runs({"base": [0.125], "shared": [0.0, 0.0], "defender-sft": [0.25, 0.25]}))
    assert not any(r["decided"] for r in comparisons(table))  # two seeds that agree exactly: no spread seen
    # seeds that agree exactly at a value whose float mean rounds (17 of 72 prompts; 0.2 against 0.1)
    table = regime_table(_runs({"base": [0.0], "shared": [17 / 72] * 3, "defender-sft": [0.2] * 3,
                                "bipolicy": [0.1] * 6}))
    assert not any(r["decided"] for r in comparisons(table))
    low, high = diff_ci([0.2] * 3, [0.1] * 2)
    assert low == high


def test_intervals_are_scipys_welch_and_one_sample_t():
    """Two seeds that agree do not decide: the t interval of n = 2 is wide (a bootstrap's was their range)."""
    from scipy import stats

    a, b = [0.6, 0.7, 0.65, 0.2], [0.1, 0.3, 0.05]
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff_ci(a, b) == pytest.approx((welch.low, welch.high))
    one = stats.ttest_1samp(np.array(a) - 0.1, 0.0).confidence_interval(0.95)
    assert diff_ci(a, [0.1]) == pytest.approx((one.low, one.high))
    low, high = diff_ci([0.5, 0.6], [0.0])
    assert low < 0 < high  # 0.5 and 0.6 against 0: mean 0.55, but t(1) makes the half-width 0.64
    assert regime_table(_runs({"x": a}))["x"]["harmful_refusal"]["ci"] == pytest.approx(
        list(stats.ttest_1samp(a, 0.0).confidence_interval(0.95)))


def test_regimes_on_the_same_seeds_are_compared_seed_by_seed():
    """A seed fixes the training prompts, the initialisation and the sampling in every regime: Welch's t took two
    regimes run on seeds 0..5 as independent, wide where a seed moves both alike (λ = 3 against 1 on the demo's
    validation seeds, correlation 0.96: [-59, +21] where the paired interval is [-39, +0.1])."""
    from scipy import stats

    from redgame.games.stats import seeds_to_decide
    from redgame.llm.claims import EFFECT

    lam1, lam3 = [0.22, 0.0, 0.22, 0.0, 0.33, 1.0], [0.0, 0.0, 0.0, 0.0, 0.11, 0.5]
    paired = stats.ttest_rel(lam3, lam1)
    assert diff_ci(lam3, lam1, paired=True) == pytest.approx(tuple(paired.confidence_interval(0.95)))
    order = [3, 0, 5, 1, 4, 2]  # the rows in another order: paired by seed, not by position
    runs = {"bipolicy": [{"harmful_refusal": v, "seed": s} for s, v in enumerate(lam3)],
            "defender-sft": [{"harmful_refusal": lam1[s], "seed": s} for s in order]}
    row = next(r for r in comparisons(regime_table(runs)) if r["b"] == "defender-sft")
    assert row["paired"] and row["ci"] == pytest.approx(list(paired.confidence_interval(0.95)))
    assert row["p"] == pytest.approx(paired.pvalue)
    assert row["seeds_to_decide"] == seeds_to_decide(EFFECT, np.std(np.subtract(lam3, lam1), ddof=1), one_sample=True)
    welch = stats.ttest_ind(lam3, lam1, equal_var=False)
    for seed_of in (lambda s: {"seed": s + 10}, lambda s: {"seed": None}, lambda s: {}):  # other seeds, none known
        runs["defender-sft"] = [{"harmful_refusal": v, **seed_of(s)} for s, v in enumerate(lam1)]
        row = next(r for r in comparisons(regime_table(runs)) if r["b"] == "defender-sft")
        assert not row["paired"] and row["ci"] == pytest.approx(list(welch.confidence_interval(0.95)))
    with pytest.raises(ValueError, match="at least 2 values a side"):
        diff_ci([0.5], [0.1, 0.3])


def _runs(values: dict[str, list[float]], metric="harmful_refusal") -> dict:
    return {regime: [{metric: v} for v in vs] for regime, vs in values.items()}


def test_a_comparison_is_decided_only_when_its_interval_excludes_zero():
    table = regime_table(_runs({"base": [0.1], "bipolicy": [0.6, 0.7, 0.65], "shared": [0.05, 0.2, 0.1],
                                "defender-sft": [0.1, 0.7, 0.4]}))
    assert table["bipolicy"]["harmful_refusal"]["mean"] == pytest.approx(0.65)
    assert table["base"]["harmful_refusal"]["ci"] is None  # one value: no interval
    rows = {(r["a"], r["b"], r["metric"]): r for r in comparisons(table)}
    assert rows["bipolicy", "base", "harmful_refusal"]["decided"]       # 0.6..0.7 vs 0.1
    assert not rows["shared", "base", "harmful_refusal"]["decided"]     # 0.05..0.2 covers 0.1
    assert not rows["bipolicy", "defender-sft", "harmful_refusal"]["decided"]  # sft spreads over 0.1..0.7
    assert rows["bipolicy", "base", "harmful_refusal"]["diff"] == pytest.approx(0.55)


def test_report_names_what_is_decided():
    table = regime_table(_runs({"base": [0.0], "bipolicy": [0.5, 0.6, 0.55]}))
    summary = {"table": table, "comparisons": comparisons(table), "split": "test", "n_harmful": 2, "n_benign": 2,
               "steps": 1, "probe_steps": 1, "seeds": [0, 1, 2], "eval_judge": "embedded", "shared_loss": "reinforce",
               "total_seconds": 60, "load_start": 1.0, "load_end": 1.0}
    text = markdown(summary)
    assert "| bipolicy changes harmful_refusal over the base | +0.55 |" in text and "| yes: higher |" in text


def test_a_seed_without_a_value_is_shown_in_its_cell():
    """A seed whose answers the judge could not read has a NaN rate: it was left out of the mean, and the table
    said 3 seeds."""
    runs = _runs({"base": [0.0], "bipolicy": [0.5, 0.6, float("nan")]})
    runs["bipolicy"] = [{**r, "benign_compliance": 0.9} for r in runs["bipolicy"]]
    table = regime_table(runs)
    summary = {"table": table, "comparisons": comparisons(table), "split": "test", "n_harmful": 2, "n_benign": 2,
               "steps": 1, "probe_steps": 1, "seeds": [0, 1, 2], "eval_judge": "embedded", "shared_loss": "reinforce",
               "total_seconds": 60, "load_start": 1.0, "load_end": 1.0}
    row = next(line for line in markdown(summary).splitlines() if line.startswith("| bipolicy | 3 |"))
    assert "0.55 [" in row and "] (2 of 3 seeds)" in row and "0.90 [0.90, 0.90] |" in row


def test_a_directional_claim_whose_interval_is_below_zero_is_decided_the_other_way():
    table = regime_table(_runs({"shared": [0.03, 0.05, 0.04], "bipolicy": [0.44, 0.46, 0.45],
                                "advgame": [0.0, 0.1, 0.05]}, metric="mirror_gap"))
    rows = {r["claim"]: r for r in comparisons(table)}
    larger = rows["shared keeps a larger mirror gap than bipolicy"]
    assert larger["decided"] and larger["ci"][1] < 0 and larger["verdict"] == "the opposite"
    assert rows["bipolicy's mirror gap is above zero"]["verdict"] == "holds"
    assert rows["shared keeps a larger mirror gap than advgame"]["verdict"] == "not decided"
    summary = {"table": table, "comparisons": list(rows.values()), "split": "test", "n_harmful": 2, "n_benign": 2,
               "steps": 1, "probe_steps": 1, "seeds": [0, 1, 2], "eval_judge": "embedded", "shared_loss": "reinforce",
               "total_seconds": 60, "load_start": 1.0, "load_end": 1.0}
    text = markdown(summary)
    assert "| yes: the opposite |" in text and "shared keeps a larger mirror gap than bipolicy (the opposite)" in text


def test_the_report_decides_something_false_at_most_five_percent_of_the_time(monkeypatch):
    """Every regime alike, the base at the true mean, no mirror gap: each comparison decided alone by its 95%
    interval, at least one of the 38 was "decided" in about 70% of such experiments; Holm keeps it near 5%."""
    from redgame.llm import claims

    monkeypatch.setattr(claims, "seeds_to_decide", lambda *a, **k: None)  # not what is measured here, and slow
    rng = np.random.default_rng(0)
    metrics = ("harmful_refusal", "harmful_refusal_strings", "benign_compliance", "mirror_gap")
    regimes = ("shared", "bipolicy", "advgame", "defender-sft", "defender-vs-frozen")
    experiments, any_decided, any_alone = 120, 0, 0
    for _ in range(experiments):
        results = {"base": [{m: 0.0 for m in metrics}]}
        results |= {g: [{m: float(rng.normal(0.0, 0.1)) for m in metrics} for _ in range(3)] for g in regimes}
        rows = comparisons(regime_table(results))
        any_decided += any(r["decided"] for r in rows)
        any_alone += any(r["ci"] is not None and (r["ci"][0] > 0 or r["ci"][1] < 0) for r in rows)
    assert len(rows) == 38
    assert any_alone / experiments > 0.5 and any_decided / experiments < 0.08, (any_alone, any_decided)


def test_undecided_comparisons_say_how_many_seeds_would_decide():
    from redgame.games.stats import pooled_sd, seeds_to_decide
    from redgame.llm.claims import EFFECT

    values = {"base": [0.0], "bipolicy": [0.0, 0.4, 0.1], "defender-sft": [0.3, 0.0, 0.2], "advgame": [0.2, 0.2]}
    table = regime_table(_runs(values))
    rows = {(r["a"], r["b"]): r for r in comparisons(table)}
    two_arms = rows["bipolicy", "defender-sft"]
    assert not two_arms["decided"]
    assert two_arms["seeds_to_decide"] == seeds_to_decide(EFFECT, pooled_sd(values["bipolicy"], values["defender-sft"]))
    assert rows["bipolicy", "base"]["seeds_to_decide"] == seeds_to_decide(EFFECT, pooled_sd(values["bipolicy"]),
                                                                          one_sample=True)
    assert rows["advgame", "base"]["seeds_to_decide"] is None  # no spread over its seeds
    summary = {"table": table, "comparisons": list(rows.values()), "split": "test", "n_harmful": 2, "n_benign": 2,
               "steps": 1, "probe_steps": 1, "seeds": [0, 1, 2], "eval_judge": "embedded", "shared_loss": "reinforce",
               "total_seconds": 60, "load_start": 1.0, "load_end": 1.0}
    text = markdown(summary)
    assert f"| no | {two_arms['seeds_to_decide']} |" in text and "| advgame changes harmful_refusal over the base" in text


@pytest.mark.slow
@pytest.mark.long
def test_smoke_run_writes_report_json_and_plot(tmp_path):
    out = tmp_path / "claims"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--eval-judge", "lm:tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "claims.json").read_text())
    assert set(summary["runs"]) == {"base", "shared", "defender-sft"}
    # the held-out rates and the probe are read by the evaluation judge; training kept the embedded one
    assert summary["eval_judge"] == "lm:tiny"
    assert json.loads((out / "shared-s0" / "probe" / "probe.json").read_text())["eval_judge"] == "lm:tiny"
    assert json.loads((out / "shared-s0" / "config.json").read_text())["judge"] == "embedded"
    assert all("mirror_gap" in r for r in summary["runs"]["shared"])
    assert (out / "claims.png").stat().st_size > 0 and "What is decided" in (out / "claims.md").read_text()


def _training_numbers(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if isinstance(v, float) and not k.startswith("time/") and k != "tokens_per_s"}
            for r in rows]


@pytest.mark.slow
@pytest.mark.long
def test_runs_in_parallel_jobs_train_as_they_would_alone(tmp_path):
    for jobs in (1, 2):
        done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--jobs", str(jobs), "--threads", "1",
                               "--out", str(tmp_path / f"jobs{jobs}")], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    for run in ("shared-s0", "shared-s1", "defender-sft-s0", "defender-sft-s1"):
        alone, parallel = (_training_numbers(tmp_path / f"jobs{j}" / run) for j in (1, 2))
        assert [sorted(r) for r in alone] == [sorted(r) for r in parallel]
        for a, b in zip(alone, parallel):
            assert b == pytest.approx(a, rel=1e-5, abs=1e-6, nan_ok=True)
    summaries = [json.loads((tmp_path / f"jobs{j}" / "claims.json").read_text()) for j in (1, 2)]
    assert summaries[0]["runs"] == summaries[1]["runs"] and summaries[1]["jobs"] == 2


def test_reuse_is_keyed_by_the_model_and_a_cut_cache_file_is_measured_again(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    import dataclasses

    import llm_claims

    setting = llm_claims.Setting(model="tiny", steps=1, probe_steps=1, split="validation", prompts=2, tokens=4,
                                 device="cpu", dtype="float32", threads=1, reuse=True, recipe=None)
    for other in (dataclasses.replace(setting, model="embedded"), dataclasses.replace(setting, eval_judge="probe")):
        assert llm_claims.measured_as(setting) != llm_claims.measured_as(other)  # nor one judge's another's
    assert "eval_judge" not in llm_claims.measured_as(setting)  # rows saved before the flag were the embedded judge's
    path = tmp_path / "base_row.json"
    calls = []
    compute = lambda: calls.append(1) or {"asr": 0.5}  # noqa: E731
    measured = llm_claims.measured_as(setting)
    assert llm_claims.cached(path, measured, True, compute, ("asr",)) == {"asr": 0.5}
    assert llm_claims.cached(path, measured, True, compute, ("asr",)) == {"asr": 0.5} and len(calls) == 1
    path.write_text('{"measured": {"split"')  # a write a kill cut short
    assert llm_claims.cached(path, measured, True, compute, ("asr",)) == {"asr": 0.5} and len(calls) == 2
    assert json.loads(path.read_text())["row"] == {"asr": 0.5}
    for row in ({}, {"asr": "0.5"}, {"asr": True}, []):  # edited by hand: a metric gone, or not a number (KeyError)
        path.write_text(json.dumps({"measured": measured, "row": row}))
        assert llm_claims.cached(path, measured, True, compute, ("asr",)) == {"asr": 0.5}
    assert len(calls) == 6
    # a null (a strict JSON writer's NaN) is no value: NaN, which the tables skip; it reached a format string
    path.write_text(json.dumps({"measured": measured, "row": {"asr": None, "seed": 1}}))
    row = llm_claims.cached(path, measured, True, compute, ("asr",))
    assert len(calls) == 6 and row["asr"] != row["asr"] and row["seed"] == 1


def test_a_retrained_run_is_measured_again_and_a_stopped_one_resumes_with_reuse(tmp_path, monkeypatch, capsys):
    """A rerun at more steps, killed after training, left the row of the earlier weights, which --reuse then
    reported; a run stopped by Ctrl-C went on to be measured, failed without its final adapters, and --reuse
    trained it again from scratch."""
    sys.path.insert(0, str(SCRIPT.parent))
    import llm_claims
    from redgame.llm import checkpoint, models, probe, trainer
    from redgame.llm.demo import DEMO_RECIPE

    recipe = llm_claims.claims_recipe(DEMO_RECIPE)
    setting = llm_claims.Setting(model="tiny", steps=2, probe_steps=1, split="validation", prompts=2, tokens=4,
                                 device="cpu", dtype="float32", threads=1, reuse=True, recipe=recipe)
    run = tmp_path / "shared-s0"
    (run / "final" / "defender").mkdir(parents=True)
    before = llm_claims.regime_config(recipe, "shared", 0, 1, "tiny", "cpu", "float32")
    (run / "config.json").write_text(json.dumps(before.to_dict()))
    (run / "claims_row.json").write_text(json.dumps({"measured": llm_claims.measured_as(setting),
                                                     "row": {"mirror_gap": 0.9}}))  # of the 1-step weights
    calls = []

    def train(cfg, out, *, resume, overwrite, **kwargs):  # as the trainer: a fresh start removes the old weights
        calls.append((cfg.steps, resume, overwrite))
        if overwrite:
            shutil.rmtree(out / "final")
        (out / "config.json").write_text(json.dumps(cfg.to_dict()))
        stopped = len(calls) == 1
        if not stopped:
            (out / "final" / "defender").mkdir(parents=True)
        return {"stopped": stopped, "interrupted": stopped, "steps": 1 if stopped else cfg.steps}

    monkeypatch.setattr(trainer, "train", train)
    monkeypatch.setattr(models, "load_base", lambda *a, **k: None)
    monkeypatch.setattr(llm_claims, "judges_and_place", lambda s: (None, None, ("cpu", None)))
    monkeypatch.setattr(llm_claims, "evaluate_run", lambda *a: {"harmful_refusal": 0.5})
    monkeypatch.setattr(probe, "probe", lambda *a, **k: {"selfplay_asr": 0.1, "best_response_asr": 0.3,
                                                         "mirror_gap": 0.2})
    with pytest.raises(KeyboardInterrupt):  # exit 130, as for a Ctrl-C anywhere else in the script
        llm_claims.train_and_measure(setting, tmp_path, "shared", 0)
    assert "shared-s0 stopped at step 1; run the same command with --reuse" in capsys.readouterr().err
    assert calls == [(2, False, True)] and not (run / "claims_row.json").exists()
    monkeypatch.setattr(checkpoint, "latest_checkpoint", lambda r: r / "checkpoints" / "step_0001")
    row = llm_claims.train_and_measure(setting, tmp_path, "shared", 0)
    assert calls[1] == (2, True, False) and row["mirror_gap"] == 0.2  # resumed, then measured


def test_a_run_checkpointed_otherwise_is_the_same_run_and_is_not_trained_again(tmp_path, monkeypatch):
    """Runs checkpoint as the recipe says (the demo's: every 4 steps, the newest kept); one saved when they
    checkpointed only at the end trained the same weights, and --reuse keeps it."""
    import dataclasses

    sys.path.insert(0, str(SCRIPT.parent))
    import llm_claims
    from redgame.llm import models, probe, trainer
    from redgame.llm.demo import DEMO_RECIPE

    recipe = llm_claims.claims_recipe(DEMO_RECIPE)
    setting = llm_claims.Setting(model="tiny", steps=1, probe_steps=1, split="validation", prompts=2, tokens=4,
                                 device="cpu", dtype="float32", threads=1, reuse=True, recipe=recipe)
    cfg = llm_claims.regime_config(recipe, "bipolicy", 0, 1, "tiny", "cpu", "float32")
    assert (cfg.save_every, cfg.keep_checkpoints) == (DEMO_RECIPE.save_every, DEMO_RECIPE.keep_checkpoints) == (4, 1)
    run = tmp_path / "bipolicy-s0"
    (run / "final" / "defender").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dataclasses.replace(cfg, save_every=0, keep_checkpoints=0).to_dict()))
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("the run was trained again"))
    monkeypatch.setattr(models, "load_base", lambda *a, **k: None)
    monkeypatch.setattr(llm_claims, "judges_and_place", lambda s: (None, None, ("cpu", None)))
    monkeypatch.setattr(llm_claims, "evaluate_run", lambda *a: {"harmful_refusal": 0.5})
    monkeypatch.setattr(probe, "probe", lambda *a, **k: {"selfplay_asr": 0.1, "best_response_asr": 0.3,
                                                         "mirror_gap": 0.2})
    assert llm_claims.train_and_measure(setting, tmp_path, "bipolicy", 0)["mirror_gap"] == 0.2


def test_an_unknown_evaluation_judge_is_refused_before_any_run(capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    import llm_claims

    with pytest.raises(SystemExit) as exit_:
        llm_claims.parse(["--eval-judge", "nope"])
    assert exit_.value.code == 2 and "--eval-judge: unknown judge 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [(["--seeds", "0", "1", "0"], "--seeds repeats 0: each run once"),
                                           (["--regimes", "shared", "shared"], "--regimes repeats shared"),
                                           (["--probe-steps", "0"], "--probe-steps must be at least 1, got 0"),
                                           (["--steps", "0"], "--steps must be at least 1, got 0"),
                                           (["--prompts", "1"], "--prompts must be 0 (all) or at least 2"),
                                           (["--prompts", "-1"], "--prompts must be 0 (all) or at least 2"),
                                           (["--eval-tokens", "-3"], "--eval-tokens must be at least 0")])
def test_a_run_given_twice_or_a_bad_size_is_refused_before_any_run(capsys, argv, message):
    """One run counted twice would narrow every interval to nothing; a size the probe refuses was refused only
    after the first run had trained."""
    sys.path.insert(0, str(SCRIPT.parent))
    import llm_claims

    with pytest.raises(SystemExit) as exit_:
        llm_claims.parse(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_every_regime_plays_the_demo_recipe_less_what_only_some_can_train_with():
    """The demo's recipe scores the greedy answer (refused with shared's REINFORCE++) and weights the payoff
    (refused with advgame's pairwise rewards): built from it as it is, two of the five regimes fail."""
    import dataclasses

    sys.path.insert(0, str(SCRIPT.parent))
    import llm_claims
    from redgame.errors import UserError
    from redgame.llm.demo import DEMO_RECIPE

    with pytest.raises(UserError, match="greedy_candidates"):
        llm_claims.regime_config(DEMO_RECIPE, "shared", 0, 1, "tiny", "cpu", "float32")
    with pytest.raises(UserError, match="payoff_weights"):
        llm_claims.regime_config(dataclasses.replace(DEMO_RECIPE, greedy_candidates=False), "advgame", 0, 1, "tiny",
                                 "cpu", "float32")
    recipe = llm_claims.claims_recipe(DEMO_RECIPE)
    for regime in llm_claims.REGIMES:
        cfg = llm_claims.regime_config(recipe, regime, 0, 1, "tiny", "cpu", "float32")
        assert (cfg.greedy_candidates, cfg.payoff_weights, cfg.judge) == (False, (), "embedded")
        assert (cfg.lr, cfg.explore_prefixes, cfg.response_tokens) == (DEMO_RECIPE.lr, DEMO_RECIPE.explore_prefixes,
                                                                        DEMO_RECIPE.response_tokens)


def test_a_training_judge_other_than_the_embedded_one_is_refused_before_anything_trains(tmp_path):
    """Every claims run trains against the embedded judge; --set judge=probe was recorded in each run's config as if
    the runs had trained against the probe."""
    sys.path.insert(0, str(SCRIPT.parent))
    import llm_claims
    from redgame.errors import UserError

    with pytest.raises(UserError, match="--set judge=probe: the claims train every regime against the embedded"):
        llm_claims.main(["--smoke", "--set", "judge=probe", "--out", str(tmp_path / "claims")])
    assert not (tmp_path / "claims").exists()
