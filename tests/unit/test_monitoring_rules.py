"""The Prometheus alert rules: rendered from Thresholds, checked in, documented, and tested by promtool."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

import pytest
import yaml

from monitoring import rules
from monitoring.rules import ALERTS, Thresholds, render
from tests.conftest import REPO

MONITORING = REPO / "monitoring"
RULES = MONITORING / "pgstack.rules.yml"
PROMTOOL_TESTS = MONITORING / "pgstack.rules.test.yml"


def rendered(t: Thresholds) -> dict[str, dict]:
    doc = yaml.safe_load(render(t))
    (group,) = doc["groups"]
    assert group["name"] == "pgstack"
    return {rule["alert"]: rule for rule in group["rules"]}


def find_promtool() -> str:
    """promtool's path. Missing: a skip on a developer's machine, a failure in CI (a skip hides it)."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus): in CI the rules must be tested")
        pytest.skip("promtool is missing: apt-get install prometheus")
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return find_promtool()


def github_anchor(heading: str) -> str:
    """How GitHub names a heading's anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_headings() -> tuple[list[str], list[str]]:
    """Every heading's anchor in README.md, and the `### ` headings of its "Alert runbooks"."""
    anchors, runbooks, inside = [], [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("#"):
            anchors.append(github_anchor(line.lstrip("#")))
        if line.startswith("## "):
            inside = line == "## Alert runbooks"
        elif inside and line.startswith("### "):
            runbooks.append(line[4:].strip())
    return anchors, runbooks


def test_the_checked_in_rules_are_the_render_of_the_defaults():
    assert RULES.read_text() == render(Thresholds()), (
        "monitoring/pgstack.rules.yml differs from the rules: run `.venv/bin/python -m monitoring.rules --write`"
    )


def test_the_render_holds_every_alert_once_under_its_header():
    text = render(Thresholds())
    assert text.startswith("# Rendered by pgstack") and "(python -m monitoring.rules --write)" in text
    assert list(rendered(Thresholds())) == list(ALERTS)
    assert len(set(ALERTS)) == len(ALERTS) == 23


def test_changed_thresholds_show_up_in_the_render():
    t = Thresholds(
        replication_lag_seconds=42,
        for_seconds=7,
        down_for_seconds=120,
        disk_warning_percent=75,
        connections_ratio=0.65,
        backup_full_max_age_seconds=3 * 86400,
        runbook_url="https://github.com/example/pgstack/blob/main/README.md",
    )
    got = rendered(t)
    lag = got["PostgresReplicationLag"]
    assert lag["expr"] == "pgstack_replication_replay_lag_seconds > 42"
    assert lag["for"] == "7s"
    assert "over the 42s bound for 7s" in lag["annotations"]["description"]
    assert got["PostgresDown"]["for"] == "2m"
    assert got["DiskUsageHigh"]["expr"].endswith(") > 75")
    assert got["DiskUsageCritical"]["expr"].endswith(") > 90")
    assert got["PostgresConnectionsHigh"]["expr"].endswith("> 0.65")
    assert "over 65%" in got["PostgresConnectionsHigh"]["annotations"]["description"]
    assert got["BackupFullTooOld"]["expr"].endswith("> 259200")
    assert (
        got["Watchdog"]["annotations"]["runbook"] == "https://github.com/example/pgstack/blob/main/README.md#watchdog"
    )
    defaults = rendered(Thresholds())
    assert (
        defaults["PostgresReplicationLag"]["expr"].endswith("> 300")
        and defaults["PostgresReplicationLag"]["for"] == "5m"
    )


def test_alerts_without_a_hold_have_no_for():
    got = rendered(Thresholds())
    immediate = {name for name, rule in got.items() if "for" not in rule}
    assert immediate == {
        "PostgresSlotLost",
        "BackupFullTooOld",
        "BackupFailed",
        "ArchiveTooOld",
        "WalGapOpen",
        "DrillFailed",
        "DrillTooOld",
        "VerifyFailed",
        "LogicalDumpFailed",
        "LogicalDumpTooOld",
        "Watchdog",
    }
    # for_seconds=0 means at once, and Prometheus reads a missing `for` so.
    assert "for" not in rendered(Thresholds(for_seconds=0))["PostgresReplicationLag"]


def test_every_alert_has_a_severity_and_a_runbook_in_the_readme():
    anchors, runbooks = readme_headings()
    for name, rule in rendered(Thresholds()).items():
        assert rule["labels"]["severity"] in ({"none"} if name == "Watchdog" else {"warning", "critical"}), name
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, name
        doc, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert doc == "README.md", name
        assert name in runbooks, f"README.md's Alert runbooks has no `### {name}`"
        assert anchors.count(anchor) == 1, f"{name}: the anchor #{anchor} must name exactly one README heading"
    assert sorted(runbooks) == sorted(ALERTS), "a runbook in README.md names no alert (or one is missing)"


@pytest.mark.parametrize(
    "bad",
    [
        {"disk_warning_percent": 90, "disk_critical_percent": 90},
        {"disk_critical_percent": 100},
        {"connections_ratio": 1.2},
        {"slot_retained_ratio": 0},
        {"replication_lag_seconds": 0},
        {"for_seconds": -1},
        {"runbook_url": "README.md#alert-runbooks"},
    ],
)
def test_thresholds_refuse_nonsense(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).rsplit("_", 1)[0]):
        Thresholds(**bad)


def test_durations_read_as_prometheus_writes_them():
    assert [rules.duration(s) for s in (7, 60, 90, 300, 3600, 5400, 8 * 86400)] == [
        "7s",
        "1m",
        "90s",
        "5m",
        "1h",
        "90m",
        "8d",
    ]


def test_check_fails_on_a_hand_edit_and_write_repairs_it(tmp_path, capsys):
    copy = tmp_path / "pgstack.rules.yml"
    assert rules.main(["--check", "--file", str(copy)]) == 1  # missing
    assert rules.main(["--write", "--file", str(copy)]) == 0
    assert rules.main(["--check", "--file", str(copy)]) == 0
    copy.write_text(copy.read_text().replace("> 300", "> 301"))
    capsys.readouterr()
    assert rules.main(["--check", "--file", str(copy)]) == 1
    out, err = capsys.readouterr()
    assert "> 301" in out and "> 300" in out, out  # the diff
    assert "is out of date: run `python -m monitoring.rules --write`" in err
    assert rules.main(["--write", "--file", str(copy)]) == 0
    assert copy.read_text() == RULES.read_text()


def test_a_missing_promtool_skips_here_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        find_promtool()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        find_promtool()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules(promtool):
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool):
    result = run(promtool, "test", "rules", str(PROMTOOL_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_promtool_tests_cover_every_alert():
    tested = [case["alertname"] for group in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
              for case in group.get("alert_rule_test", [])]  # fmt: skip
    assert set(tested) == set(ALERTS)
    # Watchdog always fires; every other alert needs a case where it does not.
    silent = {case["alertname"] for group in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
              for case in group.get("alert_rule_test", []) if not case.get("exp_alerts")}  # fmt: skip
    assert silent == set(ALERTS) - {"Watchdog"}


@pytest.mark.parametrize(
    ("change", "alert"),
    [
        ({"replication_lag_seconds": 450}, "PostgresReplicationLag"),  # the firing case stops firing
        ({"connections_ratio": 0.15}, "PostgresConnectionsHigh"),  # the silent replica starts firing
        ({"for_seconds": 240}, "PostgresLongTransaction"),  # fires at 4m, where the test wants silence
    ],
)
def test_the_promtool_tests_fail_when_a_threshold_moves(promtool, tmp_path, change, alert):
    (tmp_path / RULES.name).write_text(render(dataclasses.replace(Thresholds(), **change)))
    shutil.copy(PROMTOOL_TESTS, tmp_path)
    result = run(promtool, "test", "rules", str(tmp_path / PROMTOOL_TESTS.name))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"alertname: {alert}," in output, output
