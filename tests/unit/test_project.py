"""The project files: Pulumi.yaml documents the config, the prod stack holds seed 000 and no
plaintext secret, __main__.py stays a one-liner, and the guest scripts are strict bash."""

from __future__ import annotations

import ast
import shutil
import subprocess

import pytest
import yaml

import config
from tests.conftest import REPO

SCRIPTS = sorted((REPO / "components" / "scripts").glob("*.sh"))
# Programs the scripts install on the guests (see test_shipped_files.py): strict bash too.
PROGRAMS = sorted((REPO / "components" / "scripts" / "bin").iterdir())
# Pulumi project config types a KEYS kind maps to; objects have no Pulumi type.
PULUMI_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean", "array": "array", "object": None}


@pytest.fixture(scope="module")
def project_config() -> dict:
    return yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]


@pytest.fixture(scope="module")
def prod_config() -> dict:
    return yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]


def test_pulumi_yaml_documents_exactly_the_keys(project_config):
    documented = set(project_config)
    expected = {f"{config.NAMESPACE}:{key}" for key in config.KEYS}
    assert documented == expected, (
        f"undocumented: {sorted(expected - documented)}; documented but unknown: {sorted(documented - expected)}"
    )


@pytest.mark.parametrize("key", sorted(config.KEYS))
def test_pulumi_yaml_key_matches_keys(project_config, key):
    spec = config.KEYS[key]
    entry = project_config.get(f"pgstack:{key}") or {}
    assert str(entry.get("description", "")).strip(), f"pgstack:{key} has no description"
    want = PULUMI_TYPES[spec.kind]
    assert entry.get("type") == want, f"pgstack:{key}: type {entry.get('type')!r}, KEYS says {spec.kind}"
    if spec.kind == "array":
        assert "items" in entry, f"pgstack:{key}: an array needs items"
    assert bool(entry.get("secret", False)) == spec.secret, f"pgstack:{key}: secret flag differs from KEYS"
    if "Required" in str(entry.get("description", "")):
        assert "default" not in entry, f"pgstack:{key} is required, so it may not have a default"


def test_required_keys_are_marked_required(project_config):
    for key in ("target", "clusters", "active", "database", "roles"):
        assert "Required" in project_config[f"pgstack:{key}"]["description"], f"pgstack:{key}"
        assert "default" not in project_config[f"pgstack:{key}"], f"pgstack:{key}"


def test_prod_stack_holds_no_plaintext_secret(prod_config):
    for key, spec in config.KEYS.items():
        value = prod_config.get(f"pgstack:{key}")
        if spec.secret and value is not None:
            assert isinstance(value, dict) and set(value) == {"secure"}, f"pgstack:{key} is in plain text"
    text = (REPO / "Pulumi.prod.yaml").read_text()
    assert "PRIVATE KEY" not in text


def test_prod_stack_uses_only_known_keys(prod_config):
    known = {f"pgstack:{k}" for k, spec in config.KEYS.items() if not spec.sandbox_only}
    assert set(prod_config) <= known, sorted(set(prod_config) - known)


def test_prod_stack_holds_seed_000(prod_config):
    hz = prod_config["pgstack:hetzner"]
    assert hz["location"] == "ash"
    assert hz["serverType"] == "ccx13"
    assert hz["image"] == "ubuntu-24.04"
    assert hz["networkCidr"] == "10.0.0.0/16"
    assert hz["subnetCidr"] == "10.0.1.0/24"
    assert prod_config["pgstack:target"] == "hetzner"
    assert prod_config["pgstack:database"]["name"] == "hcb_production"
    app = prod_config["pgstack:roles"]["app"]
    assert app["name"] == "rails"
    assert app["connectionLimit"] == 500


def test_main_only_builds_from_settings():
    tree = ast.parse((REPO / "__main__.py").read_text())
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    statements = [node for node in body if not isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(statements) <= 2, f"__main__.py does work of its own: {[ast.unparse(s) for s in statements]}"
    calls = [ast.unparse(s) for s in statements]
    assert "build(load_settings())" in calls, "__main__.py must call build(load_settings())"


@pytest.mark.parametrize("script", SCRIPTS + PROGRAMS, ids=lambda p: p.name)
def test_script_is_strict_bash(script):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash", f"{script.name}: first line {lines[0]!r}"
    if script.name != "lib.sh":  # sourced by the others, which set the options
        assert "set -euo pipefail" in lines, f"{script.name}: no `set -euo pipefail`"


def test_there_are_scripts():
    assert {"install.sh", "configure.sh", "lib.sh"} <= {p.name for p in SCRIPTS}


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed; install it (apt-get install shellcheck) to check the guest scripts")
    proc = subprocess.run(
        [shellcheck, "-x", *[str(p.relative_to(REPO / "components" / "scripts")) for p in SCRIPTS + PROGRAMS]],
        cwd=REPO / "components" / "scripts",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"shellcheck -x found problems:\n{proc.stdout}{proc.stderr}"
