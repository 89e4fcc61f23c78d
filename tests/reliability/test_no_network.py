"""Nothing touches the network: a whole tiny training, eval and crossplay with sockets blocked.

The commands run in one fresh process whose ``socket.socket`` (any family but AF_UNIX),
``create_connection``, ``getaddrinfo`` and ``gethostbyname`` raise and log each attempt
(``faulty_cli.block_network``), with HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE removed from
the environment: offline must not depend on those flags.
"""

import json

from fault_runs import run_cli


def test_train_eval_crossplay_open_no_socket(tmp_path, small_game):
    log = tmp_path / "network.log"
    run, cross = tmp_path / "run", tmp_path / "crossplay"
    train = ["llm", "train", "--model", "tiny", "--regime", "bipolicy", "--steps", "2", "--save-every", "1",
             "--seed", "3", "--no-progress", "--config", small_game, "--out", run]
    evaluate = ["llm", "eval", "--model", "tiny", "--adapter", run, "--max-new-tokens", "4", "--json",
                "--out", tmp_path / "eval.json"]
    crossplay = ["llm", "crossplay", "--model", "tiny", "--runs", run, "--out", cross, "--attack-tokens", "4",
                 "--response-tokens", "4"]
    done = run_cli([*train, "++", *evaluate, "++", *crossplay], "--no-network", log, offline_flags=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not log.exists(), f"network attempts: {log.read_text()}"
    assert (run / "final" / "defender" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "eval.json").read_text())
    assert (cross / "crossplay.json").is_file()


def test_the_guard_does_block(tmp_path, small_game):
    """The guard is live: a judge at a remote URL fails in one line and the attempt is logged."""
    log = tmp_path / "network.log"
    done = run_cli(["llm", "train", "--model", "tiny", "--steps", "1", "--no-progress", "--config", small_game,
                    "--set", "judge=http://example.com/v1", "--out", tmp_path / "run"], "--no-network", log)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("redgame: error: ")
    assert "example.com" in log.read_text()
