"""The restore window, checked against the pgBackRest repository in the bucket before anything is registered.

The bucket is moto's (`mock_aws`) holding the objects pgBackRest writes, by name only: backup.info
for a stanza, one directory per backup set with its backup.manifest. Contents stay encrypted in a
real repository, so the catalog never reads them and neither do these fakes.
"""

from __future__ import annotations

import datetime as dt
import socket
import time

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

import config
from components import preflight
from components.preflight.backup_catalog import S3BackupCatalog, parse_label
from config import ConfigError
from sandbox import program
from tests.conftest import run_stack, stack_config
from tests.unit.support import BACKUP_SECONDS, MotoRepo, moto_repo
from tests.unit.support import MOTO_ENDPOINT as ENDPOINT
from tests.unit.support import PROD_BUCKET as BUCKET
from tests.unit.support import CatalogSpy as Spy

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
G1, G2 = "hcb_production-g1", "hcb_production-g2"
EARLIEST = "20260520-020000F"  # the earliest complete full backup of g1 below
EARLIEST_END = dt.datetime(2026, 5, 20, 2, 3, tzinfo=dt.UTC)  # it took BACKUP_SECONDS (3 min)
FAST = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})


@pytest.fixture
def repo():
    with moto_repo() as r:
        yield r


@pytest.fixture
def g1_backed_up(repo):
    """g1 as it looks after a few weeks: two full sets (with a diff and an incr), one running."""
    repo.stanza(G1)
    repo.backup(G1, "20260519-020000F", complete=False)  # aborted: never completed
    repo.backup(G1, EARLIEST)
    repo.backup(G1, f"{EARLIEST}_20260521-020000D")
    repo.backup(G1, "20260527-020000F")
    repo.backup(G1, "20260527-020000F_20260528-020000I")
    repo.put(f"backup/{G1}/backup.history/2026/{EARLIEST}.manifest.gz")
    repo.put(f"archive/{G1}/15-1/0000000100000000/000000010000000000000003-abc.zst")
    return repo


def with_g2(target: str, source: str = "g1"):
    def edit(cfg):
        cfg["pgstack:clusters"]["g2"] = {"primaryIp": "10.0.1.7", "restore": {"from": source, "targetTime": target}}

    return edit


def refused(edit, catalog) -> ConfigError:
    mocks = program.RecordingMocks()
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit, mocks=mocks, now=NOW, catalog=catalog)
    assert mocks.registrations == [], f"{info.value.key}: {len(mocks.registrations)} resources registered first"
    assert str(info.value).startswith(f"{info.value.key}: ")
    return info.value


def accepted(edit, catalog) -> program.RunResult:
    result = run_stack("prod", edit=edit, now=NOW, catalog=catalog)
    assert result.mocks.registrations, "an accepted stack registers resources"
    return result


# --- labels ---------------------------------------------------------------------------------------


def test_labels_of_full_diff_and_incr_sets_parse_to_their_start_times():
    full = parse_label("20261121-200134F")
    assert full is not None and full.kind == "full"
    assert full.start == full.full_start == dt.datetime(2026, 11, 21, 20, 1, 34, tzinfo=dt.UTC)
    diff = parse_label("20261121-200134F_20261122-020000D")
    assert diff is not None and diff.kind == "diff"
    assert diff.full_start == full.start and diff.start == dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC)
    incr = parse_label("20261121-200134F_20261122-030000I")
    assert incr is not None and incr.kind == "incr"


@pytest.mark.parametrize(
    "label",
    [
        "backup.history",
        "latest",
        "20261121-200134",  # no type
        "20261121-200134D",  # a diff label without its full
        "20261121-200134F_",
        "20261121-200134F_20261122-020000F",
        "20261121-200134F_20261122-020000X",
        "x20261121-200134F",
        "20261121-200134F.bak",
        "2026112-200134F",
        "20261321-200134F",  # month 13: the right shape, not a time
        "20261121-250000F",
        "20261121-200134F_20261120-020000D",  # a diff that starts before its full
    ],
)
def test_anything_else_is_not_a_label(label):
    assert parse_label(label) is None


# --- the catalog over moto --------------------------------------------------------------------------


def test_catalog_lists_labels_ignoring_other_directories(g1_backed_up):
    cat = g1_backed_up.catalog()
    assert [b.label for b in cat.labels(G1)] == [
        "20260519-020000F",
        EARLIEST,
        f"{EARLIEST}_20260521-020000D",
        "20260527-020000F",
        "20260527-020000F_20260528-020000I",
    ]


def test_earliest_restorable_is_the_end_of_the_earliest_complete_full_set(g1_backed_up):
    cat = g1_backed_up.catalog()
    assert cat.stanza_exists(G1) is True
    assert cat.earliest_restorable(G1) == (EARLIEST, EARLIEST_END)


def test_stanza_without_backups_and_missing_stanza(repo):
    repo.stanza(G1)
    cat = repo.catalog()
    assert cat.stanza_exists(G1) is True
    assert cat.earliest_restorable(G1) is None
    assert cat.stanza_exists(G2) is False
    assert cat.earliest_restorable(G2) is None


def test_a_running_first_backup_is_not_a_backup_yet(repo):
    repo.stanza(G1)
    repo.backup(G1, "20260520-020000F", complete=False)
    assert repo.catalog().earliest_restorable(G1) is None


def test_repo_path_at_the_bucket_root(repo):
    at_root = MotoRepo(repo.client, root="")
    at_root.put = lambda key, body=b"x": repo.client.put_object(Bucket=BUCKET, Key=key, Body=body)  # no root prefix
    at_root.stanza(G1)
    at_root.backup(G1, EARLIEST)
    cat = S3BackupCatalog(ENDPOINT, BUCKET, "/", "k", "s")
    assert cat.stanza_exists(G1) and cat.earliest_restorable(G1) == (EARLIEST, EARLIEST_END)


def test_a_bucket_that_does_not_exist_yet_holds_no_stanza(repo):
    cat = S3BackupCatalog(ENDPOINT, "not-created-yet", "/pgbackrest", "k", "s")
    assert cat.stanza_exists(G1) is False
    assert cat.earliest_restorable(G1) is None


# --- the rules, through the program ---------------------------------------------------------------


def test_target_before_the_earliest_backup_is_refused(g1_backed_up):
    exc = refused(with_g2("2026-05-20T01:59:59+00:00"), g1_backed_up.catalog())
    assert exc.key == "pgstack:clusters.g2.restore.targetTime"
    assert "earliest restorable time of g1, 2026-05-20T02:03:00+00:00" in exc.detail, exc.detail
    assert "Pick a targetTime after 2026-05-20T02:03:00+00:00, or 'latest'" in exc.detail, exc.detail
    assert G1 in exc.detail and EARLIEST in exc.detail


def test_target_inside_the_first_backup_is_refused(g1_backed_up):
    """After the first backup started, before it ended: no backup can serve it (the fidelity issue)."""
    assert BACKUP_SECONDS == 180
    exc = refused(with_g2("2026-05-20T02:01:30+00:00"), g1_backed_up.catalog())
    assert exc.key == "pgstack:clusters.g2.restore.targetTime"
    assert "2026-05-20T02:03:00+00:00" in exc.detail, exc.detail


def test_target_right_after_the_first_backup_ended_is_accepted(g1_backed_up):
    accepted(with_g2("2026-05-20T02:03:00.000001+00:00"), g1_backed_up.catalog())


def test_target_at_the_start_of_the_earliest_backup_is_refused(g1_backed_up):
    """Recovery starts from the end of a backup: its own start time is never reachable."""
    exc = refused(with_g2("2026-05-20T04:00:00+02:00"), g1_backed_up.catalog())
    assert exc.key == "pgstack:clusters.g2.restore.targetTime"


def test_target_inside_the_window_is_accepted(g1_backed_up):
    result = accepted(with_g2("2026-05-25T10:00:00+00:00"), g1_backed_up.catalog())
    assert result.settings.clusters["g2"].restore is not None


def test_latest_is_accepted_when_the_source_has_a_backup(g1_backed_up):
    accepted(with_g2("latest"), g1_backed_up.catalog())


@pytest.mark.parametrize("target", ["latest", "2026-05-25T10:00:00+00:00"])
def test_source_without_any_backup_is_refused(repo, target):
    repo.stanza(G1)  # stanza-create ran, the first full backup did not finish
    repo.backup(G1, "20260601-110000F", complete=False)
    exc = refused(with_g2(target), repo.catalog())
    assert exc.key == "pgstack:clusters.g2.restore.from"
    assert "has no backup yet; wait for the first full backup" in exc.detail, exc.detail


def test_source_stanza_that_does_not_exist_is_refused(repo):
    exc = refused(with_g2("latest"), repo.catalog())
    assert exc.key == "pgstack:clusters.g2.restore.from"
    assert f"stanza {G1}" in exc.detail and "has no backup yet" in exc.detail


def test_restore_settings_are_inert_once_the_restored_stanza_exists(g1_backed_up):
    """g2 was restored and has its own stanza: its old target may be long expired, and even g1's
    backups may be gone; the stack keeps deploying without asking about g1."""
    g1_backed_up.stanza(G2)
    spy = Spy(g1_backed_up.catalog())
    accepted(with_g2("2025-01-01T00:00:00+00:00"), spy)
    assert spy.asked == [("exists", G2)]


def test_inert_even_when_the_source_has_no_backup_left(repo):
    repo.stanza(G2)
    accepted(with_g2("latest"), repo.catalog())


def test_no_restore_block_asks_nothing():
    spy = Spy(None)
    accepted(None, spy)
    assert spy.asked == []


def test_every_restoring_generation_is_checked(g1_backed_up):
    def edit(cfg):
        with_g2("2026-05-25T10:00:00+00:00")(cfg)
        cfg["pgstack:clusters"]["g3"] = {"primaryIp": "10.0.1.8", "restore": {"from": "g1", "targetTime": "latest"}}
        cfg["pgstack:clusters"]["g4"] = {
            "primaryIp": "10.0.1.9",
            "restore": {"from": "g1", "targetTime": "2026-05-01T00:00:00+00:00"},
        }

    exc = refused(edit, g1_backed_up.catalog())
    assert exc.key == "pgstack:clusters.g4.restore.targetTime"


def test_static_rules_come_first(g1_backed_up):
    """A target in the future is refused as such, before the bucket is asked anything."""
    spy = Spy(g1_backed_up.catalog())
    exc = refused(with_g2("2026-06-02T00:00:00+00:00"), spy)
    assert exc.key == "pgstack:clusters.g2.restore.targetTime" and "in the future" in exc.detail
    assert spy.asked == []


# --- a store that cannot be used ---------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_store_fails_naming_the_endpoint():
    cat = S3BackupCatalog(f"https://127.0.0.1:{closed_port()}", BUCKET, "/pgbackrest", "k", "s", client_config=FAST)
    t0 = time.monotonic()
    exc = refused(with_g2("latest"), cat)
    assert time.monotonic() - t0 < 10
    assert exc.key == "pgstack:backup.endpoint"
    assert "cannot reach the backup store" in exc.detail and "check backup.endpoint" in exc.detail


@pytest.mark.parametrize(
    ("code", "status", "key", "named"),
    [
        ("InvalidAccessKeyId", 403, "pgstack:s3AccessKey", "pgstack:s3SecretKey"),
        ("InternalError", 500, "pgstack:backup.endpoint", "InternalError"),
    ],
)
def test_store_errors_name_the_key_to_fix(code, status, key, named):
    cat = S3BackupCatalog(ENDPOINT, BUCKET, "/pgbackrest", "k", "s")
    with Stubber(cat.client()) as stub:
        stub.add_client_error("list_objects_v2", service_error_code=code, http_status_code=status)
        exc = refused(with_g2("latest"), cat)
    assert exc.key == key
    assert named in exc.detail


def test_restore_without_a_backup_block_is_refused():
    """Without pgstack:backup the restore block used to be ignored: g2 came up as an empty cluster."""

    def edit(cfg):
        cfg.pop("pgstack:backup")
        with_g2("latest")(cfg)

    exc = refused(edit, None)
    assert exc.key == "pgstack:clusters.g2.restore"
    assert "add it" in exc.detail


# --- load_settings: which runs check, and which say they did not ------------------------------------


@pytest.fixture
def real_program(monkeypatch):
    """load_settings, then pre-flight, as `pulumi up` runs them, with `raw` as the stack's config."""
    notes: list[str] = []
    monkeypatch.setattr(config.pulumi, "get_project", lambda: "pgstack")
    monkeypatch.setattr(config.pulumi, "get_stack", lambda: "prod")
    monkeypatch.setattr(config.pulumi.log, "info", lambda msg, *a, **k: notes.append(msg))

    def load(raw, under_mocks: bool, catalog=None, **kw):
        monkeypatch.setattr(config, "_all_config", lambda: dict(raw))
        monkeypatch.setattr(preflight, "under_mocks", lambda: under_mocks)
        settings = config.load_settings(now=NOW, **kw)
        preflight.use(preflight.World(backup_catalog=lambda _settings: catalog) if catalog else None)
        try:
            preflight.run(settings, NOW)
        finally:
            preflight.use(None)
        return settings

    return load, notes


def _no_boto(*_a, **_k):
    raise AssertionError("the bucket was reached")


def test_under_mocks_the_window_is_not_checked_and_a_note_says_so(real_program, monkeypatch):
    load, notes = real_program
    monkeypatch.setattr(boto3, "client", _no_boto)
    load(stack_config("prod", with_g2("2020-01-01T00:00:00+00:00")), under_mocks=True)
    assert len(notes) == 1 and "clusters.g2.restore not checked (running under Pulumi mocks)" in notes[0]


def test_without_s3_keys_the_window_is_not_checked_and_a_note_says_so(real_program, monkeypatch):
    load, notes = real_program
    monkeypatch.setattr(boto3, "client", _no_boto)
    raw = stack_config("prod", with_g2("latest"))
    raw.pop("pgstack:s3AccessKey")
    load(raw, under_mocks=False)
    assert len(notes) == 1 and "s3AccessKey" in notes[0]


def test_without_restores_nothing_is_checked_or_noted(real_program, monkeypatch):
    load, notes = real_program
    monkeypatch.setattr(boto3, "client", _no_boto)
    load(stack_config("prod"), under_mocks=False)
    assert notes == []


def test_a_real_run_that_cannot_reach_the_bucket_fails(real_program):
    load, notes = real_program

    def edit(cfg):
        with_g2("latest")(cfg)
        cfg["pgstack:backup"]["endpoint"] = "127.0.0.1"
        cfg["pgstack:sandbox"] = {"s3Port": closed_port()}

    with pytest.raises(ConfigError) as info:
        load(stack_config("prod", edit), under_mocks=False, allow_sandbox=True)
    assert info.value.key == "pgstack:backup.endpoint", info.value
    assert "127.0.0.1" in info.value.detail
    assert notes == []


def test_a_real_run_checks_its_own_bucket(real_program, g1_backed_up, monkeypatch):
    """for_settings reaches the stack's bucket; moto stands in for the endpoint."""
    load, notes = real_program
    made = []
    original = S3BackupCatalog.for_settings.__func__

    def for_settings(cls, settings, client_config=None):
        cat = original(cls, settings, client_config)
        made.append((cat.endpoint_url, cat.bucket, cat.root))
        cat._client_args["endpoint_url"] = ENDPOINT
        return cat

    monkeypatch.setattr(S3BackupCatalog, "for_settings", classmethod(for_settings))
    with pytest.raises(ConfigError) as info:
        load(stack_config("prod", with_g2("2026-05-01T00:00:00+00:00")), under_mocks=False)
    assert info.value.key == "pgstack:clusters.g2.restore.targetTime"
    assert made == [("https://fsn1.your-objectstorage.com", BUCKET, "pgbackrest")]
    load(stack_config("prod", with_g2("2026-05-25T00:00:00+00:00")), under_mocks=False)
    assert notes == []


def test_a_passed_catalog_is_used_by_load_settings(real_program, g1_backed_up):
    load, notes = real_program
    with pytest.raises(ConfigError) as info:
        load(stack_config("prod", with_g2("2026-05-01T00:00:00+00:00")), under_mocks=True,
             catalog=g1_backed_up.catalog())  # fmt: skip
    assert info.value.key == "pgstack:clusters.g2.restore.targetTime"
    assert notes == []


# --- retiring a source generation (restore speed issue) ------------------------------------------


def retiring_g1(cfg):
    """g2 restored from g1 (g2's stanza exists: it has been built), and g1's protection lifted."""
    with_g2("latest")(cfg)
    cfg["pgstack:clusters"]["g1"]["deleteProtection"] = False


def test_retiring_the_source_before_the_restored_generation_has_a_full_backup_is_refused(g1_backed_up):
    g1_backed_up.stanza(G2)  # built and promoted; its first full backup has not finished
    g1_backed_up.backup(G2, "20260531-020000F", complete=False)
    exc = refused(retiring_g1, g1_backed_up.catalog())
    assert exc.key == "pgstack:clusters.g1.deleteProtection", exc
    assert "g1 may not be retired yet: g2, restored from it, has no full backup" in exc.detail, exc.detail
    assert G2 in exc.detail


def test_retiring_the_source_once_the_restored_generation_has_a_full_backup_is_accepted(g1_backed_up):
    g1_backed_up.stanza(G2)
    g1_backed_up.backup(G2, "20260531-020000F")
    result = accepted(retiring_g1, g1_backed_up.catalog())
    assert result.settings.clusters["g1"].delete_protection is False


def test_a_protected_source_is_not_asked_about(g1_backed_up):
    spy = Spy(g1_backed_up.catalog())
    accepted(with_g2("latest"), spy)
    assert ("earliest", G2) not in spy.asked, spy.asked


def test_building_a_generation_from_an_unprotected_source_is_refused(g1_backed_up):
    """No stanza of g2 yet: this run builds it, and its first full backup runs after the `up`."""
    exc = refused(retiring_g1, g1_backed_up.catalog())
    assert exc.key == "pgstack:clusters.g1.deleteProtection", exc
