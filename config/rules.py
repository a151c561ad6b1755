"""Cross-field rules: what no single key can check on its own.

Each rule raises ConfigError naming the key to edit and how, so a bad stack file stops the
program before any resource is registered. The rules of either target live here (they need the
whole Settings); model.py and aws.py check what one block can check alone.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterator

from postgres.conf import MANAGED
from postgres.import_source import url_problem
from postgres.roles import CANARY_DATABASE

from .aws import PROTECTED_PARAMETERS, RDS_IDENTIFIER
from .errors import ConfigError
from .model import Settings

ANYWHERE = {"0.0.0.0/0", "::/0"}


def check(settings: Settings, now: dt.datetime) -> None:
    _check_clusters(settings, now)
    _check_connections(settings)
    _check_postgresql(settings)
    if settings.target == "hetzner":
        _check_hetzner(settings)
    else:
        _check_aws(settings)
    _check_cipher_passphrase(settings)
    _check_alerts(settings)
    _check_monitoring(settings)
    _check_drill(settings)
    _check_imports(settings)
    _check_logical_backup(settings)


def _check_clusters(settings: Settings, now: dt.datetime) -> None:
    if not settings.clusters:
        raise ConfigError("clusters", "no cluster is defined; add one, e.g. `g1: {primaryIp: 10.0.1.5}`")
    if settings.active not in settings.clusters:
        raise ConfigError(
            "active",
            f"{settings.active!r} is not one of the clusters ({', '.join(sorted(settings.clusters))}); "
            "set it to the generation clients should use",
        )
    active = settings.clusters[settings.active]
    for gen, cluster in settings.clusters.items():
        if cluster.restore is None:
            continue
        key = f"clusters.{gen}.restore"
        source = cluster.restore.source
        if source == gen:
            raise ConfigError(f"{key}.from", "a cluster cannot restore from itself; name the source generation")
        if source not in settings.clusters:
            raise ConfigError(
                f"{key}.from",
                f"source cluster {source!r} is not in clusters; a restore reads the backups of a cluster this "
                f"stack still defines, so keep the source until {gen} has its own full backup, then remove the "
                f"restore block from clusters.{gen} (its restore step is create-only: removing the block never "
                "touches the restored data) before removing the source",
            )
        target = cluster.restore.target()
        if target is not None and target > now:
            raise ConfigError(
                f"{key}.targetTime",
                f"{cluster.restore.target_time} is in the future (now {now.isoformat(timespec='seconds')}); "
                "pick a time that has passed, or 'latest'",
            )
    if active.restore is not None and active.restore.source not in settings.clusters:
        raise ConfigError("active", "the active cluster restores from a cluster that is gone")


def _check_cipher_passphrase(settings: Settings) -> None:
    """The adopted passphrase's shape; messages never show it (it is a secret).

    Like the other secret keys, it is inert where nothing uses it (no pgstack:backup block).
    """
    passphrase = settings.backup_cipher_passphrase
    if passphrase is None or settings.backup is None:
        return
    key = "backupCipherPassphrase"
    if not passphrase:
        raise ConfigError(key, "is empty; set the repository's passphrase, or remove the key to generate one")
    if any(ord(c) < 32 or ord(c) == 127 for c in passphrase):
        raise ConfigError(key, "holds a line break or another control character, which pgbackrest.conf cannot hold")
    if passphrase != passphrase.strip():
        raise ConfigError(
            key, "starts or ends with white space, which pgBackRest trims from pgbackrest.conf values; remove it"
        )


def _check_connections(settings: Settings) -> None:
    need = settings.required_connections
    given = settings.database.max_connections
    if given is not None and given < need:
        raise ConfigError(
            "database.maxConnections",
            f"{given} does not fit the role connection limits plus the reserve ({need}); raise it to at "
            "least that, lower the roles' connectionLimit, or unset it to size it automatically",
        )


# Where a managed setting is set instead, when the stack has a key for it.
_MANAGED_HINTS = {
    "max_connections": "set database.maxConnections instead",
    "max_slot_wal_keep_size": "set replication.maxSlotWalKeepSize instead",
    "archive_timeout": "set backup.archiveTimeoutSeconds instead",
}


def _check_postgresql(settings: Settings) -> None:
    for name in settings.postgresql:
        if name in MANAGED:
            hint = _MANAGED_HINTS.get(name, "remove it from pgstack:postgresql")
            raise ConfigError(
                f"postgresql.{name}",
                f"{name} is managed by pgstack (derived from the stack, and it always wins); {hint}",
            )


def _check_hetzner(settings: Settings) -> None:
    hz = settings.hetzner
    if hz is None:
        raise ConfigError("hetzner", "target hetzner needs the hetzner block (location, serverType, CIDRs)")
    if not settings.ssh_public_key:
        raise ConfigError("sshPublicKey", "set the admin's SSH public key, e.g. `ssh-ed25519 AAAA... you@host`")
    if not settings.admin_cidrs:
        raise ConfigError("adminCidrs", "list the CIDRs allowed to reach SSH, e.g. [203.0.113.7/32]")
    for cidr in settings.admin_cidrs:
        if cidr in ANYWHERE and not settings.allow_ssh_from_anywhere:
            raise ConfigError(
                "adminCidrs",
                f"{cidr} opens SSH to the whole internet; list your own addresses, or set "
                "allowSshFromAnywhere: true if you really mean it",
            )
    subnet = ipaddress.ip_network(hz.subnet_cidr)
    seen: dict[str, str] = {}
    for gen, cluster in settings.clusters.items():
        # Optional in the model only because target aws has no use for it.
        if cluster.primary_ip is None:
            raise ConfigError(
                f"clusters.{gen}.primaryIp",
                "target hetzner needs the primary's private IP, e.g. 10.0.1.5 inside hetzner.subnetCidr",
            )
        ips = [("primaryIp", cluster.primary_ip)] + [
            (f"replicaIps[{i}]", ip) for i, ip in enumerate(cluster.replica_ips)
        ]
        for field, ip in ips:
            key = f"clusters.{gen}.{field}"
            addr = ipaddress.ip_address(ip)
            if addr not in subnet:
                raise ConfigError(key, f"{ip} is not inside subnetCidr {subnet}; pick an address in it")
            # Hetzner keeps the first addresses of a subnet for its gateway.
            if addr in (subnet.network_address, subnet.network_address + 1, subnet.broadcast_address):
                raise ConfigError(key, f"{ip} is reserved in {subnet} (network, gateway, broadcast); pick another")
            if ip in seen:
                raise ConfigError(key, f"{ip} is already used by {seen[ip]}; every server needs its own address")
            seen[ip] = key
        if cluster.restore is not None and settings.backup is None:
            raise ConfigError(
                f"clusters.{gen}.restore",
                "a restore reads the source generation's pgBackRest backups, and this stack has no "
                "pgstack:backup block; add it (bucket, endpoint, region), or remove the restore block",
            )
    for key, cidrs in _role_cidr_keys(settings):
        for cidr in cidrs:
            if cidr in ANYWHERE:
                raise ConfigError(key, f"{cidr} would open PostgreSQL to the internet; use private ranges")
    if settings.roles.humans and not settings.roles.human_cidrs:
        # People connect from adminCidrs by default, which allowSshFromAnywhere may open.
        for cidr in settings.admin_cidrs:
            if cidr in ANYWHERE:
                raise ConfigError(
                    "roles.humanCidrs",
                    f"is unset, so people connect to PostgreSQL from adminCidrs, which holds {cidr}: that would "
                    "open PostgreSQL to the internet; set roles.humanCidrs to the ranges people connect from",
                )


def _role_cidr_keys(settings: Settings) -> Iterator[tuple[str, list[str]]]:
    roles = settings.roles
    yield "roles.app.cidrs", roles.app.cidrs
    yield "roles.migrator.cidrs", roles.migrator.cidrs
    yield "roles.reporting.cidrs", roles.reporting.cidrs
    yield "roles.monitoring.cidrs", roles.monitoring.cidrs
    yield "roles.humanCidrs", roles.human_cidrs


def _check_aws(settings: Settings) -> None:
    """Cross-field rules for target aws, after the common ones."""
    aws = settings.aws
    if aws is None:
        raise ConfigError(
            "aws", "target aws needs the aws block (region, vpcId, subnetIds, instanceClass, bastion); see Pulumi.yaml"
        )
    if settings.hetzner is not None:
        raise ConfigError("hetzner", "target aws does not use the hetzner block; remove it")
    if settings.backup is not None:
        raise ConfigError(
            "backup", "target aws keeps its backups in RDS (aws.backupRetentionDays); remove the pgBackRest block"
        )
    _check_engine_version(settings)
    for key, cidrs in _role_cidr_keys(settings):
        if cidrs:
            raise ConfigError(
                key,
                "RDS has no pg_hba.conf, so per-role CIDRs cannot be enforced there; remove them and list "
                "the sources in aws.allowedCidrs / aws.allowedSecurityGroupIds",
            )
    for gen, cluster in settings.clusters.items():
        if cluster.primary_ip is not None:
            raise ConfigError(
                f"clusters.{gen}.primaryIp", "RDS chooses its own addresses; remove primaryIp for target aws"
            )
        if cluster.replica_ips:
            raise ConfigError(
                f"clusters.{gen}.replicaIps", "target aws has no pgstack replicas; remove them and use aws.multiAz"
            )
        ident = aws.identifier(settings.stack, gen)
        if not RDS_IDENTIFIER.match(ident):
            raise ConfigError(
                f"clusters.{gen}",
                f"the RDS identifier {ident!r} (stack-generation-db) is not valid: use a stack name of lowercase "
                "letters, digits and single hyphens, and keep it under 55 characters",
            )
    for gen in settings.clusters:
        seen = [gen]
        while (restore := settings.clusters[seen[-1]].restore) is not None and restore.source in settings.clusters:
            if restore.source in seen:
                raise ConfigError(
                    f"clusters.{gen}.restore.from",
                    f"restores form a cycle ({' <- '.join([*seen, restore.source])}); a restore needs a source "
                    "that exists first",
                )
            seen.append(restore.source)
    names = {r.name for r in settings.roles.logins()} | {settings.roles.owner}
    if aws.master_username in names:
        raise ConfigError(
            "aws.masterUsername", f"{aws.master_username!r} is also a role in pgstack:roles; give the master its own"
        )
    for name in settings.postgresql:
        if name in PROTECTED_PARAMETERS:
            raise ConfigError(f"postgresql.{name}", f"pgstack sets this on RDS: {PROTECTED_PARAMETERS[name]}")


def _check_engine_version(settings: Settings) -> None:
    """aws.engineVersion runs postgres.version: its major (the part before the dot) must be it.

    The message is the one the engineVersion pattern gave when only 15 matched it.
    """
    assert settings.aws is not None
    engine, version = settings.aws.engine_version, settings.postgres.version
    if engine.partition(".")[0] != str(version):
        raise ConfigError(
            "aws.engineVersion",
            f"{engine!r}: value not allowed; pgstack runs PostgreSQL {version} on RDS: write {version}, or "
            f"{version}.x to pin the minor version",
        )


def _check_alerts(settings: Settings) -> None:
    alerts = settings.alerts
    if alerts is None:
        return
    if settings.target == "aws":
        raise ConfigError(
            "alerts",
            "target aws alerts through RDS events and CloudWatch alarms (aws.alarms) to its SNS topics; remove the "
            "alerts block",
        )
    key = settings.alerts_ping_key
    if not key:
        raise ConfigError(
            "alertsPingKey", "alerts needs the project's ping key: pulumi config set --secret pgstack:alertsPingKey ..."
        )
    if not all(c.isalnum() or c in "-_" for c in key):
        # Messages never show it: it is a secret.
        raise ConfigError("alertsPingKey", "a ping key has letters, digits, - and _ only; copy it again")
    if settings.alerts_api_key is not None and (
        not settings.alerts_api_key or any(ord(c) < 33 or ord(c) == 127 for c in settings.alerts_api_key)
    ):
        raise ConfigError("alertsApiKey", "is empty or holds white space or a control character; copy it again")
    if settings.backup is not None:
        floor = settings.backup.archive_timeout_seconds + alerts.jobs.archive.period_seconds
        if alerts.archive_max_age_seconds <= floor:
            raise ConfigError(
                "alerts.archiveMaxAgeSeconds",
                f"{alerts.archive_max_age_seconds} would fail on a healthy server: WAL is archived every "
                f"backup.archiveTimeoutSeconds ({settings.backup.archive_timeout_seconds}) after the archive check "
                f"writes a record, checked every {alerts.jobs.archive.period_seconds} s; make it above {floor}",
            )


# A webhook URL may carry a token in its path or query: no white space, quotes or backslashes,
# which would break out of the YAML string it is written into.
_WEBHOOK_URL = re.compile(r"^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/?&=%+:@-]*)?$")


def _check_monitoring(settings: Settings) -> None:
    mon = settings.monitoring
    if mon.server is None:
        if mon.receivers.email is not None:
            raise ConfigError("monitoring.receivers", "receivers need monitoring.server, which sends the alerts")
        return
    if settings.target != "hetzner":
        raise ConfigError(
            "monitoring.server",
            "target aws monitors RDS with CloudWatch alarms (aws.alarms); remove the monitoring.server block",
        )
    if settings.monitoring_webhook_url is not None and not _WEBHOOK_URL.match(settings.monitoring_webhook_url):
        # Never shown: it is a secret.
        raise ConfigError("monitoringWebhookUrl", "is not an http(s) URL without spaces or quotes; copy it again")
    key = settings.monitoring_pagerduty_routing_key
    if key is not None and not re.fullmatch(r"[A-Za-z0-9]{32}", key):
        raise ConfigError("monitoringPagerdutyRoutingKey", "a routing key is 32 letters and digits; copy it again")
    email = mon.receivers.email
    if settings.monitoring_smtp_password is not None and (email is None or email.username is None):
        raise ConfigError(
            "monitoringSmtpPassword", "needs monitoring.receivers.email with a username; set it or remove this key"
        )
    if email is None and settings.monitoring_webhook_url is None:
        # PagerDuty gets the critical alerts only: the warnings need somewhere to go too.
        raise ConfigError(
            "monitoring.receivers",
            "the monitoring server has nowhere to send warnings; set monitoring.receivers.email or "
            "pgstack:monitoringWebhookUrl (a secret: pulumi config set --secret); a PagerDuty routing key pages "
            "the critical alerts only",
        )
    if email is not None and email.username is not None and not settings.monitoring_smtp_password:
        raise ConfigError(
            "monitoringSmtpPassword",
            "monitoring.receivers.email has a username: set its password with pulumi config set --secret "
            "pgstack:monitoringSmtpPassword, or remove the username",
        )
    if settings.alerts is None:
        raise ConfigError(
            "monitoring.server",
            "needs the alerts block: Alertmanager's Watchdog pings the heartbeat service, so a dead monitoring "
            "server is itself noticed; add pgstack:alerts (README, Alerting)",
        )
    if settings.backup is not None:
        # The newest archived WAL is as fresh as the archive job's WAL record (alerts.jobs.archive)
        # plus archive_timeout, as seen one scrape later: a lower bound would alert on a healthy server.
        floor = (
            settings.backup.archive_timeout_seconds
            + settings.alerts.jobs.archive.period_seconds
            + mon.server.scrape_interval_seconds
        )
        if mon.thresholds.archive_max_age_seconds <= floor:
            raise ConfigError(
                "monitoring.thresholds.archiveMaxAgeSeconds",
                f"{mon.thresholds.archive_max_age_seconds} would alert on a healthy server: WAL is archived every "
                f"backup.archiveTimeoutSeconds ({settings.backup.archive_timeout_seconds}) after the archive job "
                f"writes a record (every {settings.alerts.jobs.archive.period_seconds} s), seen one scrape "
                f"({mon.server.scrape_interval_seconds} s) later; make it above {floor}",
            )
    hz = settings.hetzner
    assert hz is not None  # _check_hetzner ran first
    subnet = ipaddress.ip_network(hz.subnet_cidr)
    ip = ipaddress.ip_address(mon.server.ip)
    if ip not in subnet:
        raise ConfigError("monitoring.server.ip", f"{ip} is not inside hetzner.subnetCidr {subnet}; pick one in it")
    if ip in (subnet.network_address, subnet.network_address + 1, subnet.broadcast_address):
        raise ConfigError("monitoring.server.ip", f"{ip} is reserved in {subnet} (network, gateway, broadcast)")
    for gen, cluster in settings.clusters.items():
        if mon.server.ip == cluster.primary_ip or mon.server.ip in cluster.replica_ips:
            raise ConfigError(
                "monitoring.server.ip", f"{ip} is a server of cluster {gen}; give the monitoring server its own"
            )


def _check_drill(settings: Settings) -> None:
    """The drill block needs backups and target hetzner; its canary database is pgstack's own.

    The block has defaults, so it is refused only where the stack file sets it. A generation
    without replicas drills on its primary (drill.server: replica means the first replica where
    there is one): that is not an error, so a stack can grow and shrink its replicas freely.
    """
    given = "drill" in settings.model_fields_set
    if settings.target == "hetzner" and settings.database.name == CANARY_DATABASE:
        raise ConfigError(
            "database.name",
            f"{CANARY_DATABASE!r} is the database of pgstack's write canary (README, Restore drills); name the "
            "application's database otherwise",
        )
    interval = settings.drill.canary_interval_seconds
    bound = settings.monitoring.thresholds.canary_max_age_seconds
    if settings.target == "hetzner" and bound <= interval:
        raise ConfigError(
            "monitoring.thresholds.canaryMaxAgeSeconds",
            f"{bound} would alert on a healthy primary: the canary is rewritten every drill.canaryIntervalSeconds "
            f"({interval}); make it above {interval}",
        )
    if not given:
        return
    if settings.target != "hetzner":
        raise ConfigError(
            "drill", "target aws restores and checks its backups in RDS; remove the drill block (it runs pgBackRest)"
        )
    if settings.backup is None:
        raise ConfigError(
            "drill", "a drill restores the pgBackRest backups, and this stack has no pgstack:backup block; add it, "
            "or remove the drill block",
        )  # fmt: skip


def _check_imports(settings: Settings) -> None:
    """An import fills a new hetzner generation once; what it reads must exist and be reachable by TLS."""
    url = settings.import_source_url
    importing = {gen: c.import_ for gen, c in settings.clusters.items() if c.import_ is not None}
    if url is not None and importing:
        problem = url_problem(url)
        if problem is not None:
            raise ConfigError("importSourceUrl", problem)
    for gen, block in importing.items():
        key = f"clusters.{gen}.import"
        if settings.target != "hetzner":
            raise ConfigError(
                key, "target aws has no import step (RDS runs no pgstack scripts); restore the dump into RDS with "
                "pg_restore from a bastion, or use target hetzner",
            )  # fmt: skip
        if settings.clusters[gen].restore is not None:
            raise ConfigError(
                key, "a generation is either restored from another one's backups or imported from another "
                "database, not both; remove one of the two blocks",
            )  # fmt: skip
        if settings.backup is None:
            raise ConfigError(
                key, "the import ends with a full backup of the imported data (and a dump to import lives in the "
                "bucket), and this stack has no pgstack:backup block; add it",
            )  # fmt: skip
        if block.source == "url" and url is None:
            raise ConfigError(
                "importSourceUrl",
                f"{key}.source is url: set the source database's URL as a secret, "
                "`pulumi config set --secret pgstack:importSourceUrl 'postgres://USER:PASSWORD@HOST:5432/DB'`",
            )
        if block.verify and url is None:
            raise ConfigError(
                f"{key}.verify",
                "the verification compares row counts, sequences and checks with the source, which needs "
                "importSourceUrl; set it, or set verify: false (a dump whose source is gone, checked by nothing)",
            )
        if not block.verify and block.checks:
            raise ConfigError(f"{key}.checks", "checks run on the source too, and verify is false; remove them")
        if block.source == "bucket":
            if block.dump_key is None:
                raise ConfigError(
                    f"{key}.dumpKey", "source bucket needs the dump's key in the bucket, e.g. imports/heroku.dump"
                )
            if any(part in ("", ".", "..") for part in block.dump_key.strip("/").split("/")):
                raise ConfigError(
                    f"{key}.dumpKey", "write the key without empty, . or .. segments, e.g. imports/heroku.dump"
                )
            if _inside("/" + block.dump_key.strip("/"), settings.backup.repo_path):
                raise ConfigError(
                    f"{key}.dumpKey",
                    f"{block.dump_key} is inside the pgBackRest repository ({settings.backup.repo_path}); upload the "
                    "dump next to it, e.g. imports/heroku.dump",
                )
        elif block.dump_key is not None:
            raise ConfigError(f"{key}.dumpKey", "only source bucket reads a dump key; remove it, or set source: bucket")


def _inside(path: str, parent: str) -> bool:
    """Whether bucket path `path` is `parent` or below it (`/` is above everything)."""
    path, parent = path.rstrip("/"), parent.rstrip("/")
    return not parent or path == parent or path.startswith(parent + "/")


def _check_logical_backup(settings: Settings) -> None:
    """Dumps go to the backup bucket through pgBackRest, beside its repository, never in it.

    Inside the repository path they would be files pgBackRest does not know (verify and expire
    walk it); around it, the dumps' retention would list the repository's files.
    """
    lb = settings.logical_backup
    if lb is None:
        return
    if settings.target != "hetzner":
        raise ConfigError(
            "logicalBackup",
            "target aws is not supported yet (the dump runs on pgstack's own servers); remove the logicalBackup block",
        )
    if settings.backup is None:
        raise ConfigError(
            "logicalBackup",
            "the dumps go to the backup bucket, and this stack has no pgstack:backup block; add it (bucket, "
            "endpoint, region), or remove the logicalBackup block",
        )
    repo = settings.backup.repo_path
    if _inside(lb.prefix, repo):
        raise ConfigError(
            "logicalBackup.prefix",
            f"{lb.prefix} is inside backup.repoPath ({repo}), pgBackRest's repository; pick a prefix beside it, "
            "e.g. /logical",
        )
    if _inside(repo, lb.prefix):
        raise ConfigError(
            "logicalBackup.prefix",
            f"{lb.prefix} holds backup.repoPath ({repo}), so the dumps' retention would list pgBackRest's "
            "repository; pick a prefix beside it, e.g. /logical",
        )
    if len(set(lb.recipients)) != len(lb.recipients):
        raise ConfigError("logicalBackup.recipients", "lists a key twice; list each age public key once")
