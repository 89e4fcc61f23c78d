"""Nothing redgame loads may execute code: no pickle (nor marshal, shelve), torch.load only with
weights_only=True, yaml only through its safe loaders, no builtin eval/exec, no hard-coded
use_safetensors=False, shell=True or allow_pickle=True, trust_remote_code off unless the user
asks. A grep over the source tree keeps it that way; tests/reliability/test_malicious_files.py
checks the behaviour with planted pickles."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("redgame", "theory", "games", "llm", "kernels", "benchmarks")


def _sources():
    for folder in SOURCE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            yield name, node


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_executing_loads(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve")
                           for n in names), f"{path}: imports a pickle library"
    for name, call in _calls(tree):
        keywords = {k.arg: k.value for k in call.keywords}
        if name == "load" and isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "torch":
            wo = keywords.get("weights_only")
            assert isinstance(wo, ast.Constant) and wo.value is True, f"{path}:{call.lineno}: torch.load without weights_only=True"
        if "trust_remote_code" in keywords:
            value = keywords["trust_remote_code"]
            assert not (isinstance(value, ast.Constant) and value.value is True), \
                f"{path}:{call.lineno}: trust_remote_code=True hard-coded"
        owner = getattr(getattr(call.func, "value", None), "id", "")
        if name in ("load", "loads") and owner == "pickle":
            raise AssertionError(f"{path}:{call.lineno}: pickle load")
        if owner == "yaml":
            assert name in ("safe_load", "safe_load_all", "safe_dump", "dump"), f"{path}:{call.lineno}: yaml.{name}"
        if isinstance(call.func, ast.Name):
            assert name not in ("eval", "exec"), f"{path}:{call.lineno}: builtin {name}"
        for flag, unsafe in (("use_safetensors", False), ("shell", True), ("allow_pickle", True)):
            value = keywords.get(flag)
            assert not (isinstance(value, ast.Constant) and value.value is unsafe), \
                f"{path}:{call.lineno}: {flag}={unsafe} hard-coded"
        if name == "load" and owner in ("np", "numpy"):
            allow = keywords.get("allow_pickle")
            assert allow is None or (isinstance(allow, ast.Constant) and allow.value is False), \
                f"{path}:{call.lineno}: numpy load with allow_pickle"


def test_trust_remote_code_defaults_to_false():
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    args = node.args
                    defaults = dict(zip([a.arg for a in args.args][-len(args.defaults):], args.defaults)) if args.defaults else {}
                    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
                    if "trust_remote_code" in defaults:
                        d = defaults["trust_remote_code"]
                        assert isinstance(d, ast.Constant) and d.value is False, f"{path}:{node.lineno}"
