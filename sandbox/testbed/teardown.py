"""Taking the whole test bed down from the state file alone (also from a fresh process, after a crash)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from . import cgroups
from .errors import TestbedError
from .guests import POWEROFF_TIMEOUT
from .mounts import mountpoints, unmount_under
from .network import BRIDGE, OUTSIDER_NS, OUTSIDER_VETH, link_exists, netns_exists, veth_names
from .processes import Processes, try_run
from .state import State, StateFile


def tear_down(run_dir: Path, state_file: StateFile, procs: Processes, log: Callable[[str], None]) -> None:
    """Never raises for things already gone; logs what it could not remove. Call under the machine lock."""
    t0 = time.monotonic()
    try:
        state = state_file.load()
    except TestbedError as e:
        log(f"down: {e}; removing what the fixed names find")
        state = State()
    guests = state.guests
    # 1. guests: SIGTERM all (clean poweroff in parallel), then wait, then SIGKILL stragglers.
    running = [(g.pid, g.merged, n) for n, g in guests.items() if g.pid is not None and procs.alive(g.pid, g.merged)]
    for pid, _, _ in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if running and not procs.wait_gone([(p, m) for p, m, _ in running], POWEROFF_TIMEOUT):
        for pid, merged, name in running:
            procs.stop(pid, merged, f"{name} (systemd-nspawn)", 0, sig=signal.SIGKILL)
    if running:
        log(f"down: {len(running)} guest(s) powered off in {time.monotonic() - t0:.1f} s")
    # Whatever still runs in a guest's cgroup (a guest whose nspawn was killed, or one of a lost
    # state: under the machine lock, everything below pgstack-sandbox/ belongs to this test bed).
    own_cgroups = [Path(c) for g in guests.values() for c in g.cgroups]
    own_cgroups += cgroups.parents()
    cgroups.kill(own_cgroups, "down", log)
    # 2. S3 processes.
    if state.s3 is not None:
        procs.stop(state.s3.relay_pid, "tcp_relay.py", "s3 relay", 10)
        procs.stop(state.s3.moto_pid, "moto_tls.py", "moto", 10)
    if state.healthchecks is not None:
        procs.stop(state.healthchecks.relay_pid, "tcp_relay.py", "healthchecks relay", 10)
        procs.stop(state.healthchecks.pid, "sandbox.healthchecks", "healthchecks receiver", 10)
    # 3. overlays (and anything else mounted under run_dir).
    for g in guests.values():
        if g.merged in mountpoints() and not try_run(["umount", g.merged], f"umount {g.merged}", log):
            try_run(["umount", "-l", g.merged], f"umount -l {g.merged}", log)
    if run_dir.exists():
        unmount_under(run_dir, log)
    cgroups.remove(own_cgroups, log)
    # 4. links before namespaces: deleting a namespace frees its veth asynchronously. Names with
    # the test bed's prefixes that the state does not know (lost state) go too.
    veths = [g.veth for g in guests.values()] + [OUTSIDER_VETH]
    veths += [v for v in veth_names() if v.startswith("pgsv") and v not in veths]
    namespaces = [g.netns for g in guests.values()] + [OUTSIDER_NS]
    if Path("/run/netns").is_dir():
        namespaces += [p.name for p in Path("/run/netns").glob("pgs-*") if p.name not in namespaces]
    for veth in veths:
        if link_exists(veth):
            try_run(["ip", "link", "del", veth], f"ip link del {veth}", log)
    for ns in namespaces:
        if netns_exists(ns):
            try_run(["ip", "netns", "del", ns], f"ip netns del {ns}", log)
    if link_exists(BRIDGE):
        try_run(["ip", "link", "del", BRIDGE], f"ip link del {BRIDGE}", log)
    # 5. state and guest data, unless something is still mounted there.
    if run_dir.exists():
        busy = [m for m in mountpoints() if m.startswith(str(run_dir.resolve()) + "/")]
        if busy:
            log(f"down: still mounted, keeping {run_dir}: {busy}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    procs.forget_exited()
    log(f"down: done in {time.monotonic() - t0:.1f} s")
