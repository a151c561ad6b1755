"""Helpers shared by the unit tests: mocks that remember ids, and a way to read registrations."""

from __future__ import annotations

import datetime as dt
import hashlib
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import boto3
import moto.s3.models as moto_s3_models
from moto import mock_aws

from components.preflight.backup_catalog import S3BackupCatalog
from sandbox import program

SERVER = "hcloud:index/server:Server"
NETWORK = "hcloud:index/network:Network"
SUBNET = "hcloud:index/networkSubnet:NetworkSubnet"
FIREWALL = "hcloud:index/firewall:Firewall"
PLACEMENT_GROUP = "hcloud:index/placementGroup:PlacementGroup"
SSH_KEY = "hcloud:index/sshKey:SshKey"
PASSWORD = "random:index/randomPassword:RandomPassword"
COMMAND = "command:remote:Command"
PROD_BUCKET = "hcb-production-postgres"  # Pulumi.prod.yaml
MOTO_ENDPOINT = "https://s3.us-east-1.amazonaws.com"  # moto answers here


def password_for(name: str, length: int) -> str:
    """A distinctive, URL-safe password per RandomPassword, so a leak of it can be searched for."""
    return ("Pw" + hashlib.sha256(name.encode()).hexdigest() * 2)[:length]


class IdMocks(program.RecordingMocks):
    """RecordingMocks that remember which resource got which id, and give every password its own value.

    Ids come from a counter in registration order, which is not deterministic across runs, so
    inputs are compared after `normalize` has replaced every id by the name of its resource.
    """

    def __init__(self) -> None:
        super().__init__(secret_value=password_for)
        self.ids: dict[str, program.Registration] = {}

    def provide(self, reg: program.Registration, rid: str) -> dict[str, Any]:
        self.ids[rid] = reg
        return super().provide(reg, rid)

    def id_of(self, type_: str, name: str) -> str:
        for rid, reg in self.ids.items():
            if reg.type == type_ and reg.name == name:
                return rid
        raise KeyError(f"no {type_} named {name!r}")

    def resolve(self, value: Any) -> program.Registration | None:
        """The registration an id input (string, or a float as the mocks deliver numbers) refers to."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        if isinstance(value, float):
            if not value.is_integer():
                return None
            value = int(value)
        return self.ids.get(str(value))

    def normalize(self, value: Any) -> Any:
        if program.is_secret(value):
            return {"secret": self.normalize(value["value"])}
        if isinstance(value, dict):
            return {k: self.normalize(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.normalize(v) for v in value]
        reg = self.resolve(value)
        return f"<id of {reg.type} {reg.name}>" if reg is not None else value


def one(mocks: program.RecordingMocks, type_: str, name: str) -> program.Registration:
    """The registration of `type_` named `name` (a component and its resource may share a name)."""
    found = [r for r in mocks.registrations if r.type == type_ and r.name == name]
    assert len(found) == 1, f"expected one {type_} named {name!r}, found {len(found)}"
    return found[0]


def command_text(reg: program.Registration) -> str:
    return program.unwrap(reg.inputs["create"])


def script_param(text: str, name: str) -> str:
    """The value a remote command's text binds to parameter NAME (shell-quoted in the text)."""
    marker = f"\n{name}="
    assert marker in text, f"parameter {name} is not bound in the command text"
    lexer = shlex.shlex(text.split(marker, 1)[1], posix=True)
    lexer.whitespace_split = True
    lexer.whitespace = " \t\n"
    lexer.commenters = ""
    return lexer.get_token() or ""


def set_active(gen: str):
    """A config edit: clients move to generation `gen` (the cutover key)."""

    def edit(cfg: dict) -> None:
        cfg["pgstack:active"] = gen

    return edit


def drop_restore(gen: str):
    """A config edit: the restore block of `gen` goes (it is inert once the generation exists)."""

    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"][gen].pop("restore")

    return edit


class CatalogSpy:
    """Wraps a backup catalog and records which stanzas the program asked about."""

    def __init__(self, inner):
        self.inner, self.asked = inner, []

    def stanza_exists(self, stanza):
        self.asked.append(("exists", stanza))
        return self.inner.stanza_exists(stanza)

    def earliest_restorable(self, stanza):
        self.asked.append(("earliest", stanza))
        return self.inner.earliest_restorable(stanza)

    def passphrase_opens(self, stanza, passphrase):
        self.asked.append(("opens", stanza))
        return self.inner.passphrase_opens(stanza, passphrase)


def reg(result: program.RunResult, type_: str, name: str) -> program.Registration:
    """The one registration of `type_` named `name`."""
    found = [r for r in result.mocks.registrations if r.type == type_ and r.name == name]
    assert len(found) == 1, f"expected one {type_} {name!r}, found {len(found)}"
    return found[0]


def inputs(result: program.RunResult, type_: str, name: str) -> dict[str, Any]:
    return program.unwrap(reg(result, type_, name).inputs)


# How long a backup set takes in these fakes: its manifest is written this long after its label's time.
BACKUP_SECONDS = 180


class MotoRepo:
    """A pgBackRest repository in moto's S3, written the way pgBackRest names its objects."""

    def __init__(self, client, root: str = "pgbackrest"):
        self.client, self.root = client, root

    def put(self, key: str, body: bytes = b"encrypted") -> None:
        self.client.put_object(Bucket=PROD_BUCKET, Key=f"{self.root}/{key}", Body=body)

    def stanza(self, stanza: str, backup_info: bytes = b"encrypted", copy_only: bool = False) -> None:
        for name in ("backup.info.copy",) if copy_only else ("backup.info", "backup.info.copy"):
            self.put(f"backup/{stanza}/{name}", backup_info)
        for name in ("archive.info", "archive.info.copy"):
            self.put(f"archive/{stanza}/{name}")

    def backup(self, stanza: str, label: str, complete: bool = True, seconds: float = BACKUP_SECONDS) -> None:
        """A backup set that started at its label's time and, if complete, ended `seconds` later."""
        # A running backup has saved only its manifest copy; a complete one has both.
        self.put(f"backup/{stanza}/{label}/backup.manifest.copy")
        self.put(f"backup/{stanza}/{label}/bundle/1")
        if complete:
            stamp = label.rsplit("_", 1)[-1][:15]
            ended = dt.datetime.strptime(stamp, "%Y%m%d-%H%M%S") + dt.timedelta(seconds=seconds)
            # moto stamps LastModified with its clock; the catalog reads it as the set's end.
            with mock.patch.object(moto_s3_models, "utcnow", lambda: ended):
                self.put(f"backup/{stanza}/{label}/backup.manifest")

    def catalog(self, **kw) -> S3BackupCatalog:
        return S3BackupCatalog(MOTO_ENDPOINT, PROD_BUCKET, "/" + self.root, "test-access-key-id", "test-secret", **kw)


@contextmanager
def moto_repo(cls: type[MotoRepo] = MotoRepo) -> Iterator[MotoRepo]:
    """An empty bucket in moto (prod's name) and a repository writer over it."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=PROD_BUCKET)
        yield cls(client)
