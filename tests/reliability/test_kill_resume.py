"""Kill -9, a diverging (NaN) run and Ctrl-C, each resumed: a run stopped anywhere loses nothing.

The issue's command, ``redgame llm train --model tiny --regime bipolicy --steps 8
--save-every 1 --seed 3``, first stops on a NaN loss injected at step 2, then is killed
with SIGKILL at 5 places chosen at random per run
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
    """The uninterrupted run, made once per session even across xdist workers (they share the parent folder)."""
    from filelock import FileLock  # a dependency of torch and huggingface_hub

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's folder either way
    out = shared / "reliability_uninterrupted" / "run"
    with FileLock(str(shared / "reliability_uninterrupted.lock")):
        if not (out / "final" / "defender").is_dir():
            done = run_cli([*TRAIN, "--config", small_game, "--out", out, "--overwrite"])
            assert done.returncode == 0, done.stderr[-3000:]
    return out


NAN_STEP = 2


def kill_plan(seed: int) -> list[tuple[str, int]]:
    """KILLS (point, step) pairs at increasing steps after NAN_STEP - 1, so that each resumed run reaches the next."""
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(NAN_STEP, STEPS + 1), KILLS))
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


def check_visible(run, reference, replay) -> int:
    """Every visible checkpoint complete, loadable and equal to the reference's; the latest step."""
    seen = [check_checkpoint(p, reference / "checkpoints" / p.name) for p in visible_checkpoints(run)]
    assert seen == list(range(1, max(seen, default=0) + 1)), f"{replay}: checkpoints {seen}"
    return max(seen, default=0)


@pytest.mark.slow
@pytest.mark.long
def test_nan_then_sigkill_at_random_points_then_resume_give_the_uninterrupted_result(tmp_path, small_game,
                                                                                    uninterrupted):
    """One run through every fault in turn: a NaN stop, then 5 kills, each followed by --resume."""
    seed = int(os.environ.get("REDGAME_FAULT_SEED", random.SystemRandom().randrange(2**32)))
    plan = kill_plan(seed)
    replay = f"REDGAME_FAULT_SEED={seed} (plan {plan})"
    print(replay)
    run = tmp_path / "run"
    stopped = run_cli([*TRAIN, "--config", small_game, "--out", run], "--nan", str(NAN_STEP))
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"redgame: step {NAN_STEP}: ") and "loss is nan" in last, last
    assert f"step_{NAN_STEP - 1:04d}" in last, last
    assert check_visible(run, uninterrupted, replay) == NAN_STEP - 1 and not (run / "final").exists()
    for point, step in plan:
        killed = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"], "--kill", f"{point}@{step}")
        assert killed.returncode == -signal.SIGKILL, f"{replay}: {point}@{step} not reached\n{killed.stderr[-3000:]}"
        assert "resuming from step " in killed.stdout
        expected = step if point in ("checkpoint-after-rename", "final-write") else step - 1
        assert check_visible(run, uninterrupted, replay) == expected, f"{replay}: after {point}@{step}"
    finished = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
    assert finished.returncode == 0, f"{replay}\n{finished.stderr[-3000:]}"
    assert_same_final(run, uninterrupted)
    assert check_visible(run, uninterrupted, replay) == STEPS
    leftovers = [str(p.relative_to(run)) for p in run.rglob(".*")]
    assert not leftovers, f"{replay}: temporary files left behind: {leftovers}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), f"{replay}: metrics rows lost or repeated"


def started_and_held_at_step_3(tmp_path, small_game):
    """(run folder, hold folder, process): a training run started through the fault hook and held at the start
    of step 3 until ``hold/release`` exists, so that a signal sent now lands in that step."""
    run, held = tmp_path / "run", tmp_path / "hold"
    held.mkdir()
    proc = start_cli([*TRAIN, "--config", small_game, "--out", run], "--hold", f"3:{held}")
    deadline = time.monotonic() + 240
    while proc.poll() is None and not (held / "held").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (held / "held").exists(), "the run never reached step 3"
    return run, held, proc


def test_ctrl_c_from_outside_checkpoints_the_step_and_resumes(tmp_path, small_game, uninterrupted):
    """SIGINT (Ctrl-C) in the middle of step 3: that step finishes and is checkpointed, exit 130, and
    ``--resume`` ends where the uninterrupted run ends. The run is held at step 3 until the signal
    is sent, so it cannot finish first."""
    run, held, proc = started_and_held_at_step_3(tmp_path, small_game)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the handler runs in the main thread, which is polling for the release file
    (held / "release").touch()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]  # interrupted: a following `&& redgame llm eval` does not run
    assert "Traceback" not in err
    assert "stopped at step 3" in out and "--resume" in out, out[-2000:]
    assert check_visible(run, uninterrupted, "Ctrl-C") == 3
    assert not (run / "final").exists()
    resumed = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_final(run, uninterrupted)


@pytest.mark.slow
@pytest.mark.long
def test_sigterm_stops_at_once_naming_the_last_checkpoint_and_resumes(tmp_path, small_game, uninterrupted):
    """SIGTERM (a ``kill``, or torchrun stopping a run whose other process failed) in the middle of step 3: the
    step is given up, the run names step 2's checkpoint and the resume, exit 143; it used to end without a word."""
    run, _, proc = started_and_held_at_step_3(tmp_path, small_game)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "redgame: terminated (SIGTERM)" in err
    assert f"the run stopped at step 3 (terminated); last checkpoint {run / 'checkpoints' / 'step_0002'}" in err
    assert f"--out {run} --resume" in err
    assert check_visible(run, uninterrupted, "SIGTERM") == 2
    resumed = run_cli([*TRAIN, "--config", small_game, "--out", run, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_final(run, uninterrupted)
