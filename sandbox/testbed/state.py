"""What the test bed has made, as recorded in run_dir/state.json.

Each thing is recorded before it is created (intent first), so `down()` in a fresh process can take
everything down from the file alone, even after a crash half way. The file is indented JSON, one
object per job: {"network": {...}, "guests": {name: {...}}, "s3": {...}}.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TestbedError


@dataclass
class NetworkState:
    subnet: str
    prefix: int
    gateway_ip: str
    outsider_ip: str
    bridge: str
    outsider_ns: str
    outsider_veth: str


@dataclass
class GuestState:
    name: str
    ip: str
    index: int  # numbers the veth: a free one is reused
    netns: str
    veth: str
    dir: str
    merged: str  # the overlay mount, also the needle that identifies its nspawn's cmdline
    log: str
    pid: int | None = None  # systemd-nspawn, once started
    mounted: bool = False
    cgroups: list[str] = field(default_factory=list)
    rootfs: str | None = None  # the overlay's lower dir, once mounted


@dataclass
class S3State:
    host: str
    port: int
    region: str
    backend_port: int  # moto on 127.0.0.1; the relay listens on host:port
    ca_file: str
    moto_pid: int | None = None
    relay_pid: int | None = None
    outage: bool = False


@dataclass
class HealthchecksState:
    host: str
    port: int
    backend_port: int  # the receiver on 127.0.0.1; the relay listens on host:port
    dir: str  # its certificate and key files (0600)
    pid: int | None = None
    relay_pid: int | None = None
    outage: bool = False


@dataclass
class State:
    network: NetworkState | None = None
    guests: dict[str, GuestState] = field(default_factory=dict)
    s3: S3State | None = None
    healthchecks: HealthchecksState | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        network, s3, hc = data.get("network"), data.get("s3"), data.get("healthchecks")
        return cls(
            network=NetworkState(**network) if network else None,
            guests={name: GuestState(**g) for name, g in data.get("guests", {}).items()},
            s3=S3State(**s3) if s3 else None,
            healthchecks=HealthchecksState(**hc) if hc else None,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def require_network(self) -> NetworkState:
        if self.network is None:
            raise TestbedError("the test bed network is not up: call up() first")
        return self.network

    def require_guest(self, name: str) -> GuestState:
        g = self.guests.get(name)
        if g is None:
            raise TestbedError(f"no guest named {name!r}")
        return g

    def require_healthchecks(self) -> HealthchecksState:
        if self.healthchecks is None:
            raise TestbedError("the Healthchecks receiver is not started: call start_healthchecks() first")
        return self.healthchecks

    def require_s3(self) -> S3State:
        if self.s3 is None:
            raise TestbedError("S3 is not started: call start_s3() first")
        return self.s3


class StateFile:
    """Load and save the State; `edit()` is one read-modify-write under the lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Guards the file and the steps that create what they record in it (RLock: steps nest).
        self.lock = threading.RLock()

    def load(self) -> State:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return State()
        except (OSError, ValueError) as e:
            raise TestbedError(f"unreadable {self.path}: {e}") from None
        try:
            return State.from_json(data)
        except (TypeError, AttributeError) as e:
            raise TestbedError(f"unreadable {self.path}: {e}") from None

    def save(self, state: State) -> None:
        # Written before each thing is created (intent first): a crash still leaves a full record.
        run_dir = self.path.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def edit(self) -> Iterator[State]:
        with self.lock:
            state = self.load()
            try:
                yield state
            finally:
                self.save(state)
