"""The rehearsal on real guests: the prod stack deployed by the real program, then checked.

One test bed for the whole module (guests boot once); tests run in file order and later ones
build on earlier state, the way an operator's day goes: deploy, use, re-run, reboot, restore.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import zlib

import pytest

from sandbox import scenarios
from sandbox.rehearse import PG, Rehearsal
from sandbox.testbed import Testbed
from tests.conftest import REPO as REPO_ROOT
from tests.conftest import require_root_or_fail

pytestmark = pytest.mark.integration

LOG_OVERRIDES = {"log_line_prefix": "%p %u %d ", "log_timezone": "Asia/Kolkata"}


@pytest.fixture(scope="module")
def reh():
    require_root_or_fail()
    testbed = Testbed(lock_wait=1800)
    rehearsal = Rehearsal("prod", testbed)
    try:
        rehearsal.prepare()
        # Log settings a team may well override: the restore must decide from the server, not from
        # log text (a prefix without the time, a zone other than UTC).
        rehearsal.raw = {**rehearsal.raw, "pgstack:postgresql": json.dumps(LOG_OVERRIDES)}
        rehearsal.run_program("first")
        yield rehearsal
    finally:
        testbed.down()


def new_checks(reh, action) -> list:
    before = len(reh.checks)
    action()
    return reh.checks[before:]


def assert_checks(checks) -> None:
    assert checks, "no check ran"
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, "\n".join(failed)


def sh(reh, server: str, script: str) -> str:
    res = reh.testbed.ssh(reh.ip(server), script)
    assert res.returncode == 0, f"{server}: {script}\n{res.stdout}\n{res.stderr}"
    return res.stdout.strip()


def primary(reh) -> str:
    s = reh.settings()
    return s.name(s.active, "primary")


def replica(reh) -> str:
    s = reh.settings()
    return s.name(s.active, "replica-1")


def pgbr(reh, server: str, args: str) -> str:
    stanza = reh.settings().stanza(reh.settings().active)
    return sh(reh, server, f"runuser -u postgres -- pgbackrest --stanza={stanza} {args}")


def backups(reh) -> list[dict]:
    return json.loads(pgbr(reh, primary(reh), "--output=json info"))[0]["backup"]


# ---- the deploy (local rehearsal issue) ----------------------------------------------------


def test_every_step_ran_on_the_guests(reh):
    names = {s["resource"] for s in reh.steps if s["ok"]}
    for expected in ("prod-g1-primary-install", "prod-g1-primary-configure", "prod-g1-primary-roles",
                     "prod-g1-replica-1-replica", "prod-g1-primary-pgbackrest"):  # fmt: skip
        assert expected in names, f"{expected} did not run: {sorted(names)}"


def test_health_checks(reh):
    assert_checks(new_checks(reh, reh.health_checks))


def test_report_shape(reh):
    report = reh.report(True, None)
    assert set(report) >= {"ok", "hosts", "steps", "checks"}
    assert report["hosts"]["prod-g1-primary"]["private_ip"] == "10.0.1.5"
    assert all({"resource", "seconds", "ok"} <= set(step) for step in report["steps"])


# ---- roles (least-privilege issue) ---------------------------------------------------------


def test_migrator_table_is_owned_by_owner_readable_and_writable(reh):
    s = reh.settings()
    mig = reh.as_role(s.roles.migrator.name, "create table if not exists it_owned (id serial primary key, v text)")
    assert mig["ok"], mig
    owner = reh.as_role(s.roles.migrator.name, "select tableowner from pg_tables where tablename = 'it_owned'")
    assert owner["rows"] == [[s.roles.owner]], owner
    wrote = reh.as_role(s.roles.app.name, "insert into it_owned (v) values ('app') returning id")
    assert wrote["ok"], wrote
    human_ro = next(h.name for h in s.roles.humans if h.access == "readonly")
    read = reh.as_role(human_ro, "select count(*) from it_owned")
    assert read["ok"] and read["rows"] == [["1"]], read
    reporting = reh.as_role(s.roles.reporting.name, "select count(*) from it_owned")
    assert reporting["ok"], reporting


def test_readonly_cannot_insert(reh):
    s = reh.settings()
    human_ro = next(h.name for h in s.roles.humans if h.access == "readonly")
    r = reh.as_role(human_ro, "insert into it_owned (v) values ('nope')")
    assert not r["ok"] and "permission denied" in r["message"], r


def test_write_cannot_create_table_or_become_owner(reh):
    s = reh.settings()
    human_rw = next(h.name for h in s.roles.humans if h.access == "write")
    r = reh.as_role(human_rw, "create table it_forbidden (id int)")
    assert not r["ok"] and "permission denied" in r["message"], r
    r = reh.as_role(human_rw, f"set role {s.roles.owner}")
    assert not r["ok"] and "permission denied" in r["message"], r
    r = reh.as_role(human_rw, "insert into it_owned (v) values ('write role')")
    assert r["ok"], r


def test_migrator_can_create_pgcrypto(reh):
    r = reh.as_role(reh.settings().roles.migrator.name, "create extension if not exists pgcrypto")
    assert r["ok"], r


def test_app_cannot_create_a_role(reh):
    r = reh.as_role(reh.settings().roles.app.name, "create role it_sneaky")
    assert not r["ok"] and "permission denied" in r["message"], r


def test_plain_connection_from_the_network_is_refused_and_tls_is_verified(reh, tmp_path):
    s = reh.settings()
    app = s.roles.app.name
    plain = reh.as_role(app, "select 1", sslmode="disable")
    assert plain["tcp"] and not plain["ok"] and plain["sqlstate"] == "28000", plain
    assert "no encryption" in plain["message"], plain
    ca = reh.result.outputs["ca_certificate"]
    path = tmp_path / "pgstack-ca.crt"  # the probe runs host programs inside a guest's namespace
    path.write_text(ca)
    verified = reh.as_role(app, "select 1", sslmode="verify-full", sslrootcert=str(path))
    assert verified["ok"] and verified["ssl"], verified
    wrong_ca = tmp_path / "other-ca.crt"
    wrong_ca.write_text(_other_ca())
    refused = reh.as_role(app, "select 1", sslmode="verify-full", sslrootcert=str(wrong_ca))
    assert not refused["ok"] and "certificate verify failed" in refused["message"], refused


def _other_ca() -> str:
    from sandbox import tls_provider

    key = tls_provider.provide("tls:index/privateKey:PrivateKey", {"algorithm": "ECDSA"})["privateKeyPem"]
    inputs = {"privateKeyPem": key, "isCaCertificate": True, "subject": {"commonName": "not ours"}}
    return tls_provider.provide("tls:index/selfSignedCert:SelfSignedCert", inputs)["certPem"]


def test_reporting_cannot_connect_to_another_database(reh):
    r = reh.as_role(reh.settings().roles.reporting.name, "select 1", db="postgres")
    assert not r["ok"] and r["sqlstate"] == "28000", r


def test_human_statements_are_logged(reh):
    s = reh.settings()
    human_rw = next(h.name for h in s.roles.humans if h.access == "write")
    marker = f"it_logged_{int(time.time())}"
    r = reh.as_role(human_rw, f"select '{marker}'")
    assert r["ok"], r
    log = sh(reh, primary(reh), f"cat {PG.log_file}")
    assert marker in log, f"{marker} not in the server log"


# ---- replication (streaming replica issue) -------------------------------------------------


def test_replica_streams_through_its_slot(reh):
    rows = reh.sql(primary(reh), "select state, application_name from pg_stat_replication")
    assert "streaming|prod-g1-replica-1" in rows, rows
    slot = reh.sql(primary(reh), "select slot_name, active from pg_replication_slots")
    assert "pgstack_prod_g1_replica_1|t" in slot, slot


def test_replica_is_read_only_and_receives_rows(reh):
    db = reh.settings().database.name
    reh.sql(primary(reh), "create table if not exists it_repl (id int primary key)", db)
    reh.sql(primary(reh), "insert into it_repl values (42) on conflict do nothing", db)
    seen = ""
    for _ in range(50):
        seen = reh.sql(replica(reh), "select count(*) from it_repl where id = 42", db) if _table_on_replica(reh) else ""
        if seen == "1":
            break
        time.sleep(0.2)
    assert seen == "1", "the row written on the primary never reached the replica"
    r = reh.as_role(reh.settings().roles.app.name, "insert into it_repl values (43)", host="10.0.1.6")
    assert not r["ok"] and "read-only transaction" in r["message"], r


def _table_on_replica(reh) -> bool:
    db = reh.settings().database.name
    return reh.sql(replica(reh), "select count(*) from pg_tables where tablename = 'it_repl'", db) == "1"


def test_replication_from_outsider_is_refused(reh):
    r = reh.probe("outsider", "10.0.1.5", "replicator", reh.password("replicator"), "replication")
    assert r["tcp"] and not r["ok"] and r["sqlstate"] == "28000", r


def test_dead_replica_cannot_fill_the_primary_and_catches_up_from_the_archive(reh):
    s = reh.settings()
    db = s.database.name
    slot = "pgstack_prod_g1_replica_1"
    raw = dict(reh.raw)
    raw["pgstack:replication"] = json.dumps({"maxSlotWalKeepSize": "64MB"})
    reh.raw = raw
    reh.run_program("slot bound 64MB")
    assert reh.sql(primary(reh), "show max_slot_wal_keep_size") == "64MB"

    sh(reh, replica(reh), f"systemctl stop {PG.unit}")
    try:
        start = reh.sql(primary(reh), "select pg_current_wal_lsn()")
        reh.sql(primary(reh), "create table if not exists it_bulk (id int, pad text)", db)
        for _ in range(4):
            reh.sql(
                primary(reh), "insert into it_bulk select g, repeat('x', 500) from generate_series(1, 100000) g", db
            )
        # A segment not yet archived is kept whatever the slot says (a fresh CI machine once
        # held 9 segments this way), so the bound is measured once the archiver has caught up.
        pending = ""
        for _ in range(180):
            pending = sh(reh, primary(reh), f"ls {PG.data_dir}/pg_wal/archive_status | grep -c '[.]ready$' || true")
            if pending.strip() == "0":
                break
            time.sleep(1)
        assert pending.strip() == "0", f"{pending.strip()} segments still waiting for the archive"
        reh.sql(primary(reh), "checkpoint")
        written = int(reh.sql(primary(reh), f"select pg_current_wal_lsn() - '{start}'::pg_lsn"))
        current = reh.sql(primary(reh), "select pg_walfile_name(pg_current_wal_lsn())")
        # Segments up to the current one are WAL still held; later names are recycled spares.
        held = sh(reh, primary(reh), f"ls {PG.data_dir}/pg_wal | grep -E '^[0-9A-F]{{24}}$'").split()
        held_bytes = 16 * 1024 * 1024 * len([f for f in held if f <= current])
        status = reh.sql(primary(reh), f"select wal_status from pg_replication_slots where slot_name = '{slot}'")
        assert written > 150 * 1024 * 1024, f"only {written} bytes of WAL written"
        assert status == "lost", f"the dead replica's slot is {status}, still holding WAL"
        assert held_bytes <= 128 * 1024 * 1024, f"pg_wal holds {held_bytes} bytes after {written} written"

        # Back up: the slot lost its WAL, so the replica replays from the pgBackRest archive.
        reh.sql(primary(reh), "insert into it_repl values (77) on conflict do nothing", db)
        reh.sql(primary(reh), "select pg_switch_wal()")
    finally:
        # The tests after this one need the replica whether or not the bound held.
        sh(reh, replica(reh), f"systemctl start {PG.unit}")
    seen = ""
    for _ in range(120):
        seen = reh.sql(replica(reh), "select count(*) from it_repl where id = 77", db)
        if seen == "1":
            break
        time.sleep(1)
    assert seen == "1", "the replica did not catch up from the archive"
    log = sh(reh, replica(reh), f"tail -n 200 {PG.log_file}")
    assert "restored log file" in log, "no WAL came from the archive (restore_command)"

    # pgstack-slots.timer recreates the lost slot (no `up` needed: an unchanged config runs no
    # step) and streaming resumes through it.
    state = ""
    for _ in range(90):
        state = reh.sql(
            primary(reh), f"select wal_status || ':' || active from pg_replication_slots where slot_name = '{slot}'"
        )
        if state == "reserved:true":
            break
        time.sleep(1)
    assert state == "reserved:true", state


# ---- backups (pgBackRest issue) -------------------------------------------------------------


def test_guests_run_the_pinned_pgbackrest_release(reh):
    from postgres.pgbackrest import TESTED_SERIES

    for server, ip in sorted(reh.testbed.guests().items()):
        version = reh.testbed.ssh(ip, "pgbackrest version").stdout.strip()
        assert version.startswith(f"pgBackRest {TESTED_SERIES}."), f"{server}: {version}"
    assert reh.pgbackrest["version"].startswith(f"pgBackRest {TESTED_SERIES}."), reh.pgbackrest
    # Block incremental is GA on this release: the config the servers run has it on.
    conf = sh(reh, primary(reh), "cat /etc/pgbackrest/pgbackrest.conf")
    assert "repo1-block=y" in conf


def test_full_backup_listed_after_up(reh):
    assert any(b["type"] == "full" for b in backups(reh)), backups(reh)


def test_marker_wal_reaches_bucket_within_archive_timeout(reh):
    s = reh.settings()
    db = s.database.name
    reh.sql(primary(reh), "create table if not exists it_marker (at timestamptz default now())", db)
    reh.sql(primary(reh), "insert into it_marker default values", db)
    walfile = reh.sql(primary(reh), "select pg_walfile_name(pg_current_wal_insert_lsn())")
    prefix = f"{s.backup.repo_path.strip('/')}/archive/{s.stanza(s.active)}/15-1/{walfile[:16]}/{walfile}"
    client = reh.testbed.s3_client()
    t0 = time.time()
    found = False
    while time.time() - t0 < s.backup.archive_timeout_seconds + 10:
        if client.list_objects_v2(Bucket=s.backup.bucket, Prefix=prefix).get("KeyCount", 0):
            found = True
            break
        time.sleep(0.5)
    assert found, f"{walfile} not in the bucket {time.time() - t0:.0f}s after the commit"


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def test_every_repository_file_is_encrypted(reh):
    s = reh.settings()
    client = reh.testbed.s3_client()
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.backup.bucket):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Size"] > 0]
    assert len(keys) > 5, keys
    # Plain text the cluster certainly holds (the database and role names are in its catalogs).
    needles = [s.database.name.encode(), s.roles.app.name.encode(), b"it_owned"]
    plain = []
    for key in keys:
        data = client.get_object(Bucket=s.backup.bucket, Key=key)["Body"].read()
        if "/bundle/" in key:
            # pgBackRest 2.59 encrypts bundled files without OpenSSL's "Salted__" header (the salt is
            # in the encrypted manifest), so there is no magic to look for. Ciphertext throughout:
            # no zstd frame (compressed but not encrypted files would each start with one), no
            # plain text of the cluster, and nothing a compressor can shrink.
            ok = ZSTD_MAGIC not in data and not any(n in data for n in needles)
            ok = ok and len(zlib.compress(data, 9)) > 0.99 * len(data)
        else:
            ok = data[:8] == b"Salted__"
        if not ok:
            plain.append(key)
    assert not plain, f"not encrypted: {plain[:5]}"


def test_info_with_a_wrong_passphrase_fails(reh):
    stanza = reh.settings().stanza(reh.settings().active)
    res = reh.testbed.ssh(
        reh.ip(primary(reh)),
        f"PGBACKREST_REPO1_CIPHER_PASS=not-the-passphrase runuser -u postgres -- pgbackrest --stanza={stanza} info",
    )
    assert res.returncode != 0 or "error" in res.stdout.lower(), res.stdout + res.stderr


def test_timers_exist_and_the_backup_service_makes_a_backup(reh):
    timers = sh(reh, primary(reh), "systemctl list-timers --all --no-legend 'pgstack-*'")
    for unit in ("pgstack-backup-full.timer", "pgstack-backup-diff.timer", "pgstack-archive-watch.timer"):
        assert unit in timers, timers
    before = len(backups(reh))
    sh(reh, primary(reh), "systemctl start pgstack-backup@diff.service")
    after = backups(reh)
    assert len(after) == before + 1 and after[-1]["type"] == "diff", after
    # On the replica the same unit runs and does nothing: backups belong to the primary.
    out = sh(
        reh, replica(reh), "systemctl start pgstack-backup@diff.service && journalctl -u pgstack-backup@diff -n 30"
    )
    assert "standby" in out, out
    assert len(backups(reh)) == before + 1


def test_a_failed_backup_leaves_a_failed_unit_and_a_log_line(reh):
    conf = "/etc/pgbackrest/pgbackrest.conf"
    try:
        res = reh.testbed.ssh(reh.ip(primary(reh)), f"chmod 000 {conf}; systemctl start pgstack-backup@diff.service")
        assert res.returncode != 0, "the backup service succeeded without its configuration"
        state = reh.testbed.ssh(reh.ip(primary(reh)), "systemctl is-failed pgstack-backup@diff.service").stdout
        assert state.strip() == "failed", state
        journal = sh(reh, primary(reh), "journalctl -u pgstack-backup@diff.service --no-pager -n 20")
        assert "ERROR" in journal, journal
    finally:
        sh(reh, primary(reh), f"chmod 640 {conf}; systemctl reset-failed pgstack-backup@diff.service")


def test_expire_honours_count_retention(reh):
    pgbr(reh, primary(reh), "--type=full backup")
    assert sum(b["type"] == "full" for b in backups(reh)) >= 2
    pgbr(reh, primary(reh), "--repo1-retention-full-type=count --repo1-retention-full=1 expire")
    fulls = [b for b in backups(reh) if b["type"] == "full"]
    assert len(fulls) == 1, fulls


# ---- re-runs and reboots ----------------------------------------------------------------------


def test_second_run_changes_nothing(reh):
    assert_checks(new_checks(reh, reh.twice))


def test_reboot_brings_postgres_back_on_the_private_ip(reh):
    assert_checks(new_checks(reh, reh.reboot_checks))


def test_password_rotation(reh):
    # The `rotate` scenario, as a user practises it (--scenario rotate).
    checks = new_checks(reh, lambda: scenarios.rotate(reh))
    assert_checks(checks)
    assert len(checks) == 2, [c.name for c in checks]
    role = reh.settings().roles.reporting.name
    # Memberships, not grants: the rotated role still reads.
    assert reh.as_role(role, "select count(*) from it_owned")["ok"]
    assert_no_secret_in_postgres_logs(reh)


def assert_no_secret_in_postgres_logs(reh) -> None:
    """No verifier, and no generated password, in any PostgreSQL log of any guest."""
    needles = ["SCRAM-SHA-256$", *(pw for pw in reh.passwords.values() if len(pw) >= 16)]
    for server, ip in sorted(reh.testbed.guests().items()):
        if server.endswith("-monitoring"):
            continue  # runs no PostgreSQL of the stack's
        res = reh.testbed.ssh(ip, "cat /var/log/postgresql/*.log 2>/dev/null || true")
        found = [n[:12] + "..." for n in needles if n in res.stdout]
        assert not found, f"{server}: the PostgreSQL log holds {found}"
        assert res.stdout, f"{server}: no PostgreSQL log to scan"


def test_a_new_admin_ssh_key_reruns_nothing_that_touches_data(reh):
    """A rotated pgstack:sshPrivateKey changes every command's connection: the engine replaces them.

    Only idempotent steps may run again; the create-only ones (a restore, a base backup) ignore the key.
    """
    before = dict(reh.raw)
    reh.raw = {**before, "pgstack:sshPrivateKey": before["pgstack:sshPrivateKey"] + "\n"}  # another key's text
    try:
        reh.run_program("new admin key")
    finally:
        reh.raw = before
    ran = reh.runs[-1]["commands_run"]
    assert ran, "a new key must re-run the steps that use it (the engine replaces them)"
    create_only = [n for n in ran if n.endswith(("-replica-1-replica", "-primary-restore"))]
    assert not create_only, f"create-only steps ran again: {create_only}"
    assert set(n.rsplit("-", 1)[-1] for n in ran) <= HARMLESS_ON_KEY_ROTATION, ran
    reh.run_program("old admin key back")


# Steps a rotated admin key runs again (README: "Protecting a running database server"): each is
# idempotent and changes nothing on a server that is as the config says.
HARMLESS_ON_KEY_ROTATION = {
    "wait", "install", "cluster", "tls", "configure", "roles", "slots", "pgbackrest", "config", "heartbeats",
    "exporters", "drills",
}  # fmt: skip


def test_app_migrations_switch_both_ways(reh):
    s = reh.settings()
    app = s.roles.app.name
    assert s.roles.app.runs_migrations, "prod runs migrations as the app (seed 000)"
    r = reh.as_role(app, "alter table it_owned add column if not exists by_app text")
    assert r["ok"], r
    raw = dict(reh.raw)
    roles = json.loads(raw["pgstack:roles"])
    roles["app"]["runsMigrations"] = False
    raw["pgstack:roles"] = json.dumps(roles)
    reh.raw = raw
    reh.run_program("app without migrations")
    r = reh.as_role(app, "alter table it_owned add column if not exists by_app2 text")
    assert not r["ok"] and "must be owner" in r["message"], r
    r = reh.as_role(app, "drop table it_owned")
    assert not r["ok"] and "must be owner" in r["message"], r
    assert reh.as_role(app, "insert into it_owned (v) values ('still writes')")["ok"]


# ---- an object-store outage (backups issue; restores a generation, so after the re-runs) ------


def test_object_store_outage_drops_wal_within_the_queue_then_rebases_backups(reh):
    """A dead store must not fill the disk; the WAL gap must be noticed and closed by a full backup
    (the `outage` scenario, as a user practises it)."""
    checks = new_checks(reh, lambda: scenarios.outage(reh))
    assert_checks(checks)
    names = " | ".join(c.name for c in checks)
    for expected in ("writes go on", "within its bound", "gap is reported", "point-in-time restore after"):
        assert expected in names, names
    print(f"outage figures: {checks[-1].value} {checks[1].value}")


# ---- point-in-time restore by config (PITR issue) ---------------------------------------------


def commit_time(reh, server: str, xid: str, since_lsn: str) -> dt.datetime:
    """The commit record's own time of transaction `xid`, to the microsecond, from the WAL."""
    out = sh(
        reh,
        server,
        f"runuser -u postgres -- {PG.bin_dir}/pg_waldump -p {PG.data_dir}/pg_wal -s {since_lsn} -r Transaction "
        "2>/dev/null || true",
    )
    for line in out.splitlines():
        m = re.search(rf"tx:\s+{xid}, .*desc: COMMIT (\S+ \S+) UTC", line)
        if m:
            return dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC)
    raise AssertionError(f"no commit record of xid {xid} in the WAL since {since_lsn}:\n{out[-2000:]}")


def test_restore_targets_hold_to_the_microsecond(reh):
    """A target at a commit's own time holds it; one microsecond before does not."""

    s = reh.settings()
    db, source = s.database.name, primary(reh)
    reh.sql(source, "create table if not exists it_usec (id int primary key)", db)
    reh.sql(source, "delete from it_usec", db)
    since = reh.sql(source, "select pg_current_wal_lsn()")
    # psql prints the command tag after the returned row.
    xid = reh.sql(source, "insert into it_usec values (1) returning txid_current()", db).splitlines()[0]
    time.sleep(0.2)
    reh.sql(source, "insert into it_usec values (2)", db)  # a later commit: recovery stops before it
    segment = reh.sql(source, "select pg_walfile_name(pg_current_wal_lsn())")
    reh.sql(source, "select pg_switch_wal()")
    for _ in range(60):
        if reh.sql(source, "select coalesce(last_archived_wal, '') from pg_stat_archiver") >= segment:
            break
        time.sleep(1)
    committed = commit_time(reh, source, xid, since)
    before = dict(reh.raw)
    made = []
    try:
        for target, rows in ((committed, "1"), (committed - dt.timedelta(microseconds=1), "0")):
            gen, ip = scenarios.next_generation(reh), scenarios.free_ip(reh)
            restore = {"primaryIp": ip, "restore": {"from": s.active, "targetTime": target.isoformat()}}
            reh.raw = scenarios._edit(reh.raw, "pgstack:clusters", lambda c, g=gen, r=restore: {**c, g: r})
            reh.run_program(f"restore {gen} to {target.isoformat()}")
            made.append(gen)
            name = s.name(gen, "primary")
            got = reh.sql(name, "select count(*) from it_usec where id = 1", db)
            assert got == rows, f"target {target.isoformat()} (commit at {committed.isoformat()}): {got} rows of id 1"
            assert reh.sql(name, "select count(*) from it_usec where id = 2", db) == "0"
            out = next(r for r in reh.mocks.registrations if r.name == f"{name}-restore").outputs
            assert "paused at the target" in str(out.get("stderr", "")), out.get("stderr")
    finally:
        reh.raw = before
        if made:
            reh.run_program("retire the microsecond generations")


def test_pitr_scenario(reh):

    assert_checks(new_checks(reh, lambda: scenarios.pitr(reh)))


def test_restore_to_an_unreachable_target_fails_loudly_and_stays_stopped(reh):
    """The target lies after the last archived WAL: recovery cannot reach it, and must say so."""
    from sandbox.rehearse import CommandFailed

    s = reh.settings()
    db = s.database.name
    source = s.name(s.active, "primary")
    ip_source = reh.ip(source)
    gen = scenarios.next_generation(reh)
    ip = scenarios.free_ip(reh)
    before = dict(reh.raw)
    hold = "alter system set archive_command = 'false'"
    sh(reh, source, f"runuser -u postgres -- psql -X -q -c \"{hold}\" -c 'select pg_reload_conf()'")
    try:
        reh.sql(source, "create table if not exists it_late (at timestamptz default now())", db)
        reh.sql(source, "insert into it_late default values", db)
        time.sleep(1.5)
        target = reh.sql(source, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS+00:00')")
        restore = {"primaryIp": ip, "restore": {"from": s.active, "targetTime": target}}
        reh.raw = scenarios._edit(reh.raw, "pgstack:clusters", lambda c: {**c, gen: restore})
        with pytest.raises(CommandFailed) as failed:
            reh.run_program(f"unreachable target {gen}")
        assert failed.value.name == f"prod-{gen}-primary-restore"
        assert "did NOT reach target" in str(failed.value), str(failed.value)
        state = reh.testbed.ssh(ip, f"systemctl is-active {PG.unit} || true").stdout.strip()
        assert state != "active", f"the failed restore left PostgreSQL {state}"
    finally:
        reset = "alter system reset archive_command"
        reh.testbed.ssh(ip_source, f"runuser -u postgres -- psql -X -q -c \"{reset}\" -c 'select pg_reload_conf()'")
        reh.raw = before


def test_promotion_after_a_crash_loses_at_most_the_replication_lag(reh):
    """kill -9 of a primary under a steady write load, then promotion of its replica (the `promote`
    scenario): the newest row on the new primary is younger than the kill by no more than the
    replication lag (< 1 s)."""
    checks = new_checks(reh, lambda: scenarios.promote(reh))
    assert_checks(checks)
    figures = checks[-1].value
    assert figures["rows"] > 100, figures
    assert figures["lost_seconds"] < 1.0, figures


def test_promotion_after_a_clean_stop_keeps_every_committed_row(reh):
    """Losing the primary (runbooks/promote-replica.sh). Destructive: runs last, and no program run
    may follow (the config still calls the promoted server a replica, and its step refuses)."""
    s = reh.settings()
    db = s.database.name
    old, new = s.name("g1", "primary"), s.name("g1", "replica-1")
    reh.sql(old, "create table if not exists it_promote (id int primary key)", db)
    reh.sql(old, "insert into it_promote select generate_series(1, 1000)", db)
    committed = reh.sql(old, "select count(*) || ':' || sum(id) from it_promote", db)
    script = (REPO_ROOT / "runbooks" / "promote-replica.sh").read_text()
    refused = reh.testbed.ssh(reh.ip(new), script)
    assert refused.returncode != 0 and "still accepts connections" in refused.stderr, refused.stderr
    sh(reh, old, f"systemctl stop {PG.unit}")
    promoted = reh.testbed.ssh(reh.ip(new), script)
    assert promoted.returncode == 0, promoted.stderr
    assert reh.sql(new, "select pg_is_in_recovery()") == "f"
    assert reh.sql(new, "select count(*) || ':' || sum(id) from it_promote", db) == committed
    reh.sql(new, "insert into it_promote values (1001)", db)
    assert reh.sql(new, "select count(*) from it_promote where id = 1001", db) == "1"
