"""The monitoring block: alert thresholds, the optional monitoring server, and where alerts go.

Exporters run on every server of a hetzner stack whether or not this block says more; the
thresholds render the Prometheus rules (monitoring/rules.py), and the server, when set, scrapes
every server of every generation and sends alerts to the receivers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from .aws import Email
from .fields import Model, parse_ipv4, pattern

# host:port, the port required: Alertmanager's smarthost takes no default.
SMARTHOST_PATTERN = r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$"
Smarthost = Annotated[str, pattern(SMARTHOST_PATTERN, "write host:port, e.g. smtp.example.com:587")]


class Thresholds(Model):
    """What the alert rules compare with: tune these, not the rules file."""

    down_for_seconds: int = Field(
        default=60, ge=0, le=3600, description="how long PostgreSQL or an exporter is down before it alerts"
    )
    for_seconds: int = Field(
        default=300, ge=0, le=86400, description="how long a condition holds before the other rules alert"
    )
    replication_lag_seconds: int = Field(default=300, ge=1, le=86400, description="a replica's replay lag bound")
    slot_inactive_seconds: int = Field(
        default=1800, ge=0, le=604800, description="how long a replication slot may be unused (it holds WAL)"
    )
    slot_retained_ratio: float = Field(
        default=0.8, gt=0, lt=1, description="WAL a slot holds, as a share of max_slot_wal_keep_size"
    )
    disk_warning_percent: int = Field(default=80, ge=1, le=99, description="a filesystem this full warns")
    disk_critical_percent: int = Field(default=90, ge=1, le=99, description="a filesystem this full is critical")
    connections_ratio: float = Field(default=0.8, gt=0, lt=1, description="connections as a share of max_connections")
    backup_full_max_age_seconds: int = Field(
        default=8 * 86400,
        ge=60,
        le=31536000,
        description="the newest full backup may be this old (above the longest gap backup.fullSchedule allows)",
    )
    archive_max_age_seconds: int = Field(
        default=900, ge=20, le=86400, description="the newest archived WAL may be this old"
    )
    xid_age: int = Field(
        default=1_000_000_000,
        ge=1_000_000,
        le=2_000_000_000,
        description="a database's transaction ID age bound (wraparound is at about 2.1 billion)",
    )
    long_transaction_seconds: int = Field(default=3600, ge=1, le=604800, description="a transaction open this long")
    drill_max_age_seconds: int = Field(
        default=8 * 86400,
        ge=60,
        le=31536000,
        description="the newest successful restore drill may be this old (above the longest gap drill.schedule allows)",
    )
    logical_dump_max_age_seconds: int = Field(
        default=2 * 86400,
        ge=60,
        le=31536000,
        description="the newest successful logical dump may be this old (above the longest gap "
        "logicalBackup.schedule allows)",
    )
    canary_max_age_seconds: int = Field(
        default=300,
        ge=2,
        le=86400,
        description="the write canary may be this old on any server (above drill.canaryIntervalSeconds, and on a "
        "replica it is the end-to-end replication lag)",
    )

    @model_validator(mode="after")
    def _disk_order(self) -> Thresholds:
        if self.disk_critical_percent <= self.disk_warning_percent:
            raise ValueError(
                f"diskCriticalPercent {self.disk_critical_percent} must be above diskWarningPercent "
                f"{self.disk_warning_percent}"
            )
        return self


class EmailReceiver(Model):
    to: Email = Field(description="where alert emails go")
    sender: Email = Field(alias="from", description="the From address")
    smarthost: Smarthost = Field(description="the SMTP server, host:port")
    username: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._%+@-]{1,200}$",
        description="SMTP login (its password: monitoringSmtpPassword)",
    )


class Receivers(Model):
    """Where alerts go. The webhook URL and the PagerDuty routing key are secrets (top-level keys)."""

    email: EmailReceiver | None = Field(default=None, description="email through an SMTP server")


class Watchdog(Model):
    """Alertmanager's always-firing Watchdog, sent to the heartbeat service as a ping."""

    period_seconds: int = Field(
        default=300, ge=10, le=86400, description="how often Alertmanager sends it (the check's period)"
    )
    grace_seconds: int = Field(default=300, ge=10, le=86400, description="how late it may be before the check alerts")


class Server(Model):
    """One small Hetzner server in the private network running Prometheus and Alertmanager."""

    ip: str = Field(description="its private IP, inside hetzner.subnetCidr")
    server_type: str = Field(default="cx22", pattern=r"^[a-z0-9-]{2,20}$", description="e.g. cx22")
    scrape_interval_seconds: int = Field(default=30, ge=1, le=300, description="how often every exporter is read")
    retention_days: int = Field(default=15, ge=1, le=3650, description="how long Prometheus keeps the metrics")
    group_wait_seconds: int = Field(
        default=30, ge=0, le=3600, description="Alertmanager waits this long to batch the first alerts of a group"
    )
    group_interval_seconds: int = Field(
        default=300, ge=1, le=86400, description="and this long between notifications of a group (resolved ones too)"
    )
    repeat_interval_seconds: int = Field(
        default=4 * 3600, ge=60, le=604800, description="a firing alert is sent again this often"
    )
    watchdog: Watchdog = Field(default=Watchdog(), description="the heartbeat that proves the monitoring works")

    @model_validator(mode="before")
    @classmethod
    def _ip(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("ip"), str):
            data = {**data, "ip": parse_ipv4(data["ip"])}
        return data


class Monitoring(Model):
    thresholds: Thresholds = Field(default=Thresholds(), description="the alert rules' bounds")
    server: Server | None = Field(
        default=None,
        description="unset: no monitoring server, point your own Prometheus at the exporters (README, Monitoring)",
    )
    receivers: Receivers = Field(default=Receivers(), description="where the monitoring server sends alerts")
    runbook_url: str = Field(
        default="README.md",
        pattern=r"^[A-Za-z0-9:/._~-]{1,300}$",
        description="the page the alerts' runbook links point into (e.g. your copy of this README)",
    )
