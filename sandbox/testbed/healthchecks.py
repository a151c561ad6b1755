"""The Healthchecks-compatible receiver (sandbox/healthchecks.py, TLS) on 127.0.0.1 behind a TCP relay on gateway:9444.

As for S3, the relay is what an outage stops ("the alerting service is unreachable"): the
receiver keeps running, so its checks and the pings it recorded survive, and the tests keep
reading them from 127.0.0.1 while the guests cannot reach it.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TestbedError
from .processes import Processes, run, tail
from .s3 import SANDBOX_DIR, _free_port
from .state import HealthchecksState, StateFile

HC_PORT = 9444
REPO = SANDBOX_DIR.parent


@dataclass
class HealthchecksEndpoint:
    """ping_url and api_url as the stack config takes them (alerts.pingUrl, alerts.apiUrl)."""

    host: str
    port: int
    ping_url: str
    api_url: str
    api_key: str
    ping_key: str
    local_url: str  # the receiver itself on 127.0.0.1: answers while the relay is stopped

    @property
    def webhook_url(self) -> str:
        """Where Alertmanager's webhook receiver posts (pgstack:monitoringWebhookUrl); holds the ping key."""
        return f"{self.api_url}/sandbox/webhook/{self.ping_key}"


class Healthchecks:
    def __init__(
        self,
        run_dir: Path,
        state: StateFile,
        procs: Processes,
        claim_machine: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.dir = run_dir / "healthchecks"
        self._state = state
        self._procs = procs
        self._claim_machine = claim_machine
        self._log = log

    def start(self) -> HealthchecksEndpoint:
        """The receiver (TLS, in memory) and its relay. Idempotent: a running one is kept, with its data."""
        self._claim_machine()
        net = self._state.load().require_network()
        with self._state.lock:
            have = self._state.load().healthchecks
            if have and self._procs.alive(have.pid, "sandbox.healthchecks"):
                if not have.outage:
                    self._start_relay()
                return self.endpoint()
            t0 = time.monotonic()
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            crt, key = self.dir / "hc.crt", self.dir / "hc.key"
            run([
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                "-subj", "/CN=healthchecks.pgstack.test",
                "-addext", f"subjectAltName=IP:{net.gateway_ip},IP:127.0.0.1",
                "-keyout", key, "-out", crt,
            ])  # fmt: skip
            api_file, ping_file = self.dir / "api-key", self.dir / "ping-key"
            for path in (api_file, ping_file):
                path.touch(mode=0o600)
                path.write_text(secrets.token_urlsafe(18).replace("-", "x").replace("_", "y") + "\n")
            backend = _free_port()
            with self._state.edit() as state:
                state.healthchecks = HealthchecksState(
                    host=net.gateway_ip, port=HC_PORT, backend_port=backend, dir=str(self.dir)
                )
            pid = self._procs.spawn(
                [
                    sys.executable, "-m", "sandbox.healthchecks", "--host", "127.0.0.1", "--port", backend,
                    "--api-key-file", api_file, "--ping-key-file", ping_file, "--cert", crt, "--key", key,
                ],
                self.dir / "receiver.log",
                env={"PYTHONPATH": str(REPO)},
            )  # fmt: skip
            with self._state.edit() as state:
                state.require_healthchecks().pid = pid
            self._wait_answering(f"https://127.0.0.1:{backend}/api/v3/checks/", pid, "sandbox.healthchecks")
            self._start_relay()
        ep = self.endpoint()
        self._log(f"healthchecks: receiver up at {ep.api_url} in {time.monotonic() - t0:.1f} s")
        return ep

    def _start_relay(self) -> None:
        hc = self._state.load().require_healthchecks()
        if self._procs.alive(hc.relay_pid, "tcp_relay.py"):
            return
        pid = self._procs.spawn(
            [sys.executable, SANDBOX_DIR / "tcp_relay.py", f"{hc.host}:{hc.port}", f"127.0.0.1:{hc.backend_port}"],
            self.dir / "relay.log",
        )
        with self._state.edit() as state:
            state.require_healthchecks().relay_pid = pid
        self._wait_answering(f"https://{hc.host}:{hc.port}/api/v3/checks/", pid, "tcp_relay.py")

    def _wait_answering(self, url: str, pid: int, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._procs.alive(pid, needle):
                logs = "\n".join(tail(p.read_text(errors="replace")) for p in self.dir.glob("*.log"))
                raise TestbedError(f"{needle} exited; logs in {self.dir}:\n{logs}")
            try:
                self._request(url, None)
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer will do
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TestbedError(f"the Healthchecks receiver at {url} is not answering after {timeout:.0f} s")
            time.sleep(0.1)

    @staticmethod
    def _request(url: str, api_key: str | None) -> Any:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        headers = {"X-Api-Key": api_key} if api_key else {}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5, context=ctx) as r:
            return json.loads(r.read())

    def endpoint(self) -> HealthchecksEndpoint:
        hc = self._state.load().require_healthchecks()
        base = f"https://{hc.host}:{hc.port}"
        return HealthchecksEndpoint(
            host=hc.host,
            port=hc.port,
            ping_url=f"{base}/ping",
            api_url=base,
            api_key=(Path(hc.dir) / "api-key").read_text().strip(),
            ping_key=(Path(hc.dir) / "ping-key").read_text().strip(),
            local_url=f"https://127.0.0.1:{hc.backend_port}",
        )

    def get(self, path: str) -> Any:
        """GET path (e.g. /api/v3/checks/, /sandbox/pings) from the receiver itself, with the API key."""
        ep = self.endpoint()
        return self._request(ep.local_url + path, ep.api_key)

    def outage(self, on: bool) -> None:
        """The receiver unreachable from the guests (on=True: relay stopped) or back (on=False)."""
        with self._state.lock:
            hc = self._state.load().require_healthchecks()
            if on:
                self._procs.stop(hc.relay_pid, "tcp_relay.py", "healthchecks relay", 10)
                with self._state.edit() as state:
                    stopped = state.require_healthchecks()
                    stopped.outage, stopped.relay_pid = True, None
            else:
                with self._state.edit() as state:
                    state.require_healthchecks().outage = False
                self._start_relay()
        self._log(f"healthchecks: outage {'ON (relay stopped)' if on else 'OFF (relay started)'}")
