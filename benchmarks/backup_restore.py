"""Benchmark: physical backup and restore against logical dump and restore, on ~1 GB. Prints numbers.

    sudo .venv/bin/python -m benchmarks.backup_restore [--scale 70]   # --scale 550: about 8 GB

On the rehearsal guests of the prod stack, in one run:
- full backup time through the local S3 (pgBackRest, zstd, encrypted);
- restore-to-ready of that backup: pgBackRest restore into a scratch data directory, then start,
  until pg_is_in_recovery() is false (the issue's definition: no WAL written after the backup);
- WAL archive backlog (.ready segments) sampled every second under a pgbench load;
- `pg_dump -Fc` and `pg_restore` time of the same database;
- the `up` that carries a restore block (new generation, restored to the latest point), split
  into guest boot, install and configure, and the restore step (pgBackRest restore, then
  recovery, promotion and verification, as the script reports them).
"""

from __future__ import annotations

import argparse
import base64
import re
import statistics
import threading
import time

from benchmarks import deployed
from sandbox import critical_path, scenarios
from sandbox.rehearse import PG


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


SCRATCH = "/var/lib/postgresql/bench-restore"
PG_BIN = PG.bin_dir


def restore_to_ready(on_primary, stanza: str) -> dict[str, float]:
    """The newest backup restored into a scratch directory on the primary's guest and started.

    The scratch server runs on a socket in /tmp with archive_mode off: it must never push WAL
    into the live stanza.
    """
    as_pg = "runuser -u postgres --"
    # sync first: the writeback of the load before must not be billed to the restore.
    on_primary(f"rm -rf {SCRATCH} && install -d -m 700 -o postgres -g postgres {SCRATCH} && sync")
    # Its own lock path: the scratch server's archive-get must not contend with the live archiver.
    restore = timed(
        lambda: on_primary(
            f"{as_pg} pgbackrest --stanza={stanza} --pg1-path={SCRATCH} --lock-path=/tmp/bench-restore-lock "
            "--type=immediate --target-action=promote --log-level-console=warn restore"
        )
    )
    # The live server's settings (a standby refuses lower max_connections than its source), with
    # its own directory, socket and port, and archiving off.
    conf = "\n".join([
        f"include '{PG.conf_dir}/postgresql.conf'",
        f"data_directory = '{SCRATCH}'",
        f"hba_file = '{SCRATCH}/pg_hba.conf'",
        f"ident_file = '{SCRATCH}/pg_ident.conf'",
        "external_pid_file = ''",
        "port = 5433",
        "listen_addresses = ''",
        "unix_socket_directories = '/tmp'",
        "archive_mode = off",
        "cluster_name = 'bench-restore'",
    ]) + "\n"  # fmt: skip
    encoded = base64.b64encode(conf.encode()).decode()
    on_primary(
        f"echo {encoded} | base64 -d > {SCRATCH}/postgresql.conf"
        f" && printf 'local all postgres peer\\n' > {SCRATCH}/pg_hba.conf"
        f" && touch {SCRATCH}/pg_ident.conf && chown postgres: {SCRATCH}/*.conf"
    )
    wait_ready = (
        f"{as_pg} {PG_BIN}/pg_ctl -D {SCRATCH} -l /tmp/bench-restore.log -o '-c archive_mode=off' -w -t 300 start"
        " > /dev/null && for _ in $(seq 3000); do"
        f" [ \"$({as_pg} psql -X -At -h /tmp -p 5433 -d postgres -c 'select pg_is_in_recovery()')\" = f ] && exit 0;"
        " sleep 0.1; done; exit 1"
    )
    try:
        start = timed(lambda: on_primary(wait_ready))
    finally:
        on_primary(f"{as_pg} {PG_BIN}/pg_ctl -D {SCRATCH} -m fast -w stop > /dev/null 2>&1; rm -rf {SCRATCH}")
    return {"restore": restore, "start": start, "total": restore + start}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, default=70, help="pgbench scale: 70 is about 1 GB")
    p.add_argument("--load-seconds", type=int, default=30)
    args = p.parse_args()
    with deployed("prod") as reh:
        testbed = reh.testbed
        s = reh.settings()
        db, stanza = s.database.name, s.stanza(s.active)
        primary = s.name(s.active, "primary")
        ip = reh.ip(primary)

        def on_primary(script: str) -> str:
            res = testbed.ssh(ip, f"cd /; {script}")
            if res.returncode != 0:
                raise RuntimeError(f"{script}: {res.stderr[-2000:]}")
            return res.stdout

        as_pg = "runuser -u postgres --"
        init = timed(lambda: on_primary(f"{as_pg} pgbench -q -i -s {args.scale} {db} 2>&1 | tail -n 1"))
        size = on_primary(f"{as_pg} psql -X -At -c \"select pg_size_pretty(pg_database_size('{db}'))\"").strip()
        backup = timed(lambda: on_primary(f"{as_pg} pgbackrest --stanza={stanza} --type=full backup"))

        ready = restore_to_ready(on_primary, stanza)

        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                out = testbed.ssh(ip, f"ls {PG.data_dir}/pg_wal/archive_status | grep -c ready || true")
                samples.append(int(out.stdout.strip() or 0))
                time.sleep(1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        on_primary(f"{as_pg} pgbench -c 4 -j 2 -T {args.load_seconds} {db} > /dev/null 2>&1")
        stop.set()
        sampler.join()

        dump = timed(lambda: on_primary(f"{as_pg} pg_dump -Fc -f /var/lib/postgresql/bench.dump {db}"))
        on_primary(f"{as_pg} createdb bench_restore && sync")
        logical = timed(lambda: on_primary(f"{as_pg} pg_restore -d bench_restore /var/lib/postgresql/bench.dump"))
        on_primary(f"{as_pg} dropdb bench_restore && {as_pg} createdb bench_restore && sync")
        logical_j2 = timed(
            lambda: on_primary(f"{as_pg} pg_restore -j 2 -d bench_restore /var/lib/postgresql/bench.dump")
        )
        on_primary(f"{as_pg} dropdb bench_restore; rm -f /var/lib/postgresql/bench.dump")
        on_primary(f"{as_pg} psql -X -q -c 'select pg_switch_wal()'")
        time.sleep(s.backup.archive_timeout_seconds + 2)

        gen = scenarios.next_generation(reh)
        new_ip = scenarios.free_ip(reh)
        restore = {"primaryIp": new_ip, "restore": {"from": s.active, "targetTime": "latest"}}
        reh.raw = scenarios._edit(reh.raw, "pgstack:clusters", lambda c: {**c, gen: restore})
        before = len(reh.steps)
        reh.run_program(f"restore {gen}")
        # The program's own run: the new stanza's first full backup runs after it, in the background.
        up = reh.timings[f"program:restore {gen}"]
        background = reh.timings.get(f"first-backups:restore {gen}", 0.0)
        path = critical_path.render(critical_path.critical_path(reh.steps[before:]))
        steps = {st["resource"]: st["seconds"] for st in reh.steps[before:]}
        name = s.name(gen, "primary")
        boot = steps.get(name, 0.0)
        prep = sum(steps.get(f"{name}-{k}", 0.0) for k in ("wait", "install", "cluster", "tls", "configure"))
        restore_step = steps.get(f"{name}-restore", 0.0)
        assert reh.result is not None
        out = next(r for r in reh.result.mocks.registrations if r.name == f"{name}-restore").outputs
        phases = re.search(r"pgbackrest restore (\d+)s, recovery and checks (\d+)s", str(out.get("stderr", "")))
        writable = reh.sql(name, "select not pg_is_in_recovery()") == "t"

    print(f"database: {size} (pgbench -i -s {args.scale} in {init:.1f} s)")
    print(f"full backup to S3 (pgBackRest, zstd, aes-256-cbc): {backup:.1f} s")
    if samples:
        print(
            f"WAL archive backlog under pgbench -c 4 for {args.load_seconds} s: .ready max {max(samples)}, "
            f"median {statistics.median(samples):.0f} ({len(samples)} samples)"
        )
    print(
        f"restore to ready from S3: {ready['total']:.1f} s (pgBackRest restore {ready['restore']:.1f} s, "
        f"start and recovery until pg_is_in_recovery() is false {ready['start']:.1f} s)"
    )
    print(f"pg_dump -Fc: {dump:.1f} s; pg_restore: {logical:.1f} s; pg_restore -j 2: {logical_j2:.1f} s")
    print(f"restore to ready vs pg_restore: {logical / ready['total']:.1f}x faster")
    print(f"up with a restore block (restored to latest, verified writable={writable}): {up:.1f} s")
    print(f"  guest boot {boot:.1f} s; install and configure {prep:.1f} s; restore step {restore_step:.1f} s")
    if phases:
        print(f"  inside the restore step: pgBackRest restore {phases[1]} s, recovery and checks {phases[2]} s")
    print(f"  then the new stanza's first full backup, in the background: {background:.1f} s")
    print("critical path of that up (seconds from its start):")
    for line in path:
        print(f"  {line}")


if __name__ == "__main__":
    main()
