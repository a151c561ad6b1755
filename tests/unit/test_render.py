"""`python -m sandbox render`: the files it writes, and the canary check that keeps secrets out."""

from __future__ import annotations

import base64
import json
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

from sandbox import program
from sandbox import render as sandbox_render
from sandbox.render import LeakError, find_leaks

TYPES = {
    "hcloud:index/server:Server",
    "hcloud:index/network:Network",
    "hcloud:index/networkSubnet:NetworkSubnet",
    "hcloud:index/placementGroup:PlacementGroup",
    "hcloud:index/firewall:Firewall",
}
HBA_APP_LINE = re.compile(r"^hostssl\s+hcb_production\s+rails\s+10\.0\.1\.0/24\s+scram-sha-256\s*$", re.M)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, program.RunResult, list[str]]:
    out = tmp_path_factory.mktemp("render") / "prod"
    result = sandbox_render.render("prod", out)
    canaries = list(result.mocks.canaries)  # type: ignore[attr-defined]
    return out, result, canaries


def test_resources_json_lists_every_registration(rendered):
    out, result, _ = rendered
    resources = json.loads((out / "resources.json").read_text())
    assert isinstance(resources, list)
    assert len(resources) == len(result.mocks.registrations)
    for item in resources:
        assert set(item) == {"type", "name", "parent", "inputs"}, item
        assert isinstance(item["inputs"], dict), item["name"]
    types = {item["type"] for item in resources}
    assert types >= TYPES, f"missing: {sorted(TYPES - types)}"
    groups = [r for r in resources if r["type"] == "hcloud:index/placementGroup:PlacementGroup"]
    assert [g["inputs"]["type"] for g in groups] == ["spread"]


def test_secrets_are_marked_not_dropped(rendered):
    out, _, _ = rendered
    resources = json.loads((out / "resources.json").read_text())
    commands = [r for r in resources if r["type"] == "command:remote:Command"]
    assert commands
    for cmd in commands:
        assert cmd["inputs"]["connection"] == program.SECRET_MARK, f"{cmd['name']}: connection is not redacted"
    outputs = json.loads((out / "outputs.json").read_text())
    assert outputs["database_url"] == program.SECRET_MARK
    assert outputs["primary_private_ip"] == "10.0.1.5"


def test_commands_hold_the_server_scripts(rendered):
    out, _, _ = rendered
    scripts = {p.name for p in (out / "commands").iterdir()}
    assert {"prod-g1-primary-install.sh", "prod-g1-primary-configure.sh"} <= scripts, sorted(scripts)
    configure = (out / "commands" / "prod-g1-primary-configure.sh").read_text()
    assert HBA_APP_LINE.search(configure), "prod-g1-primary-configure.sh lacks the app's pg_hba line"
    assert "set -euo pipefail" in configure
    assert program.SECRET_MARK not in configure, "the configure script is a secret, so nobody can review it"


def test_canaries_cover_every_secret(rendered):
    _, result, canaries = rendered
    generated = result.mocks.of_type("random:index/randomPassword:RandomPassword")
    assert len(canaries) >= len(generated) + 3, "every password and every secret key needs a canary"


def test_rendered_files_hold_no_canary(rendered):
    out, _, canaries = rendered
    assert canaries
    assert find_leaks(out, canaries) == []


# --- the canary check can fail --------------------------------------------------------------------

CANARY = "canary/S3cr+t=value&x y~z0123456789"


def b64_embedded(canary: str, offset: int) -> str:
    return base64.b64encode(b"header:" + b"#" * offset + canary.encode() + b":trailer-bytes").decode()


FORMS = {
    "raw": lambda c: c,
    "url-quote": lambda c: urllib.parse.quote(c, safe=""),
    "url-quote-plus": lambda c: urllib.parse.quote_plus(c),
    **{f"base64-offset-{k}": (lambda c, k=k: b64_embedded(c, k)) for k in range(6)},
}


@pytest.mark.parametrize("form", list(FORMS))
def test_find_leaks_reports_an_encoded_canary(rendered, tmp_path, form):
    out, _, _ = rendered
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert find_leaks(copy, [CANARY]) == [], "the clean copy already holds the canary"
    encoded = FORMS[form](CANARY)
    assert CANARY not in encoded or form == "raw"
    path = copy / "commands" / "prod-g1-primary-configure.sh"
    path.write_text(path.read_text() + f"\necho {encoded}\n")
    leaks = find_leaks(copy, [CANARY])
    assert leaks, f"a {form} canary went unnoticed"
    assert all(leak.startswith("commands/prod-g1-primary-configure.sh:") for leak in leaks), leaks


def test_render_raises_when_a_secret_leaks(monkeypatch, tmp_path):
    monkeypatch.setattr(program, "redact", lambda value: value)
    with pytest.raises(LeakError) as info:
        sandbox_render.render("prod", tmp_path / "leaky")
    assert info.value.leaks
    assert any(leak.startswith("resources.json:") for leak in info.value.leaks), info.value.leaks
