"""The guests' cgroups: <hierarchy>/pgstack-sandbox/<guest> in every hierarchy systemd tracks services in."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from .mounts import unescape
from .processes import pid_state

# Only this test bed makes it: under the machine lock, everything below it belongs to this test bed.
PARENT = "pgstack-sandbox"


def tracking_roots() -> list[Path]:
    """Mounted cgroup hierarchies systemd tracks services in: cgroup2 and the v1 name=systemd one."""
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        tail = fields[fields.index("-") + 1 :]
        fstype, opts = tail[0], tail[2].split(",")
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts):
            roots.append(Path(unescape(fields[4])))
    return roots


def parents() -> list[Path]:
    """<hierarchy>/pgstack-sandbox in every tracking hierarchy (they may not exist)."""
    return [root / PARENT for root in tracking_roots()]


def live_pids(cgroups: list[Path]) -> set[int]:
    """Live (non-zombie) processes anywhere in these cgroup trees."""
    pids: set[int] = set()
    for top in cgroups:
        for dirpath, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
    return {p for p in pids if pid_state(p) not in ("", "Z", "X")}


def kill(cgroups: list[Path], what: str, log: Callable[[str], None], timeout: float = 15) -> None:
    """SIGKILL everything in a guest's cgroups: the guest's processes outlive a killed nspawn.

    Why: nspawn does not take its container down with it when it is SIGKILLed; the guest's
    systemd is re-parented to the host's init and keeps running (same IP, same overlay).
    cgroup.kill (cgroup v2) kills a whole tree at once; pid by pid is the fallback.
    """
    if not live_pids(cgroups):
        return
    log(f"{what}: killing the processes left in its cgroups")
    for top in cgroups:
        with contextlib.suppress(OSError):
            (top / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while pids := live_pids(cgroups):
        if time.monotonic() > deadline:
            log(f"{what}: processes survive SIGKILL: {sorted(pids)}")
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove(cgroups: list[Path], log: Callable[[str], None], timeout: float = 20) -> None:
    """rmdir cgroup trees leaves first (the guests' systemd made sub-cgroups); tolerate absence.

    Also sweeps <hierarchy>/pgstack-sandbox (only this test bed makes it), so trees left by an
    earlier crash go too. rmdir is retried while busy: a cgroup stays busy until its last
    exited task is reaped, and an orphaned nspawn is reaped by the host's init, not by us.
    """
    tops = [*cgroups, *parents()]
    deadline = time.monotonic() + timeout
    while True:
        busy: list[str] = []
        for top in tops:
            if not top.is_dir():
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(dirpath)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    busy.append(f"{dirpath}: {e.strerror}")
        if not busy:
            return
        if time.monotonic() > deadline:
            log(f"down: cgroups still busy after {timeout:.0f} s: {busy}")
            return
        time.sleep(0.2)
