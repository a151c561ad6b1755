"""pgstack:postgres.version: the PostgreSQL major version, 15 only; aws.engineVersion must run it."""

from __future__ import annotations

import pytest

import config
from config import ConfigError
from tests.conftest import stack_config


def settings(stack: str = "prod", edit=None) -> config.Settings:
    return config.settings_from_mapping(stack_config(stack, edit), project="pgstack", stack=stack)


def refused(stack: str, edit) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        settings(stack, edit)
    return err.value


def postgres(**values):
    return lambda cfg: cfg.setdefault("pgstack:postgres", {}).update(values)


def engine(version: str):
    return lambda cfg: cfg["pgstack:aws"].update(engineVersion=version)


def test_supported_versions_are_a_constant_of_config():
    assert config.SUPPORTED_POSTGRES_VERSIONS == (15,)
    assert config.KEYS["postgres"] == config.schema.Key("object")


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_the_version_defaults_to_15(stack):
    assert settings(stack).postgres.version == 15


def test_15_is_accepted():
    assert settings(edit=postgres(version=15)).postgres.version == 15


@pytest.mark.parametrize("version", [14, 16, 17])
def test_other_versions_are_refused_naming_the_supported_ones(version):
    err = refused("prod", postgres(version=version))
    assert err.key == "pgstack:postgres.version"
    assert str(err) == f"pgstack:postgres.version: {version}: not supported; pgstack supports PostgreSQL 15"


def test_an_unknown_postgres_subkey_is_refused():
    err = refused("prod", postgres(major=15))
    assert err.key == "pgstack:postgres.major"
    assert "unknown key" in err.detail


def test_aws_engine_version_of_another_major_is_refused_as_before():
    err = refused("staging", engine("16"))
    # Word for word what the engineVersion pattern said when it only matched 15.
    assert str(err) == (
        "pgstack:aws.engineVersion: '16': value not allowed; pgstack runs PostgreSQL 15 on RDS: write 15, "
        "or 15.x to pin the minor version"
    )


@pytest.mark.parametrize("version", ["15", "15.7", "15.10"])
def test_aws_engine_version_of_postgres_version_is_accepted(version):
    assert settings("staging", engine(version)).aws.engine_version == version  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["fifteen", "15.", "15.123", "1.5"])
def test_aws_engine_version_that_is_no_version_gets_the_hint(version):
    err = refused("staging", engine(version))
    assert err.key == "pgstack:aws.engineVersion"
    assert "value not allowed; write a PostgreSQL version" in err.detail


def test_aws_engine_version_follows_postgres_version(monkeypatch):
    """With a second supported version, engineVersion must have the major of postgres.version."""
    monkeypatch.setattr(config.model, "SUPPORTED_POSTGRES_VERSIONS", (15, 16))
    assert settings("staging", lambda c: (postgres(version=16)(c), engine("16.1")(c))).postgres.version == 16
    err = refused("staging", postgres(version=16))  # engineVersion left at its default, 15
    assert str(err) == (
        "pgstack:aws.engineVersion: '15': value not allowed; pgstack runs PostgreSQL 16 on RDS: write 16, "
        "or 16.x to pin the minor version"
    )
    assert "supports PostgreSQL 15 and 16" in str(refused("prod", postgres(version=17)))
