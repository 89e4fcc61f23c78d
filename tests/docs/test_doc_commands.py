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
import shlex
import subprocess
import sys
import warnings
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
    (r"^(redgame (demo|llm)|(python|\.venv/bin/python) benchmarks/)(?!.*(--help|-h)\b)",
     "runs a language model or a benchmark: test_llm_and_benchmark_commands_run runs the page's "
     "commands of this kind in order, in their derived small variants"),
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


def _bare(command: str) -> str:
    """The command without its comment (the docs' comments follow two spaces and a #)."""
    return re.sub(r"\s+#.*$", "", command).strip()


def skip_reason(command: str) -> str | None:
    bare = _bare(command)
    return next((reason for pattern, reason in SKIP if re.search(pattern, bare)), None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    return env


# Not linked: .git, and the layer folders, whose names (llm, kernels) are also PyPI packages that
# a `python -c` run in the scratch directory would otherwise shadow; redgame is installed.
NOT_LINKED = {".git", "theory", "games", "llm", "kernels"}
# the documented commands write there: linked, they wrote into a checkout's own runs/ (among a user's runs), and the
# next test run was refused there ("already holds a run")
OUTPUT_FOLDERS = {"runs"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory that links the top-level entries of the repository."""
    root = tmp_path_factory.mktemp("docs_commands")
    link_repository(root, leave_out=NOT_LINKED)
    return root


def link_repository(folder: Path, leave_out) -> None:
    """Link each top-level entry of the repository into ``folder``, except those in ``leave_out`` and the output
    folders."""
    for entry in REPO.iterdir():
        if entry.name not in leave_out | OUTPUT_FOLDERS:
            (folder / entry.name).symlink_to(entry)


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
    bare = _bare(command)
    if bare.startswith("redgame ") and not re.search(r"[|&;<>$`*?\[\]()=\\'\"]", bare.split(" ", 1)[1]):
        return _in_process(bare.split(), cwd)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def unique_commands(pages: list[Path]) -> list[tuple[str, str]]:
    """Each distinct command once (pages repeat the quick-start ones), with its first place."""
    seen: dict[str, str] = {}
    for page in pages:
        for cid, command in shell_commands(page):
            seen.setdefault(_bare(command), cid)
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


# -- commands that run a language model or a benchmark: derived small variants ------------------
#
# A page's `redgame llm ...`, `redgame demo ...` and `python benchmarks/...` lines run in the
# order the page gives them (later lines read the run folders of earlier ones), in one scratch
# directory per page, each as a variant derived from its text by these rules:
#
# - the language model is the tiny one (`--model tiny`; the demo: `--set model=tiny`);
# - `--steps N` becomes max(1, N // 10) and `--save-every S` max(1, S // 5), so that a resume
#   line still resumes; the demo plays 1 step;
# - `--set steps=N --set save_every=E` (without those flags) becomes `steps=N // E, save_every=1`,
#   and a later line's `FOLDER/checkpoints/step_K` of the folder it writes becomes step_{K // E};
# - training samples 6-token attacks and answers for 2 seeds a step (SHRINK);
# - eval and crossplay judge 2 harmful and 2 benign test seeds (written to the scratch
#   directory), with 6-token answers and no utility proxy;
# - `train-judge --probe` trains its probe on the tiny model;
# - a benchmark runs with `--smoke` (its own tiny-shape mode), once a page: the smoke mode sets the
#   shapes and repetitions itself, so a second line of the same script would repeat the first.
# Skipped, with the reason: lines that read files a reader must bring; lines that a unit test runs
# with the same arguments and checks (RUN_ELSEWHERE); the lines that read the folder a skipped line writes.

SHRINK = ("attack_tokens=6", "response_tokens=6", "seeds_per_step=2")  # --set, in place of a line's own
SMALL_SEEDS = {"harmful": "doc-harmful.txt", "benign": "doc-benign.txt", "both": "doc-seeds.jsonl"}
LLM_OR_BENCHMARK = re.compile(r"^(redgame (demo|llm)\b|(python|\.venv/bin/python) benchmarks/)")
USER_FILES = re.compile(r"--(harmful|benign)\s+\S*(harmbench|xstest)", re.I)
# Benchmarks whose smoke run another test already makes and checks (the same code at the same tiny shapes).
SMOKE_ELSEWHERE = {
    "benchmarks/gpu_check.py": "tests/kernels/test_gpu_check_smoke.py runs its --smoke mode",
    "benchmarks/kernel_tables.py": "tests/kernels/test_gpu_check_smoke.py runs gpu_check.py --smoke, which runs "
                                   "every table of kernel_tables.py --smoke and checks them",
    "benchmarks/llm_claims.py": "tests/llm/test_claims_experiment.py runs its --smoke mode and checks its report",
}
# Lines that a unit test already runs with the same arguments and checks (minutes each on 2 cores).
RUN_ELSEWHERE = [
    (re.compile(r"^redgame llm judge (--judge embedded )?--input (builtin|llm/data/judge_set\.jsonl) --split validation"
                r"( --json)?$"),
     "tests/llm/test_judge_cli.py runs `redgame llm judge --input builtin --split validation --json` and checks its "
     "metrics"),
    (re.compile(r"^redgame llm judge (--judge probe )?--input llm/data/judge_attack_holdout\.jsonl"
                r"( --second-labels \S+)?$"),
     "tests/llm/test_judge_classifier.py and test_judge_probe.py judge this hold-out and check the documented "
     "numbers; tests/llm/test_judge_set.py checks the second labeller's kappas"),
    (re.compile(r"^redgame llm judge --judge probe --input llm/data/judge_holdout\.jsonl$"),
     "tests/llm/test_judge_probe.py judges this hold-out with the shipped probe and checks the documented numbers"),
    (re.compile(r"^redgame llm train-judge --out \S+$"),
     "tests/llm/test_judge_classifier.py fits the same heads on the built-in set and checks them against the shipped card"),
    (re.compile(r"^redgame llm train-judge --data builtin llm/data/judge_defender_answers\.jsonl --out \S+$"),
     "tests/llm/test_judge_classifier.py runs this train-judge command, loads its folder and checks its card"),
    (re.compile(r"^redgame llm train-judge --attacks llm/data/judge_attacks\.jsonl --out \S+$"),
     "tests/llm/test_judge_attacks.py retrains with these rewrites, judges the second attack hold-out with the "
     "result and checks the documented numbers"),
]


def _replace_or_add(argv: list[str], flag: str, value) -> list[str]:
    if flag in argv:
        i = argv.index(flag)
        return argv[:i + 1] + [str(value)] + argv[i + 2:]
    return argv + [flag, str(value)]


def _scaled(argv: list[str], flag: str, divisor: int) -> list[str]:
    return _replace_or_add(argv, flag, max(1, int(argv[argv.index(flag) + 1]) // divisor)) if flag in argv else argv


def _set_index(argv: list[str], key: str) -> int | None:
    """The index of the value of ``--set key=...`` in argv, or None."""
    return next((i + 1 for i, a in enumerate(argv[:-1]) if a == "--set" and argv[i + 1].startswith(key + "=")), None)


def _with_sets(argv: list[str], settings) -> list[str]:
    """``argv`` with ``--set key=value`` for each setting: in place of the line's own ``--set key=...`` (a key
    given twice is refused), else added."""
    argv = list(argv)
    for setting in settings:
        i = _set_index(argv, setting.split("=", 1)[0])
        argv = argv + ["--set", setting] if i is None else argv[:i] + [setting] + argv[i + 1:]
    return argv


def _tiny(argv: list[str]) -> list[str]:
    """The tiny model, by the line's own ``--set model=...`` where it has one, else by ``--model``."""
    return _with_sets(argv, ["model=tiny"]) if _set_index(argv, "model") is not None else _replace_or_add(
        argv, "--model", "tiny")


def saves_every(command: str) -> int | None:
    """E of a train or probe line with ``--set steps=N --set save_every=E`` (its checkpoints are step_E,
    step_2E, ...): its small variant saves every step, so its checkpoint step_K becomes step_K/E."""
    argv = shlex.split(_bare(command))
    if argv[:2] != ["redgame", "llm"] or argv[2] not in ("train", "probe"):
        return None
    if "--steps" in argv or "--save-every" in argv:  # the flags override --set: scaled as flags
        return None
    i, j = _set_index(argv, "steps"), _set_index(argv, "save_every")
    return int(argv[j].split("=", 1)[1]) if i is not None and j is not None else None


def _per_checkpoint(argv: list[str], every: int) -> list[str]:
    """``--set steps=N --set save_every=E`` as ``steps=N/E, save_every=1``: one step per checkpoint."""
    argv = list(argv)
    i, j = _set_index(argv, "steps"), _set_index(argv, "save_every")
    argv[i] = f"steps={max(1, int(argv[i].split('=', 1)[1]) // every)}"
    argv[j] = "save_every=1"
    return argv


def rename_checkpoints(command: str, every_by_folder: dict[str, int | None]) -> str:
    """A line that reads ``FOLDER/checkpoints/step_K`` of a folder trained per checkpoint (saves_every)
    reads step_K/E there."""
    def scaled(match: re.Match) -> str:
        every = every_by_folder.get(match["folder"])  # None: numbered as written
        return match[0] if every is None else f"{match['folder']}/checkpoints/step_{int(match['k']) // every:04d}"
    return re.sub(r"(?P<folder>[\w./-]+)/checkpoints/step_(?P<k>\d+)", scaled, command)


def small_variant(command: str) -> tuple[list[str] | None, str | None]:
    """(argv of the derived variant, None) or (None, the reason it cannot run here)."""
    bare = _bare(command)
    argv = shlex.split(bare)
    if argv[0] != "redgame":  # a benchmark
        script = argv[1]
        if script in SMOKE_ELSEWHERE:
            return None, SMOKE_ELSEWHERE[script]
        if "--smoke" not in (REPO / script).read_text():
            return None, f"{script} has no --smoke mode"
        return [sys.executable, *argv[1:], *([] if "--smoke" in argv else ["--smoke"])], None
    if USER_FILES.search(bare):
        return None, "reads prompt files that the reader brings (HarmBench, XSTest)"
    for pattern, reason in RUN_ELSEWHERE:
        if pattern.search(bare):
            return None, reason
    sub = argv[1] if argv[1] == "demo" else argv[2]
    if sub == "demo":
        return _with_sets(_replace_or_add(argv, "--steps", 1), ["model=tiny", *SHRINK]), None
    if sub in ("train", "probe"):
        argv = _scaled(_scaled(_tiny(argv), "--steps", 10), "--save-every", 5)
        every = saves_every(command)
        argv = argv if every is None else _per_checkpoint(argv, every)
        return _with_sets(argv, SHRINK), None
    if sub == "eval":
        argv = _replace_or_add(argv, "--model", "tiny")
        for flag, value in (("--harmful", SMALL_SEEDS["harmful"]), ("--benign", SMALL_SEEDS["benign"]),
                            ("--max-new-tokens", 6)):
            argv = _replace_or_add(argv, flag, value)
        return argv + ([] if "--no-utility" in argv else ["--no-utility"]), None
    if sub == "crossplay":
        argv = _replace_or_add(argv, "--model", "tiny") if "--model" in argv else argv
        for flag, value in (("--seeds", SMALL_SEEDS["both"]), ("--attack-tokens", 6), ("--response-tokens", 6)):
            argv = _replace_or_add(argv, flag, value)
        return argv, None
    if sub == "train-judge" and "--probe" in argv:  # the probe reads the tiny model
        return _replace_or_add(argv, "--probe-model", "tiny"), None
    return argv, None  # judge, train-judge, report, ...: as written


def _written_folders(command: str) -> list[str]:
    """The folder a line writes: its --out."""
    argv = shlex.split(_bare(command))
    return [argv[argv.index("--out") + 1]] if "--out" in argv[:-1] else []


def _reads(command: str, folder: str) -> bool:
    """Whether a line names ``folder`` as an argument other than its --out, bare or after a prefix
    (``embedded:runs/judge``)."""
    argv = shlex.split(_bare(command))
    if "--out" in argv[:-1]:
        del argv[argv.index("--out"):argv.index("--out") + 2]
    return any(arg == folder or arg.endswith(":" + folder) for arg in argv)


def write_small_seeds(folder: Path) -> None:
    from redgame.llm.seeds import builtin_seeds

    test = builtin_seeds("test")
    harmful = [s for s in test if s.harmful][:2]
    benign = [s for s in test if not s.harmful][:2]
    (folder / SMALL_SEEDS["harmful"]).write_text("".join(s.prompt + "\n" for s in harmful))
    (folder / SMALL_SEEDS["benign"]).write_text("".join(s.prompt + "\n" for s in benign))
    (folder / SMALL_SEEDS["both"]).write_text("".join(json.dumps({"prompt": s.prompt, "harmful": s.harmful}) + "\n"
                                                      for s in harmful + benign))


def llm_and_benchmark_commands(page: Path) -> list[tuple[str, str]]:
    return [(cid, c) for cid, c in shell_commands(page)
            if LLM_OR_BENCHMARK.match(_bare(c)) and not re.search(r"(--help|-h)\b", c)]


LLM_PAGES = [p for p in PAGES if llm_and_benchmark_commands(p)]


def test_small_variants_follow_the_rules():
    argv, _ = small_variant("redgame llm train --model embedded --regime advgame --steps 40 --out r --save-every 5")
    assert argv[:3] == ["redgame", "llm", "train"] and argv[argv.index("--model") + 1] == "tiny"
    assert argv[argv.index("--steps") + 1] == "4" and argv[argv.index("--save-every") + 1] == "1"
    assert argv[-6:] == ["--set", SHRINK[0], "--set", SHRINK[1], "--set", SHRINK[2]]
    argv, _ = small_variant("redgame demo --out r --set seeds_per_step=8 --set model=x/y")  # replaced, not repeated
    assert [argv[i + 1].split("=")[0] for i, a in enumerate(argv) if a == "--set"] == [
        "seeds_per_step", "model", "attack_tokens", "response_tokens"]
    assert "seeds_per_step=2" in argv and "model=tiny" in argv
    argv, _ = small_variant("redgame llm train --out r --set model=x/y")
    assert "--model" not in argv and "model=tiny" in argv
    argv, _ = small_variant("redgame llm eval --adapter runs/a --json")
    assert argv[argv.index("--harmful") + 1] == SMALL_SEEDS["harmful"] and "--no-utility" in argv
    assert small_variant("redgame llm eval --harmful harmbench_behaviors.csv --json")[0] is None
    assert small_variant("python benchmarks/llm_step.py --iters 2")[0][-1] == "--smoke"
    assert small_variant("python benchmarks/kernel_tables.py --reps 5")[0] is None  # gpu_check.py --smoke runs it
    assert small_variant("redgame demo --out runs/demo")[0][:5] == ["redgame", "demo", "--out", "runs/demo", "--steps"]
    argv, _ = small_variant("redgame llm train-judge --probe --out runs/p")
    assert argv[argv.index("--probe-model") + 1] == "tiny"
    assert small_variant("redgame llm train-judge --out runs/j  # the classifier")[0] is None
    assert small_variant("redgame llm train-judge --data builtin x.jsonl --out runs/j")[0] is not None
    assert _written_folders("redgame llm train-judge --out runs/j  # the classifier") == ["runs/j"]
    assert _reads("redgame llm judge --judge embedded:runs/j --input builtin", "runs/j")
    assert not _reads("redgame llm judge --judge embedded:runs/jx --input builtin", "runs/j")
    assert not _reads("redgame llm train-judge --out runs/j", "runs/j")
    line = "redgame llm train --config r/config.json --out runs/r --resume --set steps=32 --set save_every=8"
    argv, _ = small_variant(line)
    assert argv[argv.index("--set", argv.index("--resume")) + 1:][:3] == ["steps=4", "--set", "save_every=1"]
    assert saves_every(line) == 8 and small_variant("redgame llm train --out r --steps 40")[0][-1] == SHRINK[-1]
    assert saves_every(line + " --steps 40") is None and saves_every(line + " --save-every 4") is None
    assert saves_every("redgame demo --out r --set steps=32 --set save_every=8") is None
    assert rename_checkpoints("redgame llm eval --adapter runs/r/checkpoints/step_0024 --out runs/r/e24.json",
                              {"runs/r": 8}) == "redgame llm eval --adapter runs/r/checkpoints/step_0003 --out runs/r/e24.json"
    assert rename_checkpoints("redgame llm eval --adapter runs/q/checkpoints/step_0024", {"runs/r": 8}).endswith("step_0024")


@pytest.mark.slow
@pytest.mark.parametrize("page", LLM_PAGES, ids=[_name(p) for p in LLM_PAGES])
@pytest.mark.long
def test_llm_and_benchmark_commands_run(page, tmp_path):
    """The page's language-model and benchmark lines, in order, as their small variants, in a
    scratch directory that links every top-level entry of the repository, as a checkout's root holds
    them (data paths such as ``llm/data/...`` resolve; a benchmark that starts ``python -c`` must start
    it elsewhere, or the kernels/ folder hides PyPI's ``kernels`` from transformers)."""
    link_repository(tmp_path, leave_out={".git"})
    write_small_seeds(tmp_path)
    ran, skipped, not_written, smoke_scripts, every_by_folder = [], [], [], set(), {}
    for cid, command in llm_and_benchmark_commands(page):
        command = rename_checkpoints(command, every_by_folder)
        argv, reason = small_variant(command)
        if argv is not None and argv[0] != "redgame" and argv[1] in smoke_scripts:  # `x.py --iters 2`, `x.py`
            argv, reason = None, "the same benchmark's smoke run as an earlier line (its smoke mode sets the shapes)"
        reads = next((folder for folder in not_written if _reads(command, folder)), None)
        if argv is None or reads:
            skipped.append(f"{cid}: {reason or f'reads {reads}, which a line not run here writes'}")
            not_written += _written_folders(command)
            continue
        smoke_scripts |= {argv[1]} if argv[0] != "redgame" else set()
        for folder in _written_folders(command):  # how this line numbered the folder's checkpoints
            every_by_folder[folder] = saves_every(command)
        not_written = [folder for folder in not_written if folder not in _written_folders(command)]
        proc = (_in_process(argv, tmp_path) if argv[0] == "redgame" else
                subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600))
        assert proc.returncode == 0, (f"{cid}: {command}\nran as: {' '.join(argv)}\nexit {proc.returncode}\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        ran.append(cid)
    if skipped:  # shown in the report's warnings summary
        warnings.warn(f"{_name(page)}: not run here: " + "; ".join(skipped), stacklevel=1)
    assert ran or skipped
