"""Kill -9 and resume, and a diverging (NaN) run: a run stopped anywhere loses nothing.

The issue's command, ``redgame llm train --model tiny --regime bipolicy --steps 8
--save-every 1 --seed 3``, is killed with SIGKILL at 5 places chosen at random per run
(distinct steps, distinct points, always one in the middle of a checkpoint write; see
``faulty_cli.KILL_POINTS``) and resumed with ``--resume`` after each. After every kill
each visible checkpoint must be complete, loadable and equal to the uninterrupted run's
checkpoint of the same step; at the end the adapters must equal the uninterrupted run's.
Set ``REDGAME_FAULT_SEED`` to replay one draw of kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from fault_runs import TRAIN, adapter, check_checkpoint, max_abs_diff, run_cli, start_cli
from faulty_cli import KILL_POINTS

STEPS = 8
KILLS = 5


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_game):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run_cli([*TRAIN, "--config", small_game, "--out", out])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def kill_plan(seed: int) -> list[tuple[str, int]]:
    """KILLS (point, step) pairs at increasing steps, so that each resumed run reaches the next."""
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, STEPS + 1), KILLS))
    middle = [p for p in KILL_POINTS if p not in ("checkpoint-mid-write", "final-write")]
    points = ["checkpoint-mid-write", *rng.sample(middle, KILLS - 1)]
    rng.shuffle(points)
    if steps[-1] == STEPS and rng.random() < 0.5:
        points[-1] = "final-write"  # only the last step writes the final adapters
    return list(zip(points, steps))


def visible_checkpoints(run) -> list:
    root = run / "checkpoints"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def assert_same_final(run, reference):
    for role in ("attacker", "defender"):
        diff = max_abs_diff(adapter(run / "final" / role), adapter(reference / "final" / role))
        print(f"final {role} adapter: max abs diff {diff:.3g} from the uninterrupted run")
        assert diff <= 1e-5, f"{role}: max abs diff {diff} from the uninterrupted run"


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path, small_game, uninterrupted):
    seed = int(os.environ.get("REDGAME_FAULT_SEED", random.SystemRandom().randrange(2**32)))
    plan = kill_plan(seed)
    replay = f"REDGAME_FAULT_SEED={seed} (plan {plan})"
    print(replay)
    run = tmp_path / "run"
    go_on = []  # the first run starts fresh; then --resume, or --overwrite if it died before any checkpoint
    for point, step in plan:
        killed = run_cli([*TRAIN, "--config", small_game, "--out", run, *go_on], "--kill", f"{point}@{step}")
        assert killed.returncode == -signal.SIGKILL, f"{replay}: {point}@{step} not reached\n{killed.stderr[-3000:]}"
        seen = [check_checkpoint(p, uninterrupted / "checkpoints" / p.name) for p in visible_checkpoints(run)]
        latest = max(seen, default=0)
        assert seen == list(range(1, latest + 1)), f"{replay}: checkpoints {seen} after {point}@{step}"
        expected = step if point in ("checkpoint-after-rename", "final-write") else step - 1
        assert latest == expected, f"{replay}: latest checkpoint {latest} after {point}@{step}"
        go_on = ["--resume"] if latest else ["--overwrite"]
        if not latest:
            refused = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
            assert refused.returncode == 2 and "no checkpoint" in refused.stderr and "--overwrite" in refused.stderr
    finished = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
    assert finished.returncode == 0, f"{replay}\n{finished.stderr[-3000:]}"
    assert_same_final(run, uninterrupted)
    for p in visible_checkpoints(run):
        check_checkpoint(p, uninterrupted / "checkpoints" / p.name)
    leftovers = [str(p.relative_to(run)) for p in run.rglob(".*")]
    assert not leftovers, f"{replay}: temporary files left behind: {leftovers}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), f"{replay}: metrics rows lost or repeated"


def test_nan_loss_stops_with_a_clear_message_and_the_last_checkpoint_resumes(tmp_path, small_game, uninterrupted):
    run = tmp_path / "run"
    stopped = run_cli([*TRAIN, "--config", small_game, "--out", run], "--nan", "4")
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert "Traceback" not in stopped.stderr
    assert last.startswith("redgame: step 4: ") and "loss is nan" in last and "step_0003" in last, last
    assert [p.name for p in visible_checkpoints(run)] == ["step_0001", "step_0002", "step_0003"]
    for p in visible_checkpoints(run):
        check_checkpoint(p, uninterrupted / "checkpoints" / p.name)
    assert not (run / "final").exists()
    resumed = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step 3" in resumed.stdout
    assert_same_final(run, uninterrupted)


def test_ctrl_c_from_outside_checkpoints_the_step_and_resumes(tmp_path, small_game, uninterrupted):
    """SIGINT (Ctrl-C) once the first step is logged: the step finishes, is checkpointed, exit 0."""
    run = tmp_path / "run"
    proc = start_cli([*TRAIN, "--config", small_game, "--out", run])
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while proc.poll() is None and not (metrics.is_file() and metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    steps = [check_checkpoint(p, uninterrupted / "checkpoints" / p.name) for p in visible_checkpoints(run)]
    if "resume with --resume" in out:  # stopped before the end: its last step is checkpointed
        assert steps == list(range(1, max(steps) + 1)) and max(steps) < STEPS, steps
        assert not (run / "final").exists()
        resumed = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_final(run, uninterrupted)
