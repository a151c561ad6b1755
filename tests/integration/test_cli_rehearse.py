"""The README's first command, as a user runs it: `python -m sandbox rehearse --stack prod --twice`.

It must end with "ok": true, list the checks, and leave nothing behind: no namespace, no link,
no mount and no process of the test bed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_root_or_fail

pytestmark = pytest.mark.integration


def leftovers() -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if line.startswith("pgs-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if "pgs" in line.split(":")[1]]
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    found += [f"mount {m}" for m in mounts.splitlines() if "pgstack-sandbox" in m]
    procs = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [f"process {p.strip()}" for p in procs.splitlines()
              if ("systemd-nspawn" in p or "moto_tls" in p or "tcp_relay" in p) and "pgstack" in p]  # fmt: skip
    return found


def test_rehearse_twice_reports_ok_and_leaves_nothing(tmp_path):
    require_root_or_fail()
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "rehearse", "--stack", "prod", "--twice", "--report", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    failed = [c for c in data["checks"] if not c["ok"]]
    assert proc.returncode == 0 and data["ok"], f"{failed}\n{data.get('error')}\n{proc.stderr[-3000:]}"
    names = {c["name"] for c in data["checks"]}
    assert any("28000" in n for n in names) and any("28P01" in n for n in names), names
    assert any("second run: 0 to change" in n for n in names), names
    assert any("every script run again changed nothing" in n for n in names), names
    # The deploy summary shows the stack, one line per capability with its measured figure.
    values = {c["name"]: c.get("value") for c in data["checks"]}
    for line in (
        "servers booted",
        "TLS required: a plain TCP connection is refused",
        "each role reaches what it may",
        "replica streaming, with its slot",
        "first full backup listed",
        "a marker row's WAL reaches the bucket within archive_timeout",
        "the backup is encrypted",
        "heartbeats received",
        "every exporter scraped by the monitoring server",
    ):
        assert line in values, sorted(values)
    assert values["first full backup listed"]["repository_bytes"] > 0, values["first full backup listed"]
    assert values["replica streaming, with its slot"]["state"] == "streaming"
    assert 0 < values["a marker row's WAL reaches the bucket within archive_timeout"]["seconds"] <= 20
    assert values["TLS required: a plain TCP connection is refused"]["sqlstate"] == "28000"
    # As `pulumi up` with an unchanged config: the second run runs no command at all.
    assert [r["commands_run"] for r in data["runs"][:2]][1] == [], data["runs"][1]
    assert data["runs"][0]["counts"]["create"] == len(data["runs"][0]["actions"])
    assert data["hosts"] and data["steps"] and all(s["ok"] for s in data["steps"])
    assert leftovers() == []
