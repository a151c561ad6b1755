"""Testbed: the one object callers use; it composes the job modules and holds no logic of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from .guests import POWEROFF_TIMEOUT, Guests, GuestSpec
from .healthchecks import Healthchecks, HealthchecksEndpoint
from .lock import MachineLock
from .network import Network
from .processes import Processes
from .rootfs import DEFAULT_MIRROR, Rootfs
from .s3 import S3, S3_DEFAULT_REGION, S3Endpoint
from .state import StateFile
from .teardown import tear_down


class Testbed:
    """Guests (systemd-nspawn), an outsider namespace and S3 (moto) for a local rehearsal.

    One process drives a test bed at a time (methods are thread-safe within it); `down()` also
    works from a fresh process, from run_dir/state.json alone. Use as a context manager to be sure
    `down()` runs, also on exceptions and Ctrl-C.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        run_dir: Path = Path("/run/pgstack-sandbox"),
        cache_dir: Path = Path("/var/cache/pgstack"),
        log: Callable[[str], Any] = print,
        mirror: str = DEFAULT_MIRROR,
        lock_wait: float = 0,
    ) -> None:
        """lock_wait: seconds to wait for another test bed on this machine to finish (0: fail at once)."""
        self.run_dir = Path(run_dir)
        self.lock_wait = lock_wait
        self.cache_dir = Path(cache_dir)
        self.mirror = mirror
        self._log_fn = log
        self._state = StateFile(self.run_dir / "state.json")
        self._procs = Processes(self.log)
        self._rootfs = Rootfs(self.cache_dir, mirror, self.log)
        self._network = Network(self._state, self._claim_machine, self.log)
        self._guests = Guests(self.run_dir, self._state, self._procs, self._rootfs, self._claim_machine, self.log)
        self._s3 = S3(self.run_dir, self._state, self._procs, self._claim_machine, self.log)
        self._hc = Healthchecks(self.run_dir, self._state, self._procs, self._claim_machine, self.log)

    def log(self, msg: str) -> None:
        self._log_fn(f"[testbed] {msg}")

    def _claim_machine(self) -> None:
        MachineLock.acquire(self.lock_wait, self.log)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def state_file(self) -> Path:
        return self._state.path

    # ------------------------------------------------------------------ rootfs

    def rootfs_key(self) -> str:
        """Hash of everything that decides the rootfs contents: a change means a new build."""
        return self._rootfs.key()

    def ensure_rootfs(self) -> Path:
        """Build the guest rootfs once (debootstrap), reuse it while the package list is unchanged."""
        return self._rootfs.ensure()

    def pgbackrest(self) -> dict[str, str]:
        """The pgBackRest the guests run: its version and where it came from."""
        return self._rootfs.pgbackrest()

    # ------------------------------------------------------------------ network

    def up(self, subnet_cidr: str, gateway_ip: str, outsider_ip: str) -> None:
        """Bridge with the gateway address, plus the outsider namespace. Idempotent."""
        self._network.up(subnet_cidr, gateway_ip, outsider_ip)

    def outsider(
        self, argv: Sequence[str], timeout: float = 30, check: bool = False, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (host filesystem) inside the outsider namespace. Not raised on failure unless check."""
        return self._network.outsider(argv, timeout=timeout, check=check, stdin=stdin)

    # ------------------------------------------------------------------ guests

    @property
    def ssh_key(self) -> Path:
        return self._guests.ssh_key

    def _ensure_ssh_key(self) -> str:
        # Private by name, but rehearse.py calls it: the key goes into the stack config before any boot.
        return self._guests.ensure_ssh_key()

    def guest_dir(self, name: str) -> Path:
        """Per-guest overlay dirs (upper, work, merged) and the nspawn log."""
        return self._guests.guest_dir(name)

    def guests(self) -> dict[str, str]:
        """Recorded guests: name -> ip."""
        return self._guests.ips()

    def boot_guests(self, specs: Sequence[GuestSpec]) -> None:
        """Boot several guests in parallel (each as boot_guest)."""
        self._guests.boot_all(specs)

    def boot_guest(self, spec: GuestSpec) -> None:
        """Boot a guest and wait until ssh works and systemd finished booting. A running one is kept."""
        self._guests.boot(spec)

    def stop_guest(self, name: str, timeout: float = POWEROFF_TIMEOUT) -> None:
        """Clean poweroff, SIGKILL after timeout; the overlay and the namespace stay for boot_guest."""
        self._guests.stop(name, timeout)

    def kill_guest(self, name: str) -> None:
        """Hard crash: SIGKILL to every process of the guest and its nspawn, no shutdown at all."""
        self._guests.kill(name)

    def reboot_guest(self, name: str) -> None:
        """Poweroff from inside, wait for nspawn to exit, boot the same overlay and namespace again."""
        self._guests.reboot(name)

    def ssh_argv(self, ip: str, connect_timeout: int = 5) -> list[str]:
        """ssh command prefix (harness key, root, no host key checks); append the remote command."""
        return self._guests.ssh_argv(ip, connect_timeout)

    def ssh(
        self, ip: str, script: str, stdin: bytes | None = None, timeout: float = 900, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script on a guest as root (see Guests.ssh): a failure is returned unless check."""
        return self._guests.ssh(ip, script, stdin=stdin, timeout=timeout, check=check)

    def netns_exec(
        self,
        guest_name: str,
        argv: Sequence[str],
        timeout: float = 60,
        check: bool = False,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (host filesystem, e.g. the host's psql) in a guest's network namespace."""
        return self._guests.netns_exec(guest_name, argv, timeout=timeout, check=check, stdin=stdin)

    # ------------------------------------------------------------------ S3

    @property
    def s3_dir(self) -> Path:
        return self._s3.dir

    def start_s3(self, region: str = S3_DEFAULT_REGION) -> S3Endpoint:
        """moto (TLS, in memory) on 127.0.0.1 behind a TCP relay on gateway_ip:9443. Idempotent."""
        return self._s3.start(region)

    def s3_endpoint(self) -> S3Endpoint:
        return self._s3.endpoint()

    def s3_outage(self, on: bool) -> None:
        """Simulate the object store being down (on=True) or back (on=False); moto keeps its data."""
        self._s3.outage(on)

    def stop_s3(self) -> None:
        """Stop relay and moto: moto's in-memory buckets are gone (use s3_outage to keep them)."""
        self._s3.stop()

    def s3_client(self) -> Any:
        """A boto3 S3 client for the test bed's endpoint (verified against its own certificate)."""
        return self._s3.client()

    def create_bucket(self, name: str) -> None:
        """Create a bucket (idempotent) in the endpoint's region."""
        self._s3.create_bucket(name)

    # ------------------------------------------------------------------ Healthchecks receiver

    def start_healthchecks(self) -> HealthchecksEndpoint:
        """The Healthchecks-compatible receiver (TLS) behind a relay on gateway_ip:9444. Idempotent."""
        return self._hc.start()

    def healthchecks_endpoint(self) -> HealthchecksEndpoint:
        return self._hc.endpoint()

    def healthchecks_outage(self, on: bool) -> None:
        """The receiver unreachable from the guests (on=True) or back (on=False); it keeps its data."""
        self._hc.outage(on)

    def healthchecks_get(self, path: str) -> Any:
        """GET path from the receiver itself (works during an outage): /api/v3/checks/, /sandbox/pings."""
        return self._hc.get(path)

    # ------------------------------------------------------------------ teardown

    def down(self) -> None:
        """Take everything down from state.json (works from a fresh process). Never raises for
        things already gone; logs what it could not remove. Raises TestbedError only if another
        live process holds the test bed (waits lock_wait seconds for it first)."""
        with self._state.lock:
            self._claim_machine()
            try:
                tear_down(self.run_dir, self._state, self._procs, self.log)
            finally:
                MachineLock.release()
