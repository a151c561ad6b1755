"""Point-in-time restore and cutover on target hetzner, as before/after comparisons of two runs.

The runbook of the README as config edits on prod: g1 alone; a restore block adds g2 next to it;
`active: g2` moves the DNS record; the restore block is edited or removed after the restore;
g1 is retired in two steps. Each step checks what appears, what goes, and which inputs change,
and that g1 (while it lives), g2 once created, and every secret stay as they were.

Registrations are compared by (type, name) and inputs, with resource ids and the mocks' public
IPs (both differ by registration order) replaced by the name of the resource they belong to.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from config import ConfigError
from postgres import pgbackrest as pgbackrest_conf
from sandbox import program
from tests.conftest import run_stack
from tests.unit.support import (
    COMMAND,
    PASSWORD,
    SERVER,
    IdMocks,
    command_text,
    drop_restore,
    inputs,
    one,
    reg,
    script_param,
    set_active,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TARGET = "2026-05-25T12:00:00+02:00"
RETIMED = "2026-05-26T08:00:00+00:00"
RRSET = "hcloud:index/zoneRrset:ZoneRrset"
RESTORE = (COMMAND, "prod-g2-primary-restore")
G2_PRIMARY = (SERVER, "prod-g2-primary")
MONITORING_CONFIGURE = (COMMAND, "prod-monitoring-configure")
CREATE_ONLY = ["create", "triggers", "stdin", "connection.privateKey"]


def add_g2(target: str = TARGET):
    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"]["g2"] = {
            "primaryIp": "10.0.1.7",
            "replicaIps": ["10.0.1.8"],
            "restore": {"from": "g1", "targetTime": target},
        }

    return edit


def unprotect(gen: str):
    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"][gen]["deleteProtection"] = False

    return edit


def remove(gen: str):
    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"].pop(gen)

    return edit


def run(*edits, mocks: program.RecordingMocks | None = None) -> program.RunResult:
    def edit(cfg: dict) -> None:
        for e in edits:
            e(cfg)

    return run_stack("prod", edit=edit, mocks=mocks or IdMocks(), now=NOW)


@pytest.fixture(scope="module")
def runs() -> dict[str, program.RunResult]:
    """Every step of the runbook, run once for the module."""
    cut = (add_g2(), set_active("g2"))
    return {
        "base": run(),
        "restored": run(add_g2()),
        "cutover": run(*cut),
        "retimed": run(add_g2(RETIMED), set_active("g2")),
        "block_removed": run(*cut, drop_restore("g2")),
        "g1_unprotected": run(*cut, drop_restore("g2"), unprotect("g1")),
        "g1_removed": run(*cut, drop_restore("g2"), remove("g1")),
    }


# --- comparing two runs ------------------------------------------------------------------------------


def _stable(result: program.RunResult):
    mocks = result.mocks
    assert isinstance(mocks, IdMocks)
    public = {r.outputs["ipv4Address"]: r.name for r in mocks.of_type(SERVER)}

    def norm(value: Any) -> Any:
        value = mocks.normalize(value)
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, str) and value in public:
            return f"<public ip of {public[value]}>"
        return value

    return norm


def snapshot(result: program.RunResult) -> dict[tuple[str, str], dict[str, Any]]:
    norm = _stable(result)
    return {(r.type, r.name): norm(r.inputs) for r in result.mocks.registrations}


def outputs(result: program.RunResult) -> dict[str, Any]:
    return _stable(result)(result.outputs)


@dataclass
class Diff:
    appeared: set[tuple[str, str]]
    gone: set[tuple[str, str]]
    changed: dict[tuple[str, str], set[str]]  # resource -> the input keys that differ
    outputs: set[str]  # stack outputs that appeared, went or changed


def diff(before: program.RunResult, after: program.RunResult) -> Diff:
    a, b = snapshot(before), snapshot(after)
    assert len(a) == len(before.mocks.registrations) and len(b) == len(after.mocks.registrations), "duplicates"
    changed = {}
    for key in a.keys() & b.keys():
        keys = {k for k in a[key].keys() | b[key].keys() if a[key].get(k) != b[key].get(k)}
        if keys:
            changed[key] = keys
    oa, ob = outputs(before), outputs(after)
    moved = {k for k in oa.keys() | ob.keys() if oa.get(k) != ob.get(k)}
    return Diff(set(b) - set(a), set(a) - set(b), changed, moved)


def of_generation(result: program.RunResult, gen: str) -> set[tuple[str, str]]:
    return {(r.type, r.name) for r in result.mocks.registrations if r.name.startswith(f"prod-{gen}")}


def secrets(result: program.RunResult) -> dict:
    """What decides every secret: the RandomPasswords' names and inputs (keepers, length)."""
    return {k: v for k, v in snapshot(result).items() if k[0] == PASSWORD}


# --- (a) a restore block adds g2 ---------------------------------------------------------------------


def test_restore_block_adds_g2_and_changes_nothing_of_g1(runs):
    d = diff(runs["base"], runs["restored"])
    steps = ["install", "wait", "cluster", "tls", "configure"]
    certificates = [
        (kind, f"prod-g2-{server}-certificate{suffix}")
        for server in ("primary", "replica-1")
        for kind, suffix in (
            ("pgstack:certificate_authority:ServerCertificate", ""),
            ("tls:index/privateKey:PrivateKey", "-key"),
            ("tls:index/certRequest:CertRequest", "-csr"),
            ("tls:index/locallySignedCert:LocallySignedCert", "-signed"),
        )
    ]
    assert d.appeared == {
        *certificates,
        ("pgstack:replica_pair:ReplicaPair", "prod-g2"),
        ("pgstack:postgres_server:PostgresServer", "prod-g2-primary"),
        ("pgstack:postgres_server:PostgresServer", "prod-g2-replica-1"),
        G2_PRIMARY,
        (SERVER, "prod-g2-replica-1"),
        *[(COMMAND, f"prod-g2-primary-{s}") for s in steps],
        *[(COMMAND, f"prod-g2-replica-1-{s}") for s in steps],
        (COMMAND, "prod-g2-primary-pgbackrest-config"),
        RESTORE,
        (COMMAND, "prod-g2-primary-roles"),
        (COMMAND, "prod-g2-primary-slots"),
        (COMMAND, "prod-g2-primary-pgbackrest"),
        (COMMAND, "prod-g2-replica-1-replica"),
        (COMMAND, "prod-g2-replica-1-pgbackrest"),
        (COMMAND, "prod-g2-primary-heartbeats"),
        (COMMAND, "prod-g2-replica-1-heartbeats"),
        (COMMAND, "prod-g2-primary-exporters"),
        (COMMAND, "prod-g2-replica-1-exporters"),
        (COMMAND, "prod-g2-primary-drills"),
        (COMMAND, "prod-g2-replica-1-drills"),
    }
    assert d.gone == set()
    # Only the monitoring server follows: it scrapes the new generation's servers too.
    assert d.changed == {MONITORING_CONFIGURE: {"create", "triggers"}}, "adding g2 changed inputs of existing resources"
    scraped = script_param(command_text(one(runs["restored"].mocks, *MONITORING_CONFIGURE)), "PROMETHEUS_YML")
    assert "10.0.1.7:9187" in scraped and "10.0.1.8:9100" in scraped, "the monitoring server does not scrape g2"
    assert d.outputs == {"stanza_g2"}
    assert secrets(runs["base"]) == secrets(runs["restored"])


def test_restore_step_is_create_only_and_restores_g1_to_the_target(runs):
    r = runs["restored"]
    restore = reg(r, *RESTORE)
    assert restore.options["ignoreChanges"] == CREATE_ONLY
    text = program.unwrap(restore.inputs["create"])
    assert script_param(text, "SOURCE_STANZA") == "hcb_production-g1"
    assert script_param(text, "TARGET") == pgbackrest_conf.recovery_target(TARGET) == "2026-05-25 10:00:00.000000+00:00"
    assert "delete" not in restore.inputs
    # Config first (it reads g1's stanza), then restore, then the roles on the restored data.
    assert "prod-g2-primary-pgbackrest-config" in restore.options["dependencies"]
    assert "prod-g2-primary-restore" in reg(r, COMMAND, "prod-g2-primary-roles").options["dependencies"]
    # g2 archives into its own stanza; its config also names g1's, to read it.
    conf = inputs(r, COMMAND, "prod-g2-primary-pgbackrest")
    assert script_param(conf["create"], "STANZA") == "hcb_production-g2"
    assert "[hcb_production-g1]" in conf["stdin"] and "[hcb_production-g2]" in conf["stdin"]
    assert "[hcb_production-g2]" not in inputs(r, COMMAND, "prod-g1-primary-pgbackrest")["stdin"]
    # Not active yet: DNS and the URL still point at g1.
    assert r.outputs["primary_private_ip"] == "10.0.1.5"
    assert inputs(r, RRSET, "prod-dns-record")["records"][0]["value"] == "10.0.1.5"


def test_g2_servers_get_the_same_server_settings_as_g1(runs):
    r = runs["restored"]
    g1, g2 = inputs(r, SERVER, "prod-g1-primary"), inputs(r, SERVER, "prod-g2-primary")
    differing = {k for k in g1.keys() | g2.keys() if g1.get(k) != g2.get(k)}
    assert differing <= {"name", "networks", "labels"}, differing
    assert g2["deleteProtection"] is True and g2["rebuildProtection"] is True


# --- (b) cutover -----------------------------------------------------------------------------------


def test_cutover_moves_only_the_dns_record_and_the_outputs(runs):
    before, after = runs["restored"], runs["cutover"]
    d = diff(before, after)
    assert d.appeared == set() and d.gone == set()
    assert d.changed == {(RRSET, "prod-dns-record"): {"records"}}
    record = inputs(after, RRSET, "prod-dns-record")["records"]
    assert record == [{"value": "10.0.1.7", "comment": "pgstack generation g2"}]
    assert d.outputs == {
        "active_cluster",
        "primary_public_ip",
        "primary_private_ip",
        "replica_private_ips",
        "database_url",
        "replica_database_url",
    }
    assert after.outputs["active_cluster"] == "g2"
    assert "@10.0.1.8:5432/" in after.outputs["replica_database_url"]
    assert after.outputs["replica_private_ips"] == ["10.0.1.8"]
    old_url, new_url = before.outputs["database_url"], after.outputs["database_url"]
    assert new_url == old_url.replace("@10.0.1.5:", "@10.0.1.7:"), "same role and password, new host"
    assert "database_url" in after.secret_outputs
    assert secrets(before) == secrets(after)


# --- (c) the restore block after the restore ----------------------------------------------------------


def test_editing_the_restore_block_later_changes_only_what_the_restore_step_ignores(runs):
    before, after = runs["cutover"], runs["retimed"]
    d = diff(before, after)
    assert d.appeared == set() and d.gone == set() and d.outputs == set()
    assert set(d.changed) == {RESTORE}
    assert d.changed[RESTORE] <= set(reg(after, *RESTORE).options["ignoreChanges"])
    a, b = snapshot(before)[RESTORE], snapshot(after)[RESTORE]
    assert {k: v for k, v in a.items() if k not in CREATE_ONLY} == {k: v for k, v in b.items() if k not in CREATE_ONLY}


def test_removing_the_restore_block_keeps_g2_and_runs_nothing_destructive(runs):
    """The restore step and the config step before it leave the program. Deleting a remote Command
    runs only its `delete` text, and these have none: nothing runs on the server. The server, its
    install/cluster/configure steps and the roles are unchanged; pgBackRest's config drops g1's
    stanza (no longer read), so the pgbackrest steps re-run their idempotent script."""
    before, after = runs["cutover"], runs["block_removed"]
    d = diff(before, after)
    assert d.appeared == set()
    config_first = (COMMAND, "prod-g2-primary-pgbackrest-config")
    assert d.gone == {RESTORE, config_first}
    for gone in d.gone:
        assert "delete" not in reg(before, *gone).inputs, f"{gone[1]}: deleting it would run a command"
    assert d.changed == {
        (COMMAND, "prod-g2-primary-pgbackrest"): {"stdin", "triggers"},
        (COMMAND, "prod-g2-replica-1-pgbackrest"): {"stdin", "triggers"},
    }
    assert G2_PRIMARY not in d.changed and G2_PRIMARY in snapshot(after)
    conf = inputs(after, COMMAND, "prod-g2-primary-pgbackrest")["stdin"]
    assert "[hcb_production-g2]" in conf and "[hcb_production-g1]" not in conf
    assert d.outputs == set()
    assert secrets(before) == secrets(after)


# --- (d) retiring g1 ---------------------------------------------------------------------------------


def test_retiring_g1_first_lifts_only_its_protection(runs):
    before, after = runs["block_removed"], runs["g1_unprotected"]
    d = diff(before, after)
    assert d.appeared == set() and d.gone == set() and d.outputs == set()
    flags = {"deleteProtection", "rebuildProtection"}
    assert d.changed == {(SERVER, "prod-g1-primary"): flags, (SERVER, "prod-g1-replica-1"): flags}
    for name in ("prod-g1-primary", "prod-g1-replica-1"):
        server = inputs(after, SERVER, name)
        assert server["deleteProtection"] is False and server["rebuildProtection"] is False
    assert inputs(after, SERVER, "prod-g2-primary")["deleteProtection"] is True


def test_removing_g1_removes_only_g1(runs):
    before, after = runs["g1_unprotected"], runs["g1_removed"]
    d = diff(before, after)
    assert d.appeared == set()
    assert d.gone == of_generation(before, "g1") and len(d.gone) == 34
    assert d.changed == {MONITORING_CONFIGURE: {"create", "triggers"}}, (
        "removing g1 changed inputs of g2 or shared resources other than the monitoring server's targets"
    )
    scraped = script_param(command_text(one(after.mocks, *MONITORING_CONFIGURE)), "PROMETHEUS_YML")
    assert "10.0.1.5:" not in scraped, "the monitoring server still scrapes the removed g1"
    assert d.outputs == {"stanza_g1"}
    assert secrets(before) == secrets(after)


def test_secrets_never_change_through_the_runbook(runs):
    first = secrets(runs["base"])
    assert first, "no RandomPassword registered"
    for step, result in runs.items():
        assert secrets(result) == first, f"{step}: a secret's inputs changed"


# --- (e), (f) removals that are refused ---------------------------------------------------------------


def refused(*edits) -> ConfigError:
    mocks = IdMocks()
    with pytest.raises(ConfigError) as info:
        run(*edits, mocks=mocks)
    assert mocks.registrations == [], f"{info.value.key}: resources were registered before the error"
    return info.value


def test_removing_the_active_generation_is_refused():
    exc = refused(add_g2(), drop_restore("g2"), remove("g1"))
    assert exc.key == "pgstack:active"
    assert "set it to the generation clients should use" in exc.detail


def test_removing_a_generation_another_one_restores_from_is_refused():
    exc = refused(add_g2(), set_active("g2"), remove("g1"))
    assert exc.key == "pgstack:clusters.g2.restore.from"
    assert "keep the source until g2 has its own full backup" in exc.detail
    assert "remove the restore block from clusters.g2" in exc.detail


@pytest.mark.parametrize(
    ("config_value", "rendered"),
    [
        # The example: cut to milliseconds, a commit at .123400 would have been lost.
        ("2026-12-01T23:11:10.123456+05:30", "2026-12-01 17:41:10.123456+00:00"),
        ("2026-12-01T17:41:10.000001+00:00", "2026-12-01 17:41:10.000001+00:00"),
        ("2026-12-01T17:41:10.9+00:00", "2026-12-01 17:41:10.900000+00:00"),
        ("2026-12-01T17:41:10-08:00", "2026-12-02 01:41:10.000000+00:00"),
        ("latest", "latest"),
    ],
)
def test_recovery_target_keeps_microseconds(config_value, rendered):
    assert pgbackrest_conf.recovery_target(config_value) == rendered


def test_a_target_finer_than_microseconds_is_refused_naming_the_key():
    def edit(cfg):
        cfg["pgstack:clusters"]["g2"] = {
            "primaryIp": "10.0.1.7",
            "restore": {"from": "g1", "targetTime": "2026-05-25T10:00:00.1234567+00:00"},
        }

    with pytest.raises(ConfigError) as err:
        run_stack("prod", edit=edit)
    assert err.value.key == "pgstack:clusters.g2.restore.targetTime"
    assert "at most six" in str(err.value)
