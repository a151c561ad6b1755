"""A local Healthchecks-compatible receiver for the rehearsal: pings, the checks API, lateness.

The subset of healthchecks.io the program and the guests use:
- pings: `/ping/<ping key>/<slug>` (success), `/start`, `/fail`, `/<exit status>` (0 is success),
  GET or POST, the body (up to 100 kB) kept with the ping; an unknown slug answers 404 "not
  found" unless `?create=1`;
- the management API, authenticated by `X-Api-Key`: `GET /api/v3/checks/` lists the checks,
  `POST /api/v3/checks/` creates one, or updates the one whose fields in `unique` match
  (Healthchecks answers 201 for a new check, 200 for an updated one);
- status as Healthchecks computes it: `new` before the first ping; `down` after a fail, or when
  the last success is older than timeout + grace (`grace` once it is older than timeout);
  `started` while a start has no end; otherwise `up`. A check with a `schedule` (a systemd
  OnCalendar expression here, since pgstack schedules with timers) counts its timeout as the
  longest gap the expression allows, given in `timeout` by the program.
- `GET /sandbox/pings` (the same API key): every ping received, in order, for the tests.
- a webhook receiver for Alertmanager: `POST /sandbox/webhook/<ping key>` keeps the JSON body
  with its arrival time; `GET /sandbox/webhooks` (the API key) lists them, in order.

Run: `python -m sandbox.healthchecks --host H --port P --api-key-file F --ping-key-file K
[--cert C --key K]`. In memory, threads, stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import ssl
import threading
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 100_000
WEBHOOK = re.compile(r"^/sandbox/webhook/(?P<key>[A-Za-z0-9_-]+)/?$")
PING = re.compile(r"^/ping/(?P<key>[A-Za-z0-9_-]+)/(?P<slug>[a-z0-9-]+)(?:/(?P<kind>start|fail|log|[0-9]{1,3}))?/?$")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Ping:
    slug: str
    kind: str  # start | success | fail | log
    at: str
    body: str
    exit_status: int | None = None


@dataclass
class Check:
    name: str
    slug: str
    timeout: int = 86400
    grace: int = 3600
    schedule: str | None = None
    tz: str = "UTC"
    desc: str = ""
    tags: str = ""
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    last_ping: str | None = None  # the last success or fail
    last_kind: str | None = None
    started: str | None = None
    n_pings: int = 0

    def status(self, at: dt.datetime) -> str:
        if self.last_kind is None:
            return "started" if self.started else "new"
        if self.last_kind == "fail":
            return "down"
        assert self.last_ping is not None
        age = (at - dt.datetime.fromisoformat(self.last_ping)).total_seconds()
        if age > self.timeout + self.grace:
            return "down"
        if self.started and self.started > self.last_ping:
            return "started"
        return "grace" if age > self.timeout else "up"

    def view(self, at: dt.datetime, ping_url: str) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status(at)
        out["ping_url"] = ping_url
        return out


class Store:
    def __init__(self, api_key: str, ping_key: str):
        self.api_key, self.ping_key = api_key, ping_key
        self.checks: dict[str, Check] = {}  # by slug
        self.pings: list[Ping] = []
        self.webhooks: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def ping(self, slug: str, kind: str, body: str, create: bool) -> bool:
        at = now().isoformat()
        with self.lock:
            check = self.checks.get(slug)
            if check is None:
                if not create:
                    return False
                check = self.checks[slug] = Check(name=slug, slug=slug)
            exit_status = None
            if kind.isdigit():
                exit_status = int(kind)
                kind = "success" if exit_status == 0 else "fail"
            self.pings.append(Ping(slug, kind, at, body, exit_status))
            check.n_pings += 1
            if kind == "start":
                check.started = at
            elif kind in ("success", "fail"):
                check.last_ping, check.last_kind = at, kind
            return True

    def upsert(self, spec: dict[str, Any]) -> tuple[Check, bool]:
        unique = spec.get("unique") or []
        fields = {
            k: spec[k] for k in ("name", "slug", "timeout", "grace", "schedule", "tz", "desc", "tags") if k in spec
        }
        fields.setdefault("slug", re.sub(r"[^a-z0-9-]+", "-", str(fields.get("name", "")).lower()).strip("-"))
        with self.lock:
            for check in self.checks.values():
                if unique and all(getattr(check, u) == fields.get(u) for u in unique):
                    for k, v in fields.items():
                        setattr(check, k, v)
                    if check.slug not in self.checks:
                        self.checks = {c.slug: c for c in self.checks.values()}
                    return check, False
            check = Check(**fields)
            self.checks[check.slug] = check
            return check, True


def make_handler(store: Store, ping_base: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, code: int, payload: Any) -> None:
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("X-Api-Key") != store.api_key:
                self._send(401, {"error": "missing or invalid API key"})
                return False
            return True

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            body = self._body()
            match = PING.match(url.path)
            if match:
                if match["key"] != store.ping_key:
                    self._send(404, "not found")
                    return
                create = parse_qs(url.query).get("create") == ["1"]
                found = store.ping(
                    match["slug"], match["kind"] or "success", body[:MAX_BODY].decode(errors="replace"), create
                )
                self._send(200 if found else 404, "OK" if found else "not found")
                return
            if url.path.rstrip("/") == "/api/v3/checks":
                if not self._authorized():
                    return
                at = now()
                if method == "GET":
                    with store.lock:
                        checks = [c.view(at, f"{ping_base}/{store.ping_key}/{c.slug}") for c in store.checks.values()]
                    self._send(200, {"checks": checks})
                    return
                check, created = store.upsert(json.loads(body or b"{}"))
                self._send(201 if created else 200, check.view(at, f"{ping_base}/{store.ping_key}/{check.slug}"))
                return
            hook = WEBHOOK.match(url.path)
            if hook and method == "POST":
                if hook["key"] != store.ping_key:
                    self._send(404, "not found")
                    return
                try:
                    payload = json.loads(body or b"null")
                except ValueError:
                    self._send(400, "not JSON")
                    return
                with store.lock:
                    store.webhooks.append({"at": now().isoformat(), "body": payload})
                self._send(200, "OK")
                return
            if url.path.rstrip("/") == "/sandbox/webhooks" and method == "GET":
                if not self._authorized():
                    return
                with store.lock:
                    self._send(200, {"webhooks": list(store.webhooks)})
                return
            if url.path.rstrip("/") == "/sandbox/pings" and method == "GET":
                if not self._authorized():
                    return
                with store.lock:
                    self._send(200, {"pings": [asdict(p) for p in store.pings]})
                return
            self._send(404, "not found")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_HEAD(self) -> None:
            self._route("GET")

    return Handler


def serve(host: str, port: int, api_key: str, ping_key: str, cert: Path | None, key: Path | None) -> None:
    scheme = "https" if cert else "http"
    store = Store(api_key, ping_key)
    server = ThreadingHTTPServer((host, port), make_handler(store, f"{scheme}://{host}:{port}/ping"))
    server.daemon_threads = True
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.healthchecks", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key-file", type=Path, required=True)
    parser.add_argument("--ping-key-file", type=Path, required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    serve(
        args.host,
        args.port,
        args.api_key_file.read_text().strip(),
        args.ping_key_file.read_text().strip(),
        args.cert,
        args.key,
    )


if __name__ == "__main__":
    main()
