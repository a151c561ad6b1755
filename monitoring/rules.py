"""pgstack's Prometheus alert rules, rendered from thresholds.

    python -m monitoring.rules            print the rules rendered from the default thresholds
    python -m monitoring.rules --write    write them to monitoring/pgstack.rules.yml
    python -m monitoring.rules --check    exit 1 (with a diff) when the checked-in file differs

The checked-in file is the render of `Thresholds()`, so promtool (`pgstack.rules.test.yml`) and
readers have the rules without running Python. Every alert's `runbook` annotation points at its
`### <AlertName>` subsection of the README's "Alert runbooks".

The metrics the rules read, which the exporters' configuration and the textfile writers must
provide under exactly these names (every target labelled `instance` and `server`):
- Prometheus `up` (jobs `node`, `postgres`); postgres_exporter's `pg_up`;
- postgres_exporter custom queries: `pgstack_standby_streaming` (a standby only, 1/0),
  `pgstack_replication_replay_lag_seconds{application_name}` (a primary), `pgstack_slot_active`,
  `pgstack_slot_lost` (1/0), `pgstack_slot_retained_bytes`, `pgstack_slot_wal_keep_size_bytes`
  (-1: unlimited; all `{slot_name}`), `pgstack_connections_used`, `pgstack_connections_max`,
  `pgstack_database_xid_age{datname}`, `pgstack_oldest_transaction_seconds`,
  `pgstack_canary_age_seconds` (the write canary's age: on a replica the end-to-end lag);
- node_exporter: `node_filesystem_avail_bytes`, `node_filesystem_size_bytes`;
- textfile metrics: `pgstack_backup_last_success_timestamp_seconds{stanza,type}`,
  `pgstack_backup_last_run_success{stanza,type}` (1/0), `pgstack_archive_newest_timestamp_seconds{stanza}`,
  `pgstack_archive_wal_gap{stanza}` (1/0), `pgstack_drill_last_run_success{stanza}` (1/0),
  `pgstack_drill_last_success_timestamp_seconds{stanza}`, `pgstack_verify_last_run_success{stanza}` (1/0),
  `pgstack_logical_dump_last_run_success{stanza,database}` (1/0),
  `pgstack_logical_dump_last_success_timestamp_seconds{stanza,database}`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = Path(__file__).resolve().parent / "pgstack.rules.yml"
HEADER = (
    "# Rendered by pgstack from monitoring/rules.py (python -m monitoring.rules --write):\n"
    "# change the thresholds or the rules there, not this file.\n"
)
# Filesystems that are not a disk a server can fill: memory-backed, read-only images, container
# layers; /run and /boot are small by design and not where PostgreSQL writes.
NOT_A_DISK = 'fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs",mountpoint!~"/run.*|/boot.*"'


@dataclass(frozen=True)
class Thresholds:
    """The bounds a team tunes. Seconds unless the name says otherwise."""

    down_for_seconds: int = 60
    for_seconds: int = 300
    replication_lag_seconds: int = 300
    slot_inactive_seconds: int = 1800
    slot_retained_ratio: float = 0.8
    disk_warning_percent: float = 80
    disk_critical_percent: float = 90
    connections_ratio: float = 0.8
    backup_full_max_age_seconds: int = 8 * 86400
    archive_max_age_seconds: int = 900
    xid_age: int = 1_000_000_000
    long_transaction_seconds: int = 3600
    drill_max_age_seconds: int = 8 * 86400
    canary_max_age_seconds: int = 300
    logical_dump_max_age_seconds: int = 2 * 86400
    runbook_url: str = "README.md"

    def __post_init__(self) -> None:
        for name in ("down_for_seconds", "for_seconds", "slot_inactive_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: {getattr(self, name)} is negative")
        for name in (
            "replication_lag_seconds",
            "backup_full_max_age_seconds",
            "archive_max_age_seconds",
            "xid_age",
            "long_transaction_seconds",
            "drill_max_age_seconds",
            "canary_max_age_seconds",
            "logical_dump_max_age_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be above 0")
        for name in ("slot_retained_ratio", "connections_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}: {getattr(self, name)} is a ratio: above 0, at most 1")
        if not 0 < self.disk_warning_percent < self.disk_critical_percent < 100:
            raise ValueError(
                f"disk_warning_percent ({self.disk_warning_percent}) and disk_critical_percent "
                f"({self.disk_critical_percent}): need 0 < warning < critical < 100"
            )
        if "#" in self.runbook_url:
            raise ValueError(f"runbook_url: {self.runbook_url!r} is the document; each alert adds its own #anchor")


def duration(seconds: int) -> str:
    """`60s` -> `1m`, `300` -> `5m`, `90` -> `90s`: the largest unit that divides it exactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def percent(ratio: float) -> str:
    """0.8 -> `80`, without the float noise of 0.7 * 100."""
    return number(round(ratio * 100, 6))


def anchor(alert: str) -> str:
    """The GitHub anchor of the README heading `### <alert>`."""
    return alert.lower()


def _rules(t: Thresholds) -> list[dict[str, Any]]:
    down, hold, lag = duration(t.down_for_seconds), duration(t.for_seconds), duration(t.replication_lag_seconds)
    disk = f"100 * (1 - node_filesystem_avail_bytes{{{NOT_A_DISK}}}\n  / node_filesystem_size_bytes{{{NOT_A_DISK}}})"
    where = "{{ $labels.server }} ({{ $labels.instance }})"
    rules: list[tuple[str, str, int, str, str, str]] = [
        # (alert, expr, for, severity, summary, description)
        (
            "PostgresDown",
            "pg_up == 0",
            t.down_for_seconds,
            "critical",
            "PostgreSQL is down on {{ $labels.server }}",
            f"postgres_exporter on {where} has not reached PostgreSQL for {down}.",
        ),
        (
            "ExporterDown",
            'up{job=~"node|postgres"} == 0',
            t.down_for_seconds,
            "critical",
            "The {{ $labels.job }} exporter on {{ $labels.server }} does not answer",
            f"Prometheus has not scraped {{{{ $labels.job }}}} on {where} for {down}: the server, "
            "its network or the exporter is down, and the alerts that need its metrics cannot fire.",
        ),
        (
            "PostgresReplicaNotStreaming",
            "pgstack_slot_active == 0 or pgstack_standby_streaming == 0",
            t.for_seconds,
            "critical",
            "Replication is not streaming on {{ $labels.server }}",
            "{{ if $labels.slot_name }}No replica streams through slot {{ $labels.slot_name }} on "
            f"{where}{{{{ else }}}}The standby {where} receives no WAL from its primary{{{{ end }}}}, "
            f"for {hold}.",
        ),
        (
            "PostgresReplicationLag",
            f"pgstack_replication_replay_lag_seconds > {t.replication_lag_seconds}",
            t.for_seconds,
            "warning",
            "Replica {{ $labels.application_name }} lags behind {{ $labels.server }}",
            "{{ $labels.application_name }} replays {{ $value | humanizeDuration }} behind the primary "
            f"{where}, over the {lag} bound for {hold}.",
        ),
        (
            "PostgresSlotInactive",
            "pgstack_slot_active == 0",
            t.slot_inactive_seconds,
            "warning",
            "Replication slot {{ $labels.slot_name }} on {{ $labels.server }} is inactive",
            "No replica has used slot {{ $labels.slot_name }} on "
            f"{where} for {duration(t.slot_inactive_seconds)}; the primary keeps the WAL it has not "
            "received, up to max_slot_wal_keep_size.",
        ),
        (
            "PostgresSlotLost",
            "pgstack_slot_lost == 1",
            0,
            "critical",
            "Replication slot {{ $labels.slot_name }} on {{ $labels.server }} is lost",
            "max_slot_wal_keep_size invalidated slot {{ $labels.slot_name }} on "
            f"{where}: its replica cannot stream from it and must catch up from the archive.",
        ),
        (
            "PostgresSlotWalRetention",
            "pgstack_slot_retained_bytes / (pgstack_slot_wal_keep_size_bytes > 0) > " + number(t.slot_retained_ratio),
            t.for_seconds,
            "warning",
            "Slot {{ $labels.slot_name }} on {{ $labels.server }} holds "
            "{{ $value | humanizePercentage }} of max_slot_wal_keep_size",
            f"Slot {{{{ $labels.slot_name }}}} on {where} retains {{{{ $value | humanizePercentage }}}} "
            f"of max_slot_wal_keep_size (bound {percent(t.slot_retained_ratio)}%, for {hold}); at "
            "100% the slot is lost.",
        ),
        (
            "DiskUsageHigh",
            f"{disk} > {number(t.disk_warning_percent)}",
            t.for_seconds,
            "warning",
            'Disk {{ $labels.mountpoint }} on {{ $labels.server }} is {{ $value | printf "%.0f" }}% full',
            f"{{{{ $labels.mountpoint }}}} ({{{{ $labels.device }}}}) on {where} is "
            f'{{{{ $value | printf "%.1f" }}}}% used, over {number(t.disk_warning_percent)}% for {hold}.',
        ),
        (
            "DiskUsageCritical",
            f"{disk} > {number(t.disk_critical_percent)}",
            t.for_seconds,
            "critical",
            'Disk {{ $labels.mountpoint }} on {{ $labels.server }} is {{ $value | printf "%.0f" }}% full',
            f"{{{{ $labels.mountpoint }}}} ({{{{ $labels.device }}}}) on {where} is "
            f'{{{{ $value | printf "%.1f" }}}}% used, over {number(t.disk_critical_percent)}% for {hold}: '
            "PostgreSQL stops when it cannot write WAL.",
        ),
        (
            "PostgresConnectionsHigh",
            f"pgstack_connections_used / pgstack_connections_max > {number(t.connections_ratio)}",
            t.for_seconds,
            "warning",
            "Connections on {{ $labels.server }} at {{ $value | humanizePercentage }} of max_connections",
            f"{where} uses {{{{ $value | humanizePercentage }}}} of max_connections, over "
            f"{percent(t.connections_ratio)}% for {hold}; at 100% new connections are refused.",
        ),
        (
            "BackupFullTooOld",
            "time() - max by (stanza) "
            f'(pgstack_backup_last_success_timestamp_seconds{{type="full"}}) > {t.backup_full_max_age_seconds}',
            0,
            "critical",
            "The last full backup of {{ $labels.stanza }} is {{ $value | humanizeDuration }} old",
            "The newest successful full backup of stanza {{ $labels.stanza }} is "
            f"{{{{ $value | humanizeDuration }}}} old, over the {duration(t.backup_full_max_age_seconds)} "
            "bound: the scheduled full backups are not succeeding.",
        ),
        (
            "BackupFailed",
            "pgstack_backup_last_run_success == 0",
            0,
            "warning",
            "The last {{ $labels.type }} backup of {{ $labels.stanza }} failed",
            f"The last {{{{ $labels.type }}}} backup of stanza {{{{ $labels.stanza }}}}, run on {where}, failed.",
        ),
        (
            "ArchiveTooOld",
            f"time() - max by (stanza) (pgstack_archive_newest_timestamp_seconds) > {t.archive_max_age_seconds}",
            0,
            "critical",
            "The newest archived WAL of {{ $labels.stanza }} is {{ $value | humanizeDuration }} old",
            "The newest WAL in the archive of stanza {{ $labels.stanza }} is "
            f"{{{{ $value | humanizeDuration }}}} old, over the {duration(t.archive_max_age_seconds)} "
            "bound: commits since then are only on the primary's disk.",
        ),
        (
            "WalGapOpen",
            "max by (stanza) (pgstack_archive_wal_gap) == 1",
            0,
            "critical",
            "A WAL gap is open in {{ $labels.stanza }}",
            "pgBackRest dropped WAL of stanza {{ $labels.stanza }} from its archive queue: no "
            "point-in-time recovery to a time after the gap until a new full backup has finished.",
        ),
        (
            "PostgresXidAge",
            f"max by (instance, datname) (pgstack_database_xid_age) > {t.xid_age}",
            t.for_seconds,
            "warning",
            "Transaction ID age of {{ $labels.datname }} on {{ $labels.instance }} is {{ $value | humanize }}",
            "The oldest unfrozen transaction ID of database {{ $labels.datname }} on "
            f"{{{{ $labels.instance }}}} is {{{{ $value | humanize }}}} transactions old, over {t.xid_age} "
            f"for {hold}; near 2.1 billion PostgreSQL refuses writes to prevent wraparound.",
        ),
        (
            "PostgresLongTransaction",
            f"pgstack_oldest_transaction_seconds > {t.long_transaction_seconds}",
            t.for_seconds,
            "warning",
            "A transaction on {{ $labels.server }} has been open for {{ $value | humanizeDuration }}",
            f"The oldest transaction on {where} has been open for {{{{ $value | humanizeDuration }}}}, "
            f"over {duration(t.long_transaction_seconds)} for {hold}: it holds back vacuum and may "
            "hold locks.",
        ),
        (
            "DrillFailed",
            "pgstack_drill_last_run_success == 0",
            0,
            "critical",
            "The last restore drill of {{ $labels.stanza }} failed",
            f"The last restore drill of stanza {{{{ $labels.stanza }}}}, run on {where}, failed: the newest backup "
            "did not restore to a checked, readable cluster. Its report says which check failed.",
        ),
        (
            "DrillTooOld",
            f"time() - max by (stanza) (pgstack_drill_last_success_timestamp_seconds) > {t.drill_max_age_seconds}",
            0,
            "warning",
            "The last successful restore drill of {{ $labels.stanza }} is {{ $value | humanizeDuration }} old",
            "The newest successful restore drill of stanza {{ $labels.stanza }} is "
            f"{{{{ $value | humanizeDuration }}}} old, over the {duration(t.drill_max_age_seconds)} bound: the "
            "scheduled drills are failing or not running.",
        ),
        (
            "VerifyFailed",
            "pgstack_verify_last_run_success == 0",
            0,
            "critical",
            "pgbackrest verify found damage in {{ $labels.stanza }}",
            f"The last pgbackrest verify of stanza {{{{ $labels.stanza }}}}, run on {where}, failed or reported "
            "invalid files: a backup or WAL segment in the repository may not restore.",
        ),
        (
            "LogicalDumpFailed",
            "pgstack_logical_dump_last_run_success == 0",
            0,
            "warning",
            "The last logical dump of {{ $labels.database }} ({{ $labels.stanza }}) failed",
            f"The last logical dump of database {{{{ $labels.database }}}} (stanza {{{{ $labels.stanza }}}}), "
            f"taken on {where}, failed: no new encrypted dump reached the bucket. Its report says why.",
        ),
        (
            "LogicalDumpTooOld",
            "time() - max by (stanza, database) (pgstack_logical_dump_last_success_timestamp_seconds) > "
            f"{t.logical_dump_max_age_seconds}",
            0,
            "warning",
            "The last successful logical dump of {{ $labels.database }} is {{ $value | humanizeDuration }} old",
            "The newest successful logical dump of database {{ $labels.database }} (stanza {{ $labels.stanza }}) "
            f"is {{{{ $value | humanizeDuration }}}} old, over the {duration(t.logical_dump_max_age_seconds)} "
            "bound: the scheduled dumps are failing or not running.",
        ),
        (
            "CanaryStale",
            f"pgstack_canary_age_seconds > {t.canary_max_age_seconds}",
            t.for_seconds,
            "warning",
            "The write canary on {{ $labels.server }} is {{ $value | humanizeDuration }} old",
            f"The write canary read on {where} is {{{{ $value | humanizeDuration }}}} old, over the "
            f"{duration(t.canary_max_age_seconds)} bound for {hold}: on the primary the canary timer is not "
            "writing, on a replica the primary's writes are not arriving.",
        ),
        (
            "Watchdog",
            "vector(1)",
            0,
            "none",
            "The monitoring pipeline is alive",
            "Always firing. Alertmanager sends it to the heartbeat service, which alerts when it stops "
            "arriving: so a dead Prometheus, Alertmanager or monitoring server is noticed.",
        ),
    ]
    out = []
    for alert, expr, hold_seconds, severity, summary, description in rules:
        rule: dict[str, Any] = {"alert": alert, "expr": expr}
        if hold_seconds:
            rule["for"] = duration(hold_seconds)
        rule["labels"] = {"severity": severity}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook": f"{t.runbook_url}#{anchor(alert)}",
        }
        out.append(rule)
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, so the file reads as PromQL."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render(t: Thresholds) -> str:
    """The rules file (one group, `pgstack`), deterministic for given thresholds."""
    doc = {"groups": [{"name": "pgstack", "rules": _rules(t)}]}
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True, default_flow_style=False)
    return HEADER + body


ALERTS: tuple[str, ...] = tuple(rule["alert"] for rule in _rules(Thresholds()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring.rules", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the rendered rules file")
    mode.add_argument("--check", action="store_true", help="exit 1 when the file differs from the rendered one")
    parser.add_argument("--file", type=Path, default=RULES_FILE, help="the rules file (default: %(default)s)")
    args = parser.parse_args(argv)
    generated = render(Thresholds())
    if args.write:
        if not args.file.exists() or args.file.read_text() != generated:
            args.file.write_text(generated)
        return 0
    if args.check:
        current = args.file.read_text() if args.file.exists() else ""
        if generated == current:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True), generated.splitlines(keepends=True), str(args.file), "rendered"
        )
        sys.stdout.writelines(diff)
        print(f"{args.file} is out of date: run `python -m monitoring.rules --write`", file=sys.stderr)
        return 1
    sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
