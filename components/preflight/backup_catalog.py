"""What the pgBackRest repository in the bucket says about restore windows and its passphrase.

pgBackRest encrypts file contents, not names, so the layout alone answers the two questions the
restore rules need (`check_restore_windows` below):

- does a stanza exist?  `<repoPath>/backup/<stanza>/backup.info` is written by stanza-create;
- since when can it restore?  every backup set is a directory `<repoPath>/backup/<stanza>/<label>/`
  whose label starts with the set's start time in the server's local time (pgstack servers run
  UTC): `20261121-200134F` (full), `20261121-200134F_20261122-020000D` (diff), `..._...I` (incr).
  A set is complete once its `backup.manifest` is written (a running one has only the `.copy`),
  which pgBackRest does after the backup stopped: the object's LastModified is the earliest
  time recovery from that set can reach (a few seconds after the exact stop time, which only the
  encrypted manifest holds; so the check errs on the side of refusing).

Expired sets are removed by pgBackRest, so the earliest complete full set is where recovery can
begin. How far the archived WAL reaches is not knowable cheaply here; the restore script on the
server checks that the target was reached.

One question needs a content: does a passphrase open the stanza (`check_backup_passphrase`)?
Every repository file is OpenSSL "Salted__" output: the 8-byte magic, an 8-byte salt, then
AES-256-CBC with PKCS#7 padding under a key and IV from EVP_BytesToKey with SHA-1, one iteration
(checked against files pgBackRest 2.45 wrote). backup.info, written by stanza-create, is
encrypted with the repository passphrase itself and starts with `[backrest]`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from config import ConfigError, Settings

_STAMP = r"(\d{8}-\d{6})"
LABEL = re.compile(rf"^{_STAMP}F(?:_{_STAMP}([DI]))?$")
KINDS = {None: "full", "D": "diff", "I": "incr"}


class BackupCatalog(Protocol):
    """What the restore rules ask of a pgBackRest repository."""

    def stanza_exists(self, stanza: str) -> bool: ...

    def earliest_restorable(self, stanza: str) -> tuple[str, dt.datetime] | None: ...

    def passphrase_opens(self, stanza: str, passphrase: str) -> bool | None: ...


SALTED = b"Salted__"


def _evp_bytes_to_key(passphrase: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """OpenSSL's EVP_BytesToKey as pgBackRest calls it: SHA-1, one iteration, a 32-byte key and 16-byte IV."""
    derived, block = b"", b""
    while len(derived) < 48:
        block = hashlib.sha1(block + passphrase + salt).digest()
        derived += block
    return derived[:32], derived[32:48]


def decrypt(data: bytes, passphrase: str) -> bytes | None:
    """The plaintext of a pgBackRest repository file, or None when `passphrase` does not open it."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    body = data[16:]
    if data[:8] != SALTED or not body or len(body) % 16:
        return None  # not encrypted (a repository without a cipher), or damaged
    key, iv = _evp_bytes_to_key(passphrase.encode(), data[8:16])
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(decryptor.update(body) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:  # bad padding: the usual sign of a wrong key
        return None


def info_opens(data: bytes, passphrase: str) -> bool:
    """Whether `passphrase` opens a backup.info (a wrong key passes the padding check 1 time in ~256)."""
    plain = decrypt(data, passphrase)
    return plain is not None and plain.startswith(b"[backrest]")


@dataclass(frozen=True)
class BackupLabel:
    label: str
    kind: Literal["full", "diff", "incr"]
    start: dt.datetime  # this set's start (UTC); for diff/incr the second stamp
    full_start: dt.datetime  # the full set it builds on (the label's first stamp)


def _stamp(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:  # e.g. month 13: the regex checks the shape only
        return None


def parse_label(label: str) -> BackupLabel | None:
    """A pgBackRest backup label, or None for anything else (backup.history, stray names)."""
    m = LABEL.match(label)
    if m is None:
        return None
    full_start = _stamp(m.group(1))
    start = _stamp(m.group(2)) if m.group(2) else full_start
    if full_start is None or start is None or start < full_start:
        return None
    return BackupLabel(label, KINDS[m.group(3)], start, full_start)  # type: ignore[arg-type]


class S3BackupCatalog:
    """BackupCatalog over the stack's bucket with boto3 (lists, and reads backup.info; never writes).

    Failures become ConfigErrors: a store that cannot be reached names pgstack:backup.endpoint,
    refused credentials name pgstack:s3AccessKey. A bucket that does not exist yet holds no stanza.
    The client is made on first use, so a stack without restores or an adopted passphrase never talks to
    the store.
    """

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        repo_path: str,
        access_key: str,
        secret_key: str,
        verify: bool | str = True,
        region: str = "us-east-1",
        client_config: Any = None,
    ):
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.root = repo_path.strip("/")
        self._client_args = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "verify": verify,
        }
        self._config = client_config
        self._client: Any = None

    @classmethod
    def for_settings(cls, settings: Settings, client_config: Any = None) -> S3BackupCatalog:
        """The catalog of the stack's own repository, reached the way its servers reach it."""
        b = settings.backup
        assert b is not None
        port = settings.sandbox.s3_port
        host = b.endpoint if port == 443 else f"{b.endpoint}:{port}"
        return cls(
            f"https://{host}",
            b.bucket,
            b.repo_path,
            settings.s3_access_key or "",
            settings.s3_secret_key or "",
            verify=settings.sandbox.s3_verify_tls,
            region=b.region,
            client_config=client_config,
        )

    def _stanza_prefix(self, stanza: str) -> str:
        return f"{self.root}/backup/{stanza}/" if self.root else f"backup/{stanza}/"

    def client(self) -> Any:
        if self._client is None:
            import boto3  # imported late: only a run that checks a restore needs it
            from botocore.config import Config

            config = Config(
                s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=20, retries={"max_attempts": 2}
            )
            if self._config is not None:
                config = config.merge(self._config)
            self._client = boto3.client("s3", config=config, **self._client_args)
        return self._client

    def _list(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of list_objects_v2, or [] when the bucket does not exist (yet)."""
        from botocore.exceptions import BotoCoreError, ClientError

        pages: list[dict[str, Any]] = []
        where = f"s3://{self.bucket}/{kwargs.get('Prefix', '')} at {self.endpoint_url}"
        try:
            token = None
            while True:
                page = self.client().list_objects_v2(
                    Bucket=self.bucket, **kwargs, **({"ContinuationToken": token} if token else {})
                )
                pages.append(page)
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token or kwargs.get("MaxKeys"):
                    return pages
        except ClientError as exc:
            code = _error_code(exc)
            if code == "NoSuchBucket":
                return []
            raise _store_error(exc, "list", "listing", where, "the restore window is checked") from None
        except BotoCoreError as exc:
            raise ConfigError(
                "backup.endpoint",
                f"cannot reach the backup store to check the restore window ({exc}); check backup.endpoint and "
                "that this machine can reach it, then run again (nothing was changed). A restore block whose "
                "restore has happened can be removed instead (the restore step is create-only)",
            ) from None

    def stanza_exists(self, stanza: str) -> bool:
        key = self._stanza_prefix(stanza) + "backup.info"
        # The prefix matches backup.info and backup.info.copy: stanza-create writes both.
        return any(page.get("KeyCount", 0) for page in self._list(Prefix=key, MaxKeys=2))

    def labels(self, stanza: str) -> list[BackupLabel]:
        """Every backup set directory of the stanza with a valid label (complete or not)."""
        prefix = self._stanza_prefix(stanza)
        found = []
        for page in self._list(Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                parsed = parse_label(common["Prefix"][len(prefix) :].rstrip("/"))
                if parsed is not None:
                    found.append(parsed)
        return sorted(found, key=lambda b: (b.start, b.label))

    def _completed_at(self, stanza: str, label: str) -> dt.datetime | None:
        """When the set's backup.manifest was written (the set is complete), or None."""
        key = f"{self._stanza_prefix(stanza)}{label}/backup.manifest"
        # Keys list in order, so backup.manifest comes before backup.manifest.copy.
        for page in self._list(Prefix=key, MaxKeys=1):
            for obj in page.get("Contents", []):
                if obj["Key"] == key:
                    written: dt.datetime = obj["LastModified"]
                    return written.astimezone(dt.UTC)
        return None

    def earliest_restorable(self, stanza: str) -> tuple[str, dt.datetime] | None:
        """The earliest complete full backup set and when it completed, or None when there is none."""
        for backup in self.labels(stanza):
            if backup.kind == "full" and (done := self._completed_at(stanza, backup.label)) is not None:
                return backup.label, max(done, backup.start)
        return None

    def _read(self, key: str) -> bytes | None:
        """An object's bytes, or None when it (or the bucket) does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self.bucket}/{key} at {self.endpoint_url}"
        try:
            return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
                return None
            raise _store_error(
                exc, "read", "reading", where, "backupCipherPassphrase is checked against the repository"
            ) from None
        except BotoCoreError as exc:
            raise ConfigError(
                "backup.endpoint",
                f"cannot reach the backup store to check backupCipherPassphrase against the repository ({exc}); "
                "check backup.endpoint and that this machine can reach it, then run again (nothing was changed)",
            ) from None

    def passphrase_opens(self, stanza: str, passphrase: str) -> bool | None:
        """Whether `passphrase` opens the stanza's backup.info; None when the stanza does not exist.

        Like pgBackRest, falls back to backup.info.copy when backup.info is missing.
        """
        prefix = self._stanza_prefix(stanza)
        for name in ("backup.info", "backup.info.copy"):
            data = self._read(prefix + name)
            if data is not None:
                return info_opens(data, passphrase)
        return None


_REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden")


def _error_code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _store_error(exc, verb: str, doing: str, where: str, checked: str) -> ConfigError:
    """The ConfigError for an S3 error that is not "missing": refused keys, or anything else."""
    code = _error_code(exc)
    if code in _REFUSED:
        return ConfigError(
            "s3AccessKey",
            f"the backup store refused to {verb} {where} ({code}); set pgstack:s3AccessKey and "
            f"pgstack:s3SecretKey to keys of the project that holds the bucket ({checked} before anything is "
            "changed)",
        )
    return ConfigError(
        "backup.endpoint", f"{doing} {where} failed ({code or exc}); check backup.endpoint and backup.bucket"
    )


def check_restore_windows(settings: Settings, catalog: BackupCatalog, now: dt.datetime) -> None:
    """Refuse a restore the source's backups cannot serve, asking the repository (target hetzner).

    Only while the restored generation has no stanza of its own: once it exists the restore has
    happened and its block is inert, so the stack keeps deploying after the backups that served
    it expired. `check` runs first, so every source named here is in clusters.
    """
    if settings.target != "hetzner" or settings.backup is None:
        return
    for gen, cluster in sorted(settings.clusters.items()):
        restore = cluster.restore
        if restore is None or catalog.stanza_exists(settings.stanza(gen)):
            continue
        key = f"clusters.{gen}.restore"
        source = settings.stanza(restore.source)
        found = catalog.earliest_restorable(source)
        if found is None:
            raise ConfigError(
                f"{key}.from",
                f"{restore.source} (stanza {source} in s3://{settings.backup.bucket}{settings.backup.repo_path}) "
                f"has no backup yet; wait for the first full backup of {restore.source} (its first `up` takes "
                "one), then run again",
            )
        label, earliest = found
        target = restore.target()
        if target is not None and target <= earliest:
            age = now - earliest
            ago = f", {age.days} d {age.seconds // 3600} h ago" if age >= dt.timedelta(0) else ""
            raise ConfigError(
                f"{key}.targetTime",
                f"{restore.target_time} is before the earliest restorable time of {restore.source}, "
                f"{earliest.isoformat()}{ago}: recovery starts at the end of the earliest backup in the repository "
                f"(stanza {source}, backup {label}); older backups have expired (backup.retentionFullDays) or never "
                f"existed. Pick a targetTime after {earliest.isoformat()}, or 'latest'",
            )


def check_retirements(settings: Settings, catalog: BackupCatalog) -> None:
    """Keep a source generation protected until each generation restored from it has a full backup.

    Until then the source's backups are the only way back to the restored data's history: a
    restored generation whose first full backup failed, or has not finished, would be left
    without any. Lifting the source's deleteProtection is the first step of retiring it, so that
    is where this refuses. `check` runs first, so every source named here is in clusters.
    """
    if settings.target != "hetzner" or settings.backup is None:
        return
    for gen, cluster in sorted(settings.clusters.items()):
        restore = cluster.restore
        if restore is None or settings.clusters[restore.source].delete_protection:
            continue
        stanza = settings.stanza(gen)
        # Also while the restored generation is still to be built (no stanza yet): its first full
        # backup runs in the background after the `up`, so this run cannot provide it.
        if catalog.earliest_restorable(stanza) is None:
            raise ConfigError(
                f"clusters.{restore.source}.deleteProtection",
                f"{restore.source} may not be retired yet: {gen}, restored from it, has no full backup of its own in "
                f"s3://{settings.backup.bucket}{settings.backup.repo_path} (stanza {stanza}), so {restore.source}'s "
                f"backups are still the only copy of {gen}'s history. Keep clusters.{restore.source}.deleteProtection "
                f"true until {gen}'s first full backup is listed (pgbackrest --stanza={stanza} info on {gen}'s "
                "primary; its first `up` starts one), then run again",
            )


def check_backup_passphrase(settings: Settings, catalog: BackupCatalog) -> None:
    """Refuse an adopted passphrase (backupCipherPassphrase) that does not open an existing stanza.

    pgBackRest encrypts every repository file with the passphrase it was created with, for good:
    with another one the servers could neither read the existing backups nor add to them. Only an
    adopted passphrase is known here; a generated one lives in Pulumi state, and the pgbackrest
    step on the server guards that case (it refuses a stanza it cannot read).
    """
    passphrase = settings.backup_cipher_passphrase
    if settings.target != "hetzner" or settings.backup is None or passphrase is None:
        return
    repository = f"s3://{settings.backup.bucket}{settings.backup.repo_path}"
    for gen in sorted(settings.clusters):
        stanza = settings.stanza(gen)
        if catalog.passphrase_opens(stanza, passphrase) is False:
            raise ConfigError(
                "backupCipherPassphrase",
                f"does not open the existing repository {repository} (stanza {stanza}): a repository's "
                "passphrase can never change once it exists; set the passphrase it was created with",
            )
