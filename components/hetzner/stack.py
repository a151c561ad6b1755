"""build_hetzner(settings): target hetzner, servers configured in-guest over SSH (seed 000)."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components.shared.certificate_authority import CertificateAuthority
from components.shared.credentials import REPLICATOR, Credentials
from components.shared.dns_cutover import DnsCutover, DnsCutoverArgs
from components.shared.roles import database_url, login_versions, role_model
from config import Settings
from monitoring import rules as monitoring_rules
from monitoring import server as monitoring_conf
from postgres import conf as pgconf
from postgres import import_source
from postgres import pgbackrest as pgbackrest_conf
from postgres.layout import Layout, layout

from .backup_bucket import BackupBucket, BackupBucketArgs
from .heartbeat_checks import HeartbeatChecks, HeartbeatChecksArgs, watchdog_check
from .monitoring_server import MonitoringServer, MonitoringServerArgs
from .postgres_server import ServerSpec
from .private_network import PrivateNetwork, PrivateNetworkArgs
from .replica_pair import (
    Access,
    Backups,
    Drills,
    Exporters,
    Heartbeats,
    ImportInto,
    LogicalDumps,
    ReplicaPair,
    ReplicaPairArgs,
    RestoreFrom,
)


def build_hetzner(settings: Settings) -> None:
    hz = settings.hetzner
    assert hz is not None  # config.rules guarantees it for target hetzner
    pg = layout(settings.postgres.version)
    labels = {"pgstack-stack": settings.stack, **hz.labels}
    network = PrivateNetwork(
        f"{settings.stack}-net",
        PrivateNetworkArgs(
            network_cidr=hz.network_cidr,
            subnet_cidr=hz.subnet_cidr,
            network_zone=hz.zone,
            admin_cidrs=list(settings.admin_cidrs),
            ssh_public_key=settings.ssh_public_key or "",
            labels=labels,
        ),
    )
    creds = Credentials(f"{settings.stack}-role", login_versions(settings))
    role_sql = role_model(settings, creds)
    ca = CertificateAuthority(f"{settings.stack}-ca", f"pgstack {settings.stack} PostgreSQL CA")
    # Clients verify the servers with this (sslmode=verify-ca or verify-full with sslrootcert).
    pulumi.export("ca_certificate", ca.cert_pem)
    roles = settings.roles
    access = Access(
        database=settings.database.name,
        rules=[
            (roles.app.name, settings.role_cidrs(roles.app)),
            (roles.migrator.name, settings.role_cidrs(roles.migrator)),
            (roles.reporting.name, settings.role_cidrs(roles.reporting)),
            *[(h.name, settings.human_cidrs) for h in roles.humans],
        ],
        monitoring=(roles.monitoring.name, settings.role_cidrs(roles.monitoring)),
    )
    ssh_key = pulumi.Output.secret(settings.ssh_private_key or "")
    bucket = None
    if settings.backup is not None:
        b = settings.backup
        bucket = BackupBucket(
            f"{settings.stack}-backups",
            BackupBucketArgs(
                bucket=b.bucket,
                endpoint=_endpoint(settings),
                region=b.region,
                repo_path=b.repo_path,
                access_key=pulumi.Output.secret(settings.s3_access_key or ""),
                secret_key=pulumi.Output.secret(settings.s3_secret_key or ""),
                labels=labels,
                cipher_pass=(
                    pulumi.Output.secret(settings.backup_cipher_passphrase)
                    if settings.backup_cipher_passphrase is not None
                    else None
                ),
            ),
        )
        pulumi.export("backup_repository", bucket.repository)
        # Keep a copy outside Pulumi state (see README): without it the backups are unreadable.
        pulumi.export("backup_cipher_passphrase", bucket.cipher_pass)
    heartbeats, checks = _heartbeats(settings)
    # The exporters' basic auth (user prometheus): one password for every server of the stack.
    scrape = random.RandomPassword(
        f"{settings.stack}-scrape-password",
        length=40,
        special=False,
        opts=pulumi.ResourceOptions(additional_secret_outputs=["result"]),
    )
    scrape_password: pulumi.Output[str] = pulumi.Output.secret(scrape.result)
    # For a Prometheus of your own (README, Monitoring): the exporters' basic auth password.
    pulumi.export("scrape_password", scrape_password)
    exporters = Exporters(scrape_password, roles.monitoring.name, creds[roles.monitoring.name].password)
    dr = settings.drill
    drills = Drills(
        database=settings.database.name,
        canary_interval_seconds=dr.canary_interval_seconds,
        schedule=dr.schedule,
        verify_schedule=dr.verify_schedule,
        server=dr.server,
        heapallindexed=dr.heapallindexed,
        margin_percent=dr.margin_percent,
    )
    lb = settings.logical_backup
    dumps = (
        LogicalDumps(
            database=settings.database.name,
            schedule=lb.schedule,
            recipients=list(lb.recipients),
            prefix=lb.prefix,
            keep=lb.keep,
            exclude_table_data=list(lb.exclude_table_data),
            exclude_schemas=list(lb.exclude_schemas),
        )
        if lb is not None
        else None
    )
    clusters: dict[str, ReplicaPair] = {}
    for gen, cluster in settings.clusters.items():
        backups = restore = None
        if bucket is not None and settings.backup is not None:
            stanzas = [settings.stanza(gen)]
            if cluster.restore is not None:
                stanzas.append(settings.stanza(cluster.restore.source))
                restore = RestoreFrom(
                    settings.stanza(cluster.restore.source),
                    pgbackrest_conf.recovery_target(cluster.restore.target_time),
                )
            backups = Backups(
                stanza=settings.stanza(gen),
                config=pgbackrest_config(settings, pg, stanzas, bucket),
                full_schedule=settings.backup.full_schedule,
                diff_schedule=settings.backup.diff_schedule,
                archive_timeout_seconds=settings.backup.archive_timeout_seconds,
            )
            pulumi.export(f"stanza_{gen}", backups.stanza)
        assert cluster.primary_ip is not None  # config.rules guarantees it for target hetzner
        import_into = _import_into(settings, gen)
        clusters[gen] = ReplicaPair(
            f"{settings.stack}-{gen}",
            ReplicaPairArgs(
                primary_ip=cluster.primary_ip,
                replica_ips=list(cluster.replica_ips),
                server=ServerSpec(
                    location=hz.location,
                    server_type=hz.server_type,
                    image=hz.image,
                    volume_size_gb=hz.volume_size_gb,
                    package_source=settings.sandbox.package_source,
                    delete_protection=cluster.delete_protection,
                    tls=ca,
                    labels={**labels, "pgstack-cluster": gen},
                ),
                layout=pg,
                network=network,
                ssh_private_key=ssh_key,
                access=access,
                backups=backups,
                restore=restore,
                replicator_password=creds[REPLICATOR].password,
                conf=pgconf.ClusterConf(
                    version=pg.version,
                    max_connections=settings.max_connections,
                    replica_slots=len(cluster.replica_ips),
                    max_slot_wal_keep_size=settings.replication.max_slot_wal_keep_size,
                    overrides=dict(settings.postgresql),
                ),
                role_sql=role_sql,
                heartbeats=heartbeats,
                exporters=exporters,
                drills=drills,
                import_=import_into,
                logical_dumps=dumps if backups is not None else None,
            ),
        )
    if settings.monitoring.server is not None:
        _monitoring_server(settings, network, ca, scrape_password, checks)
    active = clusters[settings.active]
    if settings.dns is not None:
        cutover = DnsCutover(
            f"{settings.stack}-dns",
            DnsCutoverArgs(
                dns=settings.dns,
                targets={gen: c.primary.private_ip for gen, c in clusters.items()},
                active=settings.active,
                record_type="A",
            ),
        )
        pulumi.export("dns_name", cutover.fqdn)
    pulumi.export("active_cluster", settings.active)
    pulumi.export("primary_public_ip", active.primary.public_ip)
    pulumi.export("primary_private_ip", active.primary.private_ip)
    pulumi.export("replica_private_ips", [r.private_ip for r in active.replicas])

    def url(role: str, host: str) -> pulumi.Output[str]:
        return database_url(role, creds[role].password, host, settings.database.name)

    pulumi.export("database_url", url(roles.app.name, active.primary.private_ip))
    if active.replicas:
        # Read-only by construction: a hot standby, with the reporting role (member of readonly).
        pulumi.export("replica_database_url", url(roles.reporting.name, active.replicas[0].private_ip))


def _monitoring_server(
    settings: Settings,
    network: PrivateNetwork,
    ca: CertificateAuthority,
    scrape_password: pulumi.Output[str],
    checks: HeartbeatChecks | None,
) -> None:
    mon = settings.monitoring
    srv = mon.server
    hz = settings.hetzner
    alerts = settings.alerts
    assert srv is not None and hz is not None and alerts is not None  # config.rules guarantees them
    targets = tuple(
        monitoring_conf.Target(settings.name(gen, role), ip, gen)
        for gen, cluster in settings.clusters.items()
        for role, ip in [
            ("primary", cluster.primary_ip),
            *[(f"replica-{i + 1}", r) for i, r in enumerate(cluster.replica_ips)],
        ]
        if ip is not None
    )
    thresholds = monitoring_rules.Thresholds(**mon.thresholds.model_dump(), runbook_url=mon.runbook_url)
    email = mon.receivers.email
    slug = watchdog_slug(settings)
    ping_key = pulumi.Output.secret(settings.alerts_ping_key or "")

    def alertmanager(values: list[str | None]) -> str:
        key, smtp_password, webhook, routing_key = values
        return monitoring_conf.alertmanager_yml(
            monitoring_conf.AlertmanagerConf(
                watchdog_url=f"{alerts.ping_url.rstrip('/')}/{key}/{slug}",
                watchdog_period_seconds=srv.watchdog.period_seconds,
                email=(
                    monitoring_conf.Email(email.to, email.sender, email.smarthost, email.username, smtp_password)
                    if email is not None
                    else None
                ),
                webhook_url=webhook,
                pagerduty_routing_key=routing_key,
                group_wait_seconds=srv.group_wait_seconds,
                group_interval_seconds=srv.group_interval_seconds,
                repeat_interval_seconds=srv.repeat_interval_seconds,
                verify_tls=settings.sandbox.alerts_verify_tls,
            )
        )

    secrets = pulumi.Output.all(
        ping_key,
        pulumi.Output.secret(settings.monitoring_smtp_password),
        pulumi.Output.secret(settings.monitoring_webhook_url),
        pulumi.Output.secret(settings.monitoring_pagerduty_routing_key),
    )
    name = f"{settings.stack}-monitoring"
    server = MonitoringServer(
        name,
        MonitoringServerArgs(
            private_ip=srv.ip,
            server_type=srv.server_type,
            image=hz.image,
            location=hz.location,
            network=network,
            ssh_private_key=pulumi.Output.secret(settings.ssh_private_key or ""),
            pg_version=settings.postgres.version,
            prometheus=monitoring_conf.PrometheusConf(settings.stack, targets, srv.scrape_interval_seconds),
            rules_yml=monitoring_rules.render(thresholds),
            ca_pem=ca.cert_pem,
            scrape_password=scrape_password,
            alertmanager_yml=pulumi.Output.secret(secrets.apply(alertmanager)),
            retention_days=srv.retention_days,
            labels={"pgstack-stack": settings.stack, **hz.labels},
            depends_on=[checks.command] if checks is not None and checks.command is not None else [],
        ),
    )
    pulumi.export("monitoring_public_ip", server.server.ipv4_address)
    pulumi.export("monitoring_private_ip", server.private_ip)


def _import_into(settings: Settings, gen: str) -> ImportInto | None:
    block = settings.clusters[gen].import_
    if block is None:
        return None
    url = settings.import_source_url
    return ImportInto(
        generation=gen,
        database=settings.database.name,
        owner=settings.roles.owner,
        source=block.source,
        dump_key=block.dump_key,
        jobs=block.jobs,
        verify=block.verify,
        checks=list(block.checks),
        untrusted_extensions=list(block.untrusted_extensions),
        # Secret in, secret out: the entry holds the source's password.
        service=pulumi.Output.secret(url).apply(import_source.service_entry) if url is not None else None,
    )


def watchdog_slug(settings: Settings) -> str:
    return f"{settings.stack}-monitoring-watchdog"


def _heartbeats(settings: Settings) -> tuple[Heartbeats | None, HeartbeatChecks | None]:
    """The checks of every server of every generation, and what each server needs to ping them."""
    alerts = settings.alerts
    if alerts is None:
        return None, None
    servers = [
        settings.name(gen, role)
        for gen, cluster in settings.clusters.items()
        for role in ["primary", *[f"replica-{i + 1}" for i in range(len(cluster.replica_ips))]]
    ]
    checks = HeartbeatChecks(
        f"{settings.stack}-heartbeat-checks",
        HeartbeatChecksArgs(
            alerts=alerts,
            servers=servers,
            backups=settings.backup is not None,
            logical_dump=settings.logical_backup is not None,
            api_key=pulumi.Output.secret(settings.alerts_api_key) if settings.alerts_api_key is not None else None,
            verify_tls=settings.sandbox.alerts_verify_tls,
            extra=(
                [
                    watchdog_check(
                        alerts, watchdog_slug(settings), srv.watchdog.period_seconds, srv.watchdog.grace_seconds
                    )
                ]
                if (srv := settings.monitoring.server) is not None
                else None
            ),
        ),
    )
    key = pulumi.Output.secret(settings.alerts_ping_key or "")
    jobs = alerts.jobs
    return Heartbeats(
        # Secret: the ping key is part of every ping URL.
        ping_url=pulumi.Output.secret(key.apply(lambda k: f"{alerts.ping_url.rstrip('/')}/{k}")),
        alive_interval=f"{jobs.alive.period_seconds}s",
        archive_interval=f"{jobs.archive.period_seconds}s",
        replication_interval=f"{jobs.replication.period_seconds}s",
        archive_max_age_seconds=alerts.archive_max_age_seconds,
        replication_max_lag_seconds=alerts.replication_max_lag_seconds,
        verify_tls=settings.sandbox.alerts_verify_tls,
        depends_on=[checks.command] if checks.command is not None else [],
    ), checks


def _endpoint(settings: Settings) -> str:
    assert settings.backup is not None
    port = settings.sandbox.s3_port
    return settings.backup.endpoint if port == 443 else f"{settings.backup.endpoint}:{port}"


def pgbackrest_config(settings: Settings, pg: Layout, stanzas: list[str], bucket: BackupBucket) -> pulumi.Output[str]:
    b = settings.backup
    assert b is not None
    opts = pgbackrest_conf.RepoOptions(
        bucket=b.bucket,
        endpoint=_endpoint(settings),
        region=b.region,
        path=b.repo_path,
        retention_full_days=b.retention_full_days,
        retention_full_count=b.retention_full_count,
        process_max=b.process_max,
        archive_push_queue_max=b.archive_push_queue_max,
        archive_push_io_timeout_seconds=b.archive_push_io_timeout_seconds,
        verify_tls=settings.sandbox.s3_verify_tls,
    )
    secrets = pulumi.Output.all(
        pulumi.Output.secret(settings.s3_access_key or ""),
        pulumi.Output.secret(settings.s3_secret_key or ""),
        bucket.cipher_pass,
    )
    return pulumi.Output.secret(secrets.apply(lambda v: pgbackrest_conf.render(opts, pg, stanzas, v[0], v[1], v[2])))
