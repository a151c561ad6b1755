"""`--scenario list` (runbook scenarios issue): what a user can practise, without root or guests."""

from __future__ import annotations

import subprocess
import sys

from sandbox import scenarios
from tests.conftest import REPO


def test_the_list_names_every_scenario_with_what_it_shows():
    out = subprocess.run(
        [sys.executable, "-m", "sandbox", "rehearse", "--stack", "prod", "--scenario", "list"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert set(lines) == set(scenarios.SCENARIOS) >= {"pitr", "import"}, out
    assert all(len(what) > 20 for what in lines.values()), out


def test_an_unknown_scenario_names_the_known_ones():
    try:
        scenarios.run("promote-everything", None)
    except SystemExit as exc:
        assert "pitr" in str(exc) and "import" in str(exc)
    else:
        raise AssertionError("an unknown scenario ran")
