"""Every shell command in the docs pages works as written; the results tables hold.

The commands are the lines of the ```bash blocks of README.md and docs/*.md (a trailing
backslash continues a line); a command that several pages show runs once. Each runs from a
scratch directory that links the repository's top-level entries (so relative paths such as
``benchmarks/...`` resolve and new output folders land in the scratch directory). A plain
``redgame ...`` line runs in this process through ``redgame.cli.main``, the function the
console script calls (one Python start and import saved per command; a test checks that both
give the same output); any other line runs with bash, as a reader would paste it, with this
interpreter's bin directory first on PATH (so ``python`` and ``redgame`` are this venv's).
Slow or machine-changing commands are skipped by the rules in SKIP, each with its reason.

The ```python blocks of each page run too, in order, in one fresh interpreter per page.

The rows of the docs/results.md tables with a "command" column are re-run with ``--json``,
and each printed number (value, ASRs, mirror gap) and the defender classes are compared with
the output, so the numbers on that page are the ones the commands give.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TIMEOUT_S = 120

# (pattern on the command without its comment, reason to skip it)
SKIP = [
    (r"^make\b", "sets up a fresh .venv (minutes) or runs the whole suite; CI runs `make test` itself"),
    (r"\bpip install\b|\b-m venv\b", "installs packages"),
    (r"^(\.|source)\s", "changes the calling shell"),
    (r"^(\w+=\S*\s+)*(\S*/)?pytest\b|-m pytest\b", "runs the test suite itself"),
    (r"^mkdocs\b", "tests/docs/test_site.py builds the site"),
    (r"^jupyter\b", "starts an interactive server; tests/docs/test_notebooks.py runs the notebooks"),
    (r"^redgame demo\b", "trains on the embedded model (minutes on 2 CPU cores)"),
    (r"^redgame llm\b(?!.*(--help|-h)\b)",
     "runs a language model (train, eval or crossplay: a minute or more on 2 CPU cores, even with "
     "--model tiny); tests/llm covers these"),
    (r"^(python|\.venv/bin/python) benchmarks/", "a timing benchmark; `make bench` runs them"),
    (r"\s\[--?[\w-]+", "a usage synopsis: optional flags in [brackets], not one command"),
]
# ```python blocks that load the embedded model are too slow for CI.
SKIP_PYTHON = [(r"from_pretrained|load_base|embedded|Trainer\(|train\(", "loads or trains the embedded model")]
# Pages whose ```python blocks are API sketches with placeholder names, not programs.
SKIP_PYTHON_PAGES = {
    "docs/toy_dynamics.md": "the meta-game block is a signature sketch (payoffs, names_a are placeholders)",
}


def _blocks(text: str, lang: str) -> list[tuple[int, str]]:
    """(1-based line of the first body line, body) of each fenced block in language ``lang``."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)\s*(\S*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.groups()
        body, start = [], i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if info == lang:
            out.append((start, "\n".join(body)))
    return out


def _name(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name


def shell_commands(page: Path) -> list[tuple[str, str]]:
    """(id, command) for each command line of the page's ```bash blocks."""
    out = []
    for start, body in _blocks(page.read_text(), "bash"):
        pending, first = "", None
        for offset, line in enumerate(body.splitlines()):
            if first is None:
                first = start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = (pending + line).strip()
            if command and not command.startswith("#"):
                out.append((f"{_name(page)}:{first}", command))
            pending, first = "", None
    return out


def skip_reason(command: str) -> str | None:
    bare = re.sub(r"\s+#.*$", "", command)  # the docs' comments follow two spaces and a #
    return next((reason for pattern, reason in SKIP if re.search(pattern, bare)), None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    return env


# Not linked: .git, and the layer folders, whose names (llm, kernels) are also PyPI packages that
# a `python -c` run in the scratch directory would otherwise shadow; redgame is installed.
NOT_LINKED = {".git", "theory", "games", "llm", "kernels"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory that links the top-level entries of the repository."""
    root = tmp_path_factory.mktemp("docs_commands")
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED:
            (root / entry.name).symlink_to(entry)
    return root


def _in_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    from redgame.cli import main

    out, err, previous = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv[1:])
            except SystemExit as exc:  # argparse's --help / --version / usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a docs command. A plain ``redgame ...`` line (no shell syntax) runs in this process
    through ``redgame.cli.main``, the function the ``redgame`` console script calls, which saves a
    Python start and the imports per command; anything else runs with bash."""
    bare = re.sub(r"\s+#.*$", "", command).strip()
    if bare.startswith("redgame ") and not re.search(r"[|&;<>$`*?\[\]()=\\'\"]", bare.split(" ", 1)[1]):
        return _in_process(bare.split(), cwd)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def unique_commands(pages: list[Path]) -> list[tuple[str, str]]:
    """Each distinct command once (pages repeat the quick-start ones), with its first place."""
    seen: dict[str, str] = {}
    for page in pages:
        for cid, command in shell_commands(page):
            seen.setdefault(re.sub(r"\s+#.*$", "", command), cid)
    return [(cid, command) for command, cid in seen.items()]


COMMANDS = unique_commands(PAGES)


def test_the_pages_hold_commands():
    ids = {cid.split(":")[0] for cid, _ in COMMANDS}
    assert "docs/quickstart.md" in ids and "docs/cli.md" in ids
    assert any(c.startswith("redgame toy solve") for _, c in COMMANDS)


def test_the_console_script_runs_from_path(workdir):
    proc = subprocess.run(["bash", "-c", "redgame --version && redgame toy list"], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0 and proc.stdout.startswith("redgame ") and "hidden_intent" in proc.stdout


def test_in_process_runs_match_the_console_script(workdir):
    command = "redgame toy solve --game hidden_intent --param lam=0.25 --json"
    in_process = run(command, workdir)
    script = subprocess.run(["bash", "-c", command], cwd=workdir, env=_env(), capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    drop_time = lambda out: {k: v for k, v in json.loads(out).items() if k != "seconds"}  # noqa: E731
    assert in_process.returncode == script.returncode == 0
    assert drop_time(in_process.stdout) == drop_time(script.stdout)
    assert run("redgame toy solve --game nope", workdir).returncode == 2


def test_extraction_joins_continuations_and_skips_comments(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n```bash\n# a comment\nredgame toy list   # trailing\nredgame toy solve \\\n"
                    "  --game prompt_map\n```\n```python\nprint(1)\n```\n")
    assert [c for _, c in shell_commands(page)] == ["redgame toy list   # trailing",
                                                    "redgame toy solve    --game prompt_map"]
    assert skip_reason("make demo   # set up") and skip_reason("redgame llm train --steps 2")
    assert skip_reason("redgame toy crossplay [--seeds 5] [--json]")
    assert skip_reason("redgame toy solve --game prompt_map  # [not a synopsis]") is None


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_shell_command_runs(command, workdir):
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    proc = run(command, workdir)
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() or "--out" in command, f"{command} printed nothing"


PYTHON_PAGES = [p for p in PAGES if _blocks(p.read_text(), "python")]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[_name(p) for p in PYTHON_PAGES])
def test_python_blocks_run(page, workdir):
    blocks = [body for _, body in _blocks(page.read_text(), "python")]
    reasons = {reason for body in blocks for pattern, reason in SKIP_PYTHON if re.search(pattern, body)}
    reasons |= {SKIP_PYTHON_PAGES[_name(page)]} if _name(page) in SKIP_PYTHON_PAGES else set()
    if reasons:
        pytest.skip("; ".join(sorted(reasons)))
    proc = subprocess.run([sys.executable, "-c", "\n\n".join(blocks)], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]


# Column headers of docs/results.md tables -> the key of the command's --json output.
RESULT_COLUMNS = {
    "value": "value",
    "self-play asr": "selfplay_asr",
    "best-response asr": "best_response_asr",
    "mirror gap": "mirror_gap",
    "defender classes": "defender_classes",
}


def results_rows(page: Path) -> list[tuple[str, dict[str, str]]]:
    """(command, {json key: printed cell}) for each row of the tables with a "command" column
    and at least one column of RESULT_COLUMNS."""
    rows, header = [], None
    for line in page.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(cells) <= {"", "---"} or "command" not in header or not set(header) & set(RESULT_COLUMNS):
            continue
        row = dict(zip(header, cells))
        rows.append((row["command"].strip("`"), {RESULT_COLUMNS[h]: row[h] for h in header if h in RESULT_COLUMNS}))
    return rows


def check_number(printed: str, actual: float) -> None:
    """``actual`` rounds to ``printed`` (half a unit of its last digit; 1e-6 for a bare integer)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    tol = 0.5 * 10.0**-decimals + 1e-12 if decimals else 1e-6
    assert abs(actual - float(printed)) <= tol, f"printed {printed}, the command gives {actual}"


def check_classes(printed: str, actual) -> None:
    """"a, b" against a list of classes, or "other ×5" against a {class: runs} count."""
    if isinstance(actual, dict):
        counts = {}
        for item in printed.split(","):
            name, _, count = item.strip().partition("×")
            counts[name.strip()] = int(count)
        assert actual == counts
    else:
        assert actual == [c.strip() for c in printed.split(",")]


RESULTS = results_rows(REPO / "docs" / "results.md")


def test_results_page_has_the_claims_and_the_dynamics():
    keys = [set(expected) for _, expected in RESULTS]
    assert sum("value" in k for k in keys) >= 4 and sum("mirror_gap" in k for k in keys) >= 4


@pytest.mark.parametrize("command,expected", RESULTS, ids=[r[0] for r in RESULTS])
def test_results_table_matches_the_command(command, expected, workdir):
    proc = run(command + " --json", workdir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key, printed in expected.items():
        if key == "defender_classes":
            check_classes(printed, result.get("defender_classes", result.get("defender_class")))
        else:
            check_number(printed, result[key])
    if "max_gap" in result:
        assert result["max_gap"] < 1e-6
