"""pgbackrest.conf from typed options (pgBackRest's own option names), as a pure function.

The file holds the S3 keys and the cipher passphrase, so it only ever travels as a secret, on
the command's stdin, and lands as /etc/pgbackrest/pgbackrest.conf, mode 0640, owner postgres.
Block incremental (repo1-block) is added by the guest script where the installed pgBackRest
supports it (2.46+): only the guest knows its version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .layout import Layout

# The pgBackRest release series the servers are pinned to (apt preferences) and the install step
# accepts: the one the rehearsal runs (sandbox/vendor/). Moving it is a tested change, never a
# silent upgrade; the outage behaviour and its README figures were measured on it.
TESTED_SERIES = "2.59"


@dataclass(frozen=True)
class RepoOptions:
    bucket: str
    endpoint: str
    region: str
    path: str
    retention_full_days: int
    retention_full_count: int | None
    process_max: int
    archive_push_queue_max: str
    archive_push_io_timeout_seconds: int
    verify_tls: bool = True


def render(
    opts: RepoOptions, layout: Layout, stanzas: list[str], access_key: str, secret_key: str, cipher_pass: str
) -> str:
    host, _, port = opts.endpoint.partition(":")
    glob = {
        "repo1-type": "s3",
        "repo1-s3-endpoint": host,
        "repo1-s3-bucket": opts.bucket,
        "repo1-s3-region": opts.region,
        "repo1-s3-key": access_key,
        "repo1-s3-key-secret": secret_key,
        # Hetzner Object Storage and most S3-compatible stores want path-style requests.
        "repo1-s3-uri-style": "path",
        "repo1-path": opts.path,
        "repo1-cipher-type": "aes-256-cbc",
        "repo1-cipher-pass": cipher_pass,
        "repo1-bundle": "y",
        "compress-type": "zst",
        "process-max": str(opts.process_max),
        "start-fast": "y",
        # Asynchronous archiving with a bounded queue: a dead object store cannot fill the disk.
        # Past the bound pgBackRest drops WAL (and says so); pgstack-archive-watch notices.
        "archive-async": "y",
        "archive-push-queue-max": opts.archive_push_queue_max,
        "spool-path": "/var/spool/pgbackrest",
        "log-path": "/var/log/pgbackrest",
        "log-level-console": "warn",
        "log-level-file": "info",
    }
    if opts.retention_full_count is not None:
        glob.update({"repo1-retention-full-type": "count", "repo1-retention-full": str(opts.retention_full_count)})
    else:
        glob.update({"repo1-retention-full-type": "time", "repo1-retention-full": str(opts.retention_full_days)})
    if port:
        glob["repo1-storage-port"] = port
    if not opts.verify_tls:
        glob["repo1-storage-verify-tls"] = "n"
    lines = ["# Rendered by pgstack: edits are overwritten on the next `pulumi up`.", "[global]"]
    lines += [f"{k}={v}" for k, v in glob.items()]
    lines.append("archive-get-queue-max=1GiB")
    # pgBackRest enforces archive-push-queue-max only when an async push starts, and an attempt
    # against an unreachable store retries for about 8 x io-timeout (80 s at 10 s, 4 min at the
    # default 60 s) before it gives up. A short io-timeout for archive-push alone keeps that window,
    # and so the overshoot of the queue, small; a timed-out push is simply retried by PostgreSQL.
    # Backups and restores keep the default, which tolerates slow responses to large requests.
    lines += ["", "[global:archive-push]", f"io-timeout={opts.archive_push_io_timeout_seconds}"]
    for stanza in stanzas:
        lines += ["", f"[{stanza}]", f"pg1-path={layout.data_dir}", "pg1-socket-path=/var/run/postgresql"]
    return "\n".join(lines) + "\n"


def recovery_target(value: str) -> str:
    """A config target time ("latest" or ISO 8601 with a zone) in the form pgBackRest accepts.

    `YYYY-MM-DD HH:MM:SS.ffffff+00:00`: in UTC, to the microsecond, PostgreSQL's own precision.
    pgBackRest passes the text on to recovery_target_time (it reads only the seconds to choose a
    backup set), so a commit one microsecond before the target is kept and one after it is not.
    """
    if value == "latest":
        return value
    parsed = dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
