"""benchmarks/steps_plot.py: rates by step from eval JSONs, their intervals against scipy's, the plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import steps_plot  # noqa: E402

from redgame.errors import UserError  # noqa: E402


def _eval_json(path: Path, step: int, harmful: float, benign: float, base: bool = False, run: str = "") -> str:
    rates = lambda h, b: {"harmful_refusal": h, "benign_compliance": b, "harmful_refusal_strings": h / 2,  # noqa: E731
                          "over_refusal_strings": 1 - b}
    results = {"adapter": rates(harmful, benign), **({"base": rates(0.0, 1.0)} if base else {})}
    adapter = f"runs/{run or path.stem}/checkpoints/step_{step:04d}/defender"  # one run a file unless said
    path.write_text(json.dumps({"adapter": adapter, "results": results}))
    return str(path)


def test_rates_by_step_and_their_intervals(tmp_path, capsys):
    values = {16: [(0.2, 0.9), (0.5, 1.0), (0.3, 0.95)], 32: [(0.9, 0.8), (0.7, 0.85), (1.0, 0.9)]}
    files = [_eval_json(tmp_path / f"{step}-{i}.json", step, h, b, base=(step == 16))
             for step, runs in values.items() for i, (h, b) in enumerate(runs)]
    groups = {"g": steps_plot.read_group(steps_plot.read_reports(files))}
    assert list(groups["g"]) == [0, 16, 32] and len(groups["g"][0]) == 3
    harmful = [100 * h for h, _ in values[32]]
    low, high = stats.t.interval(0.95, len(harmful) - 1, loc=sum(harmful) / 3, scale=stats.sem(harmful))
    assert steps_plot.t_interval(harmful) == pytest.approx((sum(harmful) / 3, low, high))
    assert [r["benign_compliance_strings"] for r in groups["g"][32]] == pytest.approx([80, 85, 90])
    line = [x for x in steps_plot.summary(groups) if "step 32" in x][0]
    assert f"harmful_refusal {sum(harmful) / 3:.1f} [{low:.1f}, {high:.1f}]" in line
    assert steps_plot.main(["--group", "g", *files, "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert steps_plot.main(["--group", "g", *files, "--out", str(tmp_path / "bare")]) == 0  # savefig adds .png
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {tmp_path / 'bare.png'}"
    assert (tmp_path / "bare.png").read_bytes()[:4] == b"\x89PNG"
    assert steps_plot.main(["--group", "g", *files, "--out", str(tmp_path / "new" / "p.svg")]) == 0  # folder made
    assert (tmp_path / "new" / "p.svg").is_file()
    with pytest.raises(UserError, match="--out .*p.txt: name a .png, .svg, .pdf file"):  # before the work, not after
        steps_plot.main(["--group", "g", *files, "--out", str(tmp_path / "p.txt")])


def test_base_results_that_are_no_object_are_one_line(tmp_path):
    path = Path(_eval_json(tmp_path / "e.json", 16, 0.5, 0.9, base=True))
    report = json.loads(path.read_text())
    report["results"]["base"] = "0.5"
    path.write_text(json.dumps(report))
    with pytest.raises(UserError, match="e.json: its base results are not an object of rates"):  # AttributeError
        steps_plot.read_group(steps_plot.read_reports([str(path)]))


def test_an_eval_of_no_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"adapter": "runs/x/final/defender", "results": {"adapter": {}}}))
    with pytest.raises(UserError, match="bad.json.*not a checkpoints/step_K folder"):
        steps_plot.read_group(steps_plot.read_reports([str(bad)]))


def test_a_group_or_a_file_given_twice_is_refused(tmp_path, monkeypatch):
    """A second group under one label dropped the first; one file twice counted one seed twice."""
    files = [_eval_json(tmp_path / f"{i}.json", 16, 0.5, 0.9) for i in range(3)]
    with pytest.raises(UserError, match="the label A is given twice"):
        steps_plot.main(["--group", "A", files[0], "--group", "A", *files[1:]])
    with pytest.raises(UserError, match="is given twice"):
        steps_plot.main(["--group", "A", files[0], files[0]])
    reads = []
    monkeypatch.setattr(steps_plot, "read_json_file",
                        lambda path, what: reads.append(path) or json.loads(Path(path).read_text()))
    assert steps_plot.main(["--group", "A", *files[:2], "--group", "B", *files[1:]]) == 0  # a common start: allowed
    assert sorted(reads) == sorted(files)  # each file read once
    monkeypatch.undo()
    with pytest.raises(UserError, match="cannot be read"):
        steps_plot.main(["--group", "A", str(tmp_path / "missing.json")])


def test_the_step_is_the_checkpoints_not_a_folder_named_like_one(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"adapter": "/runs/step_16_sweep-s0/checkpoints/step_4/defender",
                                "results": {"adapter": {"harmful_refusal": 0.5, "benign_compliance": 0.9,
                                                        "harmful_refusal_strings": 0.25, "over_refusal_strings": 0.1}}}))
    assert list(steps_plot.read_group(steps_plot.read_reports([str(path)]))) == [4]


def test_one_checkpoint_twice_or_files_measured_unalike_are_refused(tmp_path):
    """Two files of one checkpoint counted as two seeds; a validation file averaged with a test file, or two
    judges' rates, made one interval of two measurements."""
    a, b = (_eval_json(tmp_path / f"{name}.json", 16, 0.5, 0.9, run="x") for name in "ab")
    with pytest.raises(UserError, match="both evaluate runs/x/checkpoints/step_0016/defender; each checkpoint once"):
        steps_plot.read_group(steps_plot.read_reports([a, b]))
    test, validation = tmp_path / "test.json", tmp_path / "validation.json"
    for path, split, step in ((test, "test", 16), (validation, "validation", 32)):
        doc = json.loads(Path(_eval_json(path, step, 0.5, 0.9)).read_text())
        path.write_text(json.dumps({**doc, "harmful_file": f"built-in {split} split"}))
    with pytest.raises(UserError, match="measured with harmful_file 'built-in validation split'.*measured alike"):
        steps_plot.main(["--group", "A", str(test), str(validation)])
    judged = tmp_path / "probe.json"
    judged.write_text(json.dumps({**json.loads(test.read_text()), "eval_judge": "probe", "adapter": "r/checkpoints/step_8"}))
    with pytest.raises(UserError, match="eval_judge 'probe'"):
        steps_plot.main(["--group", "A", str(test), "--group", "B", str(judged)])


@pytest.mark.parametrize("rate", [None, "missing", 1.5])
def test_a_rate_that_is_null_missing_or_out_of_range_is_named(tmp_path, rate):
    path = tmp_path / "e.json"
    doc = json.loads(Path(_eval_json(path, 16, 0.5, 0.9)).read_text())
    if rate == "missing":
        del doc["results"]["adapter"]["benign_compliance"]
    else:
        doc["results"]["adapter"]["benign_compliance"] = rate
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="e.json: benign_compliance is not a rate in"):
        steps_plot.read_group(steps_plot.read_reports([str(path)]))
