"""Nothing touches the network: a whole tiny training, eval and crossplay with sockets blocked.

The commands run in one fresh process whose ``socket.socket`` (any family but AF_UNIX),
``create_connection``, ``getaddrinfo`` and ``gethostbyname`` raise and log each attempt
(``faulty_cli.block_network``), with HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE removed from
the environment: offline must not depend on those flags. A last command with a remote
judge shows the guard is live: its attempt is the only one logged.
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
    # Last, the guard is shown live: a remote judge's lookup is refused and logged.
    remote = ["llm", "train", "--model", "tiny", "--steps", "1", "--no-progress", "--config", small_game,
              "--set", "judge=http://example.com/v1", "--out", tmp_path / "remote"]
    done = run_cli([*train, "++", *evaluate, "++", *crossplay, "++", *remote], "--no-network", log,
                   offline_flags=False)
    assert (run / "final" / "defender" / "adapter_model.safetensors").is_file(), done.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())
    assert (cross / "crossplay.json").is_file(), done.stderr[-3000:]
    attempts = log.read_text().splitlines()
    assert attempts and all("example.com" in a for a in attempts), f"network attempts: {attempts}"
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("redgame: error: "), \
        done.stderr[-3000:]
