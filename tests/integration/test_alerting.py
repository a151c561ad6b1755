"""Alerting on real guests: heartbeats of every job to the local Healthchecks-compatible receiver.

Its own test bed (the prod stack with test-scale periods), so the periods can be seconds: tests
run in file order and the last one powers the primary off, which ends the deploy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from sandbox.rehearse import Rehearsal
from sandbox.testbed import Testbed
from tests.conftest import require_root_or_fail

pytestmark = pytest.mark.integration

PERIOD, GRACE = 20, 20
ALERTS = {
    "jobs": {
        "alive": {"periodSeconds": PERIOD, "graceSeconds": GRACE},
        "archive": {"periodSeconds": PERIOD, "graceSeconds": GRACE},
        "replication": {"periodSeconds": PERIOD, "graceSeconds": GRACE},
        "backupFull": {"periodSeconds": 600, "graceSeconds": 60},
        "backupDiff": {"periodSeconds": 300, "graceSeconds": 60},
    },
    # archiveTimeoutSeconds is 10 in the rehearsal: above 10 + PERIOD.
    "archiveMaxAgeSeconds": 45,
    "replicationMaxLagSeconds": 30,
}
PRIMARY, REPLICA = "prod-g1-primary", "prod-g1-replica-1"
STARTED = time.monotonic()


@pytest.fixture(scope="module")
def reh():
    require_root_or_fail()
    testbed = Testbed(lock_wait=1800)
    rehearsal = Rehearsal("prod", testbed)
    try:
        rehearsal.prepare()
        assert rehearsal.healthchecks is not None, "the prod stack has an alerts block"
        block = {**json.loads(rehearsal.raw["pgstack:alerts"]), **ALERTS}
        rehearsal.raw = {**rehearsal.raw, "pgstack:alerts": json.dumps(block)}
        t0 = time.monotonic()
        rehearsal.run_program("first")
        print(f"deploy with alerting: {time.monotonic() - t0:.1f} s")
        yield rehearsal
    finally:
        testbed.down()
        print(f"test_alerting: {time.monotonic() - STARTED:.1f} s in all")


def sh(reh, server: str, script: str, check: bool = True) -> Any:
    res = reh.testbed.ssh(reh.ip(server), script)
    if check:
        assert res.returncode == 0, f"{server}: {script}\n{res.stdout}\n{res.stderr}"
    return res


def checks(reh) -> dict[str, dict[str, Any]]:
    return {c["slug"]: c for c in reh.testbed.healthchecks_get("/api/v3/checks/")["checks"]}


def pings(reh, slug: str, since: int = 0) -> list[dict[str, Any]]:
    return [p for p in reh.testbed.healthchecks_get("/sandbox/pings")["pings"][since:] if p["slug"] == slug]


def ping_count(reh) -> int:
    return len(reh.testbed.healthchecks_get("/sandbox/pings")["pings"])


def wait_for(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            print(f"{what}: after {time.monotonic() - t0:.1f} s")
            return value
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(1)


def secrets_of(reh) -> dict[str, str]:
    hc = reh.healthchecks
    out = {"ping key": hc.ping_key, "API key": hc.api_key, "S3 secret key": reh.s3.secret_key}
    passphrase = reh.result.outputs.get("backup_cipher_passphrase")
    if passphrase:
        out["cipher passphrase"] = passphrase
    return out


def assert_no_secret(text: str, where: str, reh) -> None:
    for name, value in secrets_of(reh).items():
        assert value not in text, f"the {name} appears in {where}"


# ---- after up ------------------------------------------------------------------------------


def test_checks_exist_with_the_configured_periods(reh):
    have = checks(reh)
    for server in (PRIMARY, REPLICA):
        for job, key in (("alive", "alive"), ("archive", "archive"), ("replication", "replication"),
                         ("backup-full", "backupFull"), ("backup-diff", "backupDiff")):  # fmt: skip
            slug = f"{server}-{job}"
            assert slug in have, f"no check {slug}: {sorted(have)}"
            want = ALERTS["jobs"][key]
            assert (have[slug]["timeout"], have[slug]["grace"]) == (want["periodSeconds"], want["graceSeconds"])


def test_every_server_reports_alive_and_its_role_job(reh):
    def up() -> bool:
        have = checks(reh)
        return all(
            have[s]["status"] == "up"
            for s in (f"{PRIMARY}-alive", f"{REPLICA}-alive", f"{PRIMARY}-archive", f"{REPLICA}-replication")
        )

    wait_for("alive, archive and replication up", up, PERIOD * 2 + 15)
    have = checks(reh)
    # A job that does not apply to a server's role sends nothing: the check stays new, no alert.
    assert have[f"{PRIMARY}-replication"]["status"] == "new"
    assert have[f"{REPLICA}-archive"]["status"] == "new"
    assert "streaming" in pings(reh, f"{REPLICA}-replication")[-1]["body"]


# ---- backups -------------------------------------------------------------------------------


def test_a_full_backup_sends_start_and_success_with_its_duration(reh):
    since = ping_count(reh)
    sh(reh, PRIMARY, "systemctl start pgstack-backup@full.service")
    slug = f"{PRIMARY}-backup-full"
    wait_for("backup-full start and success", lambda: len(pings(reh, slug, since)) >= 2, 20)
    got = pings(reh, slug, since)
    kinds = [p["kind"] for p in got]
    assert kinds[:2] == ["start", "success"], got
    body = got[1]["body"]
    assert "succeeded in" in body and " s;" in body and "bytes" in body, body
    assert_no_secret(body, "the success body", reh)


def test_a_failed_backup_sends_fail_with_its_exit_status_and_log_tail(reh):
    conf = "/etc/pgbackrest/pgbackrest.conf"
    since = ping_count(reh)
    try:
        res = sh(reh, PRIMARY, f"chmod 000 {conf}; systemctl start pgstack-backup@diff.service", check=False)
        assert res.returncode != 0, "the backup succeeded without its configuration"
        got = wait_for(
            "backup-diff fail",
            lambda: [p for p in pings(reh, f"{PRIMARY}-backup-diff", since) if p["kind"] == "fail"],
            20,
        )
    finally:
        sh(reh, PRIMARY, f"chmod 640 {conf}; systemctl reset-failed pgstack-backup@diff.service")
    fail = got[-1]
    assert fail["exit_status"] and fail["exit_status"] > 0, fail
    body = fail["body"]
    assert "FAILED" in body and f"exit status {fail['exit_status']}" in body and "Last log lines" in body, body
    assert "ERROR" in body, f"no log tail in the body: {body}"
    assert_no_secret(body, "the fail body", reh)
    assert checks(reh)[f"{PRIMARY}-backup-diff"]["status"] == "down"


def test_with_the_receiver_unreachable_a_backup_still_succeeds(reh):
    reh.testbed.healthchecks_outage(True)
    try:
        res = sh(reh, PRIMARY, "systemctl start pgstack-backup@diff.service", check=False)
        assert res.returncode == 0, f"the backup failed with the alerting service down:\n{res.stderr}"
        journal = sh(reh, PRIMARY, "journalctl -u pgstack-backup@diff.service --no-pager -n 30").stdout
        assert "NOT delivered" in journal, journal
        assert_no_secret(journal, "the journal", reh)
    finally:
        reh.testbed.healthchecks_outage(False)


# ---- archive and replication ---------------------------------------------------------------


def test_archive_fails_while_the_store_is_down_and_recovers(reh):
    slug = f"{PRIMARY}-archive"
    since = ping_count(reh)
    reh.testbed.s3_outage(True)
    try:
        # The bound, then at most one period and the check's own run time.
        fail = wait_for(
            "archive fail with the store down",
            lambda: [p for p in pings(reh, slug, since) if p["kind"] == "fail"],
            ALERTS["archiveMaxAgeSeconds"] + PERIOD + 30,
        )
        assert "behind" in fail[-1]["body"], fail[-1]
    finally:
        reh.testbed.s3_outage(False)
    back = ping_count(reh)
    wait_for(
        "archive success with the store back",
        lambda: [p for p in pings(reh, slug, back) if p["kind"] == "success"],
        150,
    )
    assert checks(reh)[slug]["status"] == "up"


def test_a_stopped_replica_postgres_makes_its_checks_go_down(reh):
    since = ping_count(reh)
    sh(reh, REPLICA, "systemctl stop postgresql@15-main")
    try:

        def down() -> bool:
            have = checks(reh)
            return all(have[f"{REPLICA}-{j}"]["status"] == "down" for j in ("alive", "replication"))

        wait_for("replica alive and replication down", down, PERIOD + GRACE + 15)
        assert any(p["kind"] == "fail" for p in pings(reh, f"{REPLICA}-alive", since))
    finally:
        sh(reh, REPLICA, "systemctl start postgresql@15-main")
    wait_for("replica alive again", lambda: checks(reh)[f"{REPLICA}-alive"]["status"] == "up", PERIOD + 15)


# ---- the ping key stays secret -------------------------------------------------------------


def test_the_ping_key_is_nowhere_in_plain_text(reh):
    key = reh.healthchecks.ping_key
    outputs = json.dumps(reh.result.outputs, default=str)
    assert key not in outputs, "the ping key is in the outputs"
    from sandbox import program

    for r in reh.result.mocks.registrations:
        create = program.unwrap(r.inputs.get("create", ""))
        assert key not in json.dumps(create), f"the ping key is in the command text of {r.name}"
        redacted = json.dumps(program.redact(r.inputs))
        assert key not in redacted, f"the ping key is in a non-secret input of {r.name}"
    for server in (PRIMARY, REPLICA):
        mode = sh(reh, server, "stat -c '%a %U' /etc/pgstack/heartbeats.env").stdout.strip()
        assert mode == "600 root", mode
        assert key in sh(reh, server, "cat /etc/pgstack/heartbeats.env").stdout
        units = sh(reh, server, "find /etc/systemd/system -path '*pgstack*' -type f -exec cat {} +").stdout
        assert "pgstack-heartbeat" in units, "no heartbeat unit found to scan"
        assert key not in units, f"{server}: the ping key is in a unit file"
        # Process command lines, sampled while heartbeats run (a check takes a moment); searched
        # here, not with a grep on the guest, whose own command line would hold the key.
        cmdlines = sh(
            reh, server,
            "for i in $(seq 1 40); do systemctl start --no-block pgstack-heartbeat@alive.service; "
            "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; echo; sleep 0.1; done",
        ).stdout  # fmt: skip
        assert "pgstack-heartbeat" in cmdlines, "the sampling saw no heartbeat run"
        assert key not in cmdlines, f"{server}: the ping key is on a command line"
        # Every world-readable file where a deploy writes (the rest of the filesystem is the image's).
        leaked = sh(
            reh, server,
            f"find /etc /var /run /tmp /root /home /usr/local /opt -xdev -type f -perm -o+r -size -5M "
            f"-exec grep -l -F {key} {{}} + 2>/dev/null || true",
        ).stdout.strip()  # fmt: skip
        assert not leaked, f"{server}: the ping key is in world-readable files: {leaked}"
        journal = sh(reh, server, "journalctl --no-pager -o cat").stdout
        assert key not in journal, f"{server}: the ping key is in the journal"


def test_a_second_up_changes_nothing(reh):
    # Engine parity: the checks command and the heartbeat steps run again only when their
    # text, triggers or stdin change, and an unchanged stack changes none of them.
    reh.run_program("second")
    acted = {n: a for n, a in reh.runs[-1]["actions"].items() if a != "same"}
    assert not acted, f"a second up acted on: {acted}"


# ---- last: the whole primary gone ------------------------------------------------------------


def test_a_powered_off_primary_goes_late_from_the_outside(reh):
    slug = f"{PRIMARY}-alive"
    assert checks(reh)[slug]["status"] == "up"
    since = ping_count(reh)
    t0 = time.monotonic()
    reh.testbed.stop_guest(PRIMARY)
    # No ping at all from a server that is off: the receiver alone decides, after period and grace.
    wait_for("the powered-off primary's alive down", lambda: checks(reh)[slug]["status"] == "down", PERIOD + GRACE + 20)
    # A check running while the guest shut down may have sent a fail (PostgreSQL stopping):
    # that is an alert too. Without one, down came from the silence alone.
    if not [p for p in pings(reh, slug, since) if p["kind"] == "fail"]:
        assert time.monotonic() - t0 >= GRACE, "down before its grace ran out, without a fail ping"
