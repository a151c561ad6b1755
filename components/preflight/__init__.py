"""Pre-flight: every check that reads the world, run before any resource is registered.

Config validation (config/) is pure; some refusals need the world's answer: does the bucket's
repository hold a backup old enough for a restore, does an adopted passphrase open it (target
hetzner), does RDS hold the restore window, is the active instance running (target aws). A
refused check raises ConfigError naming the key, and nothing has been changed.

How the world is read is the one seam: `use(World(...))` injects fakes (tests). Without an
injected reader a real engine run builds the real ones; a run under Pulumi mocks (render, unit
tests, the rehearsal) reaches nothing and says so in a note.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pulumi

from config import Settings

from .backup_catalog import (
    BackupCatalog,
    S3BackupCatalog,
    check_backup_passphrase,
    check_restore_windows,
    check_retirements,
)
from .rds import Boto3Inspector, RdsInspector, check_generations

RDS_SKIP_NOTE = "note: restore window check skipped (Pulumi mocks: no AWS is reached); a real run checks it"


@dataclass(frozen=True)
class World:
    """Readers of the outside world, each made from the settings when a check needs it."""

    backup_catalog: Callable[[Settings], BackupCatalog] | None = None
    rds: Callable[[Settings], RdsInspector] | None = None


_injected: list[World] = []


def use(world: World | None) -> None:
    """Inject the readers pre-flight uses (tests: moto, a Stubber, a spy); None goes back to the real ones."""
    _injected.clear()
    if world is not None:
        _injected.append(world)


def under_mocks() -> bool:
    """True unless a real engine runs the program (Pulumi mocks, or no engine at all)."""
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.mocks import MockMonitor

    monitor = runtime_settings.get_monitor()
    return monitor is None or isinstance(monitor, MockMonitor)


def run(settings: Settings, now: dt.datetime | None = None) -> list[str]:
    """Run the checks of the stack's target; return (and log) the notes of what was or was not checked."""
    now = now or dt.datetime.now(dt.UTC)
    world = _injected[0] if _injected else World()
    notes = _hetzner(settings, world, now) if settings.target == "hetzner" else _aws(settings, world, now)
    for note in notes:
        pulumi.log.info(note)
    return notes


def _hetzner(settings: Settings, world: World, now: dt.datetime) -> list[str]:
    restores = sorted(gen for gen, c in settings.clusters.items() if c.restore is not None)
    adopted = settings.backup_cipher_passphrase is not None
    if settings.backup is None or not (restores or adopted):
        return []
    if world.backup_catalog is not None:
        catalog = world.backup_catalog(settings)
    elif under_mocks():
        return _hetzner_skipped(restores, adopted, "running under Pulumi mocks")
    elif not (settings.s3_access_key and settings.s3_secret_key):
        return _hetzner_skipped(restores, adopted, "pgstack:s3AccessKey/s3SecretKey are not set")
    else:
        catalog = S3BackupCatalog.for_settings(settings)
    check_backup_passphrase(settings, catalog)
    check_restore_windows(settings, catalog, now)
    check_retirements(settings, catalog)
    return []


def _hetzner_skipped(restores: list[str], adopted: bool, why: str) -> list[str]:
    notes = []
    if adopted:
        notes.append(
            f"pgstack: backupCipherPassphrase not checked against the repository ({why}); the pgbackrest step "
            "on the server refuses a stanza it cannot read"
        )
    if restores:
        notes.append(
            f"pgstack: backup window of {', '.join(f'clusters.{g}.restore' for g in restores)} not checked "
            f"({why}); the restore step on the server checks it. Nor whether their sources may be retired "
            "(a restored generation's own full backup): keep a source's deleteProtection until it is listed"
        )
    return notes


def _aws(settings: Settings, world: World, now: dt.datetime) -> list[str]:
    assert settings.aws is not None  # config.rules guarantees it for target aws
    if world.rds is not None:
        inspector = world.rds(settings)
    elif under_mocks():
        print(RDS_SKIP_NOTE, file=sys.stderr)
        return [RDS_SKIP_NOTE]
    else:
        inspector = Boto3Inspector.for_region(settings.aws.region)
    return check_generations(settings, inspector, now)
