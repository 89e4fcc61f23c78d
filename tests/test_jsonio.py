"""``redgame.jsonio.read_json_file``: a user's JSON file read with one-line errors naming it."""

import json

import pytest

from redgame.errors import UserError
from redgame.jsonio import LINE_BREAK, decode_utf8, jsonl_rows, parse_json, read_json_file


@pytest.mark.parametrize("data, kind, needle", [
    (b'{"a": 1}\n\xff', dict, r"f.json: not UTF-8 text \(byte 9\)"),
    (b"[]", dict, "f.json: expected a JSON object, got array"),
    (b'{"results": []}', list, "f.json: expected a JSON array, got object"),
    (b"3", dict, "f.json: expected a JSON object, got number"),
    (b"null", dict, "f.json: expected a JSON object, got null"),
    (b'{"a": ', dict, "f.json: not valid JSON"),
])
def test_bad_json_files_get_one_line_errors_naming_the_file(tmp_path, data, kind, needle):
    (tmp_path / "f.json").write_bytes(data)
    with pytest.raises(UserError, match=needle) as caught:
        read_json_file(tmp_path / "f.json", str(tmp_path / "f.json"), kind)
    assert "\n" not in str(caught.value)


def test_a_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot be read"):
        read_json_file(tmp_path, "the folder")


def test_a_good_file_is_read_with_or_without_a_byte_order_mark(tmp_path):
    (tmp_path / "a.json").write_bytes(b'{"x": "\xc3\xa9"}')
    (tmp_path / "b.json").write_bytes(b'\xef\xbb\xbf[1, 2]')
    assert read_json_file(tmp_path / "a.json", "a") == {"x": "é"}
    assert read_json_file(tmp_path / "b.json", "b", list) == [1, 2]


def test_decoding_names_the_offset_past_a_byte_order_mark():
    assert decode_utf8(b"\xef\xbb\xbfok", "w") == "ok"
    with pytest.raises(UserError, match=r"^w: not UTF-8 text \(byte 4\)$"):
        decode_utf8(b"\xef\xbb\xbfo\xff", "w")


def test_write_json_is_strict_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    from pathlib import Path

    from redgame.jsonio import write_json

    path = tmp_path / "eval.json"
    write_json(path, {"asr": float("nan"), "n": 3})
    assert path.read_text() == '{\n "asr": null,\n "n": 3\n}\n'

    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"asr": 0.5})
    monkeypatch.undo()
    assert path.read_text() == '{\n "asr": null,\n "n": 3\n}\n' and [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_write_json_through_a_link_replaces_its_target_and_keeps_the_link(tmp_path):
    from redgame.jsonio import write_json

    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    write_json(tmp_path / "link.json", {"a": 1})
    assert (tmp_path / "link.json").is_symlink() and json.loads((tmp_path / "real.json").read_text()) == {"a": 1}


def test_jsonl_rows_number_file_lines_and_keep_a_line_separator_inside_a_string():
    text = '{"a": "x\u2028y"}\r\n\n  \n[1, 2]\n'
    assert list(jsonl_rows(text, "f")) == [(1, {"a": "x\u2028y"}), (4, [1, 2])]
    with pytest.raises(UserError, match=r"^f, line 3: not valid JSON"):
        list(jsonl_rows('1\n\n{"a":\n', "f"))


def test_line_break_is_a_text_files_and_not_unicodes():
    assert LINE_BREAK.split("a\r\nb\rc\nd\u2028e\x0cf") == ["a", "b", "c", "d\u2028e\x0cf"]


@pytest.mark.parametrize("text, detail", [
    ('{"a": "x\ny"}', "Invalid control character at line 1, column 9"),  # a string cut by a line break
    ('{"a": "abc', "Unterminated string starting at character 7"),
    ('[1 2]', "Expecting ',' delimiter at character 4")])
def test_invalid_json_says_what_and_where_in_whole_words(text, detail):
    """The message ended at "at": json's own message leaves its position to the exception's text."""
    with pytest.raises(UserError) as caught:
        parse_json(text, "f.json")
    assert str(caught.value) == f"f.json: not valid JSON ({detail})"


@pytest.mark.parametrize("text", ['{"prompt": "a", "harmful": true, "harmful": false}',
                                  '[{"x": {"a": 1, "b": 2, "a": 1}}]'])
def test_a_key_given_twice_in_one_object_is_refused_not_silently_the_last(text):
    """json keeps the last of two equal keys: a seed's second "harmful" would flip its class unannounced."""
    with pytest.raises(UserError) as caught:
        parse_json(text, "f.jsonl, line 3")
    assert str(caught.value).startswith("f.jsonl, line 3: the key ")
    assert "appears twice in one JSON object; keep one" in str(caught.value)


def test_equal_keys_in_different_objects_are_fine():
    assert parse_json('[{"a": 1}, {"a": 2, "b": {"a": 3}}]', "f") == [{"a": 1}, {"a": 2, "b": {"a": 3}}]
