"""ReplicaPair: one cluster generation, a primary and its streaming replicas.

The primary carries the role setup and the physical slots; every replica gets its own slot and
a pg_hba replication line for its /32 only, is built once by pg_basebackup, and catches up from
the archive when it fell behind. A generation restored from another one starts from that
generation's backups instead of an empty cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import pulumi

from components.shared import remote
from components.shared.credentials import REPLICATOR
from postgres import conf as pgconf
from postgres import hba as pghba
from postgres.hba import HbaRule
from postgres.layout import Layout

from .postgres_server import Bootstrap, PostgresServer, PostgresServerArgs, ServerSpec
from .private_network import PrivateNetwork


@dataclass
class Access:
    """Who may connect to the database, and from where (rendered into pg_hba)."""

    database: str
    rules: list[tuple[str, list[str]]]  # (role, cidrs)
    # The monitoring role reaches the postgres database only (statistics, pg_stat_statements).
    monitoring: tuple[str, list[str]] | None = None


@dataclass
class Backups:
    """pgBackRest on this generation: the rendered config (secret) and the timer schedules."""

    stanza: str
    config: pulumi.Output[str]
    full_schedule: str
    diff_schedule: str
    archive_timeout_seconds: int
    watch_interval: str = "2min"


@dataclass
class Heartbeats:
    """Each server's heartbeats (components/scripts/heartbeats.sh): where they go and how often."""

    ping_url: pulumi.Output[str]  # secret: <pingUrl>/<ping key>
    alive_interval: str
    archive_interval: str
    replication_interval: str
    archive_max_age_seconds: int
    replication_max_lag_seconds: int
    verify_tls: bool = True
    # The checks on the service: made before the first ping, so none is lost.
    depends_on: list[pulumi.Resource] = field(default_factory=list)


@dataclass
class Exporters:
    """node_exporter and postgres_exporter on every server (components/scripts/exporters.sh)."""

    scrape_password: pulumi.Output[str]  # secret: basic auth of both exporters
    monitoring_role: str
    monitoring_password: pulumi.Output[str]  # secret: the role postgres_exporter logs in as


@dataclass
class Drills:
    """The write canary, pgbackrest verify and the restore drill (components/scripts/drills.sh)."""

    database: str  # the application's: every table of it must read on the restored copy
    canary_interval_seconds: int
    schedule: str
    verify_schedule: str
    server: str  # "replica" (the first replica, or the primary without one) or "primary"
    heapallindexed: bool = False
    margin_percent: int = 20


@dataclass
class LogicalDumps:
    """Scheduled, age-encrypted logical dumps into the bucket (components/scripts/logical_dump.sh)."""

    database: str
    schedule: str
    recipients: list[str]  # age public keys: the servers can encrypt, never decrypt
    prefix: str  # in the bucket, beside pgBackRest's repository path
    keep: int
    exclude_table_data: list[str] = field(default_factory=list)
    exclude_schemas: list[str] = field(default_factory=list)


@dataclass
class RestoreFrom:
    source_stanza: str
    target: str  # ISO 8601 with a time zone, or "latest"


@dataclass
class ImportInto:
    """Fill the new primary's database from another PostgreSQL once (components/scripts/import.sh)."""

    generation: str
    database: str
    owner: str
    source: str  # "url" or "bucket"
    dump_key: str | None
    jobs: int
    verify: bool
    checks: list[str]
    untrusted_extensions: list[str]
    # Secret: the source's libpq service file entry (from importSourceUrl), or None without one.
    service: pulumi.Output[str] | None = None

    def params(self) -> dict[str, str | int]:
        return {
            "GENERATION": self.generation,
            "DATABASE": self.database,
            "OWNER": self.owner,
            "SOURCE": self.source,
            "DUMP_KEY": self.dump_key or "",
            "JOBS": self.jobs,
            "VERIFY": 1 if self.verify else 0,
            "UNTRUSTED_EXTENSIONS": " ".join(self.untrusted_extensions),
            "CHECK_COUNT": len(self.checks),
            **{f"CHECK_{i + 1}": query for i, query in enumerate(self.checks)},
        }


@dataclass
class ReplicaPairArgs:
    primary_ip: str
    replica_ips: list[str]
    server: ServerSpec
    layout: Layout
    network: PrivateNetwork
    ssh_private_key: pulumi.Input[str]
    access: Access
    conf: pgconf.ClusterConf
    role_sql: pulumi.Output[str]
    replicator_password: pulumi.Output[str]
    backups: Backups | None = None
    restore: RestoreFrom | None = None
    heartbeats: Heartbeats | None = None
    exporters: Exporters | None = None
    drills: Drills | None = None
    import_: ImportInto | None = None
    logical_dumps: LogicalDumps | None = None  # needs backups (the bucket, through pgBackRest)


def drill_server(drills: Drills, replica_names: list[str], primary_name: str) -> str:
    """The server whose drill timer runs: the first replica, or the primary (asked for, or alone)."""
    if drills.server == "replica" and replica_names:
        return replica_names[0]
    return primary_name


def slot_name(server_name: str) -> str:
    return "pgstack_" + server_name.replace("-", "_")


def hba_rules(access: Access, replica_ips: list[str], tls: bool = True) -> list[HbaRule]:
    """Network rules are hostssl: a plain connection from the network matches no line."""
    kind: Literal["host", "hostssl"] = "hostssl" if tls else "host"
    rules = pghba.base_rules()
    for role, cidrs in access.rules:
        for cidr in cidrs:
            rules.append(HbaRule(kind, access.database, role, cidr, "scram-sha-256", f"{role} from {cidr}"))
    if access.monitoring is not None:
        role, cidrs = access.monitoring
        for cidr in cidrs:
            rules.append(HbaRule(kind, "postgres", role, cidr, "scram-sha-256", f"monitoring {role} from {cidr}"))
    for ip in replica_ips:
        rules.append(HbaRule(kind, "replication", REPLICATOR, f"{ip}/32", "scram-sha-256", f"replica {ip}"))
    return rules


class ReplicaPair(pulumi.ComponentResource):
    def __init__(self, name: str, args: ReplicaPairArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:replica_pair:ReplicaPair", name, None, opts)
        spec = args.server
        tls = spec.tls is not None
        cluster = args.conf
        hba = pghba.render(hba_rules(args.access, args.replica_ips, tls=tls))
        backups = args.backups
        stanza = backups.stanza if backups else None

        def server(role: str, ip: str, bootstrap: Bootstrap | None, primary_ip: str | None = None) -> PostgresServer:
            server_name = f"{name}-{role}"
            conf = pgconf.ServerConf(
                version=cluster.version,
                cluster_name=server_name,
                private_ip=ip,
                max_connections=cluster.max_connections,
                stanza=stanza,
                archive_timeout_seconds=backups.archive_timeout_seconds if backups else 60,
                replica_slots=cluster.replica_slots,
                max_slot_wal_keep_size=cluster.max_slot_wal_keep_size,
                overrides=cluster.overrides,
                tls=tls,
                primary_host=primary_ip,
                primary_slot_name=slot_name(server_name) if primary_ip else None,
            )
            return PostgresServer(
                server_name,
                PostgresServerArgs(
                    private_ip=ip,
                    network=args.network,
                    ssh_private_key=args.ssh_private_key,
                    pg_conf=pgconf.render(conf),
                    hba_conf=hba,
                    bootstrap=bootstrap,
                    layout=args.layout,
                    spec=spec,
                ),
                pulumi.ResourceOptions(parent=self),
            )

        self._backups = backups
        self.primary = server("primary", args.primary_ip, None)
        primary = self.primary
        pg: dict[str, str | int] = {"PG_VERSION": args.layout.version}
        self._pg = pg
        after_ready: list[pulumi.Resource] = [primary.ready]
        if args.restore is not None:
            if backups is None:
                raise ValueError(f"{name}: a restored generation needs the backup config")
            # The restore reads the repository, so pgBackRest is configured first (without the
            # stanza steps: this server's own stanza is made once it is promoted).
            config_first = self._pgbackrest(f"{name}-primary-pgbackrest-config", primary, "standby", after_ready)
            params = {"SOURCE_STANZA": args.restore.source_stanza, "TARGET": args.restore.target}
            primary.ready = remote.step(
                f"{name}-primary-restore", primary.ssh, "restore", {**pg, **params}, self, [config_first],
                create_only=True,
            )  # fmt: skip
            after_ready = [primary.ready]
        self.roles = remote.step(
            f"{name}-primary-roles", primary.ssh, "roles", pg, self, after_ready, stdin=args.role_sql
        )
        replica_names = [f"{name}-replica-{i + 1}" for i in range(len(args.replica_ips))]
        self.slots = remote.step(
            f"{name}-primary-slots",
            primary.ssh,
            "slots",
            {**pg, "SLOTS": " ".join(slot_name(n) for n in replica_names)},
            self,
            [self.roles],
        )
        self.pgbackrest = None
        if backups is not None:
            self.pgbackrest = self._pgbackrest(f"{name}-primary-pgbackrest", primary, "primary", [self.slots])
        self.imported = None
        if args.import_ is not None:
            if backups is None or self.pgbackrest is None:
                raise ValueError(f"{name}: an imported generation needs the backup config (it ends with a full backup)")
            # After the stanza exists, so the import's WAL is archived like any other; create-only,
            # like a restore: no later edit of the block runs it again over live data.
            imp = args.import_
            self.imported = remote.step(
                f"{name}-primary-import", primary.ssh, "import", {**pg, **imp.params(), "STANZA": backups.stanza},
                self, [self.pgbackrest],
                stdin=imp.service if imp.service is not None else "# no source URL\n",
                create_only=True,
            )  # fmt: skip
        primary_last = self.imported or self.pgbackrest or self.slots
        self._heartbeats = args.heartbeats
        self._exporters = args.exporters
        self._drills = args.drills
        self._drill_server = (
            drill_server(args.drills, replica_names, f"{name}-primary") if args.drills is not None else None
        )
        if args.logical_dumps is not None and backups is None:
            raise ValueError(f"{name}: logical dumps go to the bucket through pgBackRest, and there are no backups")
        self._logical_dumps = args.logical_dumps
        # The standby that dumps: the first replica. The primary's timer runs too and dumps only
        # while that standby does not stream from it (bin/pgstack-logical-dump).
        self._dump_standby = replica_names[0] if replica_names else ""
        self._dump_timers = {f"{name}-primary", *replica_names[:1]}
        self._heartbeat(f"{name}-primary", primary, primary_last)
        self._exporter(f"{name}-primary", primary, primary_last)
        self._drill(f"{name}-primary", primary, primary_last)
        self._logical_dump(f"{name}-primary", primary, primary_last)
        self.replicas: list[PostgresServer] = []
        for i, ip in enumerate(args.replica_ips):
            rname = replica_names[i]
            replica = server(
                f"replica-{i + 1}",
                ip,
                Bootstrap(
                    "replica",
                    {"PRIMARY_IP": args.primary_ip, "SLOT": slot_name(rname)},
                    stdin=args.replicator_password,
                    # Only what pg_basebackup needs: the slot, the replication role and its pg_hba
                    # line (both before the slots step). Not the primary's pgBackRest step: the
                    # replica builds while the primary's first full backup runs.
                    depends_on=[self.slots],
                ),
                primary_ip=args.primary_ip,
            )
            last = replica.ready
            if backups is not None:
                last = self._pgbackrest(f"{rname}-pgbackrest", replica, "standby", [replica.ready])
            self._heartbeat(rname, replica, last)
            self._exporter(rname, replica, last)
            self._drill(rname, replica, last)
            self._logical_dump(rname, replica, last)
            self.replicas.append(replica)
        self.stanza = stanza
        self.register_outputs(
            {
                "primary_private_ip": primary.private_ip,
                "primary_public_ip": primary.public_ip,
                "replica_private_ips": [r.private_ip for r in self.replicas],
                "stanza": stanza,
            }
        )

    def _heartbeat(self, server_name: str, target: PostgresServer, after: pulumi.Resource) -> None:
        hb = self._heartbeats
        if hb is None:
            return
        params: dict[str, str | int] = {
            **self._pg,
            "SLUG_PREFIX": server_name,
            "ALIVE_INTERVAL": hb.alive_interval,
            "ARCHIVE_INTERVAL": hb.archive_interval,
            "REPLICATION_INTERVAL": hb.replication_interval,
            "ARCHIVE_MAX_AGE": hb.archive_max_age_seconds,
            "REPLICATION_MAX_LAG": hb.replication_max_lag_seconds,
            "VERIFY_TLS": 1 if hb.verify_tls else 0,
            "BACKUPS": 1 if self._backups is not None else 0,
        }
        remote.step(
            f"{server_name}-heartbeats", target.ssh, "heartbeats", params, self, [after, *hb.depends_on],
            stdin=hb.ping_url,
        )  # fmt: skip

    def _exporter(self, server_name: str, target: PostgresServer, after: pulumi.Resource) -> None:
        ex = self._exporters
        if ex is None:
            return
        if target.cert_pem is None:
            raise ValueError(f"{server_name}: the exporters serve TLS with the server's certificate, and it has none")
        base: dict[str, str | int] = {
            **self._pg,
            "PRIVATE_IP": target.private_ip,
            "MONITORING_ROLE": ex.monitoring_role,
        }
        # The certificate's digest, not the certificate: the step re-runs (and copies the new
        # files) when pulumi-tls renews it.
        params = target.cert_pem.apply(lambda pem: {**base, "CERT_SHA256": hashlib.sha256(pem.encode()).hexdigest()})
        secrets: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(ex.scrape_password, ex.monitoring_password).apply(lambda v: f"{v[0]}\n{v[1]}\n")
        )
        remote.step(f"{server_name}-exporters", target.ssh, "exporters", params, self, [after], stdin=secrets)

    def _drill(self, server_name: str, target: PostgresServer, after: pulumi.Resource) -> None:
        """The canary on every server; with backups, verify and the drill (its timer on one server)."""
        dr = self._drills
        if dr is None:
            return
        backups = self._backups
        params: dict[str, str | int] = {
            **self._pg,
            "BACKUPS": 1 if backups is not None else 0,
            "CANARY_INTERVAL": f"{dr.canary_interval_seconds}s",
            "STANZA": backups.stanza if backups is not None else "",
            "DATABASE": dr.database,
            "DRILL_SCHEDULE": dr.schedule,
            "VERIFY_SCHEDULE": dr.verify_schedule,
            "DRILL_TIMER": 1 if backups is not None and server_name == self._drill_server else 0,
            "HEAPALLINDEXED": 1 if dr.heapallindexed else 0,
            "MARGIN_PERCENT": dr.margin_percent,
        }
        remote.step(f"{server_name}-drills", target.ssh, "drills", params, self, [after])

    def _logical_dump(self, server_name: str, target: PostgresServer, after: pulumi.Resource) -> None:
        """The dump program on every server (so `systemctl start` takes one anywhere); its timer on the
        primary and the first replica, which decide at run time which of them dumps."""
        ld = self._logical_dumps
        if ld is None:
            return
        backups = self._backups
        assert backups is not None  # checked in __init__: dumps go to the bucket through pgBackRest
        params: dict[str, str | int] = {
            **self._pg,
            "DATABASE": ld.database,
            # One folder per generation: a dry run's or an old generation's dumps never count
            # against (or crowd out) the active one's retention, nor share its names.
            "PREFIX": f"{ld.prefix.rstrip('/')}/{backups.stanza}",
            "KEEP": ld.keep,
            "RECIPIENTS": " ".join(ld.recipients),
            "LOGICAL_SCHEDULE": ld.schedule,
            "EXCLUDE_TABLE_DATA": " ".join(ld.exclude_table_data),
            "EXCLUDE_SCHEMAS": " ".join(ld.exclude_schemas),
            "DUMP_TIMER": 1 if server_name in self._dump_timers else 0,
            "DUMP_STANDBY": self._dump_standby,
        }
        remote.step(f"{server_name}-logical-dump", target.ssh, "logical_dump", params, self, [after])

    def _pgbackrest(
        self, name: str, target: PostgresServer, mode: str, depends_on: list[pulumi.Resource]
    ) -> pulumi.Resource:
        backups = self._backups
        assert backups is not None
        params: dict[str, str | int] = {
            **self._pg,
            "STANZA": backups.stanza,
            "MODE": mode,
            "FULL_SCHEDULE": backups.full_schedule,
            "DIFF_SCHEDULE": backups.diff_schedule,
            "WATCH_INTERVAL": backups.watch_interval,
        }
        return remote.step(name, target.ssh, "pgbackrest", params, self, depends_on, stdin=backups.config)
