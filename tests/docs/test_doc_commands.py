"""Every shell command in the docs pages works as written; the results tables hold.

The commands are the lines of the ```bash blocks of README.md and docs/*.md (a trailing
backslash continues a line). Each runs with bash, as a reader would paste it, from a scratch
directory that links the repository's top-level entries (so relative paths such as
``benchmarks/...`` resolve and new output folders land in the scratch directory), with this
interpreter's bin directory first on PATH (so ``redgame`` and ``python`` are this venv's).
Slow or machine-changing commands are skipped by the rules in SKIP, each with its reason.

The ```python blocks of each page run too, in order, in one fresh interpreter per page.

The tables of docs/results.md with the columns "command", "value" and "defender classes" are
re-run with ``--json`` and compared, so the numbers on that page are the ones the commands give.
"""

from __future__ import annotations

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
    (r"(^|/)pytest\b|-m pytest\b", "runs the test suite itself"),
    (r"^mkdocs\b", "tests/docs/test_site.py builds the site"),
    (r"^jupyter\b", "starts an interactive server; tests/docs/test_notebooks.py runs the notebooks"),
    (r"^redgame demo\b", "trains on the embedded model (minutes on 2 CPU cores)"),
    (r"^redgame llm\b(?!.*(--help|-h)\b)", "runs the embedded model (minutes on 2 CPU cores)"),
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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory that links every top-level entry of the repository."""
    root = tmp_path_factory.mktemp("docs_commands")
    for entry in REPO.iterdir():
        if entry.name not in (".git",):
            (root / entry.name).symlink_to(entry)
    return root


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
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


def results_rows(page: Path) -> list[tuple[str, float, list[str]]]:
    """(command, value, defender classes) from the tables with those columns."""
    rows, header = [], None
    for line in page.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(cells) <= {"", "---"} or not {"command", "value", "defender classes"} <= set(header):
            continue
        row = dict(zip(header, cells))
        classes = [c.strip() for c in row["defender classes"].split(",")]
        rows.append((row["command"].strip("`"), float(row["value"]), classes))
    return rows


RESULTS = results_rows(REPO / "docs" / "results.md")


def test_results_page_has_the_claims():
    assert len(RESULTS) >= 4


@pytest.mark.parametrize("command,value,classes", RESULTS, ids=[r[0] for r in RESULTS])
def test_results_table_matches_the_command(command, value, classes, workdir):
    proc = run(command + " --json", workdir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["value"] == pytest.approx(value, abs=1e-6)
    assert result["defender_classes"] == classes
    assert result["max_gap"] < 1e-6
