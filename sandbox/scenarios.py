"""Rehearsal scenarios beyond the deploy: `--scenario NAME` (`--scenario list` lists them).

pitr: marked rows at T0 < T1 < T2, the WAL holding T2 archived; then the stack config gets a
new generation restored to T1 and the program runs again; the restored server must hold exactly
the rows committed by T1, be writable, archive into its own stanza (the source stanza gets no new
timeline), the old primary must still serve, and the DNS record must follow the cutover key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
from pathlib import Path
from typing import Any

from .rehearse import PG

TABLE = "pgstack_pitr_marks"
PROMOTE_RUNBOOK = Path(__file__).resolve().parent.parent / "runbooks" / "promote-replica.sh"


def run(name: str, reh) -> None:
    if name not in SCENARIOS:
        raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)} (or list)")
    SCENARIOS[name][0](reh)


def listing() -> str:
    return "\n".join(f"{name:<8} {what}" for name, (_, what) in SCENARIOS.items())


def _edit(raw: dict[str, Any], key: str, fn) -> dict[str, Any]:
    out = dict(raw)
    value = json.loads(out[key]) if key in out else None
    out[key] = json.dumps(fn(value))
    return out


def next_generation(reh) -> str:
    """A generation name never used in this rehearsal: a stanza name is never reused."""
    names = set(reh.settings().clusters)
    names |= {n.split("-")[1] for n in reh.testbed.guests() if n.count("-") >= 2}
    return "g" + str(max(int(g[1:]) for g in names if g[1:].isdigit()) + 1)


def free_ip(reh, also_taken: frozenset[str] = frozenset()) -> str:
    """A subnet address no generation in the config, no running guest and none of also_taken uses."""
    settings = reh.settings()
    used = set(reh.testbed.guests().values()) | set(also_taken)
    for c in settings.clusters.values():
        used |= {c.primary_ip, *c.replica_ips}
    subnet = ipaddress.ip_network(settings.hetzner.subnet_cidr)
    for host in list(subnet.hosts())[9:]:
        if str(host) not in used:
            return str(host)
    raise RuntimeError("no free address in the subnet")


def state_of(reh, server: str, db: str) -> str:
    return reh.sql(
        server,
        f"select count(*) || ' ' || md5(coalesce(string_agg(id || phase, ',' order by id), '')) from {TABLE}",
        db,
    )


def write_marks(reh, server: str, db: str, phase: str, ids: range) -> str:
    reh.sql(
        server,
        f"insert into {TABLE} select g, '{phase}' from generate_series({ids.start}, {ids.stop - 1}) g",
        db,
    )
    return reh.sql(
        server, "select to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS+00:00')", db
    )


def pitr(reh) -> dict[str, Any]:
    s = reh.settings()
    db = s.database.name
    source = s.active
    primary = s.name(source, "primary")
    reh.sql(primary, f"create table if not exists {TABLE} (id int primary key, phase text not null)", db)
    reh.sql(primary, f"truncate {TABLE}", db)
    write_marks(reh, primary, db, "t0", range(1, 101))
    time.sleep(1.5)
    t1 = reh.sql(
        primary, "select to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS+00:00')", db
    )
    expected = state_of(reh, primary, db)
    time.sleep(1.5)
    write_marks(reh, primary, db, "t2", range(101, 151))
    # The WAL file of T2's last commit: read in the same transaction, with room for the commit
    # record itself. A later read could land in the next segment after an archive_timeout switch.
    walfile = reh.sql(
        primary,
        f"delete from {TABLE} where id <= 10; select pg_walfile_name(pg_current_wal_insert_lsn() + 512)",
        db,
    ).splitlines()[-1]  # after psql's "DELETE 10"
    after_t2 = state_of(reh, primary, db)
    archived = ""
    deadline = time.time() + s.backup.archive_timeout_seconds + 30
    while time.time() < deadline:
        archived = reh.sql(primary, "select coalesce(last_archived_wal, '') from pg_stat_archiver")
        if archived and archived >= walfile:
            break
        time.sleep(1)
    ok = bool(archived) and archived >= walfile
    detail = f"need {walfile}, archived {archived} (archive_timeout {s.backup.archive_timeout_seconds}s)"
    if not ok:
        stats = reh.sql(primary, "select failed_count, last_failed_wal, last_failed_time, now() from pg_stat_archiver")
        logs = reh.testbed.ssh(
            reh.ip(primary),
            f"tail -n 5 /var/log/pgbackrest/*archive-push*.log; ls {PG.data_dir}/pg_wal/archive_status | tail -n 5",
        ).stdout
        detail += f"; archiver {stats}; {logs}"
    reh.check("T2's WAL archived", ok, detail)

    target_gen = next_generation(reh)
    ip = free_ip(reh)
    reh.raw = _edit(
        reh.raw,
        "pgstack:clusters",
        lambda c: {**c, target_gen: {"primaryIp": ip, "restore": {"from": source, "targetTime": t1}}},
    )
    t_start = time.perf_counter()
    reh.run_program(f"restore {target_gen} to T1")
    reh.timings["pitr:up"] = time.perf_counter() - t_start
    restored = reh.result.settings.name(target_gen, "primary")
    got = state_of(reh, restored, db)
    reh.check("restored server holds exactly the rows committed by T1", got == expected,
              f"T1={t1} expected {expected}, got {got} (source now {after_t2})")  # fmt: skip
    reh.sql(restored, f"insert into {TABLE} values (100000, 'written after restore')", db)
    reh.check(
        "restored server is writable",
        reh.sql(restored, f"select count(*) from {TABLE} where id = 100000", db) == "1",
        "",
    )
    reh.check(
        "old primary still serves", state_of(reh, primary, db) == after_t2, f"{primary}: {state_of(reh, primary, db)}"
    )

    # Its WAL goes to its own stanza; the source stanza gets no new timeline.
    reh.sql(restored, "select pg_switch_wal()")
    time.sleep(3)
    client = reh.testbed.s3_client()
    bucket, path = s.backup.bucket, s.backup.repo_path.strip("/")
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{path}/archive/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    own = [k for k in keys if f"/archive/{s.stanza(target_gen)}/" in k]
    src_tl2 = [k for k in keys if f"/archive/{s.stanza(source)}/" in k and "/00000002" in k]
    reh.check(
        "restored server archives into its own stanza", bool(own), f"{len(own)} files under {s.stanza(target_gen)}"
    )
    reh.check("the source stanza got no new timeline", not src_tl2, f"{src_tl2[:3]}")

    # Cutover: one key.
    reh.raw = {**reh.raw, "pgstack:active": target_gen}
    reh.run_program(f"cutover to {target_gen}")
    records = [
        r
        for r in reh.result.mocks.registrations
        if r.type in ("hcloud:index/zoneRrset:ZoneRrset", "aws:route53/record:Record")
    ]
    active_ip = reh.result.outputs.get("primary_private_ip")
    reh.check(
        "the DNS record follows the cutover key",
        bool(records) and all(ip in json.dumps(r.inputs) for r in records) and active_ip == ip,
        f"records: {[r.inputs.get('records') for r in records]}, primary_private_ip={active_ip}",
    )
    return {"t1": t1, "expected": expected, "restored": restored, "at": dt.datetime.now(dt.UTC).isoformat()}


DUMP_KEY = "imports/heroku.dump"


def import_database(reh, clusters_only: bool = False) -> Any:
    """Seed 000's move off Heroku, by config: one generation imported from the source's URL, one from
    a dump uploaded to the bucket, both verified against the source in one `up`.

    The source is a Heroku-like guest outside the private network (sandbox/source_database.py).
    After a deploy the two generations are added next to the running one; with clusters_only
    (a bed of its own, nothing deployed yet) they are the stack's only generations.
    Returns the source, for the checks that follow.
    """
    from . import source_database as src
    from .rehearse import OUTSIDER_IP

    t0 = time.perf_counter()
    source = src.SourceDatabase(reh.testbed, OUTSIDER_IP)
    source.start()
    reh.timings["import:source booted and filled"] = time.perf_counter() - t0
    bucket = json.loads(reh.raw["pgstack:backup"])["bucket"]
    # The bucket exists from the stack's first deploy; the user uploads the dump into it.
    reh.testbed.create_bucket(bucket)
    t0 = time.perf_counter()
    size = source.upload_dump(bucket, DUMP_KEY)
    reh.timings["import:dump uploaded"] = time.perf_counter() - t0
    checks = [f"select full_name from users where id = {src.CHECK_ID}"]
    block = {"jobs": 2, "checks": checks}
    if clusters_only:
        by_url, from_bucket = "g2", "g3"
        ips = ["10.0.1.20", "10.0.1.30"]
    else:
        by_url = next_generation(reh)
        from_bucket = f"g{int(by_url[1:]) + 1}"
        ips = [free_ip(reh)]
        ips.append(free_ip(reh, frozenset(ips)))
    new = {
        by_url: {"primaryIp": ips[0], "import": {"source": "url", **block}},
        from_bucket: {"primaryIp": ips[1], "import": {"source": "bucket", "dumpKey": DUMP_KEY, **block}},
    }
    reh.raw = _edit(reh.raw, "pgstack:clusters", lambda c: new if clusters_only else {**c, **new})
    if clusters_only:
        reh.raw = {**reh.raw, "pgstack:active": by_url}
    reh.raw = {**reh.raw, "pgstack:importSourceUrl": source.url}
    t0 = time.perf_counter()
    reh.run_program(f"import {by_url} by url and {from_bucket} from the bucket")
    reh.timings["import:up"] = time.perf_counter() - t0
    s = reh.settings()
    db = s.database.name
    for gen in (by_url, from_bucket):
        primary = s.name(gen, "primary")
        report = reh.testbed.ssh(reh.ip(primary), "cat /var/lib/pgstack/import-report.txt").stdout
        rows = {t: reh.sql(primary, f"select count(*) from {t}", db) for t in ("public.users", "public.orders")}
        source_rows = {t: source.psql(f"select count(*) from {t}") for t in rows}
        reh.check(
            f"{gen}: every table's rows as on the source, the check query the same",
            rows == source_rows and "MISMATCH" not in report and "check 1: the same on both" in report,
            f"{', '.join(f'{t} {n}' for t, n in rows.items())} (source {source_rows}); "
            f"{reh.timings['import:up']:.1f} s for the up of both",
            {"rows": rows, "source_rows": source_rows, "up_seconds": round(reh.timings["import:up"], 2)},
        )
        imported_at = reh.testbed.ssh(reh.ip(primary), f"cut -d' ' -f1 {PG.data_dir}/pgstack-imported").stdout
        info = reh._stanza_info(primary, s.stanza(gen))
        stops = [b["timestamp"]["stop"] for b in info[0].get("backup", []) if b["type"] == "full"]
        reh.check(
            f"{gen}: a full backup ended after the import",
            imported_at.strip().isdigit() and any(stop > int(imported_at) for stop in stops),
            f"imported at {imported_at.strip() or 'never'}, full backups ending {stops}",
            {"imported_at": imported_at.strip(), "full_backup_stops": stops, "dump_bytes": size},
        )
    return source


def rotate(reh, key: str = "reporting") -> dict[str, Any]:
    """The rotation runbook (README, Roles): bump roles.<key>.passwordVersion and run up.

    The new password works at once, the old one is refused (28P01), and the new one is in the
    stack's output, marked secret (the reporting role's replica_database_url, the app's
    database_url).
    """
    s = reh.settings()
    role = getattr(s.roles, key).name
    old = reh.password(role)
    roles = json.loads(reh.raw["pgstack:roles"])
    entry = roles.setdefault(key, {"name": role})
    entry["passwordVersion"] = entry.get("passwordVersion", 1) + 1
    reh.raw = {**reh.raw, "pgstack:roles": json.dumps(roles)}
    t0 = time.perf_counter()
    reh.run_program(f"rotate {role}")
    reh.timings[f"rotate:{role}"] = time.perf_counter() - t0
    new = reh.password(role)
    works = reh.as_role(role, "select 1", password=new)
    refused = reh.as_role(role, "select 1", password=old)
    reh.check(
        f"rotate {role}: the new password works, the old one is refused",
        new != old and works["ok"] and not refused["ok"] and refused["sqlstate"] == "28P01",
        f"up in {reh.timings[f'rotate:{role}']:.1f} s; new: {'ok' if works['ok'] else works['message']}, "
        f"old: {refused['sqlstate']}",
        {"up_seconds": round(reh.timings[f"rotate:{role}"], 2), "old_sqlstate": refused["sqlstate"]},
    )
    output = {"reporting": "replica_database_url", "app": "database_url"}.get(key)
    if output is not None and output in reh.result.outputs:
        url = str(reh.result.outputs[output])
        reh.check(
            f"rotate {role}: the stack output {output} carries the new password, marked secret",
            new in url and old not in url and output in reh.result.secret_outputs,
            f"pulumi stack output --show-secrets {output}",
        )
    return {"role": role, "old": old, "new": new}


def promote(reh) -> dict[str, Any]:
    """Losing the primary (README, Losing the primary): a generation of its own (restored from the
    active one, with a replica), its primary killed (SIGKILL) under a steady insert load, then
    runbooks/promote-replica.sh on the replica. Counts the rows acknowledged before the kill that
    the new primary has, and how much older than the kill its newest row is (the data lost).
    """
    s = reh.settings()
    db = s.database.name
    gen = next_generation(reh)
    ip_primary = free_ip(reh)
    reh.raw = _edit(
        reh.raw,
        "pgstack:clusters",
        lambda c: {**c, gen: {"primaryIp": ip_primary, "restore": {"from": s.active, "targetTime": "latest"}}},
    )
    reh.run_program(f"{gen} for the promotion")
    ip_replica = free_ip(reh)
    reh.raw = _edit(reh.raw, "pgstack:clusters", lambda c: {**c, gen: {**c[gen], "replicaIps": [ip_replica]}})
    reh.run_program(f"{gen} gets a replica")
    new_s = reh.settings()
    old, new = new_s.name(gen, "primary"), new_s.name(gen, "replica-1")
    reh.sql(
        old,
        "create table pgstack_promote_marks (id bigserial primary key, "
        "at timestamptz not null default clock_timestamp())",
        db,
    )
    load = (
        "cd /; echo 'insert into pgstack_promote_marks default values;' > /tmp/crash.sql; "
        f"(runuser -u postgres -- pgbench -n -c 2 -T 30 -f /tmp/crash.sql {db} > /dev/null 2>&1 &) ; sleep 4; "
        "lag=$(runuser -u postgres -- psql -X -At -c "
        "'select coalesce(extract(epoch from replay_lag), 0) from pg_stat_replication'); "
        f'killed=$(date -u +%s.%N); systemctl kill -s KILL {PG.unit}; echo "$lag $killed"'
    )
    res = reh.testbed.ssh(reh.ip(old), load)
    if res.returncode != 0:
        raise RuntimeError(f"{old}: the write load and the kill failed: {res.stderr}")
    lag, killed = res.stdout.split()
    t0 = time.perf_counter()
    promoted = reh.testbed.ssh(reh.ip(new), PROMOTE_RUNBOOK.read_text())
    promote_seconds = time.perf_counter() - t0
    reh.check(f"{new}: promoted by the runbook", promoted.returncode == 0, promoted.stderr[-500:].strip())
    newest = float(reh.sql(new, "select coalesce(extract(epoch from max(at)), 0) from pgstack_promote_marks", db))
    rows = int(reh.sql(new, "select count(*) from pgstack_promote_marks", db))
    lost = float(killed) - newest
    reh.check(
        f"{new}: the rows written before the kill are there, the newest within 1 s of it",
        promoted.returncode == 0 and rows > 0 and lost < 1.0,
        f"{rows} rows; the newest is {lost:.3f} s older than the kill (replay lag then {float(lag):.3f} s); "
        f"promotion took {promote_seconds:.1f} s",
        {
            "rows": rows,
            "lost_seconds": round(lost, 3),
            "replay_lag_seconds": float(lag),
            "promote_seconds": round(promote_seconds, 2),
        },
    )
    return {"old": old, "new": new}


DRILL_REPORT = "/var/lib/pgstack/drill-report.json"


def drill(reh) -> dict[str, Any]:
    """The restore drill, run now instead of at its timer (README, Restore drills): the newest
    backup restored next to the live cluster on the drill server, checked and thrown away.
    Reports what a team plans its worst night with: restore, recovery, ready and the RPO.
    """
    s = reh.settings()
    cluster = s.clusters[s.active]
    role = "replica-1" if s.drill.server == "replica" and cluster.replica_ips else "primary"
    server = s.name(s.active, role)
    t0 = time.perf_counter()
    res = reh.testbed.ssh(reh.ip(server), "systemctl start pgstack-drill.service", timeout=1800)
    seconds = time.perf_counter() - t0
    raw = reh.testbed.ssh(reh.ip(server), f"cat {DRILL_REPORT}").stdout
    report: dict[str, Any] = json.loads(raw) if raw.strip() else {}
    figures = {k: report.get(k) for k in ("restore_seconds", "recovery_seconds", "ready_seconds", "rpo_seconds")}
    reh.check(
        f"{server}: the drill restored the newest backup, checked it and threw it away",
        res.returncode == 0 and report.get("ok") is True,
        f"in {seconds:.1f} s: restore {figures['restore_seconds']} s, recovery {figures['recovery_seconds']} s, "
        f"ready {figures['ready_seconds']} s, RPO {figures['rpo_seconds']} s"
        + ("" if report.get("ok") else f"; failure: {report.get('failure')} {res.stderr[-300:]}"),
        {**figures, "seconds": round(seconds, 2)},
    )
    return {"server": server, "returncode": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
            "report": report}  # fmt: skip


def _wait(condition: Any, timeout: float) -> Any:
    deadline = time.perf_counter() + timeout
    while True:
        value = condition()
        if value or time.perf_counter() > deadline:
            return value
        time.sleep(0.5)


def notified(reh, since: int, alertname: str, status: str, **labels: str) -> dict[str, Any] | None:
    """The first alert Alertmanager posted to the rehearsal's webhook since `since` with this name,
    status and labels."""
    for hook in reh.testbed.healthchecks_get("/sandbox/webhooks")["webhooks"][since:]:
        for alert in hook["body"].get("alerts", []):
            got = alert["labels"]
            if (
                got.get("alertname") == alertname
                and alert["status"] == status
                and all(got.get(k) == v for k, v in labels.items())
            ):
                return dict(alert)
    return None


def alert(reh) -> dict[str, Any]:
    """A backup broken on purpose (its pgBackRest config unreadable), then repaired (README, Alert
    runbooks, BackupFailed): the fail ping reaches the heartbeat service and, with a monitoring
    server, BackupFailed reaches the webhook, then resolves after the next good backup. Reports
    the time to each.
    """
    s = reh.settings()
    primary = s.name(s.active, "primary")
    ip = reh.ip(primary)
    conf = "/etc/pgbackrest/pgbackrest.conf"
    slug = f"{primary}-backup-diff"
    server = s.monitoring.server
    get = reh.testbed.healthchecks_get
    pings_before = len(get("/sandbox/pings")["pings"]) if reh.healthchecks is not None else 0
    hooks_before = len(get("/sandbox/webhooks")["webhooks"]) if server is not None else 0
    # The rule fires at its first evaluation after the scrape that reads the failure.
    bound = 3 * server.scrape_interval_seconds + server.group_wait_seconds + 20 if server is not None else 0
    t0 = time.perf_counter()
    figures: dict[str, Any] = {}
    try:
        res = reh.testbed.ssh(ip, f"chmod 000 {conf}; systemctl start pgstack-backup@diff.service")
        figures["backup_failed"] = res.returncode != 0
        if reh.healthchecks is not None:
            ping = _wait(
                lambda: [
                    p
                    for p in get("/sandbox/pings")["pings"][pings_before:]
                    if p["slug"] == slug and p["kind"] == "fail"
                ],
                30,
            )
            figures["fail_ping"] = ping[-1] if ping else None
            figures["fail_ping_seconds"] = round(time.perf_counter() - t0, 2) if ping else None
            states = {c["slug"]: c["status"] for c in get("/api/v3/checks/")["checks"]}
            figures["check_status_after_fail"] = states.get(slug)
            reh.check(
                f"alert: the broken backup's fail ping reached the heartbeat service ({slug})",
                figures["backup_failed"] and bool(ping),
                f"after {figures['fail_ping_seconds']} s, exit status {ping[-1].get('exit_status') if ping else None}",
                {"seconds": figures["fail_ping_seconds"]},
            )
        if server is not None:
            fired = _wait(lambda: notified(reh, hooks_before, "BackupFailed", "firing", type="diff"), bound)
            figures["fired"] = fired
            figures["fired_seconds"] = round(time.perf_counter() - t0, 2) if fired else None
            reh.check(
                "alert: BackupFailed fired and reached the webhook",
                bool(fired),
                f"after {figures['fired_seconds']} s (bound {bound} s)",
                {"seconds": figures["fired_seconds"]},
            )
    finally:
        reh.testbed.ssh(ip, f"chmod 640 {conf}; systemctl reset-failed pgstack-backup@diff.service")
    if server is not None and figures.get("fired"):
        t1 = time.perf_counter()
        hooks_now = len(get("/sandbox/webhooks")["webhooks"])
        ok = reh.testbed.ssh(ip, "systemctl start pgstack-backup@diff.service").returncode == 0
        resolved = _wait(lambda: notified(reh, hooks_now, "BackupFailed", "resolved", type="diff"), bound)
        figures["resolved_seconds"] = round(time.perf_counter() - t1, 2) if resolved else None
        reh.check(
            "alert: BackupFailed resolved after the next good backup",
            ok and bool(resolved),
            f"after {figures['resolved_seconds']} s",
            {"seconds": figures["resolved_seconds"]},
        )
    return figures


SEGMENT = 16 * 1024 * 1024


class ScenarioStopped(RuntimeError):
    """A runbook step that could not be done: the scenario cannot go on (its check says why)."""


def _require(reh, name: str, ok: bool, detail: str) -> None:
    if not ok:
        reh.check(name, False, detail)
        raise ScenarioStopped(f"{name}: {detail}")


def outage(reh) -> dict[str, Any]:
    """The object store down past the archive queue's bound (README, Backups: an outage), then back.

    A dead store must not fill the disk: writes go on, pgBackRest drops WAL past
    backup.archivePushQueueMax (64MiB here), the watch reports the gap, and a full backup closes
    it; a point-in-time restore after that backup works. pgBackRest enforces the bound each time
    an async push starts, and an attempt against a dead store runs about 8 x the archive-push
    io-timeout first: the queue may overshoot by what is written meanwhile (a burst), but it never
    accumulates across bursts.
    """
    s = reh.settings()
    db = s.database.name
    primary = s.name(s.active, "primary")
    stanza = s.stanza(s.active)
    original = dict(reh.raw)
    queue_max = 64 * 1024 * 1024

    def sh(script: str) -> str:
        res = reh.testbed.ssh(reh.ip(primary), script)
        if res.returncode != 0:
            raise RuntimeError(f"{primary}: {script}: {res.stderr[-500:]}")
        return res.stdout

    def fulls() -> list[str]:
        info = json.loads(sh(f"runuser -u postgres -- pgbackrest --stanza={stanza} --output=json info"))
        return [b["label"] for b in info[0].get("backup", []) if b["type"] == "full"]

    def queue_bytes() -> int:
        ready = sh(f"ls {PG.data_dir}/pg_wal/archive_status")
        return SEGMENT * sum(1 for f in ready.split() if f.endswith(".ready") and len(f) == 24 + len(".ready"))

    def dropped() -> int:
        log = f"/var/log/pgbackrest/{stanza}-archive-push-async.log"
        return int(sh(f"grep -c 'dropped WAL file' {log} || true").strip() or 0)

    reh.raw = _edit(reh.raw, "pgstack:backup", lambda b: {**b, "archivePushQueueMax": "64MiB"})
    reh.run_program("archive queue 64MiB")
    _require(
        reh, "outage: the queue bound is configured", "archive-push-queue-max=64MiB" in sh(
            "cat /etc/pgbackrest/pgbackrest.conf"), "archive-push-queue-max=64MiB not in pgbackrest.conf",
    )  # fmt: skip
    fulls_before = fulls()
    reh.sql(primary, "create table pgstack_outage (id int, pad text)", db)
    lsn = reh.sql(primary, "select pg_current_wal_lsn()")
    insert = "insert into pgstack_outage select g, repeat('y', 500) from generate_series(1, 100000) g"
    samples: list[int] = []
    stop = threading.Event()

    def sample_queue() -> None:
        while not stop.is_set():
            samples.append(queue_bytes())
            time.sleep(0.5)

    outage_since = int(sh("date +%s"))
    t_outage = time.perf_counter()
    reh.testbed.s3_outage(True)
    sampler = threading.Thread(target=sample_queue, daemon=True)
    sampler.start()
    bursts: list[int] = []
    figures: dict[str, Any] = {}
    try:
        for burst in (1, 2):
            drops = dropped()
            for _ in range(3):
                reh.sql(primary, insert, db)
            after = reh.sql(primary, "select pg_current_wal_lsn()")
            bursts.append(int(reh.sql(primary, f"select '{after}'::pg_lsn - '{lsn}'::pg_lsn")))
            lsn = after
            written_at = time.time()
            while True:
                queue = queue_bytes()
                if dropped() > drops and queue <= queue_max + SEGMENT:
                    figures[f"burst {burst}: written to WAL dropped (s)"] = round(time.time() - written_at, 1)
                    break
                _require(reh, "outage: past the bound, WAL is dropped", time.time() < written_at + 300,
                         f"burst {burst}: queue at {queue >> 20} MiB, nothing dropped in 300 s")  # fmt: skip
                time.sleep(2)
        rows = reh.sql(primary, "select count(*) from pgstack_outage", db)
        reh.check("outage: writes go on while the store is down", rows == "600000", f"{rows} rows written")
    finally:
        stop.set()
        sampler.join()
        reh.testbed.s3_outage(False)
    figures["outage_seconds"] = round(time.perf_counter() - t_outage, 1)
    written, peak = sum(bursts), max(samples)
    figures.update({"queue_peak_mib": round(peak / 2**20, 1), "wal_written_mib": round(written / 2**20, 1)})
    bound = queue_max + max(bursts) + 2 * SEGMENT
    reh.check(
        "outage: the archive queue stays within its bound (backup.archivePushQueueMax)",
        written > 4 * queue_max and peak <= bound,
        f"peak {peak >> 20} MiB with {written >> 20} MiB written (bound {bound >> 20} MiB, queue max "
        f"{queue_max >> 20} MiB)",
        dict(figures),
    )

    # The store is back: the watch timer (or an operator) notices the gap and takes a full backup.
    t_back = time.perf_counter()
    deadline = time.time() + 420
    while len(fulls()) <= len(fulls_before):
        _require(reh, "outage: a new full backup closes the gap", time.time() < deadline,
                 "no new full backup within 7 min of the store coming back")  # fmt: skip
        sh("systemctl start --no-block pgstack-archive-watch.service")
        time.sleep(5)
    figures["new_full_backup_seconds"] = round(time.perf_counter() - t_back, 1)
    journal = sh(f"journalctl -u pgstack-archive-watch --no-pager --since @{outage_since}")
    reh.check(
        "outage: the WAL gap is reported and a new full backup closes it",
        "WAL GAP" in journal,
        f"the watch reported the gap; a new full backup {figures['new_full_backup_seconds']} s after the store "
        "came back",
        {"new_full_backup_seconds": figures["new_full_backup_seconds"]},
    )
    reh.sql(primary, "drop table pgstack_outage", db)

    # From the new full backup on, point-in-time recovery works again.
    reh.sql(primary, "create table pgstack_after_gap (id int)", db)
    reh.sql(primary, "insert into pgstack_after_gap values (1)", db)
    time.sleep(1.2)
    target = reh.sql(primary, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS+00:00')")
    reh.sql(primary, "insert into pgstack_after_gap values (2)", db)
    # Recovery stops at the first commit past the target: that commit's WAL must be archived.
    walfile = reh.sql(primary, "select pg_walfile_name(pg_switch_wal())")
    deadline = time.time() + 60
    while reh.sql(primary, "select coalesce(last_archived_wal, '') from pg_stat_archiver") < walfile:
        _require(reh, "outage: WAL is archived again", time.time() < deadline,
                 f"{walfile} not archived within 60 s of the store coming back")  # fmt: skip
        time.sleep(1)
    gen = next_generation(reh)
    ip = free_ip(reh)
    restore = {"primaryIp": ip, "restore": {"from": s.active, "targetTime": target}}
    reh.raw = _edit(reh.raw, "pgstack:clusters", lambda c: {**c, gen: restore})
    try:
        t0 = time.perf_counter()
        reh.run_program(f"restore {gen} after the gap")
        figures["restore_up_seconds"] = round(time.perf_counter() - t0, 1)
        restored = reh.result.settings.name(gen, "primary")
        got = reh.sql(restored, "select string_agg(id::text, ',') from pgstack_after_gap", db)
        reh.check(
            "outage: a point-in-time restore after the new full backup",
            got == "1",
            f"{gen} holds {got!r} (the row before the target only), its up took {figures['restore_up_seconds']} s",
            {"restore_up_seconds": figures["restore_up_seconds"]},
        )
    finally:
        reh.raw = original
    reh.run_program("archive queue back to the stack's")
    return figures


SCENARIOS = {
    "outage": (outage, "the object store down past the archive queue: WAL dropped, the gap reported and closed"),
    "pitr": (pitr, "rows marked at T0 < T1 < T2, a new generation restored to T1, checked, then the cutover"),
    "import": (import_database, "a Heroku-like source imported by URL and from a dump in the bucket, verified"),
    "promote": (promote, "a primary killed under writes, its replica promoted by the runbook, the data lost measured"),
    "alert": (alert, "a backup broken on purpose: the fail ping, BackupFailed at the webhook, then resolved"),
    "drill": (drill, "the restore drill now: the newest backup restored beside the live cluster, checked, RPO"),
    "rotate": (rotate, "the reporting role's password rotated by config: the old one refused, the new one output"),
}
