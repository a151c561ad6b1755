"""Alerting under mocks: heartbeat steps and checks (target hetzner), RDS events and storage alarms (aws)."""

from __future__ import annotations

import io
import json
import threading
from http.server import ThreadingHTTPServer
from unittest import mock

import pytest

from components import healthchecks_api
from components.aws.rds_events import CATEGORIES
from config import ConfigError
from sandbox import healthchecks as receiver
from sandbox import program
from tests.conftest import SECRETS, run_stack
from tests.unit import aws_support as s
from tests.unit.test_provider_schema import check_resource

COMMAND = "command:remote:Command"
LOCAL = "command:local:Command"
API_KEY = "test-api-key-abcdef"
SERVERS = ("prod-g1-primary", "prod-g1-replica-1")
JOBS = ("alive", "replication", "archive", "backup-full", "backup-diff", "drill", "verify")


def with_api_key(cfg: dict) -> None:
    cfg["pgstack:alertsApiKey"] = API_KEY


@pytest.fixture(scope="module")
def prod():
    return run_stack("prod", edit=with_api_key)


def test_every_server_gets_a_heartbeat_step_with_the_ping_url_on_stdin_only(prod):
    key = SECRETS["pgstack:alertsPingKey"]
    for server in SERVERS:
        step = prod.mocks.find(f"{server}-heartbeats")
        assert step.type == COMMAND
        assert program.is_secret(step.inputs["stdin"])
        assert program.unwrap(step.inputs["stdin"]) == f"https://hc-ping.com/{key}"
        text = program.unwrap(step.inputs["create"])
        assert key not in text and f"SLUG_PREFIX={server}\n" in text and "ALIVE_INTERVAL=60s" in text
        # After pgBackRest (the drop-in extends its unit) and the checks (no ping is lost).
        deps = step.options["dependencies"]
        assert "prod-heartbeat-checks-api" in deps
        assert any(d.endswith("pgbackrest") for d in deps), deps


def test_the_checks_are_made_through_the_api_with_the_key_on_stdin(prod):
    cmd = prod.mocks.find("prod-heartbeat-checks-api")
    assert cmd.type == LOCAL and cmd.parent == "prod-heartbeat-checks"
    assert not check_resource(LOCAL, cmd.inputs)
    text = program.unwrap(cmd.inputs["create"])
    assert text == ".venv/bin/python -m components.healthchecks_api" and API_KEY not in json.dumps(
        cmd.inputs["triggers"]
    )
    assert program.is_secret(cmd.inputs["stdin"])
    spec = json.loads(program.unwrap(cmd.inputs["stdin"]))
    assert spec["api_key"] == API_KEY and spec["api_url"] == "https://healthchecks.io"
    got = {c["slug"]: (c["timeout"], c["grace"]) for c in spec["checks"]}
    assert set(got) == {f"{server}-{job}" for server in SERVERS for job in JOBS} | {"prod-monitoring-watchdog"}
    assert got["prod-g1-primary-alive"] == (60, 240)
    assert got["prod-g1-primary-backup-full"] == (7 * 86400, 4 * 3600)
    assert got["prod-g1-replica-1-replication"] == (300, 600)
    assert got["prod-g1-replica-1-drill"] == got["prod-g1-primary-verify"] == (7 * 86400, 86400)
    # The ping key is not needed to make checks, so it is not handed to the command.
    assert SECRETS["pgstack:alertsPingKey"] not in json.dumps(program.unwrap(cmd.inputs))


def test_without_an_api_key_no_checks_resource_and_heartbeats_still_run():
    result = run_stack("prod")
    assert not result.mocks.of_type(LOCAL)
    step = result.mocks.find("prod-g1-primary-heartbeats")
    assert step.options["dependencies"] and "prod-heartbeat-checks-api" not in step.options["dependencies"]


def test_without_an_alerts_block_nothing_of_alerting_registers():
    def edit(cfg: dict) -> None:
        cfg.pop("pgstack:alerts")
        cfg.pop("pgstack:monitoring")  # its server needs alerts (the Watchdog)

    result = run_stack("prod", edit=edit)
    names = [r.name for r in result.mocks.registrations]
    assert not [n for n in names if "heartbeat" in n], names


def test_the_render_of_alerting_leaks_no_secret(tmp_path):
    from sandbox import render

    render.render("prod", tmp_path)
    assert (tmp_path / "commands" / "prod-heartbeat-checks-api.sh").exists()


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda cfg: cfg.pop("pgstack:alertsPingKey"), "alertsPingKey"),
        (lambda cfg: cfg.update({"pgstack:alertsPingKey": "has space"}), "alertsPingKey"),
        (lambda cfg: cfg["pgstack:alerts"].update({"archiveMaxAgeSeconds": 100}), "alerts.archiveMaxAgeSeconds"),
        (lambda cfg: cfg["pgstack:alerts"].update({"pingUrl": "https://x/?a=b"}), "alerts.pingUrl"),
        (lambda cfg: cfg["pgstack:alerts"]["jobs"].update({"alive": {"periodSeconds": 5, "graceSeconds": 60}}),
         "alerts.jobs.alive.periodSeconds"),
    ],
)  # fmt: skip
def test_bad_alerts_config_is_refused_naming_the_key(edit, key):
    def full(cfg: dict) -> None:
        cfg["pgstack:alerts"].setdefault("jobs", {})
        edit(cfg)

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=full)
    assert info.value.key == f"pgstack:{key}"
    assert SECRETS["pgstack:alertsPingKey"] not in str(info.value)


def test_target_aws_refuses_the_alerts_block():
    with pytest.raises(ConfigError) as info:
        s.run(lambda cfg: cfg.update({"pgstack:alerts": {}}))
    assert info.value.key == "pgstack:alerts" and "RDS events" in str(info.value)


# ---- the management API client against the rehearsal's receiver -------------------------------


@pytest.fixture
def api():
    store = receiver.Store(API_KEY, "pk")
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.make_handler(store, "http://x/ping"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_api(url: str, key: str, checks: list[dict], capsys) -> tuple[int, str, str]:
    stdin = io.StringIO(json.dumps({"api_url": url, "api_key": key, "checks": checks}))
    with mock.patch("sys.stdin", stdin):
        rc = healthchecks_api.main([])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_api_client_creates_then_updates_by_slug(api, capsys):
    store, url = api
    check = {"name": "prod-g1-primary-alive", "slug": "prod-g1-primary-alive", "timeout": 60, "grace": 240}
    rc, out, _ = run_api(url, API_KEY, [check], capsys)
    assert rc == 0 and out.startswith("created prod-g1-primary-alive")
    rc, out, _ = run_api(url, API_KEY, [{**check, "timeout": 120}], capsys)
    assert rc == 0 and out.startswith("updated prod-g1-primary-alive")
    assert len(store.checks) == 1 and store.checks["prod-g1-primary-alive"].timeout == 120


def test_the_api_client_fails_on_a_refused_key_without_showing_it(api, capsys):
    _, url = api
    rc, _, err = run_api(url, "wrong-key", [{"name": "a", "slug": "a", "timeout": 60, "grace": 60}], capsys)
    assert rc == 1 and "refused" in err and "wrong-key" not in err


# ---- target aws ----------------------------------------------------------------------------------


def test_rds_events_of_the_active_instance_go_to_the_critical_topic():
    result = s.base()
    subs = result.mocks.of_type(s.EVENT_SUBSCRIPTION)
    assert [r.name for r in subs] == ["staging-g1-events-critical"]
    sub = program.unwrap(subs[0].inputs)
    assert sub["snsTopic"] == "arn:aws:mock:::staging-alerts-critical"
    assert sub["sourceType"] == "db-instance" and sub["sourceIds"] == ["staging-g1-db"]
    assert sub["eventCategories"] == CATEGORIES == ["failure", "failover", "low storage", "recovery"]
    assert sub["enabled"] is True


def test_free_storage_alarms_at_two_levels_and_their_order_is_checked():
    alarms = {r.name: program.unwrap(r.inputs) for r in s.base().mocks.of_type(s.ALARM)}
    warn, crit = alarms["staging-g1-alarms-storage-warning"], alarms["staging-g1-alarms-storage-critical"]
    assert (warn["metricName"], warn["threshold"]) == ("FreeStorageSpace", 10 * 1024**3)
    assert crit["threshold"] == 5 * 1024**3 and crit["comparisonOperator"] == "LessThanOrEqualToThreshold"
    with pytest.raises(ConfigError) as info:
        s.run(lambda cfg: cfg["pgstack:aws"]["alarms"].update({"freeStorageGb": {"warning": 5, "critical": 10}}))
    assert "freeStorageGb" in str(info.value)
