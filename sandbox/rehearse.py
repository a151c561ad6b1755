"""`python -m sandbox rehearse`: the real program against local guests and a local S3.

Only the provider layer is local: an hcloud Server is a booted guest with the requested
private IP, a remote Command runs its `create` text over SSH (with the harness's key), a
RandomPassword is a real random secret, an S3 bucket is a real bucket in moto, and everything
else echoes its inputs. Then health checks run against the real servers.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pulumi

from config.fields import DEFAULT_POSTGRES_VERSION
from postgres.layout import layout

from . import overlay, program, tls_provider
from .engine import COMMAND, COMMANDS, LOCAL_COMMAND, EngineState
from .testbed import GuestSpec, Testbed

# Paths and the unit of the version the rehearsed stacks run (they keep the default).
PG = layout(DEFAULT_POSTGRES_VERSION)

REPO = program.REPO
PYTHON = sys.executable
OUTSIDER_IP = "10.231.0.9"
SECRET_KEYS = [
    "pgstack:sshPrivateKey",
    "pgstack:s3AccessKey",
    "pgstack:s3SecretKey",
    "pgstack:alertsPingKey",
    "pgstack:alertsApiKey",
    "pgstack:monitoringWebhookUrl",
    "pgstack:importSourceUrl",
]


class CommandFailed(Exception):
    def __init__(self, name: str, rc: int, stdout: str, stderr: str):
        self.name, self.rc = name, rc
        super().__init__(f"{name} exited {rc}\n--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}")


class RehearsalMocks(program.RecordingMocks):
    """Mocks whose resources are real: guests, SSH commands, secrets, buckets."""

    def __init__(
        self,
        testbed: Testbed,
        passwords: dict[str, str],
        echo=print,
        engine: EngineState | None = None,
        run_every_command: bool = False,
    ):
        super().__init__(secret_value=self._password)
        self.testbed = testbed
        self.passwords = passwords  # kept across runs, as Pulumi state keeps them
        self.echo = echo
        # With an engine state, a resource is acted on as the real engine would (sandbox/engine.py);
        # run_every_command runs every Command's create again, to prove the scripts idempotent.
        self.engine = engine
        self.run_every_command = run_every_command
        self.actions: dict[str, str] = {}
        self.steps: list[dict[str, Any]] = []
        self.servers: dict[str, str] = {}  # server name -> private IP
        self.database_servers: dict[str, str] = {}  # those of a cluster generation (not the monitoring server)
        self._pw_lock = threading.Lock()
        self.t0 = time.perf_counter()  # steps' start and end are seconds from here

    def _password(self, name: str, length: int) -> str:
        with self._pw_lock:
            if name not in self.passwords:
                alphabet = string.ascii_letters + string.digits
                self.passwords[name] = "".join(secrets.choice(alphabet) for _ in range(length))
            return self.passwords[name]

    def provide(self, reg: program.Registration, rid: str) -> dict[str, Any]:
        outs = super().provide(reg, rid)
        if pulumi.runtime.is_dry_run():
            return outs
        inputs = program.unwrap(reg.inputs)
        ignored = list(reg.options.get("ignoreChanges") or [])
        action = self.engine.plan(reg.type, reg.name, inputs, ignored) if self.engine else "create"
        if self.run_every_command and reg.type in COMMANDS and action == "same":
            action = "replace"
        if reg.custom:
            self.actions[reg.name] = action
        started = time.perf_counter()
        ok = False
        kept_outputs: dict[str, Any] = {}
        try:
            if reg.type.startswith(tls_provider.PREFIX):
                # An unchanged key or certificate keeps what the state holds, as in the engine: a new
                # key on every run would change every certificate and the TLS steps after them.
                if action == "same" and self.engine is not None:
                    real = self.engine.outputs(reg.type, reg.name)
                else:
                    real = tls_provider.provide(reg.type, inputs)
                kept_outputs = real
                outs.update({k: pulumi.Output.secret(v) if k == "privateKeyPem" else v for k, v in real.items()})
            elif reg.type == "random:index/randomPassword:RandomPassword":
                keepers = json.dumps(inputs.get("keepers") or {}, sort_keys=True)
                outs["result"] = pulumi.Output.secret(self._password(f"{reg.name}/{keepers}", int(inputs["length"])))
            elif reg.type == "hcloud:index/server:Server":
                ip = inputs["networks"][0]["ip"]
                self.testbed.boot_guest(GuestSpec(name=reg.name, ip=ip))
                self.servers[reg.name] = ip
                if "pgstack-cluster" in (inputs.get("labels") or {}):
                    self.database_servers[reg.name] = ip
                # The guest has one address, the private one: it stands in for the public one too.
                outs["ipv4Address"] = ip
            elif reg.type in COMMANDS and action == "same" and self.engine is not None:
                # The engine runs nothing: the outputs are the state's.
                outs.update(self.engine.outputs(reg.type, reg.name))
            elif reg.type == COMMAND:
                host = inputs["connection"]["host"]
                stdin = inputs.get("stdin")
                res = self.testbed.ssh(host, inputs["create"], stdin=stdin.encode() if stdin else None)
                if res.returncode != 0:
                    raise CommandFailed(reg.name, res.returncode, res.stdout, res.stderr)
                outs["stdout"], outs["stderr"] = res.stdout, res.stderr
            elif reg.type == LOCAL_COMMAND:
                # On the operator's machine, in the project directory, as pulumi-command runs it.
                stdin = inputs.get("stdin")
                proc = subprocess.run(
                    ["bash", "-c", inputs["create"]], input=stdin or "", capture_output=True, text=True,
                    cwd=REPO, timeout=300,
                )  # fmt: skip
                if proc.returncode != 0:
                    raise CommandFailed(reg.name, proc.returncode, proc.stdout, proc.stderr)
                outs["stdout"], outs["stderr"] = proc.stdout, proc.stderr
            elif reg.type in ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"):
                self.testbed.create_bucket(inputs["bucket"])
                outs["bucket"] = inputs["bucket"]
            ok = True
            if self.engine is not None and reg.custom:
                if reg.type in COMMANDS:
                    kept_outputs = {k: outs[k] for k in ("stdout", "stderr") if k in outs}
                self.engine.record(reg.type, reg.name, inputs, ignored, kept_outputs)
            return outs
        finally:
            seconds = time.perf_counter() - started
            if reg.custom:
                self.steps.append(
                    {
                        "resource": reg.name,
                        "type": reg.type,
                        "seconds": round(seconds, 3),
                        "ok": ok,
                        "action": action,
                        "start": round(started - self.t0, 3),
                        "end": round(started - self.t0 + seconds, 3),
                        # Explicit and input dependencies: what the engine made this step wait for.
                        "after": list(reg.options.get("dependencies") or []),
                    }
                )
                kind = reg.type.split(":")[-1]
                self.echo(f"  {'ok ' if ok else 'FAIL'} {seconds:7.2f}s  {action:<7}  {kind:<16} {reg.name}")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    # The measured figures behind the line (the JSON report's raw values), when it has any.
    value: dict[str, Any] | None = None


@dataclass
class Rehearsal:
    stack: str
    testbed: Testbed
    echo: Any = print
    passwords: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    result: program.RunResult | None = None
    mocks: RehearsalMocks | None = None
    engine: EngineState | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    pgbackrest: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    healthchecks: Any = None  # the receiver's HealthchecksEndpoint, for a stack with alerts

    # ---- set-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        base = program.read_stack_file(self.stack)
        import config as config_pkg

        probe = config_pkg.settings_from_mapping(
            {**base, "pgstack:sshPrivateKey": "x", "pgstack:alertsPingKey": "x", "pgstack:monitoringSmtpPassword": "x"},
            "pgstack",
            self.stack,
            allow_sandbox=True,
        )
        hz = probe.hetzner
        if hz is None:
            raise SystemExit("the rehearsal runs hetzner stacks; this stack's target is " + probe.target)
        import ipaddress

        subnet = ipaddress.ip_network(hz.subnet_cidr)
        gateway = str(subnet.network_address + 1)
        t0 = time.perf_counter()
        self.testbed.ensure_rootfs()
        self.timings["rootfs"] = time.perf_counter() - t0
        self.pgbackrest = self.testbed.pgbackrest()
        self.echo(f"== guests run {self.pgbackrest.get('version')} ({self.pgbackrest.get('source')})")
        self.testbed.up(str(subnet), gateway, OUTSIDER_IP)
        ep = self.testbed.start_s3()
        self.s3 = ep
        self.testbed._ensure_ssh_key()
        keys = {
            "pgstack:sshPrivateKey": self.testbed.ssh_key.read_text(),
            "pgstack:s3AccessKey": ep.access_key,
            "pgstack:s3SecretKey": ep.secret_key,
        }
        alerts = None
        if "pgstack:alerts" in base:
            # Heartbeats go to the local receiver, which the guests reach on the gateway address.
            hc = self.testbed.start_healthchecks()
            self.healthchecks = hc
            keys.update({"pgstack:alertsPingKey": hc.ping_key, "pgstack:alertsApiKey": hc.api_key})
            alerts = {"pingUrl": hc.ping_url, "apiUrl": hc.api_url, "webhookUrl": hc.webhook_url}
        self.raw = overlay.apply(base, ep.host, ep.port, ep.region, keys, alerts)

    def engine_state(self) -> EngineState:
        """The stack's state as the engine would keep it; none is left from guests that are gone."""
        if self.engine is None:
            path = self.testbed.run_dir / f"engine-{self.stack}.json"
            if path.exists() and not self.testbed.guests():
                path.unlink()
            self.engine = EngineState.load(path)
        return self.engine

    def run_program(self, label: str, run_every_command: bool = False) -> program.RunResult:
        """One `pulumi up`: only what changed since the last run is acted on, unless run_every_command."""
        self.echo(f"== pulumi up ({label}) of stack {self.stack}: resources as they complete")
        engine = self.engine_state()
        engine.seen.clear()
        mocks = RehearsalMocks(
            self.testbed, self.passwords, echo=self.echo, engine=engine, run_every_command=run_every_command
        )
        self.mocks = mocks
        catalog = None
        s3 = getattr(self, "s3", None)
        if s3 is not None and "pgstack:backup" in self.raw:
            # Restores are checked against the local S3's backups, as a real run checks the bucket.
            from components.preflight.backup_catalog import S3BackupCatalog
            from config.model import Backup

            backup = json.loads(self.raw["pgstack:backup"])
            repo_path = backup.get("repoPath") or Backup.model_fields["repo_path"].default
            catalog = S3BackupCatalog(
                s3.url, backup["bucket"], repo_path, s3.access_key, s3.secret_key, verify=s3.ca_file or True,
                region=s3.region,
            )  # fmt: skip
        t0 = time.perf_counter()
        try:
            self.result = program.run(
                self.raw,
                mocks,
                stack=self.stack,
                allow_sandbox=True,
                secret_keys=SECRET_KEYS,
                catalog=catalog,
            )
        finally:
            self.steps += [dict(s, run=label) for s in mocks.steps]
            self.timings[f"program:{label}"] = time.perf_counter() - t0
        actions = dict(mocks.actions)
        for type_, name in engine.deleted():
            if type_ == "hcloud:index/server:Server":
                self.testbed.stop_guest(name)
            engine.forget(type_, name)
            actions[name] = "delete"
            self.echo(f"  ok            delete   {type_.split(':')[-1]:<16} {name}")
        counts = {
            a: sum(1 for v in actions.values() if v == a) for a in ("create", "replace", "update", "same", "delete")
        }
        commands = sorted(
            n for n, a in mocks.actions.items() if a in ("create", "replace") and n in self._commands(mocks)
        )
        self.runs.append({"run": label, "actions": actions, "counts": counts, "commands_run": commands})
        self._await_first_backups(label, mocks)
        self.echo(
            f"Resources: {counts['create']} created, {counts['replace']} replaced, {counts['update']} updated, "
            f"{counts['delete']} deleted, {counts['same']} unchanged; commands run: {len(commands)}"
        )
        return self.result

    def _await_first_backups(self, label: str, mocks: RehearsalMocks) -> None:
        """Wait for the full backups the run started in the background (a new stanza's first).

        The `up` does not wait for them (components/scripts/pgbackrest.sh); the checks and tests
        after a run see what an operator sees a few seconds later. Timed apart from the program.
        """
        if "pgstack:backup" not in self.raw:
            return
        t0 = time.perf_counter()
        # A unit that never ran reports Result=success too (a replica's, an old primary's).
        wait = (
            "for _ in $(seq 3000); do "
            "[[ $(systemctl show -p ActiveState --value pgstack-backup@full.service) == activating ]] || break; "
            "sleep 0.2; done; "
            # One property per call: with several, systemctl prints them in its own order.
            "echo $(systemctl show -p ActiveState --value pgstack-backup@full.service) "
            "$(systemctl show -p Result --value pgstack-backup@full.service)"
        )
        for name, ip in sorted(mocks.database_servers.items()):
            res = self.testbed.ssh(ip, wait, timeout=700)
            state = res.stdout.strip()
            if res.returncode != 0 or state.startswith("activating"):
                raise RuntimeError(f"{name}: the full backup started by `up` ({label}) ran for over 10 minutes")
            if not state.endswith("success"):
                journal = self.testbed.ssh(ip, "journalctl -u pgstack-backup@full --no-pager -n 15 -o cat").stdout
                raise RuntimeError(f"{name}: the full backup started by `up` ({label}) failed ({state}):\n{journal}")
        self.timings[f"first-backups:{label}"] = time.perf_counter() - t0

    @staticmethod
    def _commands(mocks: RehearsalMocks) -> set[str]:
        return {r.name for t in COMMANDS for r in mocks.of_type(t)}

    # ---- helpers for checks -------------------------------------------------------------
    @property
    def servers(self) -> dict[str, str]:
        """Server name -> private IP, of the last program run."""
        assert self.mocks is not None, "the program has not run"
        return self.mocks.servers

    def check(self, name: str, ok: bool, detail: str, value: dict[str, Any] | None = None) -> bool:
        self.checks.append(Check(name, bool(ok), detail, value))
        self.echo(f"  {'PASS' if ok else 'FAIL'} {name}: {detail}")
        return bool(ok)

    def settings(self):
        assert self.result is not None
        return self.result.settings

    def password(self, role: str, version: int | None = None) -> str:
        """The generated password of a login role, at its current (or a given) version."""
        if version is None:
            logins = {r.name: r.password_version for r in self.settings().roles.logins()}
            version = logins.get(role, 1)
        keepers = json.dumps({"role": role, "version": str(version)}, sort_keys=True)
        key = f"{self.stack}-role-{role}/{keepers}"
        if key not in self.passwords:
            raise KeyError(f"no password generated for role {role} version {version}")
        return self.passwords[key]

    def probe(self, where: str, host: str, user: str, password: str, dbname: str, sql: str = "select 1",
              sslmode: str = "require", sslrootcert: str | None = None) -> dict[str, Any]:  # fmt: skip
        argv = [PYTHON, "-m", "sandbox.probe", "--host", host, "--dbname", dbname, "--user", user,
                "--sql", sql, "--sslmode", sslmode]  # fmt: skip
        if sslrootcert:
            argv += ["--sslrootcert", sslrootcert]
        env_argv = ["env", f"PYTHONPATH={REPO}", *argv]
        if where == "outsider":
            res = self._outsider(env_argv, password)
        else:
            res = self.testbed.netns_exec(where, env_argv, timeout=30, stdin=(password + "\n").encode())
        try:
            return json.loads(res.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"tcp": False, "ok": False, "sqlstate": None, "message": f"probe failed: {res.stderr[-500:]}"}

    def as_role(self, role: str, sql: str, db: str | None = None, where: str | None = None,
                password: str | None = None, host: str | None = None, sslmode: str = "require",
                sslrootcert: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Run one statement as a login role over the network, from inside the private network."""
        s = self.settings()
        active = s.clusters[s.active]
        where = where or (s.name(s.active, "replica-1") if active.replica_ips else s.name(s.active, "primary"))
        return self.probe(
            where, host or active.primary_ip, role, password or self.password(role), db or s.database.name, sql,
            sslmode=sslmode, sslrootcert=sslrootcert,
        )  # fmt: skip

    def _outsider(self, argv: list[str], password: str):
        import subprocess

        return subprocess.run(
            ["ip", "netns", "exec", "pgs-outsider", *argv],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=30,
        )

    def sql(self, server: str, query: str, db: str = "postgres") -> str:
        ip = self.ip(server)
        res = self.testbed.ssh(ip, f"runuser -u postgres -- psql -X -At -d {db} -c {json.dumps(query)}")
        if res.returncode != 0:
            raise RuntimeError(f"{server}: {query}: {res.stderr.strip()}")
        return res.stdout.strip()

    def ip(self, server: str) -> str:
        return self.testbed.guests()[server]

    # ---- the checks ----------------------------------------------------------------------
    def health_checks(self) -> None:
        s = self.settings()
        db = s.database.name
        app = s.roles.app.name
        active = s.active
        primary_ip = s.clusters[active].primary_ip
        inside = s.name(active, "replica-1") if s.clusters[active].replica_ips else s.name(active, "primary")
        pw = self.password(app)
        r = self.probe(inside, primary_ip, app, pw, db, "select current_user")
        self.check("app role connects from inside the private network", r["ok"], f"from {inside}: {r}")
        r = self.probe("outsider", primary_ip, app, pw, db)
        self.check(
            "outsider: TCP connects, PostgreSQL refuses with 28000 (no pg_hba entry)",
            r["tcp"] and not r["ok"] and r["sqlstate"] == "28000",
            f"from {OUTSIDER_IP}: {r}",
        )
        r = self.probe(inside, primary_ip, app, pw + "wrong", db)
        self.check("a wrong password gets 28P01", not r["ok"] and r["sqlstate"] == "28P01", f"{r}")
        listening = self.testbed.ssh(primary_ip, "ss -Hltn 'sport = :5432'").stdout
        self.check(
            "PostgreSQL listens on the private IP and localhost only",
            f"{primary_ip}:5432" in listening and "0.0.0.0:5432" not in listening and "*:5432" not in listening,
            " ".join(listening.split()),
        )
        self.capability_checks()

    def _guarded(self, name: str, fn: Any) -> None:
        """A capability line whose measurement itself failed is a FAIL line, not a crash."""
        try:
            fn()
        except Exception as exc:
            self.check(name, False, f"{type(exc).__name__}: {exc}")

    def capability_checks(self) -> None:
        """One line per capability of the deployed stack, each with the figure it measured."""
        s = self.settings()
        boots = [
            st["seconds"] for st in self.steps if st["type"].endswith("server:Server") and st["action"] == "create"
        ]
        self.check(
            "servers booted",
            bool(self.database_servers),
            f"{len(self.servers)} servers" + (f", boot median {statistics.median(boots):.1f} s" if boots else ""),
            {"servers": sorted(self.servers), "boot_seconds": boots},
        )
        self._guarded("TLS required: a plain TCP connection is refused", self._check_tls_required)
        self._guarded("each role reaches what it may", self._check_role_reach)
        if s.clusters[s.active].replica_ips:
            self._guarded("replica streaming, with its slot", self._check_replica)
        if s.backup is not None:
            self._guarded("first full backup listed", self._check_first_backup)
            self._guarded("a marker row's WAL reaches the bucket within archive_timeout", self._check_archive)
            self._guarded("the backup is encrypted", self._check_encrypted)
        if self.healthchecks is not None:
            self._guarded("heartbeats received", self._check_heartbeats)
        if s.monitoring.server is not None:
            self._guarded("every exporter scraped by the monitoring server", self._check_scraped)

    def _active(self) -> tuple[Any, str, str]:
        s = self.settings()
        active = s.clusters[s.active]
        assert active.primary_ip is not None
        return s, s.name(s.active, "primary"), active.primary_ip

    def _check_tls_required(self) -> None:
        s, _, ip = self._active()
        app = s.roles.app.name
        inside = s.name(s.active, "replica-1") if s.clusters[s.active].replica_ips else s.name(s.active, "primary")
        r = self.probe(inside, ip, app, self.password(app), s.database.name, sslmode="disable")
        self.check(
            "TLS required: a plain TCP connection is refused",
            r["tcp"] and not r["ok"] and r["sqlstate"] == "28000",
            f"sslmode=disable from {inside}: {r.get('sqlstate')} {r.get('message')}",
            {"sqlstate": r.get("sqlstate")},
        )

    def _check_role_reach(self) -> None:
        s, primary, _ = self._active()
        db = s.database.name
        # A table of the owner's, as a migration would make it: the app writes it, reporting reads it.
        self.sql(
            primary,
            f"set role {s.roles.owner}; create table if not exists public.pgstack_rehearsal (id serial primary key, "
            "at timestamptz not null default now())",
            db,
        )
        app = self.as_role(s.roles.app.name, "insert into public.pgstack_rehearsal default values returning id")
        read = self.as_role(s.roles.reporting.name, "select count(*) from public.pgstack_rehearsal")
        denied = self.as_role(s.roles.reporting.name, "insert into public.pgstack_rehearsal default values")
        outsider = self.probe("outsider", self._active()[2], s.roles.app.name, self.password(s.roles.app.name), db)
        ok = app["ok"] and read["ok"] and not denied["ok"] and denied["sqlstate"] == "42501"
        ok = ok and outsider["tcp"] and outsider["sqlstate"] == "28000"
        self.check(
            "each role reaches what it may",
            ok,
            f"app writes ({'ok' if app['ok'] else app['message']}), reporting reads "
            f"({'ok' if read['ok'] else read['message']}) and may not write ({denied['sqlstate']}), "
            f"an outsider is refused ({outsider['sqlstate']})",
            {
                "app_write": app["ok"],
                "reporting_read": read["ok"],
                "reporting_write_sqlstate": denied["sqlstate"],
                "outsider_sqlstate": outsider["sqlstate"],
            },
        )

    def _check_replica(self) -> None:
        _s, primary, _ = self._active()
        row = self.sql(
            primary,
            "select r.state || '|' || coalesce(extract(epoch from r.replay_lag)::text, '0') || '|' || s.slot_name "
            "|| '|' || s.active::text from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid",
        )
        state, lag, slot, active = ([*row.split("\n")[0].split("|"), "", "", "", ""])[:4]
        self.check(
            "replica streaming, with its slot",
            state == "streaming" and active == "true",
            f"{state or 'not streaming'}, replay lag {float(lag or 0):.3f} s, slot {slot or 'none'}",
            {"state": state, "replay_lag_seconds": float(lag or 0), "slot": slot},
        )

    def _stanza_info(self, primary: str, stanza: str) -> list[dict[str, Any]]:
        out = self.testbed.ssh(
            self.ip(primary), f"runuser -u postgres -- pgbackrest --stanza={stanza} --output=json info"
        ).stdout
        info: list[dict[str, Any]] = json.loads(out)
        return info

    def _check_first_backup(self) -> None:
        s, primary, _ = self._active()
        stanza = s.stanza(s.active)
        fulls = [b for b in self._stanza_info(primary, stanza)[0].get("backup", []) if b["type"] == "full"]
        first = fulls[0] if fulls else None
        size = first["info"]["repository"]["delta"] if first else 0
        seconds = first["timestamp"]["stop"] - first["timestamp"]["start"] if first else 0
        self.check(
            "first full backup listed",
            first is not None,
            f"{first['label']}: {size / 1e6:.1f} MB in the bucket, {seconds} s"
            if first
            else f"no full backup of {stanza}",
            {"label": first["label"] if first else None, "repository_bytes": size, "seconds": seconds},
        )

    def _check_archive(self) -> None:
        s, primary, _ = self._active()
        assert s.backup is not None
        db = s.database.name
        walfile = self.sql(
            primary,
            "insert into public.pgstack_rehearsal default values; select pg_walfile_name(pg_current_wal_insert_lsn())",
            db,
        ).splitlines()[-1]
        t0 = time.perf_counter()
        bound = s.backup.archive_timeout_seconds + 10
        archived = ""
        while time.perf_counter() - t0 < bound + 30:
            archived = self.sql(primary, "select coalesce(last_archived_wal, '') from pg_stat_archiver")
            if archived >= walfile:
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        self.check(
            "a marker row's WAL reaches the bucket within archive_timeout",
            archived >= walfile and seconds <= bound,
            f"{walfile} archived after {seconds:.1f} s (archive_timeout {s.backup.archive_timeout_seconds} s)",
            {
                "segment": walfile,
                "seconds": round(seconds, 2),
                "archive_timeout_seconds": s.backup.archive_timeout_seconds,
            },
        )

    def _check_encrypted(self) -> None:
        s, _, _ = self._active()
        assert s.backup is not None
        key = f"{s.backup.repo_path.strip('/')}/backup/{s.stanza(s.active)}/backup.info"
        head = self.testbed.s3_client().get_object(Bucket=s.backup.bucket, Key=key)["Body"].read(8)
        self.check(
            "the backup is encrypted",
            head == b"Salted__",
            f"s3://{s.backup.bucket}/{key} starts with {head!r} (OpenSSL's salted AES-256-CBC)",
            {"object": key, "head": head.decode(errors="replace")},
        )

    def _check_scraped(self) -> None:
        s = self.settings()
        assert s.monitoring.server is not None
        ip = s.monitoring.server.ip
        expected = 2 * len(self.database_servers)  # node and postgres exporter on each
        deadline = time.perf_counter() + s.monitoring.server.scrape_interval_seconds + 30
        t0 = time.perf_counter()
        targets: list[dict[str, Any]] = []
        while time.perf_counter() < deadline:
            res = self.testbed.ssh(ip, "curl -fsS http://127.0.0.1:9090/api/v1/targets?state=active")
            if res.returncode == 0:
                targets = json.loads(res.stdout)["data"]["activeTargets"]
                if len(targets) >= expected and all(t["health"] == "up" for t in targets):
                    break
            time.sleep(1)
        up = sorted(f"{t['labels'].get('job')}@{t['labels'].get('server')}" for t in targets if t["health"] == "up")
        self.check(
            "every exporter scraped by the monitoring server",
            len(up) >= expected and len(up) == len(targets),
            f"{len(up)} of {len(targets)} targets up (expected {expected}), after {time.perf_counter() - t0:.1f} s",
            {"up": up, "targets": len(targets)},
        )

    def _check_heartbeats(self) -> None:
        pings = self.testbed.healthchecks_get("/sandbox/pings")
        items = pings.get("pings", pings) if isinstance(pings, dict) else pings
        slugs = sorted({p["slug"] for p in items})
        self.check(
            "heartbeats received",
            bool(slugs),
            f"{len(items)} pings from {len(slugs)} checks",
            {"pings": len(items), "checks": slugs},
        )

    @property
    def database_servers(self) -> dict[str, str]:
        """The servers that run PostgreSQL (the monitoring server does not)."""
        assert self.mocks is not None, "the program has not run"
        return self.mocks.database_servers

    def reboot_checks(self) -> None:
        assert self.result is not None
        for name, ip in sorted(self.database_servers.items()):
            t0 = time.perf_counter()
            self.testbed.reboot_guest(name)
            ok = False
            detail = ""
            for _ in range(60):
                res = self.testbed.ssh(ip, f"pg_isready -q -h {ip} && ss -Hltn 'sport = :5432'")
                if res.returncode == 0 and f"{ip}:5432" in res.stdout:
                    ok, detail = True, f"back in {time.perf_counter() - t0:.1f}s, listening on {ip}:5432"
                    break
                detail = res.stdout + res.stderr
                time.sleep(1)
            self.check(f"{name}: PostgreSQL back after reboot", ok, detail.strip())

    def snapshot(self) -> dict[str, Any]:
        """What a second run must not change, per server."""
        snap: dict[str, Any] = {}
        assert self.result is not None
        for name, ip in sorted(self.database_servers.items()):
            res = self.testbed.ssh(
                ip,
                f"set -e; cd {PG.conf_dir}; sha256sum conf.d/50-pgstack.conf pg_hba.conf "
                "/etc/pgbackrest/pgbackrest.conf 2>/dev/null || true; "
                'runuser -u postgres -- psql -X -At -c "select pg_postmaster_start_time()" ; '
                "runuser -u postgres -- psql -X -At -c \"select md5(string_agg(rolname||coalesce(rolpassword,'')||"
                "rolconnlimit||rolcanlogin||rolreplication, ',' order by rolname)) from pg_authid\" ; "
                f"cat {PG.data_dir}/pgstack-sentinel 2>/dev/null || echo no-sentinel",
            )
            snap[name] = res.stdout.strip()
        return snap

    def plant_sentinels(self) -> None:
        assert self.result is not None
        for _name, ip in self.database_servers.items():
            token = secrets.token_hex(8)
            self.testbed.ssh(
                ip,
                f"echo {token} > {PG.data_dir}/pgstack-sentinel && chown postgres: {PG.data_dir}/pgstack-sentinel",
            )

    def twice(self) -> None:
        """A second `up` with nothing changed acts on nothing; then every script again, to prove it idempotent."""
        self.plant_sentinels()
        before = self.snapshot()
        self.run_program("second")
        second = self.runs[-1]
        acted = {n: a for n, a in second["actions"].items() if a != "same"}
        self.check(
            "second run: 0 to change (no command run, no resource touched), as `pulumi preview` would show",
            not acted,
            "0 to change" if not acted else f"acted on: {acted}",
        )
        self.run_program("every script again", run_every_command=True)
        after = self.snapshot()
        for name in sorted(before):
            self.check(
                f"{name}: every script run again changed nothing (files, roles, sentinel, no restart)",
                before[name] == after.get(name),
                "identical"
                if before[name] == after.get(name)
                else f"before={before[name]!r} after={after.get(name)!r}",
            )

    def report(self, ok: bool, error: str | None) -> dict[str, Any]:
        hosts = dict(self.mocks.servers) if self.mocks else {}
        return {
            "ok": ok and all(c.ok for c in self.checks) and all(st["ok"] for st in self.steps),
            "stack": self.stack,
            "error": error,
            "overlay": overlay.describe(),
            "hosts": {name: {"private_ip": ip} for name, ip in hosts.items()},
            "steps": self.steps,
            "runs": self.runs,
            "pgbackrest": self.pgbackrest,
            "checks": [c.__dict__ for c in self.checks],
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def main(args) -> int:
    if args.scenario == "list":
        from . import scenarios

        print(scenarios.listing())
        return 0
    if os.geteuid() != 0:
        print("error: the rehearsal needs root (network namespaces, systemd-nspawn)", file=sys.stderr)
        return 2
    testbed = Testbed()
    reh = Rehearsal(args.stack, testbed)
    ok, error = False, None
    t0 = time.perf_counter()
    try:
        reh.prepare()
        reh.run_program("first")
        reh.health_checks()
        if args.twice:
            reh.twice()
        if args.reboot:
            reh.reboot_checks()
        if args.scenario != "deploy":
            from . import scenarios

            scenarios.run(args.scenario, reh)
        ok = True
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"error: {error}", file=sys.stderr)
    finally:
        reh.timings["total"] = time.perf_counter() - t0
        report = reh.report(ok, error)
        if args.report:
            args.report.write_text(json.dumps(report, indent=2) + "\n")
        if not args.keep:
            testbed.down()
        else:
            print("guests left running; take them down with: python -m sandbox down")
    print(json.dumps({"ok": report["ok"], "checks": len(report["checks"]), "failed": [
        c["name"] for c in report["checks"] if not c["ok"]], "seconds": report["timings"].get("total")}))  # fmt: skip
    return 0 if report["ok"] else 1
