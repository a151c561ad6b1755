"""The drill block: scheduled restore drills, repository verification and the write canary.

A drill restores the newest backup into a scratch directory on one server, next to its live
cluster, checks it and throws it away (components/scripts/bin/pgstack-drill); verify reads the
whole repository (pgbackrest verify) on the primary; the canary is one row in the `pgstack`
database that the primary rewrites every canaryIntervalSeconds, so its age on a restored copy is
the data a restore would have lost (RPO), and on a replica the end-to-end replication lag.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .fields import Calendar, Model


class Drill(Model):
    schedule: Calendar = Field(
        default="Sun *-*-* 05:00:00",
        description="systemd OnCalendar of the restore drill (weekly, after the full backup: the drill restores "
        "the newest backup)",
    )
    server: Literal["replica", "primary"] = Field(
        default="replica",
        description="where the drill runs: the first replica of each generation, or its primary (a generation "
        "without replicas drills on its primary)",
    )
    heapallindexed: bool = Field(
        default=False,
        description="pg_amcheck also checks that every heap tuple has its index entries (slower, reads every index)",
    )
    margin_percent: int = Field(
        default=20,
        ge=0,
        le=1_000_000,
        description="free space the drill wants above the newest backup's database size, in percent (it refuses "
        "to start with less)",
    )
    canary_interval_seconds: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="how often the primary rewrites the canary row (the RPO the drill measures is this plus "
        "backup.archiveTimeoutSeconds at most, with archiving healthy)",
    )
    verify_schedule: Calendar = Field(
        default="Wed *-*-* 05:00:00",
        description="systemd OnCalendar of pgbackrest verify on the primary (it reads the whole repository)",
    )
