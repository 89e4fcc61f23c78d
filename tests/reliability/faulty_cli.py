"""``redgame`` with one fault armed: the reliability suite's test hook, run as a script.

    python tests/reliability/faulty_cli.py [--kill POINT@STEP] [--nan STEP] [--no-network LOG] -- ARGS... [++ ARGS...]

runs ``redgame ARGS...`` (then each further ``++``-separated command) in this process (the real CLI, ``redgame.cli.main``) after wrapping
a few functions of the trainer, so that a fault fires at an exact, named place:

- ``--kill POINT@STEP``: the process sends itself SIGKILL at POINT of game step STEP
  (1-based). The points (:data:`KILL_POINTS`) cover every state the run folder can be in:
  nothing of the step written yet, its metrics written but no checkpoint, a checkpoint
  half written, renamed into place, and the final adapters half written.
- ``--nan STEP``: the loss of step STEP is multiplied by NaN (a diverging run).
- ``--hold STEP:DIR``: at the start of game step STEP, create ``DIR/held`` and wait until
  ``DIR/release`` exists, so that a test can signal the process in the middle of a run.
- ``--no-network LOG``: every socket other than a local (AF_UNIX) one, every name lookup
  and every ``create_connection`` raises, and is logged to LOG (in case a library
  swallows the error), so that a clean run with an empty LOG proves nothing went online.

Nothing in redgame knows about this script: the hooks wrap module attributes from outside.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

KILL_POINTS = (
    "rollout",  # after the step's attacks and answers are sampled: nothing of the step on disk
    "judge",  # after the judge scored the round
    "update",  # after the first optimiser step of the step
    "before-checkpoint",  # metrics row written, checkpoint not started
    "checkpoint-mid-write",  # weights written into the temporary folder, optimiser not yet
    "checkpoint-before-rename",  # temporary folder complete, not renamed
    "checkpoint-after-rename",  # checkpoint in place, the trainer has not gone on
    "final-write",  # the last step's final adapters: attacker written into the hidden temporary folder, defender not
)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm_kill(point: str, step: int) -> None:
    import torch

    from redgame.llm import checkpoint, roles, trainer

    at = {"step": 0, "in_checkpoint": False, "saved_files": 0}

    def here(name: str) -> bool:
        return name == point and at["step"] == step

    real_batch = trainer.seed_batch

    def seed_batch(harmful, benign, cfg, index):
        at["step"] = index + 1
        return real_batch(harmful, benign, cfg, index)

    def after(name, real):
        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            if here(name):
                _die()
            return out
        return wrapped

    real_step = torch.optim.AdamW.step

    def adamw_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        if here("update"):
            _die()
        return out

    real_save = checkpoint.save_checkpoint

    def save_checkpoint(run_dir, done, *args, **kwargs):
        if here("before-checkpoint"):
            _die()
        at["in_checkpoint"], at["saved_files"] = True, 0
        try:
            return real_save(run_dir, done, *args, **kwargs)
        finally:
            at["in_checkpoint"] = False

    real_save_file = checkpoint.save_file

    def save_file(tensors, filename, *args, **kwargs):
        out = real_save_file(tensors, filename, *args, **kwargs)
        at["saved_files"] += 1
        if at["in_checkpoint"] and at["saved_files"] == 1 and here("checkpoint-mid-write"):
            _die()
        return out

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        renames_checkpoint = at["in_checkpoint"] and os.path.basename(os.fspath(dst)).startswith("step_")
        if renames_checkpoint and here("checkpoint-before-rename"):
            _die()
        out = real_replace(src, dst, *args, **kwargs)
        if renames_checkpoint and here("checkpoint-after-rename"):
            _die()
        return out

    real_save_role = roles.Roles.save_role

    def save_role(self, role, path, **kwargs):
        real_save_role(self, role, path, **kwargs)
        if not at["in_checkpoint"] and role == "attacker" and here("final-write"):
            _die()

    trainer.seed_batch = seed_batch
    trainer.play_round = after("rollout", trainer.play_round)
    trainer.judge_round = after("judge", trainer.judge_round)
    torch.optim.AdamW.step = adamw_step
    checkpoint.save_checkpoint = save_checkpoint
    checkpoint.save_file = save_file
    os.replace = replace
    roles.Roles.save_role = save_role


def arm_nan(step: int) -> None:
    from redgame.llm import trainer

    real_batch, real_loss = trainer.seed_batch, trainer.role_loss
    at = {"step": 0}

    def seed_batch(harmful, benign, cfg, index):
        at["step"] = index + 1
        return real_batch(harmful, benign, cfg, index)

    def role_loss(*args, **kwargs):
        loss, info = real_loss(*args, **kwargs)
        if loss is not None and at["step"] == step:
            loss = loss * float("nan")
        return loss, info

    trainer.seed_batch, trainer.role_loss = seed_batch, role_loss


def arm_hold(step: int, folder: str) -> None:
    import time

    from redgame.llm import trainer

    real_batch = trainer.seed_batch

    def seed_batch(harmful, benign, cfg, index):
        if index + 1 == step:
            open(os.path.join(folder, "held"), "w").close()
            while not os.path.exists(os.path.join(folder, "release")):
                time.sleep(0.02)
        return real_batch(harmful, benign, cfg, index)

    trainer.seed_batch = seed_batch


def block_network(log_path: str) -> None:
    def refuse(what: str):
        with open(log_path, "a") as log:
            log.write(what + "\n")
        raise OSError(f"network blocked by the reliability suite: {what}")

    real_socket = socket.socket

    class GuardedSocket(real_socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family != socket.AF_UNIX:
                refuse(f"socket(family={family})")
            super().__init__(family, type, proto, fileno)

    socket.socket = GuardedSocket
    socket.create_connection = lambda address, *a, **k: refuse(f"create_connection({address!r})")
    socket.getaddrinfo = lambda host, *a, **k: refuse(f"getaddrinfo({host!r})")
    socket.gethostbyname = lambda host: refuse(f"gethostbyname({host!r})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill", metavar="POINT@STEP")
    parser.add_argument("--nan", type=int, metavar="STEP")
    parser.add_argument("--no-network", metavar="LOG")
    parser.add_argument("--hold", metavar="STEP:DIR")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    if opts.no_network:
        block_network(opts.no_network)
    if opts.kill:
        point, _, step = opts.kill.partition("@")
        if point not in KILL_POINTS:
            parser.error(f"--kill: unknown point {point!r}; one of {', '.join(KILL_POINTS)}")
        arm_kill(point, int(step))
    if opts.nan is not None:
        arm_nan(opts.nan)
    if opts.hold:
        step, _, folder = opts.hold.partition(":")
        arm_hold(int(step), folder)
    from redgame.cli import main as redgame_main

    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    commands = [[]]
    for arg in args:  # `A ++ B`: run redgame A, then redgame B, in this one process
        commands.append([]) if arg == "++" else commands[-1].append(arg)
    for command in commands:
        code = redgame_main(command)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
