"""What a user installs: the base install is the toy games without torch, and the declared
lower bounds are the versions CI runs in ``make test-min``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, a base requirement there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
HEAVY = {"torch", "transformers", "peft", "triton", "tensorboard", "cvxpy", "vllm"}


def _bounds(requirements: list[str]) -> dict[str, Version]:
    """name -> the version of its ``>=`` bound, for the requirements that apply to this Python."""
    out = {}
    for text in requirements:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate():
            out.update({canonicalize_name(req.name): Version(s.version) for s in req.specifier if s.operator == ">="})
    return out


def test_the_base_install_has_no_heavy_dependency():
    names = {re.split(r"[<>=;\[ ]", r)[0].lower() for r in PYPROJECT["project"]["dependencies"]}
    assert names and not names & HEAVY


def test_min_versions_pin_exactly_the_declared_lower_bounds():
    declared = _bounds(PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["lp"])
    pinned = {}
    for line in (REPO / ".ci" / "min-versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name.strip())] = Version(version.strip())
    assert pinned == declared


def test_the_toy_games_run_without_torch_or_cvxpy():
    code = ("import sys\n"
            "for name in ('torch', 'transformers', 'peft', 'triton', 'cvxpy'):\n"
            "    sys.modules[name] = None  # an import of any of them now fails\n"
            "from redgame.cli import main\n"
            "sys.exit(main(['toy', 'solve', '--game', 'hidden_intent', '--param', 'lam=0.25', '--json']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert abs(json.loads(proc.stdout)["value"] - 0.125) < 1e-9  # min(lam, 1) / 2
