"""Guests: an overlayfs copy of the rootfs per guest, booted by systemd-nspawn in its own network namespace.

Real systemd runs in each (sshd, PostgreSQL and timers work as on a server); the harness reaches
them by ssh with its own key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import cgroups
from .errors import TestbedError
from .mounts import mountpoints
from .network import GUEST_IFACE, OUTSIDER_NS, OUTSIDER_VETH, veth_up
from .processes import Processes, run, tail
from .rootfs import Rootfs
from .s3 import S3_DNS_NAME
from .state import GuestState, NetworkState, StateFile

BOOT_TIMEOUT = 180.0
POWEROFF_TIMEOUT = 60.0


@dataclass
class GuestSpec:
    """A guest to boot: its host name and the private IP the stack config gives that server."""

    name: str
    ip: str
    # Boot in the outsider namespace, at its address outside the private subnet: a machine of the
    # internet the servers reach (the source database an import reads, as Heroku's).
    outsider: bool = False


def short_name(name: str) -> str:
    """The guest name as machine, namespace and directory names allow it."""
    short = re.sub(r"[^a-z0-9-]", "-", name.lower())[:24]
    if not short:
        raise TestbedError(f"unusable guest name {name!r}")
    return short


def _guest_path(root: Path, rel: str) -> Path:
    """A path inside the guest root, refusing symlinks that would lead out to the host's files."""
    path = root / rel
    for parent in [*reversed(path.relative_to(root).parents), path.relative_to(root)]:
        p = root / parent
        if p != root and p.is_symlink():
            if p == path:
                p.unlink()
            else:
                raise TestbedError(f"{p} is a symlink: refusing to write through it")
    return path


def _cgroup_paths(g: GuestState) -> list[Path]:
    return [Path(c) for c in g.cgroups]


class Guests:
    """Registers, boots, reaches (ssh, netns_exec) and stops the guests recorded in the state file."""

    def __init__(
        self,
        run_dir: Path,
        state: StateFile,
        procs: Processes,
        rootfs: Rootfs,
        claim_machine: Callable[[], None],
        log: Callable[[str], None],
    ) -> None:
        self.run_dir = run_dir
        self._state = state
        self._procs = procs
        self._rootfs = rootfs
        self._claim_machine = claim_machine
        self._log = log

    # ------------------------------------------------------------------ ssh

    @property
    def ssh_key(self) -> Path:
        return self.run_dir / "ssh" / "id_ed25519"

    def ensure_ssh_key(self) -> str:
        with self._state.lock:
            if not self.ssh_key.is_file():
                self.ssh_key.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(self.ssh_key.parent, 0o700)
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgstack-sandbox", "-f", self.ssh_key])
            return self.ssh_key.with_suffix(".pub").read_text()

    def ssh_argv(self, ip: str, connect_timeout: int = 5) -> list[str]:
        """ssh command prefix (harness key, root, no host key checks); append the remote command."""
        return [
            "ssh",
            "-F", "/dev/null",  # no user/system ssh_config (e.g. SendEnv LANG)
            "-i", str(self.ssh_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=15",
            "-o", "LogLevel=ERROR",
            f"root@{ip}",
        ]  # fmt: skip

    def ssh(
        self, ip: str, script: str, stdin: bytes | None = None, timeout: float = 900, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script on a guest as root. stdin (bytes) is passed to the script; output is text.

        The script travels as the remote command (shell-quoted), so stdin stays free for the caller.
        With check=False (the default) a failing script is returned, not raised: callers assert on rc.
        """
        return run([*self.ssh_argv(ip), "bash -c " + shlex.quote(script)], check=check, timeout=timeout, input=stdin)

    def netns_exec(
        self,
        guest_name: str,
        argv: Sequence[str],
        timeout: float = 60,
        check: bool = False,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (host filesystem, e.g. the host's psql) in a guest's network namespace."""
        ns = self._state.load().require_guest(guest_name).netns
        return run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=stdin)

    # ------------------------------------------------------------------ registry

    def guest_dir(self, name: str) -> Path:
        """Per-guest overlay dirs (upper, work, merged) and the nspawn log."""
        return self.run_dir / "guests" / short_name(name)

    def ips(self) -> dict[str, str]:
        """Recorded guests: name -> ip."""
        return {n: g.ip for n, g in self._state.load().guests.items()}

    def _register(self, spec: GuestSpec) -> GuestState:
        net = self._state.load().require_network()
        subnet = ipaddress.ip_network(net.subnet)
        ip = ipaddress.ip_address(spec.ip)
        if spec.outsider:
            if spec.ip != net.outsider_ip:
                raise TestbedError(f"{spec.name}: an outsider guest takes the outsider's address {net.outsider_ip}")
        elif ip not in subnet or str(ip) in (net.gateway_ip, str(subnet.network_address)):
            raise TestbedError(f"{spec.name}: {spec.ip} is not a usable address in {subnet}")
        with self._state.edit() as state:
            guests = state.guests
            g = guests.get(spec.name)
            for other, og in guests.items():
                if other != spec.name and og.ip == spec.ip:
                    raise TestbedError(f"{spec.name}: {spec.ip} is already used by guest {other}")
            if g is None:
                used = {og.index for og in guests.values()}
                index = next(i for i in range(len(used) + 1) if i not in used)
                d = self.guest_dir(spec.name)
                g = GuestState(
                    name=spec.name,
                    ip=spec.ip,
                    index=index,
                    netns=OUTSIDER_NS if spec.outsider else f"pgs-{short_name(spec.name)}",
                    # interface names: 15 characters at most
                    veth=OUTSIDER_VETH if spec.outsider else f"pgsv{index}",
                    dir=str(d),
                    merged=str(d / "merged"),
                    log=str(d / "nspawn.log"),
                )
                guests[spec.name] = g
            elif g.ip != spec.ip:
                raise TestbedError(f"{spec.name} is recorded with ip {g.ip}, not {spec.ip}: call down() first")
            return g

    # ------------------------------------------------------------------ boot

    def boot_all(self, specs: Sequence[GuestSpec]) -> None:
        """Boot several guests in parallel (each as boot)."""
        self._rootfs.ensure()
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            for fut in [pool.submit(self.boot, s) for s in specs]:
                fut.result()

    def boot(self, spec: GuestSpec) -> None:
        """Boot a guest and wait until ssh works and systemd finished booting. A running one is kept."""
        self._claim_machine()
        rootfs = self._rootfs.ensure()
        net = self._state.load().require_network()
        g = self._register(spec)
        merged = Path(g.merged)
        if self._procs.alive(g.pid, g.merged):
            self._log(f"{spec.name}: already running (pid {g.pid})")
            return
        t0 = time.monotonic()
        with self._state.lock:
            guest_cgroups = self._make_cgroups(spec.name)
            # A guest whose nspawn died (killed, or its driver crashed) may still run: it would
            # answer ssh in place of the new boot. Nothing of an earlier boot may be left.
            cgroups.kill(guest_cgroups, spec.name, self._log)
            ns = g.netns
            if not spec.outsider:  # the outsider's namespace is up with the network (network.py)
                veth_up(g.veth, g.netns)
                run(["ip", "-n", ns, "addr", "replace", f"{spec.ip}/{net.prefix}", "dev", GUEST_IFACE])
                run(["ip", "-n", ns, "route", "replace", "default", "via", net.gateway_ip])
                run(["ip", "-n", ns, "route", "replace", f"{net.outsider_ip}/32", "dev", GUEST_IFACE])
            self._mount_overlay(spec.name, g, rootfs)
            self._write_guest_files(spec, merged, net)
            argv = [
                "systemd-nspawn",
                "--boot",
                "--register=no",  # no systemd-machined on the host ...
                "--keep-unit",  # ... and no host systemd to make a scope unit: "Failed to open system bus"
                f"--network-namespace-path=/run/netns/{ns}",
                f"--machine={short_name(spec.name)}",
                f"--hostname={spec.name}",
                "--resolv-conf=off",  # keep the rootfs' resolver-less resolv.conf
                "--timezone=off",  # keep UTC as prepared
                "--link-journal=no",
                "--settings=no",  # ignore any .nspawn files on the host
                "--console=read-only",  # boot messages to the log; no console input
                "-D",
                str(merged),
            ]
            # Why: with --keep-unit nspawn puts the guest's systemd into *its own* cgroup (payload/);
            # two guests started from one process would share it and each guest's systemd would
            # manage (and kill) the other's services. So each nspawn starts in a cgroup of its own.
            procs = [str(c / "cgroup.procs") for c in guest_cgroups]
            enter = (
                'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'
            )
            pid = self._procs.spawn(["sh", "-c", enter, "sh", str(len(procs)), *procs, *argv], Path(g.log))
            with self._state.edit() as state:
                state.guests[spec.name].pid = pid
        self._log(f"{spec.name}: systemd-nspawn started (pid {pid}, ip {spec.ip}, log {g.log})")
        self._wait_ready(spec.name, spec.ip, pid, g.merged, Path(g.log), t0)

    def _make_cgroups(self, name: str) -> list[Path]:
        """Create (and record) the guest's cgroups: <hierarchy>/pgstack-sandbox/<name>."""
        guest_cgroups = [parent / short_name(name) for parent in cgroups.parents()]
        with self._state.edit() as state:
            state.guests[name].cgroups = [str(c) for c in guest_cgroups]
        for c in guest_cgroups:
            c.mkdir(parents=True, exist_ok=True)
        return guest_cgroups

    def _mount_overlay(self, name: str, g: GuestState, rootfs: Path) -> None:
        d = Path(g.dir)
        merged = Path(g.merged)
        if str(merged) in mountpoints():
            if g.rootfs == str(rootfs):
                return
            run(["umount", merged])
        if g.rootfs not in (None, str(rootfs)) and (d / "upper").exists():
            # An overlay upper dir only makes sense on the lower dir it was made on.
            self._log(f"{name}: rootfs changed since the last boot: discarding the guest's changes")
            shutil.rmtree(d / "upper")
            shutil.rmtree(d / "work", ignore_errors=True)
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        with self._state.edit() as state:
            state.guests[name].rootfs = str(rootfs)
            state.guests[name].mounted = True
        opts = f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, merged])

    def _write_guest_files(self, spec: GuestSpec, root: Path, net: NetworkState) -> None:
        """Per-guest files, written into the overlay's upper dir (through the merged mount) before boot."""
        pub = self.ensure_ssh_key()
        ssh_dir = _guest_path(root, "root/.ssh")
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(ssh_dir, 0o700)
        keys = _guest_path(root, "root/.ssh/authorized_keys")
        keys.write_text(pub)
        os.chmod(keys, 0o600)
        _guest_path(root, "etc/hostname").write_text(spec.name + "\n")
        _guest_path(root, "etc/hosts").write_text(
            "127.0.0.1\tlocalhost\n"
            f"{spec.ip}\t{spec.name}\n"
            f"{net.gateway_ip}\t{S3_DNS_NAME}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        machine_id = _guest_path(root, "etc/machine-id")
        if not machine_id.read_text().strip():  # kept across reboots, unique per guest
            machine_id.write_text(uuid.uuid4().hex + "\n")

    def _wait_ready(self, name: str, ip: str, pid: int, needle: str, log_file: Path, t0: float) -> None:
        deadline = t0 + BOOT_TIMEOUT

        def check_alive() -> None:
            if not self._procs.alive(pid, needle):
                raise TestbedError(
                    f"{name}: systemd-nspawn exited during boot; log {log_file}:\n"
                    f"{tail(log_file.read_text(errors='replace'))}"
                )

        while True:
            check_alive()
            res = subprocess.run(
                [*self.ssh_argv(ip, connect_timeout=2), "true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
            if res.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"{name}: no ssh after {BOOT_TIMEOUT:.0f} s: {tail(res.stderr)}\n"
                    f"log {log_file}:\n{tail(log_file.read_text(errors='replace'))}"
                )
            time.sleep(0.2)
        t_ssh = time.monotonic() - t0
        res_run = self.ssh(ip, "systemctl is-system-running --wait", timeout=max(10.0, deadline - time.monotonic()))
        status = res_run.stdout.strip()
        if status == "degraded":
            failed = self.ssh(ip, "systemctl list-units --failed --plain --no-legend --no-pager").stdout
            self._log(f"{name}: degraded; failed units:\n{failed.rstrip()}")
        elif status != "running":
            check_alive()
            raise TestbedError(f"{name}: systemd state {status!r} (rc={res_run.returncode}) {res_run.stderr}")
        self._log(f"{name}: booted in {time.monotonic() - t0:.1f} s (ssh after {t_ssh:.1f} s, systemd {status})")

    # ------------------------------------------------------------------ stop, kill, reboot

    def stop(self, name: str, timeout: float = POWEROFF_TIMEOUT) -> None:
        """Clean poweroff (SIGTERM to nspawn = SIGRTMIN+3 to the guest's systemd), SIGKILL after timeout.

        The overlay and the namespace stay: boot starts the same machine again.
        """
        g = self._state.load().require_guest(name)
        t0 = time.monotonic()
        clean = self._procs.stop(g.pid, g.merged, f"{name} (systemd-nspawn)", timeout)
        cgroups.kill(_cgroup_paths(g), name, self._log)
        self._log(f"{name}: {'powered off' if clean else 'killed'} in {time.monotonic() - t0:.1f} s")

    def kill(self, name: str) -> None:
        """Hard crash: SIGKILL to every process of the guest and its nspawn, no shutdown at all."""
        g = self._state.load().require_guest(name)
        t0 = time.monotonic()
        cgroups.kill(_cgroup_paths(g), name, self._log)
        self._procs.stop(g.pid, g.merged, f"{name} (systemd-nspawn)", 10, sig=signal.SIGKILL)
        self._log(f"{name}: killed in {time.monotonic() - t0:.1f} s")

    def reboot(self, name: str) -> None:
        """Poweroff from inside, wait for nspawn to exit, boot the same overlay and namespace again."""
        g = self._state.load().require_guest(name)
        t0 = time.monotonic()
        if g.pid is not None and self._procs.alive(g.pid, g.merged):
            res = self.ssh(g.ip, "systemctl poweroff --no-block", timeout=30)
            if res.returncode != 0:
                self._log(f"{name}: poweroff over ssh failed (rc={res.returncode} {res.stderr.strip()}): SIGTERM")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(g.pid, signal.SIGTERM)
            if not self._procs.wait_gone([(g.pid, g.merged)], POWEROFF_TIMEOUT):
                self._procs.stop(g.pid, g.merged, f"{name} (systemd-nspawn)", 5, sig=signal.SIGKILL)
        cgroups.kill(_cgroup_paths(g), name, self._log)
        self._log(f"{name}: powered off in {time.monotonic() - t0:.1f} s")
        self.boot(GuestSpec(name, g.ip, outsider=g.netns == OUTSIDER_NS))
