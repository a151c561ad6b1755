"""The rehearsal's Healthchecks stand-in answers like Healthchecks: pings, the checks API, lateness."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from sandbox import healthchecks as hc

API, PING_KEY = "api-key-1", "pingkey1"


@pytest.fixture
def receiver():
    store = hc.Store(API, PING_KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hc.make_handler(store, "http://x/ping"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, store
    server.shutdown()


def call(url, data=None, key=API, method=None):
    req = urllib.request.Request(url, data=data, method=method, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_checks_are_created_then_updated_by_slug(receiver):
    base, _ = receiver
    spec = {"name": "prod-g1-primary-alive", "slug": "prod-g1-primary-alive", "timeout": 60, "grace": 120}
    assert call(f"{base}/api/v3/checks/", json.dumps({**spec, "unique": ["slug"]}).encode())[0] == 201
    assert call(f"{base}/api/v3/checks/", json.dumps({**spec, "grace": 300, "unique": ["slug"]}).encode())[0] == 200
    code, text = call(f"{base}/api/v3/checks/")
    checks = json.loads(text)["checks"]
    assert code == 200 and len(checks) == 1 and checks[0]["grace"] == 300 and checks[0]["status"] == "new"
    assert call(f"{base}/api/v3/checks/", key="wrong")[0] == 401


def test_pings_change_status_and_lateness_follows_timeout_and_grace(receiver):
    base, store = receiver
    store.upsert({"name": "c", "slug": "c", "timeout": 60, "grace": 30})
    assert call(f"{base}/ping/{PING_KEY}/c/start", key=None)[0] == 200
    assert store.checks["c"].status(hc.now()) == "started"
    assert call(f"{base}/ping/{PING_KEY}/c", b"took 3 s", key=None) == (200, "OK")
    assert store.checks["c"].status(hc.now()) == "up"
    later = hc.now() + dt.timedelta(seconds=61)
    assert store.checks["c"].status(later) == "grace"
    assert store.checks["c"].status(later + dt.timedelta(seconds=30)) == "down"
    assert call(f"{base}/ping/{PING_KEY}/c/3", b"exit 3", key=None)[0] == 200
    assert store.checks["c"].status(hc.now()) == "down"
    kinds = [(p.kind, p.exit_status, p.body) for p in store.pings]
    assert kinds == [("start", None, ""), ("success", None, "took 3 s"), ("fail", 3, "exit 3")]


def test_unknown_checks_and_keys_are_refused(receiver):
    base, _ = receiver
    assert call(f"{base}/ping/{PING_KEY}/nope", key=None)[0] == 404
    assert call(f"{base}/ping/otherkey/nope?create=1", key=None)[0] == 404
    assert call(f"{base}/ping/{PING_KEY}/made?create=1", key=None)[0] == 200
