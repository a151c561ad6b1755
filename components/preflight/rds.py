"""What RDS says about the restores and the active instance a stack asks for (target aws).

A `restore` block only matters while the generation's instance does not exist: RdsInstance
ignores the restore inputs after creation, so a changed targetTime (Terraform's silent trap) or
a removed block never touches a live instance. A different restore point is a new generation.

Before anything is registered, `check_generations` asks RDS whether each pending restore can
succeed: the source exists, and the target time lies inside its restorable window (the
automated backups' RestoreWindow, with the instance's LatestRestorableTime as the newer end).
RDS reads go through an `RdsInspector` (components.preflight injects fakes for tests).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from config import ConfigError, Settings

STOPPED = ("stopped", "stopping")


@dataclass(frozen=True)
class InstanceState:
    identifier: str
    status: str
    latest_restorable: dt.datetime | None = None
    created: dt.datetime | None = None
    retention_days: int = 0


class RdsInspector(Protocol):
    def instance(self, identifier: str) -> InstanceState | None: ...

    def restore_window(self, identifier: str) -> tuple[dt.datetime, dt.datetime] | None: ...


class Boto3Inspector:
    """Reads RDS with a boto3 client (the stack's region and the default credential chain)."""

    def __init__(self, client: Any):
        self.client = client

    @classmethod
    def for_region(cls, region: str) -> Boto3Inspector:
        import boto3

        return cls(boto3.client("rds", region_name=region))

    def instance(self, identifier: str) -> InstanceState | None:
        try:
            found = self.client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        except self.client.exceptions.DBInstanceNotFoundFault:
            return None
        if not found:
            return None
        i = found[0]
        return InstanceState(
            identifier=identifier,
            status=i.get("DBInstanceStatus", "unknown"),
            latest_restorable=i.get("LatestRestorableTime"),
            created=i.get("InstanceCreateTime"),
            retention_days=int(i.get("BackupRetentionPeriod") or 0),
        )

    def restore_window(self, identifier: str) -> tuple[dt.datetime, dt.datetime] | None:
        backups = self.client.describe_db_instance_automated_backups(DBInstanceIdentifier=identifier)
        windows = [
            (b.get("Status"), b["RestoreWindow"])
            for b in backups.get("DBInstanceAutomatedBackups", [])
            if b.get("RestoreWindow", {}).get("EarliestTime") and b["RestoreWindow"].get("LatestTime")
        ]
        # The live instance's backups ("active") over retained ones of an older, deleted instance.
        windows.sort(key=lambda w: w[0] != "active")
        if not windows:
            return None
        window = windows[0][1]
        return window["EarliestTime"], window["LatestTime"]


def rds_restore_time(when: dt.datetime) -> str:
    """RDS wants a UTC RFC 3339 time; sub-seconds are dropped (the window check uses the same)."""
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def restorable_window(
    inspector: RdsInspector, source: InstanceState, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime] | None:
    window = inspector.restore_window(source.identifier)
    latest = source.latest_restorable or (window[1] if window else None)
    if latest is None:
        return None
    if window is not None:
        earliest = window[0]
    else:
        # No RestoreWindow reported (moto, or a brand-new instance): the retention period and the
        # instance's creation bound what its backups can hold.
        earliest = _utc(now) - dt.timedelta(days=source.retention_days)
        if source.created is not None:
            earliest = max(earliest, _utc(source.created))
    return _utc(earliest), _utc(latest)


def check_generations(settings: Settings, inspector: RdsInspector, now: dt.datetime | None = None) -> list[str]:
    """Raise ConfigError for a restore RDS would refuse, or an active instance that is stopped.

    Returns notes for the log (which restores were checked, which already happened).
    """
    aws = settings.aws
    assert aws is not None  # config.rules guarantees it for target aws
    now = now or dt.datetime.now(dt.UTC)
    notes: list[str] = []
    for gen, cluster in settings.clusters.items():
        if cluster.restore is None:
            continue
        key = f"clusters.{gen}.restore"
        ident = aws.identifier(settings.stack, gen)
        if inspector.instance(ident) is not None:
            notes.append(f"{gen}: {ident} exists; its restore block is history and is not applied again")
            continue
        source_ident = aws.identifier(settings.stack, cluster.restore.source)
        source = inspector.instance(source_ident)
        if source is None:
            raise ConfigError(
                f"{key}.from",
                f"the source instance {source_ident} does not exist in {aws.region}; a restore needs a source "
                "with automated backups (create it first, or restore from a generation that exists)",
            )
        window = restorable_window(inspector, source, now)
        if window is None:
            raise ConfigError(
                f"{key}.from",
                f"{source_ident} has no restorable time yet (automated backups off, or its first backup is "
                "still running); wait for it, or check aws.backupRetentionDays",
            )
        earliest, latest = window
        target = cluster.restore.target()
        if target is None:
            notes.append(f"{gen}: restores {source_ident} to its latest restorable time ({latest.isoformat()})")
            continue
        wanted = dt.datetime.fromisoformat(rds_restore_time(target).replace("Z", "+00:00"))
        if not earliest <= wanted <= latest:
            side = "before the earliest" if wanted < earliest else "after the latest"
            raise ConfigError(
                f"{key}.targetTime",
                f"{cluster.restore.target_time} is {side} restorable time of {source_ident}: RDS can restore it "
                f"between {earliest.isoformat()} and {latest.isoformat()}; pick a time in that window, or 'latest'",
            )
        notes.append(f"{gen}: restores {source_ident} to {wanted.isoformat()} (window {earliest} .. {latest})")
    active_ident = aws.identifier(settings.stack, settings.active)
    active = inspector.instance(active_ident)
    if active is not None and active.status in STOPPED:
        raise ConfigError(
            "active",
            f"{active_ident} is {active.status}: clients would be sent to a stopped database. Start it first "
            f"(aws rds start-db-instance --db-instance-identifier {active_ident}), wait until it is available, "
            "then run up again",
        )
    return notes
