"""Adopting an existing pgBackRest repository (pgstack:backupCipherPassphrase), and the refusal of a
passphrase that does not open it, before anything is registered.

The repository is moto's (`mock_aws`). Its backup.info is encrypted the way pgBackRest encrypts it,
checked below against a backup.info that pgBackRest 2.45 itself wrote.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import config
from components import preflight
from components.preflight.backup_catalog import S3BackupCatalog, decrypt, info_opens
from config import ConfigError
from sandbox import program
from tests.conftest import run_stack, stack_config
from tests.unit.support import COMMAND, PASSWORD, IdMocks, MotoRepo, moto_repo, one, password_for
from tests.unit.support import MOTO_ENDPOINT as ENDPOINT
from tests.unit.support import PROD_BUCKET as BUCKET
from tests.unit.support import CatalogSpy as Spy

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
G1, G2 = "hcb_production-g1", "hcb_production-g2"
ADOPTED = "seed-000-password-manager-passphrase"
OTHER = "another-passphrase-altogether"

# backup.info as pgBackRest 2.45 wrote it: `stanza-create` of a scratch PostgreSQL 15 cluster into a
# posix repository with repo1-cipher-type=aes-256-cbc and repo1-cipher-pass=ScratchPassphrase123.
PGBACKREST_245_PASS = "ScratchPassphrase123"
PGBACKREST_245_BACKUP_INFO = base64.b64decode(
    "U2FsdGVkX1+Pexn4jAXb7IFP/8DmvhA1KyUNsC2fegmJhzJHqEYAfXqQtBdA/ThRWQkulQFg81EO8M6cFZP5onGqPWIrJfDO1Ft3"
    "h1s8PDhsGd3v8OEoAzwCOUPPtRHVnJeNxxPWw9LViNy5QoMA+C8T+yAJL5PRKkJasyhblc/qW80Fxqe/KtM2nBBEkGnqOjl2Wh1z"
    "gQPhwfDxk7xTDkyb6n5Q2kp0K7eLXdOFYwcXEXOKl+Qak2ow+exjpbgvBVQt3d5RGqivPlPS5VKz27BMm8fglamndYssrnQpoSe3"
    "ydwZrID6rBGhwZQd2x53y9Y+RdYGBQSikKsku45MWayxbGLPfBOxbyKVO5K2YLPYJA6U3Dv2rTYpkOtw4EkrTc7E3avz/p4NOIAd"
    "t05+APZnizFrhS/Y6gETCkssTh1tiCqXW2cW57EUhCbPvE3Pw96ylODOeWm96T4+9+kNJIL/Ny51oA5e2Axq2g6HLMGvUbqEYeGO"
    "FyQrc8YLuDjvUGl1HPLjU6on003P1Dd3AywQWK6KPpSE4/bw+ZuI7AEdx0U7S9l8dUTD8TIb90HZXvVDBY21EZI46QQmV+yeyTgT"
    "GvxDvnxFVP8PUDPRhtueaAB32biBqjbPhVhWcMlX"
)

INFO = b"""[backrest]
backrest-format=5
backrest-version="2.45"

[cipher]
cipher-pass="subkeyforbackupsetsnotthispassphrase"

[db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7710730603098591238
db-version="15"
"""


def encrypt(plain: bytes, passphrase: str, salt: bytes = b"pgstack!") -> bytes:
    """A repository file as pgBackRest writes it: "Salted__", the salt, then AES-256-CBC (PKCS#7) with
    key and IV from OpenSSL's EVP_BytesToKey over SHA-1, one iteration."""
    derived, block = b"", b""
    while len(derived) < 48:
        block = hashlib.sha1(block + passphrase.encode() + salt).digest()
        derived += block
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(derived[:32]), modes.CBC(derived[32:48])).encryptor()
    return b"Salted__" + salt + encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()


# --- the cipher, against what pgBackRest wrote --------------------------------------------------------


def test_the_passphrase_opens_a_backup_info_pgbackrest_wrote():
    plain = decrypt(PGBACKREST_245_BACKUP_INFO, PGBACKREST_245_PASS)
    assert plain is not None and plain.startswith(b"[backrest]\nbackrest-format=5\n")
    assert b'db-version="15"' in plain
    assert info_opens(PGBACKREST_245_BACKUP_INFO, PGBACKREST_245_PASS)


@pytest.mark.parametrize("wrong", ["scratchPassphrase123", "ScratchPassphrase12", "", OTHER])
def test_another_passphrase_does_not(wrong):
    assert not info_opens(PGBACKREST_245_BACKUP_INFO, wrong)


def test_the_test_helper_encrypts_exactly_as_pgbackrest():
    """Same plaintext, passphrase and salt: the same bytes pgBackRest wrote."""
    plain = decrypt(PGBACKREST_245_BACKUP_INFO, PGBACKREST_245_PASS)
    assert plain is not None
    assert encrypt(plain, PGBACKREST_245_PASS, salt=PGBACKREST_245_BACKUP_INFO[8:16]) == PGBACKREST_245_BACKUP_INFO


@pytest.mark.parametrize(
    "data",
    [
        INFO,  # a repository without a cipher: plain text
        b"Salted__12345678",  # no body
        b"Salted__12345678" + b"x" * 15,  # not whole blocks
        encrypt(b"[db]\ndb-id=1\n", ADOPTED),  # opens, but is no backup.info
    ],
)
def test_anything_else_is_not_opened(data):
    assert not info_opens(data, ADOPTED)


# --- the catalog over moto ----------------------------------------------------------------------------


class Repo(MotoRepo):
    def stanza(self, stanza: str, passphrase: str, copy_only: bool = False) -> None:
        super().stanza(stanza, encrypt(INFO, passphrase), copy_only)


@pytest.fixture
def repo():
    with moto_repo(Repo) as r:
        yield r


def test_catalog_answers_per_stanza(repo):
    repo.stanza(G1, ADOPTED)
    cat = repo.catalog()
    assert cat.passphrase_opens(G1, ADOPTED) is True
    assert cat.passphrase_opens(G1, OTHER) is False
    assert cat.passphrase_opens(G2, ADOPTED) is None


def test_catalog_falls_back_to_the_copy(repo):
    repo.stanza(G1, ADOPTED, copy_only=True)
    assert repo.catalog().passphrase_opens(G1, ADOPTED) is True
    assert repo.catalog().passphrase_opens(G1, OTHER) is False


def test_a_bucket_that_does_not_exist_yet_holds_no_stanza(repo):
    cat = S3BackupCatalog(ENDPOINT, "not-created-yet", "/pgbackrest", "k", "s")
    assert cat.passphrase_opens(G1, ADOPTED) is None


@pytest.mark.parametrize(
    ("code", "status", "key", "named"),
    [
        ("AccessDenied", 403, "pgstack:s3AccessKey", "pgstack:s3SecretKey"),
        ("InternalError", 500, "pgstack:backup.endpoint", "InternalError"),
    ],
)
def test_store_errors_name_the_key_to_fix(code, status, key, named):
    cat = S3BackupCatalog(ENDPOINT, BUCKET, "/pgbackrest", "k", "s")
    with Stubber(cat.client()) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(ConfigError) as info:
            cat.passphrase_opens(G1, ADOPTED)
    assert info.value.key == key and named in info.value.detail


# --- the program ----------------------------------------------------------------------------------------


def adopt(passphrase: str | None = ADOPTED, then=None):
    def edit(cfg):
        if passphrase is not None:
            cfg["pgstack:backupCipherPassphrase"] = passphrase
        if then is not None:
            then(cfg)

    return edit


def refused(edit, catalog, **kw) -> ConfigError:
    mocks = program.RecordingMocks()
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit, mocks=mocks, now=NOW, catalog=catalog, **kw)
    assert mocks.registrations == [], f"{info.value.key}: {len(mocks.registrations)} resources registered first"
    for secret in (ADOPTED, OTHER):
        assert secret not in str(info.value), "the message shows a passphrase"
    return info.value


def test_the_passphrase_the_repository_was_created_with_is_accepted_and_used(repo):
    repo.stanza(G1, ADOPTED)
    mocks = IdMocks()
    result = run_stack("prod", edit=adopt(), mocks=mocks, now=NOW, catalog=repo.catalog())
    for step in ("prod-g1-primary-pgbackrest", "prod-g1-replica-1-pgbackrest"):
        stdin = one(mocks, COMMAND, step).inputs["stdin"]
        assert program.is_secret(stdin)
        assert f"repo1-cipher-pass={ADOPTED}\n" in program.unwrap(stdin), step
    assert result.outputs["backup_cipher_passphrase"] == ADOPTED
    assert "backup_cipher_passphrase" in result.secret_outputs
    # The generated passphrase stays registered (and retained), so its state is never lost.
    cipher = one(mocks, PASSWORD, "prod-backups-cipher")
    assert cipher.options["retainOnDelete"] is True
    commands = json.dumps(program.unwrap([r.inputs for r in mocks.of_type(COMMAND)]))
    assert password_for("prod-backups-cipher", 64) not in commands, "a server got the generated passphrase"
    for reg in mocks.registrations:
        assert ADOPTED not in json.dumps(program.redact(reg.inputs)), f"{reg.name} shows the passphrase"


def test_a_passphrase_that_does_not_open_the_repository_is_refused(repo):
    repo.stanza(G1, ADOPTED)
    exc = refused(adopt(OTHER), repo.catalog())
    assert exc.key == "pgstack:backupCipherPassphrase"
    assert exc.detail == (
        f"does not open the existing repository s3://{BUCKET}/pgbackrest (stanza {G1}): a repository's "
        "passphrase can never change once it exists; set the passphrase it was created with"
    )


def test_a_repository_without_a_cipher_is_refused(repo):
    repo.client.put_object(Bucket=BUCKET, Key=f"pgbackrest/backup/{G1}/backup.info", Body=INFO)
    assert refused(adopt(), repo.catalog()).key == "pgstack:backupCipherPassphrase"


def test_no_stanza_yet_is_accepted(repo):
    spy = Spy(repo.catalog())
    result = run_stack("prod", edit=adopt(), now=NOW, catalog=spy)
    assert result.mocks.registrations
    assert spy.asked == [("opens", G1)]


def test_every_generation_is_checked(repo):
    """g2 restores from g1 and has its own stanza already, made with another passphrase."""
    repo.stanza(G1, ADOPTED)
    repo.stanza(G2, OTHER)

    def g2(cfg):
        cfg["pgstack:clusters"]["g2"] = {"primaryIp": "10.0.1.7", "restore": {"from": "g1", "targetTime": "latest"}}

    exc = refused(adopt(then=g2), repo.catalog())
    assert exc.key == "pgstack:backupCipherPassphrase" and f"(stanza {G2})" in exc.detail


def test_without_the_key_nothing_is_checked(repo):
    """The generated passphrase lives in Pulumi state: only the server's guard can check it."""
    repo.stanza(G1, OTHER)
    spy = Spy(repo.catalog())
    run_stack("prod", now=NOW, catalog=spy)
    assert spy.asked == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "is empty"),
        ("two\nlines", "line break"),
        ("tab\there", "control character"),
        (" padded", "white space"),
        ("padded ", "white space"),
    ],
)
def test_passphrases_pgbackrest_conf_cannot_hold_are_refused(value, says):
    exc = refused(adopt(value), None)
    assert exc.key == "pgstack:backupCipherPassphrase" and says in exc.detail
    if value.strip():
        assert value.strip() not in str(exc)


def test_without_a_repository_the_key_is_inert():
    def no_backup(cfg):
        cfg.pop("pgstack:backup")

    result = run_stack("prod", edit=adopt("", then=no_backup))
    assert "prod-backups-cipher" not in {r.name for r in result.mocks.registrations}
    assert "backup_cipher_passphrase" not in result.outputs


def test_settings_never_show_it():
    result = run_stack("prod", edit=adopt())
    assert ADOPTED not in repr(result.settings)


# --- load_settings: a real run checks its own bucket ---------------------------------------------------


@pytest.fixture
def real_program(monkeypatch):
    notes: list[str] = []
    monkeypatch.setattr(config.pulumi, "get_project", lambda: "pgstack")
    monkeypatch.setattr(config.pulumi, "get_stack", lambda: "prod")
    monkeypatch.setattr(config.pulumi.log, "info", lambda msg, *a, **k: notes.append(msg))

    def load(raw, under_mocks: bool):
        monkeypatch.setattr(config, "_all_config", lambda: dict(raw))
        monkeypatch.setattr(preflight, "under_mocks", lambda: under_mocks)
        settings = config.load_settings(now=NOW)
        preflight.run(settings, NOW)
        return settings

    return load, notes


def test_a_real_run_checks_the_adopted_passphrase_against_its_bucket(real_program, repo, monkeypatch):
    load, notes = real_program
    original = S3BackupCatalog.for_settings.__func__

    def for_settings(cls, settings, client_config=None):
        cat = original(cls, settings, client_config)
        cat._client_args["endpoint_url"] = ENDPOINT
        return cat

    monkeypatch.setattr(S3BackupCatalog, "for_settings", classmethod(for_settings))
    repo.stanza(G1, ADOPTED)
    with pytest.raises(ConfigError) as info:
        load(stack_config("prod", adopt(OTHER)), under_mocks=False)
    assert info.value.key == "pgstack:backupCipherPassphrase"
    assert load(stack_config("prod", adopt()), under_mocks=False).backup_cipher_passphrase == ADOPTED
    assert notes == []


def test_under_mocks_a_note_says_it_was_not_checked(real_program, monkeypatch):
    load, notes = real_program
    monkeypatch.setattr(boto3, "client", lambda *a, **k: pytest.fail("the bucket was reached"))
    load(stack_config("prod", adopt()), under_mocks=True)
    assert len(notes) == 1 and "backupCipherPassphrase not checked against the repository" in notes[0]
