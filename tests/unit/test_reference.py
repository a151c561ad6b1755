"""The config reference: Pulumi.yaml's `config:` section is generated from the declarations, and
config.KEYS is derived from them, so a key's type, default and meaning are written once."""

from __future__ import annotations

import ast

import pytest
import yaml

import config
from config import reference, schema
from config.model import Backup, Settings
from tests.conftest import REPO

PROJECT = REPO / "Pulumi.yaml"


def described(key: str) -> str:
    """A key's description as the generated section holds it (wrapping folded away)."""
    return yaml.safe_load(reference.section())["config"][f"pgstack:{key}"]["description"]


def test_checked_in_pulumi_yaml_is_the_generated_one():
    current = PROJECT.read_text()
    assert reference.project_file(current) == current, (
        "Pulumi.yaml differs from the declarations: run `.venv/bin/python -m config.reference --write`"
    )


def test_the_rest_of_pulumi_yaml_is_kept():
    generated = yaml.safe_load(reference.project_file(PROJECT.read_text()))
    assert generated["name"] == "pgstack"
    assert generated["runtime"]["name"] == "python"
    assert "# Every key the program reads." in PROJECT.read_text().partition("\nconfig:\n")[0]


def test_a_changed_nested_default_is_picked_up(monkeypatch):
    assert "retentionFullDays (integer 1..3650, default 30)" in described("backup")
    monkeypatch.setattr(Backup.model_fields["retention_full_days"], "default", 7)
    assert "retentionFullDays (integer 1..3650, default 7): how long full backups are kept" in described("backup")
    assert reference.project_file(PROJECT.read_text()) != PROJECT.read_text()


def test_a_changed_top_level_default_is_picked_up(monkeypatch):
    monkeypatch.setattr(Settings.model_fields["allow_ssh_from_anywhere"], "default", True)
    entry = yaml.safe_load(reference.section())["config"]["pgstack:allowSshFromAnywhere"]
    assert entry["default"] is True


def test_check_fails_on_a_hand_edit_and_write_repairs_it(tmp_path, capsys):
    copy = tmp_path / "Pulumi.yaml"
    copy.write_text(PROJECT.read_text())
    assert reference.main(["--check", "--file", str(copy)]) == 0
    copy.write_text(copy.read_text().replace("default 30)", "default 31)"))
    assert reference.main(["--check", "--file", str(copy)]) == 1
    out, err = capsys.readouterr()
    assert "default 31)" in out and "default 30)" in out, out  # the diff
    assert "is out of date: run `python -m config.reference --write`" in err
    assert reference.main(["--write", "--file", str(copy)]) == 0
    assert copy.read_text() == PROJECT.read_text()


def test_object_keys_list_their_subfields_with_type_default_and_description():
    roles = described("roles")
    assert "connectionLimit (integer 1..10000, default 20): the sessions it may hold" in roles
    assert "migrator (object, default {name: migrator, connectionLimit: 5})" in roles
    assert "{fields as app, without runsMigrations}" in roles  # a model met again is not repeated
    assert "targetTime (string, required)" in described("clusters")
    assert "cpuPercent (object, default {warning: 80, critical: 95})" in described("aws")
    assert "version (integer, default 15): the major version of every generation" in described("postgres")


def test_description_lines_fit_the_width():
    for line in PROJECT.read_text().splitlines():
        assert len(line) <= reference.WIDTH or " " not in line.strip(), line


def test_keys_are_derived_from_settings():
    assert config.KEYS == schema.keys(Settings)
    assert "project" not in config.KEYS and "stack" not in config.KEYS  # set by the program
    assert {k for k, s in config.KEYS.items() if s.secret} == {
        "sshPrivateKey",
        "s3AccessKey",
        "s3SecretKey",
        "backupCipherPassphrase",
        "pagerdutyEndpoint",
        "alertsPingKey",
        "alertsApiKey",
        "monitoringSmtpPassword",
        "monitoringWebhookUrl",
        "monitoringPagerdutyRoutingKey",
        "importSourceUrl",
    }
    assert [k for k, s in config.KEYS.items() if s.sandbox_only] == ["sandbox"]
    kinds = {k: s.kind for k, s in config.KEYS.items()}
    assert kinds["target"] == "string" and kinds["allowSshFromAnywhere"] == "boolean"
    assert kinds["adminCidrs"] == "array" and kinds["clusters"] == "object" and kinds["postgresql"] == "object"


def test_every_top_level_key_has_a_description():
    for name, info in Settings.model_fields.items():
        assert info.description, f"Settings.{name} has no description"


def test_a_hint_belongs_to_one_regex():
    config.fields.pattern(r"^[a-z_][a-z0-9_]{0,62}$", config.fields.PATTERN_HINTS[r"^[a-z_][a-z0-9_]{0,62}$"])
    with pytest.raises(ValueError, match="already has another hint"):
        config.fields.pattern(r"^[a-z_][a-z0-9_]{0,62}$", "another hint")


def test_pattern_hints_still_read_as_before():
    with pytest.raises(config.ConfigError) as err:
        config.settings_from_mapping(
            {
                "pgstack:target": "hetzner",
                "pgstack:clusters": {"g1": {}},
                "pgstack:active": "g1",
                "pgstack:database": {"name": "app"},
                "pgstack:roles": {"app": {"name": "rails;drop"}},
            },
            project="pgstack",
            stack="prod",
        )
    assert str(err.value) == (
        "pgstack:roles.app.name: 'rails;drop': value not allowed; use a PostgreSQL identifier: lowercase letters, "
        "digits and _, starting with a letter or _, at most 63 characters"
    )


def _imports(path, package: str) -> set[str]:
    """The config modules a module imports, TYPE_CHECKING imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{package}."):
            found.add(node.module.split(".")[1])
    return found


def test_config_modules_import_each_other_without_a_cycle():
    modules = {p.stem: p for p in (REPO / "config").glob("*.py")}
    graph = {name: _imports(path, "config") & set(modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, f"import cycle: {' -> '.join([*stack, name])}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*stack, name))
            done.add(name)

    for name in graph:
        visit(name, ())
    assert "model" not in graph["aws"] and "aws" in graph["model"], graph
