"""Fuzzed user and model inputs: each either loads, or fails with the documented UserError.

Inputs: config files (TOML / YAML / JSON, as structured mappings and as raw bytes),
``--set`` overrides through the real CLI, seed files (structured JSONL / CSV rows, huge
lines, wrong columns, wrong encodings), and HTTP judge replies (raw bodies through the
judge's own request path, and reply texts through its parser). The attacker-output parser
is fuzzed in ``tests/llm/test_prompts.py`` and the game spec in
``tests/theory/test_spec_fuzz.py``; only their huge-input cases are added here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import time
from typing import get_origin, get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fault_runs import ComputeStarted

from redgame.cli import main
from redgame.errors import UserError
from redgame.llm.config import TrainConfig, from_mapping, load_file, parse_override
from redgame.llm import judges
from redgame.llm.judges import HTTPJudge, make_judge
from redgame.llm.prompts import parse_attack
from redgame.llm.seeds import Seed, load_seeds

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
HINTS = get_type_hints(TrainConfig)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 100),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 2), st.text(max_size=12),
                    st.sampled_from(["bipolicy", "advgame", "dpo", "ema", "embedded", "tiny", "attacker", "lm:x"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=2), max_leaves=5)
keys = st.sampled_from(sorted(FIELDS)) | st.sampled_from(sorted(FIELDS)).map(lambda k: k.replace("_", "-")) \
    | st.text(max_size=10)
mappings = st.dictionaries(keys, values, max_size=5)


def assert_one_line_naming(exc: Exception, names) -> None:
    message = str(exc)
    assert isinstance(exc, UserError), f"{type(exc).__name__}: {message}"
    assert message and "\n" not in message, repr(message)
    forms = {form for n in map(str, names) for form in (n, n.replace("-", "_"), repr(n), repr(n.replace("-", "_")))}
    assert any(form in message for form in forms), f"{message!r} names none of {list(names)}"


def assert_sound(cfg: TrainConfig) -> None:
    """A config that passed validation holds values of the declared types the trainer can use."""
    for name, kind in HINTS.items():
        value = getattr(cfg, name)
        origin = get_origin(kind) or kind
        assert isinstance(value, origin) and not (origin is int and isinstance(value, bool)), (name, value)
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
    assert cfg.lr > 0 and cfg.beta > 0 and cfg.temperature > 0 and 0 < cfg.top_p <= 1 and 0 <= cfg.lora_dropout < 1
    assert min(cfg.steps, cfg.attack_tokens, cfg.response_tokens, cfg.lora_rank, cfg.lora_alpha) >= 1
    assert cfg.threads >= 0 and cfg.save_every >= 0 and cfg.kl_coef >= 0


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps("" if value is None else value, ensure_ascii=False)


def write_config(path, data: dict) -> None:
    if path.suffix == ".toml":
        path.write_text("".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in data.items()),
                        encoding="utf-8")
    elif path.suffix == ".yaml":
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")


def keys_as_read(path) -> list:
    """The keys as the file format reads them back (YAML folds a U+0085 line break into a space)."""
    try:
        return list(load_file(path))
    except Exception:  # noqa: BLE001 - a malformed file is named by its own message
        return []


@FUZZ
@given(data=mappings, suffix=st.sampled_from([".toml", ".yaml", ".json"]))
def test_config_files_load_or_name_the_key(tmp_path, data, suffix):
    path = tmp_path / f"game{suffix}"
    write_config(path, data)
    try:
        cfg = from_mapping(load_file(path), where=f" in {path}").validate()
    except Exception as exc:  # noqa: BLE001 - the type is the assertion
        assert_one_line_naming(exc, [*data, *keys_as_read(path), "malformed config file"])
    else:
        assert_sound(cfg)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       suffix=st.sampled_from([".toml", ".yaml", ".yml", ".json", ".cfg"]))
def test_raw_config_bytes_load_or_fail_in_one_line(tmp_path, raw, suffix):
    path = tmp_path / f"raw{suffix}"
    path.write_bytes(raw)
    try:
        cfg = from_mapping(load_file(path), where=f" in {path}").validate()
    except Exception as exc:  # noqa: BLE001
        assert_one_line_naming(exc, ["malformed config file", "config key", "unknown config key", "config:"])
    else:
        assert_sound(cfg)


override_text = st.one_of(
    st.tuples(keys, st.text(max_size=12)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.sampled_from(sorted(FIELDS)), st.sampled_from(["nan", "inf", "-1", "0", "1e999", "1_0", " 3",
                                                                "true", "maybe", "", "a,b", "9" * 5000])
              ).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=12),
)


@pytest.fixture
def no_training(no_compute, monkeypatch):
    """Not even the run folder or torch's thread count is touched when a fuzzed config is valid."""
    from redgame.llm import trainer

    def refuse(*args, **kwargs):
        raise ComputeStarted

    monkeypatch.setattr(trainer, "train", refuse)


@FUZZ
@given(overrides=st.lists(override_text, min_size=1, max_size=3))
def test_cli_overrides_exit_2_in_one_line_naming_the_key_before_compute(tmp_path, no_training, overrides):
    argv = ["llm", "train", "--model", "tiny", "--out", str(tmp_path / "run")]
    argv += [f"--set={text}" for text in overrides]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except ComputeStarted:
            code = None
    if code is None:  # valid: the same overrides parse to a sound config
        cfg = from_mapping(dict(parse_override(t) for t in overrides)).validate()
        assert_sound(cfg)
        return
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("redgame: error: "), (code, lines)
    names = [t.partition("=")[0].strip() for t in overrides]
    assert any(f"'{n.replace('-', '_')}'" in lines[0] or repr(n.replace("-", "_")) in lines[0] for n in names) \
        or "is not key=value" in lines[0], lines[0]


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                     max_size=3), max_leaves=6)
SEED_KEYS = st.sampled_from(["prompt", "goal", "behavior", "Behavior", "harmful", "label", "category", "id", "x"])
ROWS = st.lists(st.dictionaries(SEED_KEYS, JSON_VALUES | st.sampled_from(["unsafe", "safe", "1", "0", "yes"]),
                                max_size=4), min_size=0, max_size=5)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"])


def check_seeds(path, harmful):
    try:
        seeds = load_seeds(path, harmful=harmful)
    except Exception as exc:  # noqa: BLE001
        assert_one_line_naming(exc, [str(path)])
        return
    assert seeds and all(isinstance(s, Seed) and s.prompt and s.prompt == s.prompt.strip() for s in seeds)
    assert all(isinstance(s.harmful, bool) for s in seeds)


@FUZZ
@given(rows=ROWS, encoding=ENCODINGS, harmful=st.sampled_from([None, True]),
       tail=st.sampled_from(["", "\n", "\n\n{", "\n" + "x" * 300_000]))
def test_structured_jsonl_rows_in_any_encoding(tmp_path, rows, encoding, harmful, tail):
    path = tmp_path / "seeds.jsonl"
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + tail
    path.write_bytes(text.encode(encoding, errors="replace"))
    check_seeds(path, harmful)


CELLS = st.text(max_size=12) | st.sampled_from(["unsafe", "safe", "1", "", '"', "a,b", "x" * 200_000])


@FUZZ
@given(header=st.lists(st.sampled_from(["prompt", "goal", "Behavior", "harmful", "label", "category", "type",
                                        "question", ""]), max_size=4),
       rows=st.lists(st.lists(CELLS, max_size=5), max_size=4), encoding=ENCODINGS,
       harmful=st.sampled_from([None, False]))
def test_csv_with_wrong_columns_ragged_rows_and_huge_fields(tmp_path, header, rows, encoding, harmful):
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path / "seeds.csv"
    path.write_bytes(buffer.getvalue().encode(encoding, errors="replace"))
    check_seeds(path, harmful)


@pytest.mark.parametrize("name,content", [
    ("huge_int.jsonl", b'{"prompt": "x", "harmful": ' + b"1" * 5000 + b"}\n"),
    ("huge_line.txt", b"y" * 3_000_000),
    ("huge_field.csv", b"prompt,harmful\n" + b"z" * 200_000 + b",1\n"),
    ("utf16.txt", "how do I bake bread?\n".encode("utf-16")),
    ("deep.json", b"[" * 200_000),
    ("nan.jsonl", b'{"prompt": "x", "harmful": NaN}\n'),
])
def test_pathological_seed_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    check_seeds(path, None)


class _Reply(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


REPLY_TEXT = st.text(max_size=40) | st.sampled_from(["A", "B", "Yes", "No", "yes.", "A or B", "(B)", "Answer: A"])
REPLY_BODIES = st.one_of(
    st.binary(max_size=100),
    REPLY_TEXT.map(lambda t: json.dumps({"choices": [{"message": {"content": t}}]}).encode()),
    JSON_VALUES.map(lambda v: json.dumps({"choices": [{"message": {"content": v}}]}).encode()),
    JSON_VALUES.map(lambda v: json.dumps({"choices": v}).encode()),
    st.integers(1, 200_000).map(lambda n: b'{"choices": ' + b"[" * n + b"]" * n + b"}"),
    st.just(b'{"choices": [{"message": {"content": "A"}}], "n": ' + b"7" * 5000 + b"}"),
)


@FUZZ
@given(bodies=st.lists(REPLY_BODIES, min_size=1, max_size=4), options=st.sampled_from([("A", "B"), ("Yes", "No")]))
def test_http_judge_replies_never_raise(monkeypatch, bodies, options):
    queue = list(bodies)
    monkeypatch.setattr(judges._OPENER, "open", lambda request, timeout=None: _Reply(queue.pop(0)))
    judge = make_judge("http://127.0.0.1:9/v1", workers=1)
    answers = judge._choose([f"q{i}" for i in range(len(bodies))], options)
    assert len(answers) == len(bodies) and all(a in (None, 0.0, 1.0) for a in answers)
    assert judge.errors == sum(a is None for a in answers)


@settings(max_examples=300, deadline=None)
@given(reply=REPLY_TEXT | st.none() | st.integers(),
       options=st.sampled_from([("A", "B"), ("Yes", "No"), ("unsafe", "safe")]))
def test_judge_reply_parser(reply, options):
    got = HTTPJudge.parse_choice(reply, options)
    assert got in (None, 0.0, 1.0)
    if isinstance(reply, str) and reply.strip() in options:
        assert got == (1.0 if reply.strip() == options[0] else 0.0)


@pytest.mark.parametrize("text", ["<prompt>" * 200_000, "</prompt>" * 200_000, "<prompt>" + "a" * 2_000_000,
                                  "<prompt " * 200_000 + ">", "x" * 2_000_000 + "</prompt>"])
def test_parse_attack_on_huge_outputs_is_fast(text):
    start = time.perf_counter()
    parse_attack(text)
    assert time.perf_counter() - start < 2.0

