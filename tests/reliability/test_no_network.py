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


def test_an_adapter_folder_given_as_the_model_is_one_line_and_no_socket(tmp_path):
    """A LoRA adapter's folder as --model (no config.json): transformers went after the adapter's base model on
    the Hub, and huggingface_hub looked a registry up even with local_files_only."""
    adapter = tmp_path / "defender"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": null}')
    log = tmp_path / "network.log"
    done = run_cli(["llm", "eval", "--model", adapter, "--max-new-tokens", "2", "--no-utility"], "--no-network", log,
                   offline_flags=False)
    assert done.returncode == 2 and "is a LoRA adapter" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
    assert not log.exists() or not log.read_text().strip(), log.read_text()


def test_the_cli_keeps_huggingface_hub_offline(monkeypatch):
    """Whatever a library does with the Hub (a registry fetched for its request headers), the CLI's process has
    HF_HUB_OFFLINE set before huggingface_hub is imported; a value the user set is kept."""
    import os

    from redgame.cli import quiet_libraries

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    quiet_libraries()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    quiet_libraries()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
