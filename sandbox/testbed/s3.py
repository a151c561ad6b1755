"""S3: moto (in memory, TLS) on 127.0.0.1 behind a TCP relay on gateway:9443.

The relay is what an outage stops: moto keeps running, so its buckets and objects survive (see outage).
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TestbedError
from .processes import Processes, run, tail
from .state import S3State, StateFile

SANDBOX_DIR = Path(__file__).resolve().parent.parent  # moto_tls.py and tcp_relay.py

S3_PORT = 9443
S3_DNS_NAME = "s3.pgstack.test"
S3_DEFAULT_REGION = "eu-central"
S3_ACCESS_KEY = "pgstack-sandbox-access-key"
S3_SECRET_KEY = "pgstack-sandbox-secret-key"  # a dummy: moto accepts any credentials


@dataclass
class S3Endpoint:
    """Where the test bed's S3 answers; url = https://host:port (self-signed cert, see ca_file)."""

    host: str
    port: int
    region: str
    access_key: str
    secret_key: str
    url: str
    ca_file: str = ""  # the self-signed certificate (CN/SAN s3.pgstack.test and the gateway IP)
    dns_name: str = S3_DNS_NAME  # resolves to host inside the guests (their /etc/hosts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class S3:
    """Starts, interrupts (outage) and stops the local S3, recorded in the state file."""

    def __init__(
        self,
        run_dir: Path,
        state: StateFile,
        procs: Processes,
        claim_machine: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.dir = run_dir / "s3"
        self._state = state
        self._procs = procs
        self._claim_machine = claim_machine
        self._log = log

    def start(self, region: str = S3_DEFAULT_REGION) -> S3Endpoint:
        """moto (TLS, in memory) on 127.0.0.1 behind a TCP relay on gateway_ip:9443. Idempotent."""
        self._claim_machine()
        net = self._state.load().require_network()
        with self._state.lock:
            have = self._state.load().s3
            if have and self._procs.alive(have.moto_pid, "moto_tls.py"):
                if not have.outage:
                    self._start_relay()
                return self.endpoint()
            t0 = time.monotonic()
            tls = self.dir / "tls"
            tls.mkdir(parents=True, exist_ok=True)
            crt, key = tls / "s3.crt", tls / "s3.key"
            run([
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                "-subj", f"/CN={S3_DNS_NAME}",
                "-addext", f"subjectAltName=DNS:{S3_DNS_NAME},IP:{net.gateway_ip},IP:127.0.0.1",
                "-keyout", key, "-out", crt,
            ])  # fmt: skip
            backend_port = _free_port()
            with self._state.edit() as state:
                state.s3 = S3State(
                    host=net.gateway_ip, port=S3_PORT, region=region, backend_port=backend_port, ca_file=str(crt)
                )
            pid = self._procs.spawn(
                [
                    sys.executable,
                    SANDBOX_DIR / "moto_tls.py",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    backend_port,
                    "-c",
                    crt,
                    "-k",
                    key,
                ],
                self.dir / "moto.log",
                # Path-style buckets only: otherwise moto reads "s3" in Host: s3.pgstack.test as a
                # bucket name (virtual-host style) and every request by DNS name misses.
                env={"S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"},
            )
            with self._state.edit() as state:
                state.require_s3().moto_pid = pid
            self._wait_answering("127.0.0.1", backend_port, pid, "moto_tls.py", self.dir / "moto.log")
            self._start_relay()
        ep = self.endpoint()
        self._log(f"s3: moto up at {ep.url} (region {region}) in {time.monotonic() - t0:.1f} s")
        return ep

    def _start_relay(self) -> None:
        s3 = self._state.load().require_s3()
        if self._procs.alive(s3.relay_pid, "tcp_relay.py"):
            return
        pid = self._procs.spawn(
            [
                sys.executable,
                SANDBOX_DIR / "tcp_relay.py",
                f"{s3.host}:{s3.port}",
                f"127.0.0.1:{s3.backend_port}",
            ],
            self.dir / "relay.log",
        )
        with self._state.edit() as state:
            state.require_s3().relay_pid = pid
        self._wait_answering(s3.host, s3.port, pid, "tcp_relay.py", self.dir / "relay.log")

    def _wait_answering(self, host: str, port: int, pid: int, needle: str, log_file: Path, timeout: float = 60) -> None:
        """Until an HTTPS request gets an HTTP answer (any status) from host:port."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            if not self._procs.alive(pid, needle):
                raise TestbedError(f"{needle} exited; log {log_file}:\n{tail(log_file.read_text(errors='replace'))}")
            try:
                with socket.create_connection((host, port), timeout=2) as raw, ctx.wrap_socket(raw) as conn:
                    conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
                    if conn.recv(16).startswith(b"HTTP/"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"S3 at {host}:{port} not answering after {timeout:.0f} s; log {log_file}:\n"
                    f"{tail(log_file.read_text(errors='replace'))}"
                )
            time.sleep(0.1)

    def endpoint(self) -> S3Endpoint:
        s3 = self._state.load().require_s3()
        return S3Endpoint(
            host=s3.host,
            port=s3.port,
            region=s3.region,
            access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY,
            url=f"https://{s3.host}:{s3.port}",
            ca_file=s3.ca_file,
        )

    def outage(self, on: bool) -> None:
        """Simulate the object store being down (on=True) or back (on=False).

        The relay in front of moto is stopped (clients get 'connection refused', open connections
        are cut) and started again; moto itself keeps running, so buckets and objects survive.
        """
        with self._state.lock:
            s3 = self._state.load().require_s3()
            if on:
                self._procs.stop(s3.relay_pid, "tcp_relay.py", "s3 relay", 10)
                with self._state.edit() as state:
                    stopped = state.require_s3()
                    stopped.outage = True
                    stopped.relay_pid = None
            else:
                with self._state.edit() as state:
                    state.require_s3().outage = False
                self._start_relay()
        self._log(f"s3: outage {'ON (relay stopped)' if on else 'OFF (relay started)'}")

    def stop(self) -> None:
        """Stop relay and moto: moto's in-memory buckets are gone (use outage to keep them)."""
        with self._state.lock:
            s3 = self._state.load().s3
            if s3 is not None:
                self._procs.stop(s3.relay_pid, "tcp_relay.py", "s3 relay", 10)
                self._procs.stop(s3.moto_pid, "moto_tls.py", "moto", 10)
            with self._state.edit() as state:
                state.s3 = None
        self._log("s3: stopped")

    def client(self) -> Any:
        """A boto3 S3 client for the test bed's endpoint (verified against its own certificate)."""
        import boto3  # imported late: the rest of the test bed needs only the stdlib
        from botocore.config import Config

        ep = self.endpoint()
        return boto3.client(
            "s3",
            endpoint_url=ep.url,
            region_name=ep.region,
            aws_access_key_id=ep.access_key,
            aws_secret_access_key=ep.secret_key,
            verify=ep.ca_file,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5),
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket (idempotent) in the endpoint's region."""
        client = self.client()
        ep = self.endpoint()
        kwargs: dict[str, Any] = {"Bucket": name}
        if ep.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ep.region}
        try:
            client.create_bucket(**kwargs)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        self._log(f"s3: bucket {name} ready")
