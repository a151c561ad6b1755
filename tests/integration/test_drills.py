"""Restore drills, repository verification and the write canary on real guests (issue 15).

Its own test bed: the prod stack (a primary and one replica, the drill on the replica) with
test-scale heartbeat periods, so the pings of the drill and verify jobs reach the local receiver.
Tests run in file order: a sound drill and verify first, then the faults (a flipped byte in a
backup file, then in a WAL segment, then too little disk), each undone before the next; then the
scheduled logical dumps (issue 16: the bed carries a logicalBackup block, so they cost no deploy of
their own), taken on the replica while pgbench writes on the primary.

Written with the drills issue and NOT run yet by its author (another run owned the machine's test
bed); the figures it prints (restore, recovery, ready, RPO) go into the README's benchmark section
once it has run.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox import scenarios
from sandbox.rehearse import Rehearsal
from sandbox.testbed import Testbed
from tests.conftest import REPO, require_root_or_fail

pytestmark = pytest.mark.integration

PERIOD, GRACE = 20, 20
ALERTS = {
    "jobs": {
        "alive": {"periodSeconds": PERIOD, "graceSeconds": GRACE},
        "archive": {"periodSeconds": PERIOD, "graceSeconds": GRACE},
        "replication": {"periodSeconds": PERIOD, "graceSeconds": GRACE},
        "drill": {"periodSeconds": 600, "graceSeconds": 60},
        "verify": {"periodSeconds": 600, "graceSeconds": 60},
        "logicalDump": {"periodSeconds": 600, "graceSeconds": 60},
    },
    "archiveMaxAgeSeconds": 45,
    "replicationMaxLagSeconds": 30,
}
CANARY_SECONDS = 5  # drill.canaryIntervalSeconds (the default)
ARCHIVE_TIMEOUT = 10  # the rehearsal's backup.archiveTimeoutSeconds (sandbox/overlay.py)
# The RPO bound the issue states: the canary period plus archive_timeout plus a margin (the push
# of the last segment and its fetch by the drill).
RPO_BOUND = CANARY_SECONDS + ARCHIVE_TIMEOUT + 10
# The live replica during a drill: its canary may be this old (the canary period plus 3 s).
LIVE_LAG_BOUND = CANARY_SECONDS + 3
PRIMARY, REPLICA = "prod-g1-primary", "prod-g1-replica-1"
SCRATCH = "/var/lib/pgstack/drill"
REPORT = "/var/lib/pgstack/drill-report.json"
FIGURES: dict[str, float] = {}
# On the live replica: is it streaming, and how old is the canary it has replayed.
LIVE_QUERY = (
    "select coalesce((select status from pg_stat_wal_receiver), 'none') || ' ' || "
    "extract(epoch from now() - at) from public.canary"
)


# The logicalBackup block of the bed: seed 001's shape (the data of the biggest tables and a
# plugin's schema left out), keep 2 so three dumps prove the retention.
KEEP = 2
EXCLUDED_DATA = ["public.notifications", "notification_h*"]
EXCLUDED_SCHEMAS = ["hint_plan"]
KEYS = Path(tempfile.gettempdir()) / "pgstack-it-age"


def age_key(name: str) -> str:
    """A new age keypair in KEYS/<name>; returns its public key (age-keygen prints it on stderr)."""
    KEYS.mkdir(mode=0o700, exist_ok=True)
    path = KEYS / name
    path.unlink(missing_ok=True)
    res = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    return res.stderr.strip().rsplit(" ", 1)[-1]


@pytest.fixture(scope="module")
def reh():
    require_root_or_fail()
    recipient = age_key("dump.key")
    age_key("other.key")
    testbed = Testbed(lock_wait=1800)
    rehearsal = Rehearsal("prod", testbed)
    try:
        rehearsal.prepare()
        assert rehearsal.healthchecks is not None, "the prod stack has an alerts block"
        block = {**json.loads(rehearsal.raw["pgstack:alerts"]), **ALERTS}
        block["jobs"] = {**json.loads(rehearsal.raw["pgstack:alerts"]).get("jobs", {}), **ALERTS["jobs"]}
        logical = {"schedule": "*-*-* 03:30:00", "recipients": [recipient], "keep": KEEP,
                   "excludeTableData": EXCLUDED_DATA, "excludeSchemas": EXCLUDED_SCHEMAS}  # fmt: skip
        rehearsal.raw = {**rehearsal.raw, "pgstack:alerts": json.dumps(block),
                         "pgstack:logicalBackup": json.dumps(logical)}  # fmt: skip
        rehearsal.run_program("first")
        yield rehearsal
    finally:
        testbed.down()
        for what, seconds in FIGURES.items():
            print(f"drill figure: {what}: {seconds:.2f}")


def sh(reh, server: str, script: str, check: bool = True, timeout: float = 900) -> Any:
    res = reh.testbed.ssh(reh.ip(server), script, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{server}: {script}\n{res.stdout}\n{res.stderr}"
    return res


def wait_for(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(1)


def pings(reh, slug: str, since: int = 0) -> list[dict[str, Any]]:
    return [p for p in reh.testbed.healthchecks_get("/sandbox/pings")["pings"][since:] if p["slug"] == slug]


def ping_count(reh) -> int:
    return len(reh.testbed.healthchecks_get("/sandbox/pings")["pings"])


def last_ping(reh, slug: str, since: int, kinds: tuple[str, ...]) -> dict[str, Any]:
    got = wait_for(f"a {'/'.join(kinds)} ping of {slug}",
                   lambda: [p for p in pings(reh, slug, since) if p["kind"] in kinds], 30)  # fmt: skip
    return got[-1]


def report(reh, server: str = REPLICA) -> dict[str, Any]:
    return json.loads(sh(reh, server, f"cat {REPORT}").stdout)


def drill(reh, server: str = REPLICA) -> Any:
    return sh(reh, server, "systemctl start pgstack-drill.service", check=False, timeout=1800)


def scratch_gone(reh, server: str = REPLICA) -> bool:
    return sh(reh, server, f"test ! -e {SCRATCH}", check=False).returncode == 0


def stanza(reh) -> str:
    s = reh.settings()
    return s.stanza(s.active)


def bucket_objects(reh) -> dict[str, str]:
    s = reh.settings()
    client = reh.testbed.s3_client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.backup.bucket):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return out


def flip_byte(reh, key: str) -> bytes:
    """Flip one byte in the middle of a repository object; returns the original to put back."""
    s = reh.settings()
    client = reh.testbed.s3_client()
    original = client.get_object(Bucket=s.backup.bucket, Key=key)["Body"].read()
    assert len(original) > 64, (key, len(original))
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    client.put_object(Bucket=s.backup.bucket, Key=key, Body=bytes(damaged))
    return original


def put_back(reh, key: str, original: bytes) -> None:
    s = reh.settings()
    reh.testbed.s3_client().put_object(Bucket=s.backup.bucket, Key=key, Body=original)


# ---- the canary ---------------------------------------------------------------------------


def test_the_canary_is_written_on_the_primary_and_replicated(reh):
    age = "select extract(epoch from now() - at) from public.canary where id = 1"
    for server in (PRIMARY, REPLICA):
        seconds = wait_for(f"a fresh canary on {server}",
                           lambda s=server: (v := float(reh.sql(s, age, "pgstack"))) <= CANARY_SECONDS + 2 and v + 1,
                           30)  # fmt: skip
        FIGURES[f"canary age on {server} (s)"] = seconds - 1
    # Only the primary writes: the replica's unit runs and leaves it alone.
    journal = sh(reh, REPLICA, "journalctl -u pgstack-canary.service -o cat -n 50").stdout
    assert "not written" not in journal and "read-only" not in journal, journal
    # The monitoring role reads it (postgres_exporter's query).
    count = reh.sql(PRIMARY, "select count(*) from information_schema.table_privileges where grantee = 'monitoring' "
                    "and table_name = 'canary' and privilege_type = 'SELECT'", "pgstack")  # fmt: skip
    assert count == "1", count


# ---- a sound drill --------------------------------------------------------------------------


def test_a_drill_on_the_replica_succeeds_without_disturbing_the_live_replica_or_the_bucket(reh):
    db = reh.settings().database.name
    reh.sql(PRIMARY, "create table if not exists it_drill (id serial primary key, v text)", db)
    reh.sql(PRIMARY, "insert into it_drill (v) select md5(g::text) from generate_series(1, 5000) g", db)
    assert sh(reh, PRIMARY, "systemctl start pgstack-backup@full.service", check=False).returncode == 0
    time.sleep(ARCHIVE_TIMEOUT + 2)
    before = bucket_objects(reh)
    replica_logs = sh(reh, REPLICA, "ls -l --time-style=+%s /var/log/pgbackrest/ 2>/dev/null; "
                      "cat /var/log/pgbackrest/*archive-push* 2>/dev/null | wc -l").stdout  # fmt: skip
    since = ping_count(reh)

    # The live replica while the drill runs: streaming, and its canary at most LIVE_LAG_BOUND old.
    samples: list[tuple[str, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            res = sh(
                reh, REPLICA, f"runuser -u postgres -- psql -X -At -d pgstack -c {shlex.quote(LIVE_QUERY)}", check=False
            )
            if res.returncode == 0 and res.stdout.strip():
                status, age = res.stdout.split()
                samples.append((status, float(age)))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    sampler.start()
    try:
        # The `drill` scenario, as a user practises it (--scenario drill).
        ran = scenarios.drill(reh)
    finally:
        stop.set()
        sampler.join(10)
    FIGURES["drill, systemctl start to its end (s)"] = time.monotonic() - t0
    assert ran["server"] == REPLICA, ran["server"]
    assert ran["returncode"] == 0, f"the drill failed:\n{ran['stdout']}\n{ran['stderr']}\n{ran['report']}"
    assert reh.checks[-1].ok, reh.checks[-1]
    got = report(reh)
    assert got == ran["report"]
    assert got["ok"] is True and got["failure"] is None, got
    for field in ("restore_seconds", "recovery_seconds", "ready_seconds", "rpo_seconds"):
        assert isinstance(got[field], (int, float)) and got[field] >= 0, (field, got)
        FIGURES[field] = got[field]
    assert got["ready_seconds"] >= got["restore_seconds"]
    assert got["bytes"] > 1_000_000 and got["needed_bytes"] > got["bytes"]
    assert got["rpo_seconds"] <= RPO_BOUND, f"RPO {got['rpo_seconds']} s over the bound {RPO_BOUND} s: {got}"
    assert set(got["checks"]) >= {"room", "restore", "recovery", "archive", "amcheck", "canary", "tables", "checksums"}
    assert all(c["ok"] for c in got["checks"].values()), got["checks"]
    assert "tables of" in got["checks"]["tables"]["detail"]
    assert scratch_gone(reh), f"{SCRATCH} is left after a successful drill"

    # The live replica streamed throughout, its canary never older than the bound.
    assert samples, "no sample of the live replica during the drill"
    assert all(status == "streaming" for status, _ in samples), samples
    worst = max(age for _, age in samples)
    FIGURES["live replica's canary age during the drill, max (s)"] = worst
    assert worst <= LIVE_LAG_BOUND, (
        f"the live replica fell {worst:.1f} s behind during the drill (bound {LIVE_LAG_BOUND})"
    )

    # Nothing of the drill in the bucket: every new object is WAL on the live timeline (the live
    # primary archives all along); no history file (the copy promotes: had it archived, it would
    # push one and WAL of the next timeline), no backup; and the drill server pushed nothing.
    time.sleep(2)
    new = sorted(set(bucket_objects(reh)) - set(before))
    timeline = reh.sql(PRIMARY, "select lpad(to_hex(timeline_id), 8, '0') from pg_control_checkpoint()").upper()
    for key in new:
        name = key.rsplit("/", 1)[-1]
        assert "/archive/" in f"/{key}", f"the drill window wrote {key}"
        assert not name.endswith(".history"), f"a timeline history appeared during the drill: {key}"
        assert name[:8] == timeline, f"WAL of another timeline appeared during the drill: {key}"
    # And the drill server's own archive-push logs did not move.
    after_logs = sh(reh, REPLICA, "ls -l --time-style=+%s /var/log/pgbackrest/ 2>/dev/null; "
                    "cat /var/log/pgbackrest/*archive-push* 2>/dev/null | wc -l").stdout  # fmt: skip
    push_lines = lambda text: text.strip().splitlines()[-1]  # noqa: E731
    assert push_lines(after_logs) == push_lines(replica_logs), (replica_logs, after_logs)

    # The heartbeat: start, then success with the report as the body.
    ping = last_ping(reh, f"{REPLICA}-drill", since, ("success", "fail"))
    assert ping["kind"] == "success", ping
    assert json.loads(ping["body"])["rpo_seconds"] == got["rpo_seconds"]
    assert any(p["kind"] == "start" for p in pings(reh, f"{REPLICA}-drill", since))
    metrics = sh(reh, REPLICA, "cat /var/lib/pgstack/metrics/drill.prom").stdout
    assert f'pgstack_drill_last_run_success{{stanza="{stanza(reh)}"}} 1' in metrics, metrics
    for name in ("last_success_timestamp_seconds", "rpo_seconds", "restore_seconds", "ready_seconds"):
        assert f"pgstack_drill_{name}{{" in metrics, (name, metrics)


def test_the_drill_timer_is_on_the_replica_only(reh):
    assert sh(reh, REPLICA, "systemctl is-enabled pgstack-drill.timer").stdout.strip() == "enabled"
    res = sh(reh, PRIMARY, "systemctl is-enabled pgstack-drill.timer", check=False)
    assert res.stdout.strip() != "enabled", res.stdout
    for server in (PRIMARY, REPLICA):
        for timer in ("pgstack-canary.timer", "pgstack-verify.timer"):
            assert sh(reh, server, f"systemctl is-active {timer}").stdout.strip() == "active", (server, timer)


def test_verify_succeeds_on_the_primary_and_does_nothing_on_the_replica(reh):
    since = ping_count(reh)
    res = sh(reh, PRIMARY, "systemctl start pgstack-verify.service", check=False, timeout=600)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert "status: ok" in sh(reh, PRIMARY, "cat /var/lib/pgstack/verify-report.txt").stdout
    assert last_ping(reh, f"{PRIMARY}-verify", since, ("success", "fail"))["kind"] == "success"
    metrics = sh(reh, PRIMARY, "cat /var/lib/pgstack/metrics/verify.prom").stdout
    assert f'pgstack_verify_last_run_success{{stanza="{stanza(reh)}"}} 1' in metrics, metrics
    sh(reh, REPLICA, "systemctl start pgstack-verify.service")
    assert not pings(reh, f"{REPLICA}-verify", since), "verify reported from the replica"


# ---- damage ---------------------------------------------------------------------------------


def newest_backup_file(reh) -> tuple[str, str]:
    """(label, key) of the largest file of the newest backup set in the bucket."""
    s = reh.settings()
    info = json.loads(sh(reh, PRIMARY, f"runuser -u postgres -- pgbackrest --stanza={stanza(reh)} --output=json "
                         "info").stdout)  # fmt: skip
    label = info[0]["backup"][-1]["label"]
    prefix = f"{s.backup.repo_path.strip('/')}/backup/{stanza(reh)}/{label}/"
    client = reh.testbed.s3_client()
    files = [o for o in client.list_objects_v2(Bucket=s.backup.bucket, Prefix=prefix + "bundle/").get("Contents", [])]
    if not files:
        files = [
            o for o in client.list_objects_v2(Bucket=s.backup.bucket, Prefix=prefix + "pg_data/").get("Contents", [])
        ]
    assert files, f"no file of backup {label} in the bucket"
    return label, max(files, key=lambda o: o["Size"])["Key"]


def test_a_flipped_byte_in_a_backup_file_fails_verify_and_the_drill_naming_it(reh):
    label, key = newest_backup_file(reh)
    since = ping_count(reh)
    original = flip_byte(reh, key)
    try:
        res = sh(reh, PRIMARY, "systemctl start pgstack-verify.service", check=False, timeout=600)
        assert res.returncode != 0, "verify passed a damaged backup file"
        text = sh(reh, PRIMARY, "cat /var/lib/pgstack/verify-report.txt").stdout
        assert "status: error" in text and label in text, text
        verify_ping = last_ping(reh, f"{PRIMARY}-verify", since, ("success", "fail"))
        assert verify_ping["kind"] == "fail" and label in verify_ping["body"], verify_ping

        res = drill(reh)
        assert res.returncode != 0, "the drill passed a damaged backup file"
        got = report(reh)
        assert got["ok"] is False, got
        failure = got["failure"]
        # pgBackRest's error names the file it could not read: the bundle, or the file in it.
        named = key.rsplit("/", 2)[-2:]
        assert "restore" in failure and (key.rsplit("/", 1)[-1] in failure or label in failure
                                         or "/".join(named) in failure or "pg_data/" in failure), failure  # fmt: skip
        assert "ERROR" in failure, failure
        drill_ping = last_ping(reh, f"{REPLICA}-drill", since, ("success", "fail"))
        assert drill_ping["kind"] == "fail", drill_ping
        assert scratch_gone(reh), f"{SCRATCH} is left after a failed drill"
        metrics = sh(reh, REPLICA, "cat /var/lib/pgstack/metrics/drill.prom").stdout
        assert f'pgstack_drill_last_run_success{{stanza="{stanza(reh)}"}} 0' in metrics, metrics
        # The last success stays (and ages: DrillTooOld).
        assert "pgstack_drill_last_success_timestamp_seconds{" in metrics
    finally:
        put_back(reh, key, original)


def test_a_flipped_byte_in_a_wal_segment_fails_verify_and_the_drill_naming_the_segment(reh):
    s = reh.settings()
    db = s.database.name
    # WAL after the newest backup: the drill must replay it to reach the archive's end.
    reh.sql(PRIMARY, "insert into it_drill (v) select md5(g::text) from generate_series(1, 2000) g", db)
    segment = reh.sql(PRIMARY, "select pg_walfile_name(pg_current_wal_lsn())")
    reh.sql(PRIMARY, "select pg_switch_wal()")
    prefix = f"{s.backup.repo_path.strip('/')}/archive/{stanza(reh)}/15-1/{segment[:16]}/{segment}"
    client = reh.testbed.s3_client()
    found = wait_for(f"{segment} in the bucket",
                     lambda: client.list_objects_v2(Bucket=s.backup.bucket, Prefix=prefix).get("Contents"),
                     ARCHIVE_TIMEOUT + 20)  # fmt: skip
    key = found[0]["Key"]
    # Later segments exist, so the damaged one is inside what the drill must replay.
    reh.sql(PRIMARY, "insert into it_drill (v) values ('after')", db)
    reh.sql(PRIMARY, "select pg_switch_wal()")
    time.sleep(ARCHIVE_TIMEOUT + 2)
    since = ping_count(reh)
    original = flip_byte(reh, key)
    try:
        res = sh(reh, PRIMARY, "systemctl start pgstack-verify.service", check=False, timeout=600)
        assert res.returncode != 0, "verify passed a damaged WAL segment"
        text = sh(reh, PRIMARY, "cat /var/lib/pgstack/verify-report.txt").stdout
        # pgBackRest 2.59's verify counts damaged WAL per archive id; it does not name the segment.
        archive_part = text.split("backup:", 1)[0]
        assert "status: error" in text and "checksum invalid: 1" in archive_part, text
        assert last_ping(reh, f"{PRIMARY}-verify", since, ("success", "fail"))["kind"] == "fail"

        res = drill(reh)
        assert res.returncode != 0, "the drill passed a damaged WAL segment"
        got = report(reh)
        assert got["ok"] is False and segment in got["failure"], got["failure"]
        assert last_ping(reh, f"{REPLICA}-drill", since, ("success", "fail"))["kind"] == "fail"
        assert scratch_gone(reh), f"{SCRATCH} is left after a failed drill"
    finally:
        put_back(reh, key, original)
    # Sound again: the next drill succeeds.
    assert drill(reh).returncode == 0, report(reh)


def test_with_too_little_disk_the_drill_refuses_with_both_numbers(reh):
    raw = reh.raw
    # The largest margin config takes: the test database (tens of MB) times 10,001 is more than
    # any disk a test machine has.
    reh.raw = {**raw, "pgstack:drill": json.dumps({"marginPercent": 1_000_000})}
    try:
        reh.run_program("huge drill margin")
        acted = {n for n, a in reh.runs[-1]["actions"].items() if a != "same"}
        assert acted == {f"{PRIMARY}-drills", f"{REPLICA}-drills"}, acted
        since = ping_count(reh)
        res = drill(reh)
        assert res.returncode != 0, "the drill ran with a margin of 1,000,000 %"
        got = report(reh)
        assert got["checks"]["room"]["ok"] is False, got
        failure = got["failure"]
        assert f"it needs {got['needed_bytes']} bytes" in failure, failure
        assert f"{got['available_bytes']} bytes are available" in failure, failure
        assert got["needed_bytes"] > got["available_bytes"]
        assert "restore" not in got["checks"], "the drill restored despite the lack of room"
        ping = last_ping(reh, f"{REPLICA}-drill", since, ("success", "fail"))
        assert ping["kind"] == "fail" and str(got["needed_bytes"]) in ping["body"], ping
        assert scratch_gone(reh)
        journal = sh(reh, REPLICA, "journalctl -u pgstack-drill.service -o cat -n 20").stdout
        assert "not enough room" in journal, journal
    finally:
        reh.raw = raw
        reh.run_program("drill margin back")


# ---- logical dumps ----------------------------------------------------------------------------

DUMP_REPORT = "/var/lib/pgstack/logical-dump-report.json"
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
# pgbench's TPC-B transaction adds the same delta to an account, its teller and branch and logs it
# in pgbench_history: in any consistent snapshot the four sums agree.
SUMS = ("select (select sum(abalance) from pgbench_accounts) || ' ' || (select sum(tbalance) from pgbench_tellers)"
        " || ' ' || (select sum(bbalance) from pgbench_branches) || ' ' || (select sum(delta) from pgbench_history)"
        " || ' ' || (select count(*) from pgbench_history)")  # fmt: skip


def dump_objects(reh) -> list[str]:
    s = reh.settings()
    got = reh.testbed.s3_client().list_objects_v2(Bucket=s.backup.bucket, Prefix="logical/").get("Contents", [])
    return sorted(o["Key"] for o in got)


def put_file(reh, server: str, path: str, data: bytes, mode: str = "600", owner: str = "postgres") -> None:
    script = f"cat >{path} && chown {owner} {path} && chmod {mode} {path}"
    res = reh.testbed.ssh(reh.ip(server), script, stdin=data)
    assert res.returncode == 0, res.stderr


def test_the_logical_dump_timer_is_on_the_primary_and_the_replica_and_pgbackrest_is_the_pinned_one(reh):
    for server in (PRIMARY, REPLICA):
        assert sh(reh, server, "systemctl is-enabled pgstack-logical-dump.timer").stdout.strip() == "enabled"
        # repo-put and repo-rm are internal commands of pgBackRest: the release they were built on.
        assert sh(reh, server, "pgbackrest version").stdout.startswith("pgBackRest 2.59"), server
    recipients = sh(reh, REPLICA, "cat /etc/pgstack/logical-dump.recipients").stdout
    assert recipients.startswith("age1") and "SECRET" not in recipients


def test_logical_dumps_under_write_load_encrypt_leave_out_the_excluded_data_restore_and_keep_two(reh):
    s = reh.settings()
    db = s.database.name
    pg = f"runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -d {db}"
    setup = (
        f"runuser -u postgres -- {PGBENCH} -i -q -s 3 {db} && {pg} <<'SQL'\n"
        "create table if not exists notifications (id bigint primary key, body text);\n"
        "create table if not exists notification_history (id bigint primary key, body text);\n"
        "insert into notifications select g, md5(g::text) from generate_series(1, 3000) g;\n"
        "insert into notification_history select g, md5(g::text) from generate_series(1, 3000) g;\n"
        "create schema if not exists hint_plan;\n"
        "create table if not exists hint_plan.hints (id int primary key);\n"
        "insert into hint_plan.hints select generate_series(1, 10);\n"
        "SQL\n"
    )
    sh(reh, PRIMARY, setup, timeout=300)
    wait_for("pgbench's tables on the replica",
             lambda: reh.sql(REPLICA, "select count(*) from pg_tables where tablename = 'notification_history'", db)
             == "1", 60)  # fmt: skip
    since = ping_count(reh)
    # A 30 s max_standby_streaming_delay (the default) would never cancel a test-sized dump: 0
    # cancels at the first conflict, so the dump meets the write load's conflicts for real.
    sh(reh, REPLICA, "runuser -u postgres -- psql -X -c 'alter system set max_standby_streaming_delay = 0' "
       "-c 'select pg_reload_conf()'")  # fmt: skip
    reports = []
    t0 = time.monotonic()
    try:
        sh(reh, PRIMARY, f"systemd-run --quiet --unit=it-pgbench --uid=postgres {PGBENCH} -n -c 4 -T 120 {db}")
        time.sleep(3)
        for _ in range(KEEP + 1):
            res = sh(reh, REPLICA, "systemctl start pgstack-logical-dump.service", check=False, timeout=600)
            got = json.loads(sh(reh, REPLICA, f"cat {DUMP_REPORT}").stdout)
            assert res.returncode == 0 and got["ok"], f"the dump failed: {got}\n{res.stderr}"
            reports.append(got)
            time.sleep(1)  # names are to the second
        writing = sh(reh, PRIMARY, "systemctl is-active it-pgbench", check=False).stdout.strip()
        assert writing == "active", "pgbench stopped before the dumps ended: they were not under write load"
    finally:
        sh(reh, PRIMARY, "systemctl stop it-pgbench", check=False)
        sh(reh, REPLICA, "runuser -u postgres -- psql -X -c 'alter system reset max_standby_streaming_delay' "
           "-c 'select pg_reload_conf()'")  # fmt: skip
    FIGURES["logical dumps: 3 on the replica under pgbench, total (s)"] = time.monotonic() - t0
    for got in reports:
        assert got["role"] == "standby" and got["bytes"] > 10_000, got
        FIGURES[f"logical dump {got['file']}: seconds"] = got["seconds"]
    # Under write load with no standby delay, replay cancels a dump: the retry with replay paused
    # is what makes the dumps succeed.
    retried = [g for g in reports if g["attempts"] == 2]
    assert retried, f"no dump met a recovery conflict: {[(g['attempts'], g['seconds']) for g in reports]}"
    assert all(g["replay_paused_seconds"] > 0 for g in retried)
    FIGURES["logical dumps that met a recovery conflict (of 3)"] = len(retried)
    # Replay runs again: the standby catches up.
    assert sh(reh, REPLICA, "runuser -u postgres -- psql -X -At -c 'select pg_get_wal_replay_pause_state()'"
              ).stdout.strip() == "not paused"  # fmt: skip
    # Nothing left on the server: the encrypted file went to the bucket, no plaintext ever existed.
    assert sh(reh, REPLICA, "ls -A /var/lib/pgstack/logical-dump").stdout.strip() == ""

    # Retention: the newest KEEP of the three.
    objects = dump_objects(reh)
    assert objects == [f"logical/{stanza(reh)}/{g['file']}" for g in reports[-KEEP:]], objects
    assert reports[-1]["kept"] == KEEP and reports[-1]["removed"] == 1, reports[-1]

    # The primary's timer, with the replica streaming: it leaves the dump to the replica.
    res = sh(reh, PRIMARY, "systemctl start pgstack-logical-dump.service")
    journal = sh(reh, PRIMARY, "journalctl -u pgstack-logical-dump.service -o cat -n 5").stdout
    assert f"{REPLICA} streams from this primary" in journal, journal
    assert dump_objects(reh) == objects

    # Reports: start and success from the replica, nothing from the primary; the metrics.
    assert [p["kind"] for p in pings(reh, f"{REPLICA}-logical-dump", since)].count("success") == KEEP + 1
    assert not pings(reh, f"{PRIMARY}-logical-dump", since)
    metrics = sh(reh, REPLICA, "cat /var/lib/pgstack/metrics/logical-dump.prom").stdout
    label = f'{{stanza="{stanza(reh)}",database="{db}"}}'
    for line in (f"pgstack_logical_dump_last_run_success{label} 1", f"pgstack_logical_dump_count{label} {KEEP}",
                 f"pgstack_logical_dump_last_size_bytes{label} {reports[-1]['bytes']}"):  # fmt: skip
        assert line in metrics, (line, metrics)

    # Only the private key decrypts it.
    newest = objects[-1]
    body = reh.testbed.s3_client().get_object(Bucket=s.backup.bucket, Key=newest)["Body"].read()
    encrypted = KEYS / "newest.dump.age"
    encrypted.write_bytes(body)
    assert body.startswith(b"age-encryption.org/v1\n"), body[:40]
    wrong = subprocess.run(["age", "-d", "-i", str(KEYS / "other.key"), str(encrypted)], capture_output=True)
    assert wrong.returncode != 0 and not wrong.stdout, "another key decrypted the dump"
    right = subprocess.run(["age", "-d", "-i", str(KEYS / "dump.key"), "-o", str(KEYS / "newest.dump"),
                            str(encrypted)], capture_output=True, text=True)  # fmt: skip
    assert right.returncode == 0, right.stderr
    listing = subprocess.run(["pg_restore", "--list", str(KEYS / "newest.dump")], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    toc = listing.stdout
    # The excluded tables' definitions are there, their data is not; the excluded schema not at all.
    for table in ("notifications", "notification_history", "pgbench_accounts"):
        assert f" TABLE public {table} " in toc, (table, toc)
    assert " TABLE DATA public pgbench_accounts " in toc
    assert " TABLE DATA public notifications " not in toc and " TABLE DATA public notification_history " not in toc
    assert "hint_plan" not in toc, toc

    # The runbook restores it on the primary (as postgres, on the socket), fetching it with
    # pgbackrest repo-get from the bucket, into a new database.
    put_file(reh, PRIMARY, "/tmp/restore-dump.sh", (REPO / "runbooks" / "restore-dump.sh").read_bytes(), "755")
    put_file(reh, PRIMARY, "/tmp/dump.key", (KEYS / "dump.key").read_bytes())
    name = newest.rsplit("/", 1)[-1]
    restore = (
        f"PREFIX=/logical/{stanza(reh)} runuser -u postgres -- /tmp/restore-dump.sh -k /tmp/dump.key "
        f"-d it_dump_restore repo:{name}"
    )
    t0 = time.monotonic()
    res = sh(reh, PRIMARY, restore, check=False, timeout=600)
    FIGURES["restore-dump.sh into a new database (s)"] = time.monotonic() - t0
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert (
        "restored WITHOUT DATA (the dump left it out): public.notification_history public.notifications" in res.stderr
    )
    restored = reh.sql(PRIMARY, SUMS, "it_dump_restore").split()
    # The rows of one snapshot: pgbench wrote (history rows), and the four sums agree.
    assert int(restored[4]) > 0 and len(set(restored[:4])) == 1, restored
    assert reh.sql(PRIMARY, "select count(*) from pgbench_accounts", "it_dump_restore") == "300000"
    assert reh.sql(PRIMARY, "select count(*) from notifications", "it_dump_restore") == "0"
    assert reh.sql(PRIMARY, "select count(*) from pg_namespace where nspname = 'hint_plan'", "it_dump_restore") == "0"
    # The snapshot is older than the primary's end state: pgbench went on writing after it.
    assert int(restored[4]) < int(reh.sql(PRIMARY, "select count(*) from pgbench_history", db))
    # A database that holds tables is refused.
    again = sh(reh, PRIMARY, restore, check=False, timeout=600)
    assert again.returncode != 0 and "already holds" in again.stderr, again.stderr
    sh(reh, PRIMARY, "rm -f /tmp/dump.key /tmp/restore-dump.sh")


def test_without_its_replica_streaming_the_primary_takes_the_logical_dump_and_a_dead_receiver_does_not_fail_it(reh):
    """After a promotion, or with the replica down, the primary's own timer takes the dump."""
    db = reh.settings().database.name
    before = dump_objects(reh)
    streaming = f"select count(*) from pg_stat_replication where application_name = '{REPLICA}' and state = 'streaming'"
    sh(reh, REPLICA, "systemctl stop postgresql@15-main")
    reh.testbed.healthchecks_outage(True)
    try:
        wait_for("the replica gone from pg_stat_replication", lambda: reh.sql(PRIMARY, streaming) == "0", 30)
        res = sh(reh, PRIMARY, "systemctl start pgstack-logical-dump.service", check=False, timeout=600)
        got = json.loads(sh(reh, PRIMARY, f"cat {DUMP_REPORT}").stdout)
        assert res.returncode == 0 and got["ok"] and got["role"] == "primary", f"{got}\n{res.stderr}"
        journal = sh(reh, PRIMARY, "journalctl -u pgstack-logical-dump.service -o cat -n 30").stdout
        assert "logical-dump success NOT delivered" in journal, journal
    finally:
        reh.testbed.healthchecks_outage(False)
        sh(reh, REPLICA, "systemctl start postgresql@15-main")
    wait_for("the replica streaming again", lambda: reh.sql(PRIMARY, streaming) == "1", 60)
    # Retention again: the newest two, the primary's the newest.
    assert dump_objects(reh) == [*before[1:], f"logical/{stanza(reh)}/{got['file']}"], (before, dump_objects(reh))
    assert got["file"].startswith(f"{db}-")


def test_a_second_up_changes_nothing(reh):
    reh.run_program("second")
    acted = {n: a for n, a in reh.runs[-1]["actions"].items() if a != "same"}
    assert not acted, f"a second up acted on: {acted}"
