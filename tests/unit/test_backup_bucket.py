"""The backup bucket on the prod stack: its provider, what survives a destroy, how the keys travel,
and the pgbackrest.conf and postgresql.conf settings the backups depend on."""

from __future__ import annotations

import json
import re

import pytest

from postgres import pgbackrest as pgbackrest_conf
from postgres.layout import layout
from postgres.pgbackrest import RepoOptions
from sandbox import program
from tests.conftest import SECRETS, run_stack
from tests.unit.support import COMMAND, PASSWORD, IdMocks, command_text, one, password_for, script_param

PROVIDER = "pulumi:providers:aws"
BUCKET = "aws:s3/bucket:Bucket"
STANZA = "hcb_production-g1"
PG_STEPS = ("prod-g1-primary-pgbackrest", "prod-g1-replica-1-pgbackrest")

PG15 = layout(15)


@pytest.fixture(scope="module")
def prod() -> tuple[program.RunResult, IdMocks]:
    mocks = IdMocks()
    return run_stack("prod", mocks=mocks), mocks


def conf_lines(text: str) -> dict[str, str]:
    """The [global] section of a pgbackrest.conf as option -> value."""
    section = text.split("[global]\n", 1)[1].split("\n\n", 1)[0]
    return dict(line.split("=", 1) for line in section.splitlines() if line and not line.startswith("#"))


def pgbackrest_steps(result: program.RunResult) -> list[program.Registration]:
    steps = [r for r in result.mocks.of_type(COMMAND) if r.name.endswith(("-pgbackrest", "-pgbackrest-config"))]
    assert {r.name for r in steps} == set(PG_STEPS)
    return steps


# --- the provider and the bucket -------------------------------------------------------------------


def test_provider_points_at_hetzner_with_aws_checks_off(prod):
    result, _ = prod
    provider = one(result.mocks, PROVIDER, "prod-backups-s3")
    inputs = provider.inputs
    # A provider's inputs reach the engine as strings (objects as JSON).
    for flag in (
        "skipCredentialsValidation",
        "skipRegionValidation",
        "skipRequestingAccountId",
        "skipMetadataApiCheck",
    ):
        assert inputs[flag] == "true", flag
    assert inputs["s3UsePathStyle"] == "true"
    assert json.loads(inputs["endpoints"]) == [{"s3": "https://fsn1.your-objectstorage.com"}]
    assert program.is_secret(inputs["accessKey"]) and program.is_secret(inputs["secretKey"])
    assert program.unwrap(inputs["accessKey"]) == SECRETS["pgstack:s3AccessKey"]
    assert program.unwrap(inputs["secretKey"]) == SECRETS["pgstack:s3SecretKey"]
    assert provider.parent == "prod-backups"


def test_bucket_uses_that_provider(prod):
    result, mocks = prod
    bucket = one(result.mocks, BUCKET, "prod-backups")
    ref = bucket.options["provider"]
    assert ref is not None, "the bucket uses the default aws provider"
    urn, _, pid = ref.rpartition("::")
    assert urn.endswith(f"${PROVIDER}::prod-backups-s3"), ref
    assert pid == mocks.id_of(PROVIDER, "prod-backups-s3")


def test_bucket_name_comes_from_config_and_is_never_force_destroyed(prod):
    result, _ = prod
    bucket = one(result.mocks, BUCKET, "prod-backups")
    assert bucket.inputs["bucket"] == "hcb-production-postgres"
    assert bucket.inputs["forceDestroy"] is False


def test_no_lifecycle_rule_and_nothing_public(prod):
    result, _ = prod
    types = {r.type for r in result.mocks.registrations}
    assert not [t for t in types if t.startswith("aws:s3/bucketLifecycleConfiguration")], types
    assert not [t for t in types if re.match(r"aws:s3/bucket(Acl|Policy)", t)], types
    # The only AWS resource of a hetzner stack is the bucket (its provider aside).
    assert {t for t in types if t.startswith("aws:")} == {BUCKET}
    inputs = one(result.mocks, BUCKET, "prod-backups").inputs
    assert not {"lifecycleRules", "acl", "grants", "policy", "website"} & set(inputs), sorted(inputs)


def test_bucket_and_passphrase_survive_destroy(prod):
    result, _ = prod
    assert one(result.mocks, BUCKET, "prod-backups").options["retainOnDelete"] is True
    cipher = one(result.mocks, PASSWORD, "prod-backups-cipher")
    assert cipher.options["retainOnDelete"] is True
    assert set(cipher.options["ignoreChanges"]) >= {"length", "special", "upper", "lower", "numeric", "keepers"}
    assert "keepers" not in cipher.inputs
    assert "result" in cipher.options["additionalSecretOutputs"]


# --- how the keys and the passphrase travel ----------------------------------------------------------


def test_pgbackrest_steps_take_the_config_on_secret_stdin_only(prod):
    result, _ = prod
    passphrase = password_for("prod-backups-cipher", 64)
    secrets = [passphrase, SECRETS["pgstack:s3AccessKey"], SECRETS["pgstack:s3SecretKey"]]
    for step in pgbackrest_steps(result):
        assert program.is_secret(step.inputs["stdin"]), step.name
        conf = program.unwrap(step.inputs["stdin"])
        assert f"repo1-cipher-pass={passphrase}\n" in conf, step.name
        text = command_text(step)
        for secret in secrets:
            assert secret not in text, f"{step.name}: a key or the passphrase is in the command text"
        assert script_param(text, "STANZA") == STANZA


def test_no_secret_appears_outside_a_secret_envelope(prod):
    result, _ = prod
    secrets = [password_for("prod-backups-cipher", 64), SECRETS["pgstack:s3AccessKey"], SECRETS["pgstack:s3SecretKey"]]
    for reg in result.mocks.registrations:
        shown = json.dumps(program.redact(reg.inputs))
        for secret in secrets:
            assert secret not in shown, f"{reg.type} {reg.name} holds a key or the passphrase in plain text"


def test_stack_outputs(prod):
    result, _ = prod
    assert result.outputs["backup_repository"] == "s3://hcb-production-postgres/pgbackrest"
    assert "backup_repository" not in result.secret_outputs
    assert result.outputs["backup_cipher_passphrase"] == password_for("prod-backups-cipher", 64)
    assert "backup_cipher_passphrase" in result.secret_outputs
    assert result.outputs["stanza_g1"] == STANZA


# --- pgbackrest.conf (the pure renderer) ---------------------------------------------------------------


def repo_options(**kw) -> RepoOptions:
    values = {
        "bucket": "hcb-production-postgres",
        "endpoint": "fsn1.your-objectstorage.com",
        "region": "fsn1",
        "path": "/pgbackrest",
        "retention_full_days": 30,
        "retention_full_count": None,
        "process_max": 4,
        "archive_push_queue_max": "4GiB",
        "archive_push_io_timeout_seconds": 10,
    }
    return RepoOptions(**{**values, **kw})


def rendered(**kw) -> dict[str, str]:
    return conf_lines(pgbackrest_conf.render(repo_options(**kw), PG15, [STANZA], "AK", "SK", "PASS"))


def test_rendered_conf_settings():
    conf = rendered()
    assert conf["repo1-type"] == "s3"
    assert conf["repo1-s3-endpoint"] == "fsn1.your-objectstorage.com"
    assert conf["repo1-s3-bucket"] == "hcb-production-postgres"
    assert conf["repo1-s3-uri-style"] == "path"
    assert conf["repo1-path"] == "/pgbackrest"
    assert conf["repo1-cipher-type"] == "aes-256-cbc"
    assert conf["repo1-cipher-pass"] == "PASS"
    assert conf["repo1-s3-key"] == "AK" and conf["repo1-s3-key-secret"] == "SK"
    assert conf["repo1-bundle"] == "y"
    assert conf["compress-type"] == "zst"
    assert conf["process-max"] == "4"
    assert conf["start-fast"] == "y"
    assert conf["archive-async"] == "y"
    assert conf["archive-push-queue-max"] == "4GiB"


def test_only_wal_pushes_get_the_short_io_timeout():
    """A dead store must be noticed fast by archive-push; backups keep pgBackRest's default."""
    text = pgbackrest_conf.render(repo_options(archive_push_io_timeout_seconds=7), PG15, [STANZA], "AK", "SK", "PASS")
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif line and not line.startswith("#"):
            sections.setdefault(current, []).append(line)
    assert sections["global:archive-push"] == ["io-timeout=7"], sections
    assert not [
        line
        for name, lines in sections.items()
        if name != "global:archive-push"
        for line in lines
        if line.startswith("io-timeout")
    ], sections


def test_retention_is_thirty_days_by_default_and_a_count_when_set():
    conf = rendered()
    assert (conf["repo1-retention-full-type"], conf["repo1-retention-full"]) == ("time", "30")
    conf = rendered(retention_full_count=2)
    assert (conf["repo1-retention-full-type"], conf["repo1-retention-full"]) == ("count", "2")


def test_storage_port_and_tls_verification_only_when_overridden():
    conf = rendered()
    assert "repo1-storage-port" not in conf and "repo1-storage-verify-tls" not in conf
    conf = rendered(endpoint="127.0.0.1:9000", verify_tls=False)
    assert conf["repo1-s3-endpoint"] == "127.0.0.1"
    assert conf["repo1-storage-port"] == "9000"
    assert conf["repo1-storage-verify-tls"] == "n"


def test_each_stanza_has_its_section():
    text = pgbackrest_conf.render(repo_options(), PG15, [STANZA, "hcb_production-g0"], "AK", "SK", "PASS")
    for stanza in (STANZA, "hcb_production-g0"):
        assert f"\n[{stanza}]\npg1-path={PG15.data_dir}\n" in text


def test_prod_steps_carry_the_rendered_conf(prod):
    result, _ = prod
    conf = conf_lines(program.unwrap(one(result.mocks, COMMAND, "prod-g1-primary-pgbackrest").inputs["stdin"]))
    assert conf == rendered() | {
        "repo1-s3-key": SECRETS["pgstack:s3AccessKey"],
        "repo1-s3-key-secret": SECRETS["pgstack:s3SecretKey"],
        "repo1-cipher-pass": password_for("prod-backups-cipher", 64),
    }


def test_sandbox_overrides_reach_the_conf():
    def edit(cfg):
        cfg["pgstack:sandbox"] = {"s3Port": 9000, "s3VerifyTls": False}

    result = run_stack("prod", edit=edit, allow_sandbox=True)
    for step in pgbackrest_steps(result):
        conf = conf_lines(program.unwrap(step.inputs["stdin"]))
        assert conf["repo1-storage-port"] == "9000" and conf["repo1-storage-verify-tls"] == "n", step.name


# --- postgresql.conf -------------------------------------------------------------------------------------


def archive_settings(result: program.RunResult, server: str) -> dict[str, str]:
    text = script_param(command_text(one(result.mocks, COMMAND, f"{server}-configure")), "PG_CONF")
    pairs = (line.split(" = ", 1) for line in text.splitlines() if " = " in line and not line.startswith("#"))
    return {k: v for k, v in pairs if k.startswith("archive_")}


@pytest.mark.parametrize("server", ["prod-g1-primary", "prod-g1-replica-1"])
def test_archive_timeout_is_sixty_seconds_by_default(prod, server):
    result, _ = prod
    settings = archive_settings(result, server)
    assert settings["archive_timeout"] == "60s"
    assert settings["archive_mode"] == "on"
    assert settings["archive_command"] == f"'pgbackrest --stanza={STANZA} archive-push %p'"


def test_archive_timeout_follows_the_backup_key():
    def edit(cfg):
        cfg["pgstack:backup"]["archiveTimeoutSeconds"] = 30

    assert archive_settings(run_stack("prod", edit=edit), "prod-g1-primary")["archive_timeout"] == "30s"
