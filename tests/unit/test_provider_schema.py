"""Registered inputs against the providers' published schemas: what `pulumi preview` would refuse.

The schemas are vendored in tests/provider_schemas (see its README), so a clean clone carries
them. For every hcloud, command and random resource of every Hetzner stack: no unknown property,
every required input present, and the right JSON type, following `$ref`s into the shared types.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from sandbox import program
from tests.conftest import REPO, run_stack

SCHEMA_DIR = REPO / "tests" / "provider_schemas"
PACKAGES = ("hcloud", "command", "random")


@functools.cache
def schema(package: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{package}.json"
    if not path.exists():
        pytest.fail(f"provider schema {path} is missing: it is vendored in tests/provider_schemas")
    return json.loads(path.read_text())


def package_of(type_token: str) -> str:
    return type_token.split(":", 1)[0]


def check(value: Any, spec: dict[str, Any], package: str, where: str) -> list[str]:
    """Errors of `value` against a property spec of `package`'s schema, each naming its path."""
    if "$ref" in spec:
        ref = spec["$ref"]
        if ref == "pulumi.json#/Any":
            return []
        if not ref.startswith("#/types/"):
            return [f"{where}: cannot check $ref {ref}"]
        type_spec = schema(package).get("types", {}).get(ref[len("#/types/") :])
        if type_spec is None:
            return [f"{where}: $ref {ref} is not in the {package} schema"]
        return check(value, type_spec, package, where)
    if "oneOf" in spec:
        alternatives = [check(value, alt, package, where) for alt in spec["oneOf"]]
        return [] if any(not errs for errs in alternatives) else [f"{where}: matches none of oneOf: {alternatives}"]
    kind = spec.get("type")
    if kind == "string":
        return [] if isinstance(value, str) else [f"{where}: expected string, got {value!r}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected boolean, got {value!r}"]
    if kind == "integer":
        # The mocks deliver every number as a float.
        ok = not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
        return [] if ok else [f"{where}: expected integer, got {value!r}"]
    if kind == "number":
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
        return [] if ok else [f"{where}: expected number, got {value!r}"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected array, got {value!r}"]
        items = spec.get("items", {})
        return [e for i, item in enumerate(value) for e in check(item, items, package, f"{where}[{i}]")]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected object, got {value!r}"]
        if "properties" in spec:
            return check_properties(value, spec["properties"], spec.get("required", []), package, where)
        extra = spec.get("additionalProperties", {})
        return [e for k, v in value.items() for e in check(v, extra, package, f"{where}.{k}")]
    return [f"{where}: the schema gives no type I can check: {spec}"]


def check_properties(
    value: dict[str, Any], properties: dict[str, Any], required: list[str], package: str, where: str
) -> list[str]:
    errors = [f"{where}.{k}: unknown property" for k in value if k not in properties and not k.startswith("__")]
    errors += [f"{where}.{k}: required, missing" for k in required if value.get(k) is None]
    for key, item in value.items():
        if key in properties and item is not None:
            errors += check(item, properties[key], package, f"{where}.{key}")
    return errors


def check_resource(type_token: str, inputs: dict[str, Any]) -> list[str]:
    package = package_of(type_token)
    resource = schema(package)["resources"].get(type_token)
    if resource is None:
        return [f"{type_token} is not a resource of the {package} provider"]
    return check_properties(
        program.unwrap(inputs),
        resource.get("inputProperties", {}),
        resource.get("requiredInputs", []),
        package,
        type_token,
    )


def hetzner_stacks() -> list[str]:
    stacks = []
    for stack in program.available_stacks():
        if program.read_stack_file(stack).get("pgstack:target") == "hetzner":
            stacks.append(stack)
    return stacks


def test_schemas_are_present():
    for package in PACKAGES:
        assert schema(package)["resources"], f"{package}.json has no resources"


@pytest.mark.parametrize("stack", hetzner_stacks())
def test_registered_inputs_match_provider_schemas(stack):
    result = run_stack(stack)
    checked = [r for r in result.mocks.registrations if package_of(r.type) in PACKAGES]
    packages = {package_of(r.type) for r in checked}
    assert packages == set(PACKAGES), f"{stack}: expected resources of every provider, got {sorted(packages)}"
    internal = [(r.name, k) for r in result.mocks.registrations for k in r.inputs if k.startswith("__")]
    assert not internal, f"{stack}: the checker skips these internal keys, so they must not occur: {internal}"
    errors = [f"{r.name}: {e}" for r in checked for e in check_resource(r.type, r.inputs)]
    assert not errors, f"{stack}: inputs the providers would refuse:\n" + "\n".join(errors)


# --- the checker can fail -------------------------------------------------------------------------

SERVER = "hcloud:index/server:Server"
GOOD_SERVER = {
    "serverType": "ccx13",
    "name": "s",
    "firewallIds": [1013.0],
    "networks": [{"networkId": 1012.0, "ip": "10.0.1.5"}],
    "labels": {"a": "b"},
}


def test_checker_accepts_a_good_server():
    assert check_resource(SERVER, GOOD_SERVER) == []


@pytest.mark.parametrize(
    "bad,expected",
    [
        ({**GOOD_SERVER, "serverTyp": "ccx13"}, "Server.serverTyp: unknown property"),
        ({k: v for k, v in GOOD_SERVER.items() if k != "serverType"}, "Server.serverType: required, missing"),
        ({**GOOD_SERVER, "firewallIds": [1013.5]}, "firewallIds[0]: expected integer"),
        ({**GOOD_SERVER, "firewallIds": "1013"}, "firewallIds: expected array"),
        ({**GOOD_SERVER, "deleteProtection": "true"}, "deleteProtection: expected boolean"),
        ({**GOOD_SERVER, "networks": [{"networkId": 1, "ipAddress": "x"}]}, "networks[0].ipAddress: unknown property"),
        ({**GOOD_SERVER, "networks": [{"networkId": "net"}]}, "networks[0].networkId: expected integer"),
        ({**GOOD_SERVER, "labels": {"a": 1}}, "labels.a: expected string"),
    ],
)
def test_checker_refuses_bad_inputs(bad, expected):
    errors = check_resource(SERVER, bad)
    assert any(expected in e for e in errors), errors


def test_checker_follows_secret_envelopes_and_refs():
    conn = {program.SIG_KEY: program.SECRET_SIG, "value": {"host": "h", "port": "22"}}
    errors = check_resource("command:remote:Command", {"connection": conn})
    assert any("connection.port: expected number" in e for e in errors), errors
    errors = check_resource("command:remote:Command", {"connection": {"user": "root"}})
    assert any("connection.host: required, missing" in e for e in errors), errors
    assert check_resource("command:remote:Command", {}) == ["command:remote:Command.connection: required, missing"]


def test_checker_refuses_unknown_resource_types():
    assert check_resource("hcloud:index/serverz:Serverz", {}) != []


def test_prod_is_among_the_checked_stacks():
    assert "prod" in hetzner_stacks(), "the parametrized schema test would check no stack"
