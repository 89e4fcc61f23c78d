"""How ``redgame`` reports errors: a user mistake in one line (exit 2), a missing optional
install with the ``pip install`` to run (exit 2), anything else as an internal error
(exit 1) whose traceback ``--debug`` shows."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from redgame import cli
from redgame.errors import UserError, missing_extra_message
from redgame.games import cli as toy_cli


def _raise(exc: BaseException):
    def handler(args):
        raise exc
    return handler


def _stderr(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_user_error_is_one_line_with_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(toy_cli, "run_list", _raise(UserError("game: unknown preset 'x'\nsecond line")))
    assert cli.main(["toy", "list"]) == 2
    assert _stderr(capsys) == ["redgame: error: game: unknown preset 'x'"]


@pytest.mark.parametrize("where", ["handler", "imports"])
def test_ctrl_c_is_one_line_with_exit_130_in_the_imports_as_in_the_work(monkeypatch, capsys, where):
    def interrupt(*args):
        raise KeyboardInterrupt

    if where == "handler":
        monkeypatch.setattr(toy_cli, "run_list", interrupt)
    else:  # the subcommands' modules load before the parser exists
        monkeypatch.setattr(cli.importlib, "import_module", interrupt)
    assert cli.main(["toy", "list"]) == 130
    assert _stderr(capsys) == ["redgame: interrupted"]


@pytest.mark.parametrize("where", ["handler", "imports"])
def test_ctrl_c_that_a_c_extension_import_turned_into_an_import_error_is_still_ctrl_c(monkeypatch, capsys, where):
    """pyspiel's loader turns a Ctrl-C into "ImportError: initialization failed": a 36-line traceback, exit 1."""
    def interrupted_import(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ctrl_c:
            raise ImportError("initialization failed") from ctrl_c

    if where == "handler":
        monkeypatch.setattr(toy_cli, "run_list", interrupted_import)
    else:
        monkeypatch.setattr(cli.importlib, "import_module", interrupted_import)
    assert cli.main(["toy", "list"]) == 130
    assert _stderr(capsys) == ["redgame: interrupted"]


def test_an_import_error_of_its_own_is_still_a_bug(monkeypatch, capsys):
    monkeypatch.setattr(toy_cli, "run_list", _raise(ImportError("cannot import name 'x'")))
    assert cli.main(["toy", "list"]) == 1


@pytest.mark.parametrize("late, code, said", [(AttributeError("a bug"), 1, "redgame: internal error: AttributeError"),
                                             (OSError(28, "No space left on device", "/run/metrics.jsonl"), 2,
                                              "redgame: error: [Errno 28]")])
def test_an_error_in_the_clean_up_after_ctrl_c_is_reported_as_itself(monkeypatch, capsys, late, code, said):
    """A bug (or a full disk) in a finally that Ctrl-C ran was reported as "interrupted", and --debug hid it."""
    def handler(args):
        try:
            raise KeyboardInterrupt
        finally:
            raise late

    monkeypatch.setattr(toy_cli, "run_list", handler)
    assert cli.main(["toy", "list"]) == code
    assert _stderr(capsys)[0].startswith(said)


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("k"), RuntimeError("boom"), StopIteration()])
def test_any_other_exception_is_an_internal_error_with_exit_1(monkeypatch, capsys, exc):
    monkeypatch.setattr(toy_cli, "run_list", _raise(exc))
    assert cli.main(["toy", "list"]) == 1
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith(f"redgame: internal error: {type(exc).__name__}")
    assert "--debug" in err[0] and "Traceback" not in err[0]


class DistBackendError(RuntimeError):
    """Named as torch.distributed names NCCL's errors."""


@pytest.mark.parametrize("exc", [
    RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:58522. "
                 "This is typically caused by a remote worker crashing."),
    RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:20379: Connection reset by peer"),
    DistBackendError("NCCL communicator was aborted on rank 1.")])
def test_a_collective_failed_by_another_process_is_one_line_not_a_bug(monkeypatch, capsys, exc):
    monkeypatch.setattr(toy_cli, "run_list", _raise(exc))
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)  # outside torchrun the words are no other process's
    assert cli.main(["toy", "list"]) == 1
    assert _stderr(capsys)[0].startswith(f"redgame: internal error: {type(exc).__name__}")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    assert cli.main(["toy", "list"]) == 1
    assert _stderr(capsys) == ["redgame: error: another process of this torchrun run stopped (its own lines say why), "
                               "and this one stopped with it"]


def test_a_terminated_training_is_one_line_with_exit_143(monkeypatch, capsys):
    from redgame.errors import Terminated

    monkeypatch.setattr(toy_cli, "run_list", _raise(Terminated("SIGTERM")))
    assert cli.main(["toy", "list"]) == 143
    assert _stderr(capsys) == ["redgame: terminated (SIGTERM)"]


class SafetensorError(Exception):
    """Named as safetensors names its error, which wraps the disk's."""


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), OSError(30, "Read-only file system"),
                                 SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                                 'message: "No space left on device" })')])
def test_a_full_or_read_only_disk_is_one_line_with_exit_2(monkeypatch, capsys, exc):
    monkeypatch.setattr(toy_cli, "run_list", _raise(exc))
    assert cli.main(["toy", "list"]) == 2
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith("redgame: error: ") and "internal" not in err[0], err


@pytest.mark.parametrize("kind", ["close", "safetensors"])
def test_a_write_stopped_by_a_full_disk_names_its_file(monkeypatch, capsys, tmp_path, kind):
    """The error came at the file's close (or inside safetensors), which names no file: "[Errno 28] No space
    left on device", after the whole evaluation, with no word of where."""
    from redgame.jsonio import write_json

    if kind == "safetensors":  # a checkpoint: the LLM layer (the base install's test run has no torch)
        pytest.importorskip("torch")
        from redgame.llm.checkpoint import folder_written_whole

    def full_disk(*args, **kwargs):
        if kind == "close":
            raise OSError(28, "No space left on device")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    def write(args):
        if kind == "close":
            monkeypatch.setattr(type(tmp_path), "write_text", full_disk)
            write_json(tmp_path / "eval.json", {"a": 1})
        else:
            with folder_written_whole(tmp_path / "step_0009"):
                full_disk()

    monkeypatch.setattr(toy_cli, "run_list", write)
    assert cli.main(["toy", "list"]) == 2
    target = tmp_path / ("eval.json" if kind == "close" else "step_0009")
    assert _stderr(capsys) == [f"redgame: error: [Errno 28] No space left on device: '{target}'"]
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("exc", [OSError(5, "Input/output error"), SafetensorError("invalid header length")])
def test_other_os_and_safetensors_errors_stay_internal(monkeypatch, capsys, exc):
    monkeypatch.setattr(toy_cli, "run_list", _raise(exc))
    assert cli.main(["toy", "list"]) == 1


@pytest.mark.parametrize("where", ["first", "last"])
def test_debug_prints_the_traceback_wherever_the_flag_stands(monkeypatch, capsys, where):
    monkeypatch.setattr(toy_cli, "run_list", _raise(ValueError("a bug")))
    argv = ["--debug", "toy", "list"] if where == "first" else ["toy", "list", "--debug"]
    assert cli.main(argv) == 1
    err = "\n".join(_stderr(capsys))
    assert "Traceback (most recent call last)" in err and "in handler" in err
    assert err.splitlines()[-1] == "redgame: internal error: ValueError: a bug"


def test_a_missing_extra_names_the_install(monkeypatch, capsys):
    monkeypatch.setattr(toy_cli, "run_list", _raise(ModuleNotFoundError("No module named 'torch'", name="torch")))
    assert cli.main(["toy", "list"]) == 2
    (line,) = _stderr(capsys)
    assert line.startswith("redgame: error: torch is not installed") and "pip install 'redgame[llm]'" in line


def test_a_missing_module_of_no_extra_is_a_bug(monkeypatch, capsys):
    monkeypatch.setattr(toy_cli, "run_list", _raise(ModuleNotFoundError("No module named 'nope'", name="nope")))
    assert cli.main(["toy", "list"]) == 1
    assert "internal error: ModuleNotFoundError" in _stderr(capsys)[0]


@pytest.mark.parametrize("module,extra", [("torch", "llm"), ("peft.tuners", "llm"), ("triton.language", "kernels"),
                                          ("vllm", "vllm"), ("mkdocs", "docs")])
def test_every_optional_module_maps_to_its_extra(module, extra):
    message = missing_extra_message(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert f"redgame[{extra}]" in message


def test_bad_toy_input_from_theory_is_a_user_error(capsys):
    assert cli.main(["toy", "solve", "--game", "hidden_intent", "--param", "q=2"]) == 2
    assert _stderr(capsys) == ["redgame: error: q: detection accuracy must lie in [0, 1], got 2.0"]


def test_an_out_that_cannot_take_the_output_is_one_line_before_any_work(monkeypatch, capsys, tmp_path):
    """--out naming a file where a folder goes (or a folder where a file goes, or nothing): refused at once."""
    from redgame.games import dynamics_cli
    from redgame.llm import eval_cli

    monkeypatch.setattr(dynamics_cli, "run_dynamics_command", _raise(AssertionError("ran")))
    monkeypatch.setattr(eval_cli, "run_eval", _raise(AssertionError("ran")))
    if importlib.util.find_spec("torch") is not None:  # without it (the minimum versions' run) nothing would train
        from redgame.llm import judge_train

        monkeypatch.setattr(judge_train, "retrain", _raise(AssertionError("ran")))
    dangling = tmp_path / "dangling"  # a link to nothing: the folder's write failed after the work
    dangling.symlink_to(tmp_path / "nowhere")
    a_file = tmp_path / "afile"
    a_file.write_text("")
    loop = tmp_path / "loopA"  # a loop of links: exists() says absent, and the write failed after the work
    loop.symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(loop)
    fifo = tmp_path / "fifo"  # a pipe (or a device such as /dev/null) was replaced by the JSON file
    os.mkfifo(fifo)
    for argv, needle in (
            (["llm", "eval", "--model", "tiny", "--out", str(fifo)], "fifo is not a regular file (a device, a pipe"),
            (["llm", "eval", "--model", "tiny", "--out", str(loop)], "loopA: a loop of symbolic links; give another"),
            (["llm", "train", "--model", "tiny", "--out", str(loop / "run")], "a loop of symbolic links; give another"),
            (["llm", "train-judge", "--out", str(dangling)], "dangling is a symbolic link to"),
            (["toy", "dynamics", "--regime", "shared", "--out", str(dangling / "sub")], "dangling is a symbolic link"),
            (["llm", "eval", "--model", "tiny", "--out", str(dangling)], "which does not exist; give its target"),
            (["toy", "dynamics", "--regime", "shared", "--out", str(a_file)], "exists and is not a folder"),
            (["toy", "dynamics", "--regime", "shared", "--out", ""], "--out is empty"),
            (["llm", "eval", "--model", "tiny", "--out", str(tmp_path)], "is a folder; give a file name"),
            (["toy", "dynamics", "--regime", "shared", "--out", str(a_file / "sub")], "afile is a file, not a folder"),
            (["llm", "eval", "--model", "tiny", "--out", str(a_file / "x" / "e.json")],
             "afile is a file, not a folder")):
        assert cli.main(argv) == 2
        err = _stderr(capsys)
        assert len(err) == 1 and err[0].startswith("redgame: error: --out") and needle in err[0], err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc here")
def test_an_out_in_a_folder_no_file_can_be_made_in_is_one_line_before_any_work(monkeypatch, capsys):
    """os.access says yes to root anywhere, /proc included: the work ran, then the write failed with a bare errno
    naming a temporary file."""
    from redgame.games import dynamics_cli

    monkeypatch.setattr(dynamics_cli, "run_dynamics_command", _raise(AssertionError("ran")))
    assert cli.main(["toy", "dynamics", "--regime", "shared", "--out", "/proc/redgame-out"]) == 2
    err = _stderr(capsys)
    assert err == ["redgame: error: --out /proc/redgame-out: cannot write in /proc"], err


def test_a_plot_that_cannot_be_written_is_one_line_before_the_judging(monkeypatch, capsys, tmp_path):
    import sys
    import types

    judges = types.ModuleType("redgame.llm.judges")  # a stand-in: no judge loads, and no torch is needed
    judges.make_judge = _raise(AssertionError("judged"))
    monkeypatch.setitem(sys.modules, "redgame.llm.judges", judges)
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi", "response": "hello"}\n')
    (tmp_path / "afile").write_text("")
    (tmp_path / "d.png").mkdir()
    for plot, needle in ((tmp_path / "afile" / "roc.png", "afile is a file, not a folder"),
                         (tmp_path / "d.png", "is a folder; give a file name, such as")):
        assert cli.main(["llm", "judge", "--input", str(tmp_path / "in.jsonl"), "--plot", str(plot)]) == 2
        err = _stderr(capsys)
        assert len(err) == 1 and err[0].startswith("redgame: error: --plot") and needle in err[0], err


def test_a_benchmark_script_reports_as_redgame_does_under_its_own_name(monkeypatch, capsys):
    """``script_main``: a user error is one line named after the script (exit 2), ``--debug`` anywhere shows
    a bug's traceback, Ctrl-C is one line (exit 130), and ``main``'s int is the exit status."""
    def main(argv):
        if "user" in argv:
            raise UserError("--seeds repeats 0")
        if "bug" in argv:
            raise KeyError("k")
        if "stop" in argv:
            raise KeyboardInterrupt
        return {"rows": argv}  # a summary, not a status

    monkeypatch.setattr("sys.argv", ["x.py", "user"])
    assert cli.script_main("llm_claims", main) == 2 and _stderr(capsys) == ["llm_claims: error: --seeds repeats 0"]
    monkeypatch.setattr("sys.argv", ["x.py", "bug", "--debug"])
    assert cli.script_main("llm_claims", main) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "llm_claims: internal error: KeyError" in err
    monkeypatch.setattr("sys.argv", ["x.py", "stop"])
    assert cli.script_main("llm_claims", main) == 130 and _stderr(capsys) == ["llm_claims: interrupted"]
    monkeypatch.setattr("sys.argv", ["x.py", "ok"])
    assert cli.script_main("llm_claims", main) == 0
    assert cli.script_main("steps_plot", lambda argv: 3) == 3


def test_an_unknown_flag_is_reported_by_its_subcommand_with_its_usage(capsys):
    """As a bad choice is (docs/cli.md): the top parser printed redgame's usage and `redgame: error:`."""
    for argv, prog in ((["toy", "solve", "--game", "prompt_map", "--bogus"], "redgame toy solve"),
                       (["llm", "train", "--model", "tiny", "--out", "train", "--bogus", "x"], "redgame llm train"),
                       (["--bogus"], "redgame")):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and err[0].startswith(f"usage: {prog} ")
        assert err[-1] == f"{prog}: error: unrecognized arguments: --bogus" + (" x" if "x" in argv else "")


def test_a_missing_subcommand_is_the_usage_and_one_error_line_at_every_level(capsys):
    """`redgame` and `redgame toy` printed their whole help on stdout with exit 2 and no error line; `redgame llm`
    the usage and the error on stderr. Now all three do as `llm` did."""
    for argv, prog, name in (([], "redgame", "COMMAND"), (["toy"], "redgame toy", "TOY_COMMAND"),
                             (["llm"], "redgame llm", "COMMAND")):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        out, err = capsys.readouterr()
        assert stop.value.code == 2 and not out
        assert err.strip().splitlines()[-1] == f"{prog}: error: the following arguments are required: {name}"
