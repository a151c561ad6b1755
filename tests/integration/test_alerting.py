"""Alerting and monitoring on real guests: heartbeats of every job to the local
Healthchecks-compatible receiver, and the monitoring server's alerts to its webhook endpoint.

Its own test bed (the prod stack with test-scale periods and thresholds), so waits are seconds:
tests run in file order, share the faults they inject (a stopped replica alerts both ways), and
the last one powers the primary off, which ends the deploy. Each time to alert is printed and
collected in the README's monitoring section.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

import pytest

from sandbox import scenarios
from sandbox.rehearse import Rehearsal
from sandbox.scenarios import notified
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
# The monitoring server at test scale: a scrape every 5 s, conditions held 10 s, notifications
# batched for 1 s and repeated every 5 s per group.
MONITORING = {
    "thresholds": {
        "downForSeconds": 5,
        "forSeconds": 10,
        "backupFullMaxAgeSeconds": 60,
        "archiveMaxAgeSeconds": 45,
    },
    "server": {
        "scrapeIntervalSeconds": 5,
        "groupWaitSeconds": 1,
        "groupIntervalSeconds": 5,
        "repeatIntervalSeconds": 60,
        "watchdog": {"periodSeconds": 20, "graceSeconds": 20},
    },
}
PRIMARY, REPLICA, MONITOR = "prod-g1-primary", "prod-g1-replica-1", "prod-monitoring"
STARTED = time.monotonic()
TIME_TO_ALERT: dict[str, float] = {}


@pytest.fixture(scope="module")
def reh():
    require_root_or_fail()
    testbed = Testbed(lock_wait=1800)
    rehearsal = Rehearsal("prod", testbed)
    try:
        rehearsal.prepare()
        assert rehearsal.healthchecks is not None, "the prod stack has an alerts block"
        block = {**json.loads(rehearsal.raw["pgstack:alerts"]), **ALERTS}
        monitoring = json.loads(rehearsal.raw["pgstack:monitoring"])
        monitoring["thresholds"] = MONITORING["thresholds"]
        monitoring["server"] = {**monitoring["server"], **MONITORING["server"]}
        rehearsal.raw = {
            **rehearsal.raw,
            "pgstack:alerts": json.dumps(block),
            "pgstack:monitoring": json.dumps(monitoring),
        }
        t0 = time.monotonic()
        rehearsal.run_program("first")
        print(f"deploy with alerting: {time.monotonic() - t0:.1f} s")
        yield rehearsal
    finally:
        testbed.down()
        print(f"test_alerting: {time.monotonic() - STARTED:.1f} s in all")
        for case, seconds in TIME_TO_ALERT.items():
            print(f"time to alert: {case}: {seconds:.1f} s")


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


def prom_query(reh, expr: str) -> list[dict[str, Any]]:
    """An instant query on the monitoring server's Prometheus (it listens on its loopback only)."""
    res = sh(
        reh, MONITOR, f"curl -fsS --get --data-urlencode query={shlex.quote(expr)} http://127.0.0.1:9090/api/v1/query"
    )
    return json.loads(res.stdout)["data"]["result"]


def webhook_count(reh) -> int:
    return len(reh.testbed.healthchecks_get("/sandbox/webhooks")["webhooks"])


def time_to_alert(case: str, t0: float, what: str, condition: Callable[[], Any], timeout: float) -> Any:
    value = wait_for(what, condition, timeout)
    TIME_TO_ALERT[case] = time.monotonic() - t0
    return value


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


# ---- monitoring: exporters, metrics, the monitoring role ------------------------------------


def test_every_exporter_target_is_up_in_prometheus(reh):
    def all_up() -> list[dict[str, Any]] | None:
        res = sh(reh, MONITOR, "curl -fsS http://127.0.0.1:9090/api/v1/targets?state=active")
        targets = json.loads(res.stdout)["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("every exporter target up", all_up, 60)
    got = {(t["labels"]["job"], t["labels"]["server"]) for t in targets}
    assert got == {(job, server) for job in ("node", "postgres") for server in (PRIMARY, REPLICA)}, got
    assert {r["metric"]["instance"]: r["value"][1] for r in prom_query(reh, "pg_up")} == {PRIMARY: "1", REPLICA: "1"}


def test_an_exporter_refuses_a_scrape_without_the_password_from_any_host(reh):
    primary = reh.ip(PRIMARY)
    ca = "/etc/prometheus/pgstack-ca.crt"
    for port in (9100, 9187):
        url = f"https://{primary}:{port}/metrics"
        # From the monitoring server itself, and from another host on the private network: the
        # cloud firewall does not filter the private network, the scrape password does.
        for where, cafile in ((MONITOR, ca), (REPLICA, "/etc/postgresql/15/main/pgstack-ca.crt")):
            code = sh(reh, where, f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert {cafile} {url}").stdout
            assert code == "401", f"{where} -> {url} without the password: {code}"
            wrong = sh(
                reh, where, f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert {cafile} -u prometheus:wrong {url}"
            )
            assert wrong.stdout == "401", f"{where} -> {url} with a wrong password: {wrong.stdout}"
        plain = sh(
            reh, MONITOR, f"curl -sS -o /dev/null -w '%{{http_code}}' http://{primary}:{port}/metrics", check=False
        )
        assert plain.stdout != "200", f"{port} answers plain HTTP"
    listening = sh(reh, PRIMARY, "ss -Hltn '( sport = :9100 or sport = :9187 )'").stdout
    local = sorted(line.split()[3] for line in listening.splitlines() if line.strip())
    assert local == [f"{primary}:9100", f"{primary}:9187"], f"the exporters listen on {local}, not the private IP only"


def test_the_backup_metrics_show_the_first_full_backup_within_a_scrape(reh):
    info = json.loads(
        sh(reh, PRIMARY, "runuser -u postgres -- pgbackrest --stanza=hcb_production-g1 --output=json info").stdout
    )
    fulls = [b for b in info[0]["backup"] if b["type"] == "full"]
    assert fulls, info
    newest = max(b["timestamp"]["stop"] for b in fulls)
    got = wait_for(
        "pgstack_backup_last_success_timestamp_seconds in Prometheus",
        lambda: prom_query(reh, 'pgstack_backup_last_success_timestamp_seconds{type="full"}'),
        15,
    )
    assert int(float(got[0]["value"][1])) == newest, (got, newest)
    assert got[0]["metric"]["server"] == PRIMARY and got[0]["metric"]["stanza"] == "hcb_production-g1"
    size = prom_query(reh, 'pgstack_backup_last_size_bytes{type="full"}')
    assert size and float(size[0]["value"][1]) > 1_000_000, size
    assert prom_query(reh, "pgstack_archive_wal_gap")[0]["value"][1] == "0"


def test_the_monitoring_role_reads_pg_stat_statements_and_nothing_in_the_app_database(reh):
    primary, pw = reh.ip(PRIMARY), reh.password("monitoring")
    db = reh.settings().database.name
    r = reh.probe(MONITOR, primary, "monitoring", pw, "postgres",
                  "select count(*) from pg_stat_statements where query like '%pg_stat_replication%'")  # fmt: skip
    assert r["ok"], r
    # pg_hba lets it reach the postgres database only.
    r = reh.probe(MONITOR, primary, "monitoring", pw, db, "select 1")
    assert not r["ok"] and r["sqlstate"] == "28000", f"the monitoring role connects to {db}: {r}"
    # From a host that is not the monitoring server: no pg_hba line.
    r = reh.probe(REPLICA, primary, "monitoring", pw, "postgres")
    assert not r["ok"] and r["sqlstate"] == "28000", r
    tables = sh(reh, PRIMARY, f"runuser -u postgres -- psql -X -At -d {db} -c \"select count(*) from "
                "information_schema.table_privileges where grantee = 'monitoring'\"").stdout.strip()  # fmt: skip
    assert tables == "0", f"the monitoring role holds {tables} table privileges in {db}"


def test_the_watchdog_pings_the_heartbeat_service(reh):
    slug = "prod-monitoring-watchdog"
    since = ping_count(reh)
    wait_for("two Watchdog pings", lambda: len(pings(reh, slug, since)) >= 2, 2 * 20 + 30)
    assert checks(reh)[slug]["status"] == "up"


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
    # The `alert` scenario, as a user practises it (--scenario alert): broken, pinged, alerted, resolved.
    before = len(reh.checks)
    figures = scenarios.alert(reh)
    ran = reh.checks[before:]
    assert len(ran) == 3 and all(c.ok for c in ran), [(c.name, c.ok, c.detail) for c in ran]
    assert figures["backup_failed"], "the backup succeeded without its configuration"
    TIME_TO_ALERT["backup failed, the fail ping (heartbeats)"] = figures["fail_ping_seconds"]
    TIME_TO_ALERT["backup failed, BackupFailed at the webhook"] = figures["fired_seconds"]
    fail = figures["fail_ping"]
    assert fail["exit_status"] and fail["exit_status"] > 0, fail
    body = fail["body"]
    assert "FAILED" in body and f"exit status {fail['exit_status']}" in body and "Last log lines" in body, body
    assert "ERROR" in body, f"no log tail in the body: {body}"
    assert_no_secret(body, "the fail body", reh)
    assert figures["check_status_after_fail"] == "down", figures
    # The next good backup (the scenario's repair) brought the check back up.
    assert checks(reh)[f"{PRIMARY}-backup-diff"]["status"] == "up"


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


def test_with_backups_failing_the_backup_age_alert_reaches_the_webhook(reh):
    conf = "/etc/pgbackrest/pgbackrest.conf"
    bound = MONITORING["thresholds"]["backupFullMaxAgeSeconds"]
    sh(reh, PRIMARY, "systemctl start pgstack-backup@full.service")
    wait_for("no backup-age alert after a fresh full backup",
             lambda: not prom_query(reh, 'ALERTS{alertname="BackupFullTooOld",alertstate="firing"}'), 30)  # fmt: skip
    since = webhook_count(reh)
    t0 = time.monotonic()
    try:
        res = sh(reh, PRIMARY, f"chmod 000 {conf}; systemctl start pgstack-backup@full.service", check=False)
        assert res.returncode != 0, "the backup succeeded without its configuration"
        time_to_alert("backup failed (BackupFailed)", t0, "BackupFailed at the webhook",
                      lambda: notified(reh, since, "BackupFailed", "firing", type="full"), 30)  # fmt: skip
        alert = time_to_alert(
            f"last full backup older than {bound} s (BackupFullTooOld, from the failure)", t0,
            "BackupFullTooOld at the webhook", lambda: notified(reh, since, "BackupFullTooOld", "firing"), bound + 40,
        )  # fmt: skip
    finally:
        sh(reh, PRIMARY, f"chmod 640 {conf}; systemctl reset-failed pgstack-backup@full.service")
    assert alert["annotations"]["runbook"].endswith("#backupfulltooold"), alert["annotations"]
    # Counted from here: a resolved message of an earlier firing must not count.
    after_firing = webhook_count(reh)
    sh(reh, PRIMARY, "systemctl start pgstack-backup@full.service")
    resolved = wait_for("BackupFullTooOld resolved at the webhook",
                        lambda: notified(reh, after_firing, "BackupFullTooOld", "resolved"), 40)  # fmt: skip
    assert resolved["startsAt"] == alert["startsAt"], (resolved, alert)


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


def test_a_stopped_replica_postgres_alerts_from_the_heartbeats_and_the_monitoring_and_resolves(reh):
    since = ping_count(reh)
    hooks = webhook_count(reh)
    t0 = time.monotonic()
    sh(reh, REPLICA, "systemctl stop postgresql@15-main")
    try:
        # The primary's view: the replica's slot is no longer active.
        firing = time_to_alert(
            "replica PostgreSQL stopped (PostgresReplicaNotStreaming)", t0, "replica alert at the webhook",
            lambda: notified(reh, hooks, "PostgresReplicaNotStreaming", "firing", server=PRIMARY), 60,
        )  # fmt: skip
        assert notified(reh, hooks, "PostgresDown", "firing", server=REPLICA) or wait_for(
            "PostgresDown of the replica", lambda: notified(reh, hooks, "PostgresDown", "firing", server=REPLICA), 30
        )

        def down() -> bool:
            have = checks(reh)
            return all(have[f"{REPLICA}-{j}"]["status"] == "down" for j in ("alive", "replication"))

        wait_for("replica alive and replication down", down, PERIOD + GRACE + 15)
        TIME_TO_ALERT["replica PostgreSQL stopped (heartbeat checks down)"] = time.monotonic() - t0
        assert any(p["kind"] == "fail" for p in pings(reh, f"{REPLICA}-alive", since))
    finally:
        sh(reh, REPLICA, "systemctl start postgresql@15-main")
    back = time.monotonic()
    wait_for("replica alive again", lambda: checks(reh)[f"{REPLICA}-alive"]["status"] == "up", PERIOD + 15)
    resolved = wait_for("the replica alert resolved at the webhook",
                        lambda: notified(reh, hooks, "PostgresReplicaNotStreaming", "resolved", server=PRIMARY,
                                         slot_name=firing["labels"]["slot_name"]), 60)  # fmt: skip
    assert resolved["startsAt"] == firing["startsAt"], (resolved, firing)
    TIME_TO_ALERT["replica back (PostgresReplicaNotStreaming resolved)"] = time.monotonic() - back


def test_a_killed_primary_postgres_alerts_postgres_down_and_resolves(reh):
    hooks = webhook_count(reh)
    t0 = time.monotonic()
    sh(reh, PRIMARY, "systemctl kill --signal=SIGKILL postgresql@15-main")
    try:
        alert = time_to_alert("primary PostgreSQL killed (PostgresDown)", t0, "PostgresDown at the webhook",
                              lambda: notified(reh, hooks, "PostgresDown", "firing", server=PRIMARY), 60)  # fmt: skip
        assert alert["labels"]["severity"] == "critical" and alert["annotations"]["runbook"].endswith("#postgresdown")
    finally:
        sh(reh, PRIMARY, "systemctl reset-failed postgresql@15-main; systemctl start postgresql@15-main")
    resolved = wait_for("PostgresDown resolved at the webhook",
                        lambda: notified(reh, hooks, "PostgresDown", "resolved", server=PRIMARY), 60)  # fmt: skip
    assert resolved["startsAt"] == alert["startsAt"], (resolved, alert)
    wait_for("the replica streaming again", lambda: prom_query(reh, "pgstack_standby_streaming == 1"), 60)


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
    # The monitoring server holds it in alertmanager.yml (the Watchdog's URL, and here the webhook's).
    mode = sh(reh, MONITOR, "stat -c '%a %U %G' /etc/prometheus/alertmanager.yml").stdout.strip()
    assert mode == "640 root prometheus", mode
    leaked = sh(
        reh, MONITOR,
        f"find /etc /var /run /tmp /root /home /usr/local /opt -xdev -type f -perm -o+r -size -5M "
        f"-exec grep -l -F {key} {{}} + 2>/dev/null || true",
    ).stdout.strip()  # fmt: skip
    assert not leaked, f"{MONITOR}: the ping key is in world-readable files: {leaked}"
    # Alertmanager logs a failed notification with its URL: make one fail (the Watchdog is sent
    # every 20 s), then the journal must show it with the URL's path redacted.
    reh.testbed.healthchecks_outage(True)
    try:
        wait_for(
            "a failed notification in Alertmanager's log",
            lambda: "Notify attempt failed" in sh(reh, MONITOR, "journalctl -u prometheus-alertmanager -o cat").stdout,
            60,
        )
    finally:
        reh.testbed.healthchecks_outage(False)
    journal = sh(reh, MONITOR, "journalctl --no-pager -o cat").stdout
    assert "<redacted>" in journal, "the failed notification's URL was not redacted"
    assert key not in journal, f"{MONITOR}: the ping key is in the journal"


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
