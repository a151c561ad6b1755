"""build(settings): the whole program, from one validated Settings object to resources."""

from __future__ import annotations

import urllib.parse

import pulumi

from config import Settings

from . import pgbackrest_conf, pgconf, roles_sql
from .backup_bucket import BackupBucket, BackupBucketArgs
from .certificate_authority import CertificateAuthority
from .credentials import REPLICATOR, Credentials
from .dns_cutover import DnsCutover, DnsCutoverArgs
from .private_network import PrivateNetwork, PrivateNetworkArgs
from .replica_pair import Access, Backups, ReplicaPair, ReplicaPairArgs, RestoreFrom


def build(settings: Settings) -> None:
    if settings.target == "hetzner":
        build_hetzner(settings)
    else:
        # Imported here: hetzner runs never load pulumi_aws.
        from .aws_stack import build_aws

        build_aws(settings)


def login_versions(settings: Settings, replicator: bool = True) -> dict[str, int]:
    versions = {r.name: r.password_version for r in settings.roles.logins()}
    if replicator:
        versions[REPLICATOR] = 1
    return versions


def role_model(settings: Settings, creds: Credentials, replicator: bool = True) -> pulumi.Output[str]:
    """The role SQL with every login's verifier filled in (a secret Output)."""
    roles = settings.roles
    owner = roles.owner
    specs = [
        (roles.app.name, roles.app.connection_limit, ("write", owner) if roles.app.runs_migrations else ("write",),
         owner if roles.app.runs_migrations else None, False),
        (roles.migrator.name, roles.migrator.connection_limit, (owner,), owner, False),
        (roles.reporting.name, roles.reporting.connection_limit, ("readonly",), None, False),
        *[(h.name, h.connection_limit, (h.access,), None, True) for h in roles.humans],
    ]  # fmt: skip
    # pg_basebackup -X stream opens two connections per replica; one more for a catch-up.
    replicas = max((len(c.replica_ips) for c in settings.clusters.values()), default=0)
    # RDS replicates by itself and does not let its master user grant REPLICATION.
    names = [s[0] for s in specs] + ([REPLICATOR] if replicator else [])
    verifiers = [creds[n].verifier for n in names]

    def render(values: list[str]) -> str:
        by_name = dict(zip(names, values, strict=True))
        logins = tuple(
            roles_sql.Login(name, limit, by_name[name], groups, act_as, log_all)
            for name, limit, groups, act_as, log_all in specs
        )
        repl = roles_sql.Login(REPLICATOR, 2 * max(replicas, 1) + 1, by_name[REPLICATOR], ()) if replicator else None
        return roles_sql.render(roles_sql.RoleModel(settings.database.name, owner, logins, repl))

    return pulumi.Output.secret(pulumi.Output.all(*verifiers).apply(render))


def build_hetzner(settings: Settings) -> None:
    hz = settings.hetzner
    assert hz is not None  # config.rules guarantees it for target hetzner
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
                config=pgbackrest_config(settings, stanzas, bucket),
                full_schedule=settings.backup.full_schedule,
                diff_schedule=settings.backup.diff_schedule,
                archive_timeout_seconds=settings.backup.archive_timeout_seconds,
            )
            pulumi.export(f"stanza_{gen}", backups.stanza)
        clusters[gen] = ReplicaPair(
            f"{settings.stack}-{gen}",
            ReplicaPairArgs(
                primary_ip=cluster.primary_ip,
                replica_ips=list(cluster.replica_ips),
                server={
                    "location": hz.location,
                    "server_type": hz.server_type,
                    "image": hz.image,
                    "volume_size_gb": hz.volume_size_gb,
                    "package_source": settings.sandbox.package_source,
                    "delete_protection": cluster.delete_protection,
                    "tls": ca,
                    "labels": {**labels, "pgstack-cluster": gen},
                },
                network=network,
                ssh_private_key=ssh_key,
                access=access,
                backups=backups,
                restore=restore,
                replicator_password=creds[REPLICATOR].password,
                conf=pgconf.ServerConf(
                    cluster_name="",
                    private_ip="",
                    max_connections=settings.max_connections,
                    replica_slots=len(cluster.replica_ips),
                    max_slot_wal_keep_size=settings.replication.max_slot_wal_keep_size,
                    overrides=dict(settings.postgresql),
                ),
                role_sql=role_sql,
            ),
        )
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

    def url(role: str, host: str):
        password = creds[role].password
        return pulumi.Output.secret(
            password.apply(
                lambda pw: (
                    f"postgres://{role}:{urllib.parse.quote(pw, safe='')}@{host}:5432/{settings.database.name}"
                    "?sslmode=require"
                )
            )
        )

    pulumi.export("database_url", url(roles.app.name, active.primary.private_ip))
    if active.replicas:
        # Read-only by construction: a hot standby, with the reporting role (member of readonly).
        pulumi.export("replica_database_url", url(roles.reporting.name, active.replicas[0].private_ip))


def _endpoint(settings: Settings) -> str:
    assert settings.backup is not None
    port = settings.sandbox.s3_port
    return settings.backup.endpoint if port == 443 else f"{settings.backup.endpoint}:{port}"


def pgbackrest_config(settings: Settings, stanzas: list[str], bucket: BackupBucket) -> pulumi.Output[str]:
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
    return pulumi.Output.secret(secrets.apply(lambda v: pgbackrest_conf.render(opts, stanzas, v[0], v[1], v[2])))
