"""Local test bed for a rehearsal: guest machines and S3 object storage on this machine only.

What it builds (as root, Debian bookworm host):
- a guest root filesystem made once by debootstrap (cached under cache_dir, keyed by its package list);
- a bridge "pgsbr0" in the root network namespace holding the private network's gateway address;
- per guest: a network namespace with a veth on the bridge, an overlayfs copy of the rootfs, and
  systemd-nspawn booting real systemd in it (sshd, PostgreSQL and timers work as on a server);
- an "outsider" namespace on the same bridge with an address outside the private subnet
  (on-link routes both ways), to prove that access rules reject it;
- S3: moto (in memory) behind a TCP relay on gateway:9443, so an outage can be simulated without
  losing moto's data (see s3_outage).

Everything is recorded in run_dir/state.json before it is created, so `Testbed().down()` in a
fresh process can take it all down again, even after a crash half way.

Traffic only ever goes to loopback and the namespaces created here: the bridge does not forward
(its forwarding sysctl is set to 0), and the root namespace routes the outsider's address back
onto the bridge so no reply leaves by the machine's own network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

__all__ = ["GuestSpec", "S3Endpoint", "Testbed", "TestbedError"]

HERE = Path(__file__).resolve().parent
PACKAGES_FILE = HERE / "rootfs-packages.txt"

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bump when _prepare_rootfs changes: part of the rootfs hash, so the next run builds a new one.
ROOTFS_VERSION = "1"
ROOTFS_MARKER = ".pgstack-rootfs-complete"

BRIDGE = "pgsbr0"
OUTSIDER_NS = "pgs-outsider"
OUTSIDER_VETH = "pgsvo"
GUEST_IFACE = "eth0"  # name of the veth end inside every namespace

S3_PORT = 9443
S3_DNS_NAME = "s3.pgstack.test"
S3_DEFAULT_REGION = "eu-central"
S3_ACCESS_KEY = "pgstack-sandbox-access-key"
S3_SECRET_KEY = "pgstack-sandbox-secret-key"  # a dummy: moto accepts any credentials

# One test bed per machine: the bridge, namespace and cgroup names are fixed. Held from up() to down().
LOCK_FILE = Path("/run/pgstack-sandbox.lock")

BOOT_TIMEOUT = 180.0
POWEROFF_TIMEOUT = 60.0

# Units masked in the guest rootfs, and why.
MASKED_UNITS = (
    # The harness configures eth0, addresses and routes from outside: nothing inside may redo it.
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "networking.service",
    # A detached container has no console input: gettys only fail or spin.
    "console-getty.service",
    "container-getty@.service",
    "getty@.service",
    "serial-getty@.service",
    # Would prompt for locale/timezone/password on the console on first boot and hang the boot.
    "systemd-firstboot.service",
    # Would try to reach the network or do host work: slow, noisy and pointless in a test guest.
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
)

SSHD_CONFIG = """\
# pgstack test bed: root logs in with the harness key only.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

RESOLV_CONF = """\
# pgstack test bed: guests have no DNS on purpose (no traffic may leave the test bed).
# Names the tests need are in /etc/hosts.
"""


class TestbedError(RuntimeError):
    """A test bed step failed; the message carries the command and its output."""

    __test__ = False  # not a pytest test class despite the name


@dataclass
class GuestSpec:
    """A guest to boot: its host name and the private IP the stack config gives that server."""

    name: str
    ip: str


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


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_packages(path: Path) -> list[str]:
    pkgs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pkgs.append(line)
    if not pkgs:
        raise TestbedError(f"{path}: no packages listed")
    return pkgs


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountpoints() -> list[str]:
    """Mount points of this mount namespace (mountinfo escapes blanks as octal)."""
    return [_unescape(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _tracking_cgroup_roots() -> list[Path]:
    """Mounted cgroup hierarchies systemd tracks services in: cgroup2 and the v1 name=systemd one."""
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        tail = fields[fields.index("-") + 1 :]
        fstype, opts = tail[0], tail[2].split(",")
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts):
            roots.append(Path(_unescape(fields[4])))
    return roots


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pid_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


class _MachineLock:
    """The machine-wide test bed lock, shared by all Testbed objects of this process.

    Why: two test beds at once would fight over pgsbr0, the namespaces and the S3 port, and a fresh
    process's down() would tear down a rehearsal that is still running. flock is released when the
    holder exits, so a crashed driver never leaves it taken.
    """

    _mutex = threading.Lock()
    _fd: int | None = None

    @classmethod
    def acquire(cls, wait: float, log: Callable[[str], None]) -> None:
        with cls._mutex:
            if cls._fd is not None:
                return
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            deadline = time.monotonic() + wait
            logged = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise TestbedError(
                            f"another test bed is in use on this machine ({LOCK_FILE}: {holder}); "
                            "wait for it to finish (or stop it) and try again"
                        ) from None
                    if not logged:
                        log(f"waiting up to {wait:.0f} s for the test bed in use ({holder})")
                        logged = True
                    time.sleep(1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {_pid_cmdline(os.getpid())[:300]}\n".encode(), 0)
            cls._fd = fd

    @classmethod
    def release(cls) -> None:
        with cls._mutex:
            if cls._fd is not None:
                os.ftruncate(cls._fd, 0)
                os.close(cls._fd)  # closing drops the flock
                cls._fd = None


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
        self._lock = threading.RLock()  # guards state.json and the process table
        self._rootfs_lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}  # our children: reaped, not zombies
        self._rootfs: Path | None = None

    # ------------------------------------------------------------------ plumbing

    def log(self, msg: str) -> None:
        self._log_fn(f"[testbed] {msg}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _run(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float | None = 120,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command, capture text output; raise TestbedError with that output on failure."""
        argv = [str(a) for a in argv]
        try:
            res = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise TestbedError(
                f"timed out after {timeout} s: {shlex.join(argv)}\n"
                f"stdout:\n{_tail(e.stdout)}\nstderr:\n{_tail(e.stderr)}"
            ) from None
        except OSError as e:
            raise TestbedError(f"cannot run {shlex.join(argv)}: {e}") from None
        out = subprocess.CompletedProcess(
            argv, res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
        )
        if check and out.returncode != 0:
            raise TestbedError(
                f"command failed (rc={out.returncode}): {shlex.join(argv)}\n"
                f"stdout:\n{_tail(out.stdout)}\nstderr:\n{_tail(out.stderr)}"
            )
        return out

    def _try(self, argv: Sequence[str], what: str) -> bool:
        """Teardown step: run, log a failure instead of raising."""
        try:
            self._run(argv, check=True, timeout=60)
            return True
        except TestbedError as e:
            self.log(f"{what}: {e}")
            return False

    # ------------------------------------------------------------------ state

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise TestbedError(f"unreadable {self.state_file}: {e}") from None

    def _save(self, state: dict[str, Any]) -> None:
        # Written before each thing is created (intent first): a crash still leaves a full record.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            state = self._load()
            try:
                yield state
            finally:
                self._save(state)

    def _network(self) -> dict[str, Any]:
        net = self._load().get("network")
        if not net:
            raise TestbedError("the test bed network is not up: call up() first")
        return net

    # ------------------------------------------------------------------ processes

    def _spawn(self, argv: Sequence[str], log_file: Path, env: dict[str, str] | None = None) -> int:
        """Start a detached process (own session: Ctrl-C reaches only us) with output to a file."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=None if env is None else {**os.environ, **env},
            )
        self._procs[proc.pid] = proc
        return proc.pid

    def _alive(self, pid: int | None, needle: str) -> bool:
        """Is pid running and still the process we started (cmdline contains needle)?"""
        if not pid:
            return False
        proc = self._procs.get(pid)
        if proc is not None:
            # Our own child: its pid cannot be reused before we reap it. Its cmdline is no proof:
            # /proc/<pid>/cmdline reads empty while it execs (sh -> systemd-nspawn), which once
            # passed for "exited during boot".
            return proc.poll() is None
        if _pid_state(pid) in ("", "Z", "X"):
            return False
        cmdline = _pid_cmdline(pid)
        if not cmdline:  # mid-exec: look again
            time.sleep(0.05)
            cmdline = _pid_cmdline(pid)
        return needle in cmdline

    def _stop_pid(self, pid: int | None, needle: str, what: str, timeout: float, sig: int = signal.SIGTERM) -> bool:
        """Signal, wait up to timeout, then SIGKILL. Returns True if it ended cleanly (before SIGKILL)."""
        if not self._alive(pid, needle):
            return True
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if self._wait_gone([(pid, needle)], timeout):
            return True
        self.log(f"{what} (pid {pid}) still running after {timeout:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_gone([(pid, needle)], 10):
            self.log(f"{what} (pid {pid}) survived SIGKILL")
        return False

    def _wait_gone(self, pids: list[tuple[int, str]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(self._alive(p, n) for p, n in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # ------------------------------------------------------------------ rootfs

    def rootfs_key(self) -> str:
        """Hash of everything that decides the rootfs contents: a change means a new build."""
        pkgs = sorted(set(_read_packages(PACKAGES_FILE)))
        return hashlib.sha256("\n".join([SUITE, *pkgs, ROOTFS_VERSION]).encode()).hexdigest()[:12]

    def ensure_rootfs(self) -> Path:
        """Build the guest rootfs once (debootstrap), reuse it while the package list is unchanged."""
        with self._rootfs_lock:
            if self._rootfs is not None and (self._rootfs / ROOTFS_MARKER).is_file():
                return self._rootfs
            pkgs = sorted(set(_read_packages(PACKAGES_FILE)))
            final = self.cache_dir / f"rootfs-{self.rootfs_key()}"
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # Another process may be building the same rootfs: one builds, the other waits and reuses.
            with open(self.cache_dir / ".rootfs.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if (final / ROOTFS_MARKER).is_file():
                    self.log(f"rootfs: reusing {final}")
                else:
                    self._build_rootfs(final, pkgs)
            self._remove_old_rootfs(final)
            self._rootfs = final
            return final

    def _build_rootfs(self, final: Path, pkgs: list[str]) -> None:
        tmp = final.with_name(final.name + ".partial")
        for d in (tmp, final):  # leftovers of an interrupted build
            if d.exists():
                self._unmount_under(d)
                shutil.rmtree(d)
        log_file = final.with_name(final.name + ".log")
        self.log(f"rootfs: debootstrap {SUITE} with {len(pkgs)} packages into {tmp} (log: {log_file})")
        t0 = time.monotonic()
        argv = [
            "debootstrap",
            "--variant=minbase",  # a lean base; everything needed is listed explicitly
            f"--include={','.join(pkgs)}",
            SUITE,
            str(tmp),
            self.mirror,
        ]
        try:
            with open(log_file, "wb") as out:
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=1800,
                    check=False,
                ).returncode
            if rc != 0:
                output = _tail(log_file.read_text(errors="replace"))
                raise TestbedError(f"command failed (rc={rc}): {shlex.join(argv)}\n{output}")
            self._kill_processes_in(tmp)
            self._prepare_rootfs(tmp)
        except BaseException:
            self._kill_processes_in(tmp)
            self._unmount_under(tmp)
            raise
        self._unmount_under(tmp)
        # The marker is written last, then the rename makes the complete tree appear at once.
        (tmp / ROOTFS_MARKER).write_text(
            json.dumps({"suite": SUITE, "packages": pkgs, "version": ROOTFS_VERSION, "built": time.time()})
        )
        os.rename(tmp, final)
        self.log(f"rootfs: built {final} in {time.monotonic() - t0:.1f} s")

    def _prepare_rootfs(self, root: Path) -> None:
        """One-time settings every guest shares (per-guest files are written at boot)."""
        etc = root / "etc"
        (etc / "ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
        (etc / "ssh/sshd_config.d/10-pgstack-sandbox.conf").write_text(SSHD_CONFIG)
        # Root has no password (shadow '*'): login is by the harness key only.
        self._run(["chroot", root, "usermod", "-p", "*", "root"])
        (etc / "default/locale").write_text("LANG=C.UTF-8\n")
        (etc / "timezone").write_text("Etc/UTC\n")
        localtime = etc / "localtime"
        localtime.unlink(missing_ok=True)
        localtime.symlink_to("/usr/share/zoneinfo/Etc/UTC")
        # debootstrap copied the host's resolver: guests must not query it.
        resolv = etc / "resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text(RESOLV_CONF)
        # Each guest gets its own machine id at first boot (journal, D-Bus); none is shared.
        (etc / "machine-id").write_text("")
        dbus_id = root / "var/lib/dbus/machine-id"
        if dbus_id.is_file() and not dbus_id.is_symlink():
            dbus_id.unlink()
            dbus_id.symlink_to("/etc/machine-id")
        for unit in MASKED_UNITS:
            link = etc / "systemd/system" / unit
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()

    def _kill_processes_in(self, root: Path) -> None:
        """Daemons a package postinst may have started inside the debootstrap chroot."""
        root_s = str(root.resolve())
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                proc_root = os.readlink(proc / "root")
            except OSError:
                continue
            if proc_root == root_s or proc_root.startswith(root_s + "/"):
                self.log(f"rootfs: killing leftover process {proc.name} ({_pid_cmdline(int(proc.name))})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount_under(self, path: Path) -> None:
        prefix = str(path.resolve())
        for mp in sorted(_mountpoints(), key=len, reverse=True):
            inside = mp == prefix or mp.startswith(prefix + "/")
            if inside and not self._try(["umount", mp], f"umount {mp}"):
                self._try(["umount", "-l", mp], f"umount -l {mp}")

    def _remove_old_rootfs(self, keep: Path) -> None:
        in_use = " ".join(Path("/proc/self/mounts").read_text().split("\n"))
        for old in self.cache_dir.glob("rootfs-*"):
            if old.name in (keep.name, keep.name + ".log", keep.name + ".partial"):
                continue
            if str(old) in in_use:
                self.log(f"rootfs: {old} is still used by a mount: kept")
                continue
            self.log(f"rootfs: removing old {old}")
            if old.is_dir():
                self._unmount_under(old)
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ network

    def up(self, subnet_cidr: str, gateway_ip: str, outsider_ip: str) -> None:
        """Bridge with the gateway address, plus the outsider namespace. Idempotent."""
        subnet = ipaddress.ip_network(subnet_cidr, strict=True)
        gw = ipaddress.ip_address(gateway_ip)
        outsider = ipaddress.ip_address(outsider_ip)
        if gw not in subnet:
            raise TestbedError(f"gateway {gw} is not in {subnet}")
        if outsider in subnet:
            raise TestbedError(f"outsider {outsider} must be outside {subnet}")
        want = {
            "subnet": str(subnet),
            "prefix": subnet.prefixlen,
            "gateway_ip": str(gw),
            "outsider_ip": str(outsider),
            "bridge": BRIDGE,
            "outsider_ns": OUTSIDER_NS,
            "outsider_veth": OUTSIDER_VETH,
        }
        _MachineLock.acquire(self.lock_wait, self.log)
        t0 = time.monotonic()
        with self._state() as state:
            have = state.get("network")
            if have and have != want:
                raise TestbedError(f"a test bed with another network is up ({have}): call down() first")
            state["network"] = want
            state.setdefault("guests", {})
        with self._lock:
            self._bridge_up(want)
            self._outsider_up(want)
        took = time.monotonic() - t0
        self.log(f"network up: bridge {BRIDGE} {gw}/{subnet.prefixlen}, outsider {outsider} ({took:.2f} s)")

    @staticmethod
    def _link_exists(name: str, netns: str | None = None) -> bool:
        argv = ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    @staticmethod
    def _veth_names() -> list[str]:
        res = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=False)
        return [line.split(":", 2)[1].strip().split("@", 1)[0] for line in res.stdout.splitlines() if ":" in line]

    @staticmethod
    def _netns_exists(name: str) -> bool:
        return Path("/run/netns", name).exists()

    def _sysctl_iface(self, iface: str, key: str, value: str, netns: str | None = None) -> None:
        path = f"/proc/sys/net/{key.replace('IFACE', iface)}"
        if netns:
            self._run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"])
        else:
            Path(path).write_text(value)

    def _bridge_up(self, net: dict[str, Any]) -> None:
        if not self._link_exists(BRIDGE):
            self._run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        # No forwarding: guests' default route ends at the host, never leaves by eth0.
        self._sysctl_iface(BRIDGE, "ipv4/conf/IFACE/forwarding", "0")
        # No IPv6 on the host side: nothing but the configured IPv4 on these links.
        self._sysctl_iface(BRIDGE, "ipv6/conf/IFACE/disable_ipv6", "1")
        self._run(["ip", "addr", "replace", f"{net['gateway_ip']}/{net['prefix']}", "dev", BRIDGE])
        self._run(["ip", "link", "set", BRIDGE, "up"])
        # Replies to the outsider go back onto the bridge, not out by the machine's default route.
        self._run(["ip", "route", "replace", f"{net['outsider_ip']}/32", "dev", BRIDGE])

    def _veth_up(self, veth: str, netns: str) -> None:
        """Namespace + veth pair (host end on the bridge, 'eth0' inside), both up."""
        if not self._netns_exists(netns):
            self._run(["ip", "netns", "add", netns])
        if not self._link_exists(veth):
            if self._link_exists(GUEST_IFACE, netns):  # half-made earlier: start clean
                self._run(["ip", "-n", netns, "link", "del", GUEST_IFACE])
            self._run(["ip", "link", "add", veth, "type", "veth", "peer", "name", GUEST_IFACE, "netns", netns])
        self._sysctl_iface(veth, "ipv6/conf/IFACE/disable_ipv6", "1")
        self._sysctl_iface(GUEST_IFACE, "ipv6/conf/IFACE/disable_ipv6", "1", netns)
        self._run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
        self._run(["ip", "-n", netns, "link", "set", "lo", "up"])
        self._run(["ip", "-n", netns, "link", "set", GUEST_IFACE, "up"])

    def _outsider_up(self, net: dict[str, Any]) -> None:
        self._veth_up(OUTSIDER_VETH, OUTSIDER_NS)
        self._run(["ip", "-n", OUTSIDER_NS, "addr", "replace", f"{net['outsider_ip']}/32", "dev", GUEST_IFACE])
        # On-link route to the private subnet: same L2 segment, no router involved.
        self._run(["ip", "-n", OUTSIDER_NS, "route", "replace", net["subnet"], "dev", GUEST_IFACE])

    # ------------------------------------------------------------------ guests

    @property
    def ssh_key(self) -> Path:
        return self.run_dir / "ssh" / "id_ed25519"

    def _ensure_ssh_key(self) -> str:
        with self._lock:
            if not self.ssh_key.is_file():
                self.ssh_key.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(self.ssh_key.parent, 0o700)
                self._run(
                    [
                        "ssh-keygen",
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        "pgstack-sandbox",
                        "-f",
                        self.ssh_key,
                    ]
                )
            return self.ssh_key.with_suffix(".pub").read_text()

    @staticmethod
    def _short(name: str) -> str:
        short = re.sub(r"[^a-z0-9-]", "-", name.lower())[:24]
        if not short:
            raise TestbedError(f"unusable guest name {name!r}")
        return short

    def guest_dir(self, name: str) -> Path:
        """Per-guest overlay dirs (upper, work, merged) and the nspawn log."""
        return self.run_dir / "guests" / self._short(name)

    def guests(self) -> dict[str, str]:
        """Recorded guests: name -> ip."""
        return {n: g["ip"] for n, g in self._load().get("guests", {}).items()}

    def _register_guest(self, spec: GuestSpec) -> dict[str, Any]:
        net = self._network()
        subnet = ipaddress.ip_network(net["subnet"])
        ip = ipaddress.ip_address(spec.ip)
        if ip not in subnet or str(ip) in (net["gateway_ip"], str(subnet.network_address)):
            raise TestbedError(f"{spec.name}: {spec.ip} is not a usable address in {subnet}")
        with self._state() as state:
            guests = state.setdefault("guests", {})
            g = guests.get(spec.name)
            for other, og in guests.items():
                if other != spec.name and og["ip"] == spec.ip:
                    raise TestbedError(f"{spec.name}: {spec.ip} is already used by guest {other}")
            if g is None:
                used = {og["index"] for og in guests.values()}
                index = next(i for i in range(len(used) + 1) if i not in used)
                d = self.guest_dir(spec.name)
                g = {
                    "name": spec.name,
                    "ip": spec.ip,
                    "index": index,
                    "netns": f"pgs-{self._short(spec.name)}",
                    "veth": f"pgsv{index}",  # interface names: 15 characters at most
                    "dir": str(d),
                    "merged": str(d / "merged"),
                    "log": str(d / "nspawn.log"),
                    "pid": None,
                    "mounted": False,
                }
                guests[spec.name] = g
            elif g["ip"] != spec.ip:
                raise TestbedError(f"{spec.name} is recorded with ip {g['ip']}, not {spec.ip}: call down() first")
            return dict(g)

    def boot_guests(self, specs: Sequence[GuestSpec]) -> None:
        """Boot several guests in parallel (each as boot_guest)."""
        self.ensure_rootfs()
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            for fut in [pool.submit(self.boot_guest, s) for s in specs]:
                fut.result()

    def boot_guest(self, spec: GuestSpec) -> None:
        """Boot a guest and wait until ssh works and systemd finished booting. A running one is kept."""
        _MachineLock.acquire(self.lock_wait, self.log)
        rootfs = self.ensure_rootfs()
        net = self._network()
        g = self._register_guest(spec)
        merged = Path(g["merged"])
        if self._alive(g["pid"], g["merged"]):
            self.log(f"{spec.name}: already running (pid {g['pid']})")
            return
        t0 = time.monotonic()
        with self._lock:
            cgroups = self._guest_cgroups(spec.name)
            # A guest whose nspawn died (killed, or its driver crashed) may still run: it would
            # answer ssh in place of the new boot. Nothing of an earlier boot may be left.
            self._kill_cgroups([str(c) for c in cgroups], spec.name)
            self._veth_up(g["veth"], g["netns"])
            ns = g["netns"]
            self._run(["ip", "-n", ns, "addr", "replace", f"{spec.ip}/{net['prefix']}", "dev", GUEST_IFACE])
            self._run(["ip", "-n", ns, "route", "replace", "default", "via", net["gateway_ip"]])
            self._run(["ip", "-n", ns, "route", "replace", f"{net['outsider_ip']}/32", "dev", GUEST_IFACE])
            self._mount_overlay(spec.name, g, rootfs)
            self._write_guest_files(spec, merged, net)
            argv = [
                "systemd-nspawn",
                "--boot",
                "--register=no",  # no systemd-machined on the host ...
                "--keep-unit",  # ... and no host systemd to make a scope unit: "Failed to open system bus"
                f"--network-namespace-path=/run/netns/{ns}",
                f"--machine={self._short(spec.name)}",
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
            procs = [str(c / "cgroup.procs") for c in cgroups]
            enter = (
                'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'
            )
            pid = self._spawn(["sh", "-c", enter, "sh", str(len(procs)), *procs, *argv], Path(g["log"]))
            with self._state() as state:
                state["guests"][spec.name]["pid"] = pid
        self.log(f"{spec.name}: systemd-nspawn started (pid {pid}, ip {spec.ip}, log {g['log']})")
        self._wait_ready(spec.name, spec.ip, pid, g["merged"], Path(g["log"]), t0)

    def _guest_cgroups(self, name: str) -> list[Path]:
        """Create (and record) the guest's cgroups: <hierarchy>/pgstack-sandbox/<name>."""
        cgroups = [root / "pgstack-sandbox" / self._short(name) for root in _tracking_cgroup_roots()]
        with self._state() as state:
            state["guests"][name]["cgroups"] = [str(c) for c in cgroups]
        for c in cgroups:
            c.mkdir(parents=True, exist_ok=True)
        return cgroups

    @staticmethod
    def _cgroup_pids(cgroups: list[str]) -> set[int]:
        """Live (non-zombie) processes anywhere in these cgroup trees."""
        pids: set[int] = set()
        for top in cgroups:
            for dirpath, _, files in os.walk(top):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
        return {p for p in pids if _pid_state(p) not in ("", "Z", "X")}

    def _kill_cgroups(self, cgroups: list[str], what: str, timeout: float = 15) -> None:
        """SIGKILL everything in a guest's cgroups: the guest's processes outlive a killed nspawn.

        Why: nspawn does not take its container down with it when it is SIGKILLed; the guest's
        systemd is re-parented to the host's init and keeps running (same IP, same overlay).
        cgroup.kill (cgroup v2) kills a whole tree at once; pid by pid is the fallback.
        """
        if not self._cgroup_pids(cgroups):
            return
        self.log(f"{what}: killing the processes left in its cgroups")
        for top in map(Path, cgroups):
            with contextlib.suppress(OSError):
                (top / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + timeout
        while pids := self._cgroup_pids(cgroups):
            if time.monotonic() > deadline:
                self.log(f"{what}: processes survive SIGKILL: {sorted(pids)}")
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _remove_cgroups(self, cgroups: list[str], timeout: float = 20) -> None:
        """rmdir cgroup trees leaves first (the guests' systemd made sub-cgroups); tolerate absence.

        Also sweeps <hierarchy>/pgstack-sandbox (only this test bed makes it), so trees left by an
        earlier crash go too. rmdir is retried while busy: a cgroup stays busy until its last
        exited task is reaped, and an orphaned nspawn is reaped by the host's init, not by us.
        """
        tops = [Path(c) for c in cgroups] + [root / "pgstack-sandbox" for root in _tracking_cgroup_roots()]
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
                self.log(f"down: cgroups still busy after {timeout:.0f} s: {busy}")
                return
            time.sleep(0.2)

    def _mount_overlay(self, name: str, g: dict[str, Any], rootfs: Path) -> None:
        d = Path(g["dir"])
        merged = Path(g["merged"])
        if str(merged) in _mountpoints():
            if g.get("rootfs") == str(rootfs):
                return
            self._run(["umount", merged])
        if g.get("rootfs") not in (None, str(rootfs)) and (d / "upper").exists():
            # An overlay upper dir only makes sense on the lower dir it was made on.
            self.log(f"{name}: rootfs changed since the last boot: discarding the guest's changes")
            shutil.rmtree(d / "upper")
            shutil.rmtree(d / "work", ignore_errors=True)
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        with self._state() as state:
            state["guests"][name]["rootfs"] = str(rootfs)
            state["guests"][name]["mounted"] = True
        opts = f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}"
        self._run(["mount", "-t", "overlay", "overlay", "-o", opts, merged])

    @staticmethod
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

    def _write_guest_files(self, spec: GuestSpec, root: Path, net: dict[str, Any]) -> None:
        """Per-guest files, written into the overlay's upper dir (through the merged mount) before boot."""
        pub = self._ensure_ssh_key()
        ssh_dir = self._guest_path(root, "root/.ssh")
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(ssh_dir, 0o700)
        keys = self._guest_path(root, "root/.ssh/authorized_keys")
        keys.write_text(pub)
        os.chmod(keys, 0o600)
        self._guest_path(root, "etc/hostname").write_text(spec.name + "\n")
        self._guest_path(root, "etc/hosts").write_text(
            "127.0.0.1\tlocalhost\n"
            f"{spec.ip}\t{spec.name}\n"
            f"{net['gateway_ip']}\t{S3_DNS_NAME}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        machine_id = self._guest_path(root, "etc/machine-id")
        if not machine_id.read_text().strip():  # kept across reboots, unique per guest
            machine_id.write_text(uuid.uuid4().hex + "\n")

    def _wait_ready(self, name: str, ip: str, pid: int, needle: str, log_file: Path, t0: float) -> None:
        deadline = t0 + BOOT_TIMEOUT

        def check_alive() -> None:
            if not self._alive(pid, needle):
                raise TestbedError(
                    f"{name}: systemd-nspawn exited during boot; log {log_file}:\n"
                    f"{_tail(log_file.read_text(errors='replace'))}"
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
                    f"{name}: no ssh after {BOOT_TIMEOUT:.0f} s: {_tail(res.stderr)}\n"
                    f"log {log_file}:\n{_tail(log_file.read_text(errors='replace'))}"
                )
            time.sleep(0.2)
        t_ssh = time.monotonic() - t0
        res_run = self.ssh(ip, "systemctl is-system-running --wait", timeout=max(10.0, deadline - time.monotonic()))
        status = res_run.stdout.strip()
        if status == "degraded":
            failed = self.ssh(ip, "systemctl list-units --failed --plain --no-legend --no-pager").stdout
            self.log(f"{name}: degraded; failed units:\n{failed.rstrip()}")
        elif status != "running":
            check_alive()
            raise TestbedError(f"{name}: systemd state {status!r} (rc={res_run.returncode}) {res_run.stderr}")
        self.log(f"{name}: booted in {time.monotonic() - t0:.1f} s (ssh after {t_ssh:.1f} s, systemd {status})")

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
        return self._run(
            [*self.ssh_argv(ip), "bash -c " + shlex.quote(script)], check=check, timeout=timeout, input=stdin
        )

    def _guest(self, name: str) -> dict[str, Any]:
        g = self._load().get("guests", {}).get(name)
        if g is None:
            raise TestbedError(f"no guest named {name!r}")
        return g

    def stop_guest(self, name: str, timeout: float = POWEROFF_TIMEOUT) -> None:
        """Clean poweroff (SIGTERM to nspawn = SIGRTMIN+3 to the guest's systemd), SIGKILL after timeout.

        The overlay and the namespace stay: boot_guest starts the same machine again.
        """
        g = self._guest(name)
        t0 = time.monotonic()
        clean = self._stop_pid(g["pid"], g["merged"], f"{name} (systemd-nspawn)", timeout)
        self._kill_cgroups(g.get("cgroups", []), name)
        self.log(f"{name}: {'powered off' if clean else 'killed'} in {time.monotonic() - t0:.1f} s")

    def kill_guest(self, name: str) -> None:
        """Hard crash: SIGKILL to every process of the guest and its nspawn, no shutdown at all."""
        g = self._guest(name)
        t0 = time.monotonic()
        self._kill_cgroups(g.get("cgroups", []), name)
        self._stop_pid(g["pid"], g["merged"], f"{name} (systemd-nspawn)", 10, sig=signal.SIGKILL)
        self.log(f"{name}: killed in {time.monotonic() - t0:.1f} s")

    def reboot_guest(self, name: str) -> None:
        """Poweroff from inside, wait for nspawn to exit, boot the same overlay and namespace again."""
        g = self._guest(name)
        t0 = time.monotonic()
        if self._alive(g["pid"], g["merged"]):
            res = self.ssh(g["ip"], "systemctl poweroff --no-block", timeout=30)
            if res.returncode != 0:
                self.log(f"{name}: poweroff over ssh failed (rc={res.returncode} {res.stderr.strip()}): SIGTERM")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(g["pid"], signal.SIGTERM)
            if not self._wait_gone([(g["pid"], g["merged"])], POWEROFF_TIMEOUT):
                self._stop_pid(g["pid"], g["merged"], f"{name} (systemd-nspawn)", 5, sig=signal.SIGKILL)
        self._kill_cgroups(g.get("cgroups", []), name)
        self.log(f"{name}: powered off in {time.monotonic() - t0:.1f} s")
        self.boot_guest(GuestSpec(name, g["ip"]))

    # ------------------------------------------------------------------ running things in namespaces

    def outsider(
        self, argv: Sequence[str], timeout: float = 30, check: bool = False, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (host filesystem) inside the outsider namespace. Not raised on failure unless check."""
        return self._run(["ip", "netns", "exec", OUTSIDER_NS, *argv], check=check, timeout=timeout, input=stdin)

    def netns_exec(
        self,
        guest_name: str,
        argv: Sequence[str],
        timeout: float = 60,
        check: bool = False,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (host filesystem, e.g. the host's psql) in a guest's network namespace."""
        ns = self._guest(guest_name)["netns"]
        return self._run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=stdin)

    # ------------------------------------------------------------------ S3

    @property
    def s3_dir(self) -> Path:
        return self.run_dir / "s3"

    def start_s3(self, region: str = S3_DEFAULT_REGION) -> S3Endpoint:
        """moto (TLS, in memory) on 127.0.0.1 behind a TCP relay on gateway_ip:9443. Idempotent."""
        _MachineLock.acquire(self.lock_wait, self.log)
        net = self._network()
        with self._lock:
            s3 = self._load().get("s3")
            if s3 and self._alive(s3.get("moto_pid"), "moto_tls.py"):
                if not s3.get("outage"):
                    self._start_relay()
                return self.s3_endpoint()
            t0 = time.monotonic()
            tls = self.s3_dir / "tls"
            tls.mkdir(parents=True, exist_ok=True)
            crt, key = tls / "s3.crt", tls / "s3.key"
            self._run([
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                "-subj", f"/CN={S3_DNS_NAME}",
                "-addext", f"subjectAltName=DNS:{S3_DNS_NAME},IP:{net['gateway_ip']},IP:127.0.0.1",
                "-keyout", key, "-out", crt,
            ])  # fmt: skip
            backend_port = self._free_port()
            s3 = {
                "host": net["gateway_ip"],
                "port": S3_PORT,
                "region": region,
                "backend_port": backend_port,
                "ca_file": str(crt),
                "moto_pid": None,
                "relay_pid": None,
                "outage": False,
            }
            with self._state() as state:
                state["s3"] = s3
            pid = self._spawn(
                [
                    sys.executable,
                    HERE / "moto_tls.py",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    backend_port,
                    "-c",
                    crt,
                    "-k",
                    key,
                ],
                self.s3_dir / "moto.log",
                # Path-style buckets only: otherwise moto reads "s3" in Host: s3.pgstack.test as a
                # bucket name (virtual-host style) and every request by DNS name misses.
                env={"S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"},
            )
            with self._state() as state:
                state["s3"]["moto_pid"] = pid
            self._wait_s3("127.0.0.1", backend_port, pid, "moto_tls.py", self.s3_dir / "moto.log")
            self._start_relay()
        ep = self.s3_endpoint()
        self.log(f"s3: moto up at {ep.url} (region {region}) in {time.monotonic() - t0:.1f} s")
        return ep

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _start_relay(self) -> None:
        s3 = self._load()["s3"]
        if self._alive(s3.get("relay_pid"), "tcp_relay.py"):
            return
        pid = self._spawn(
            [
                sys.executable,
                HERE / "tcp_relay.py",
                f"{s3['host']}:{s3['port']}",
                f"127.0.0.1:{s3['backend_port']}",
            ],
            self.s3_dir / "relay.log",
        )
        with self._state() as state:
            state["s3"]["relay_pid"] = pid
        self._wait_s3(s3["host"], s3["port"], pid, "tcp_relay.py", self.s3_dir / "relay.log")

    def _wait_s3(self, host: str, port: int, pid: int, needle: str, log_file: Path, timeout: float = 60) -> None:
        """Until an HTTPS request gets an HTTP answer (any status) from host:port."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive(pid, needle):
                raise TestbedError(f"{needle} exited; log {log_file}:\n{_tail(log_file.read_text(errors='replace'))}")
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
                    f"{_tail(log_file.read_text(errors='replace'))}"
                )
            time.sleep(0.1)

    def s3_endpoint(self) -> S3Endpoint:
        s3 = self._load().get("s3")
        if not s3:
            raise TestbedError("S3 is not started: call start_s3() first")
        return S3Endpoint(
            host=s3["host"],
            port=s3["port"],
            region=s3["region"],
            access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY,
            url=f"https://{s3['host']}:{s3['port']}",
            ca_file=s3["ca_file"],
        )

    def s3_outage(self, on: bool) -> None:
        """Simulate the object store being down (on=True) or back (on=False).

        The relay in front of moto is stopped (clients get 'connection refused', open connections
        are cut) and started again; moto itself keeps running, so buckets and objects survive.
        """
        with self._lock:
            s3 = self._load().get("s3")
            if not s3:
                raise TestbedError("S3 is not started: call start_s3() first")
            if on:
                self._stop_pid(s3.get("relay_pid"), "tcp_relay.py", "s3 relay", 10)
                with self._state() as state:
                    state["s3"]["outage"] = True
                    state["s3"]["relay_pid"] = None
            else:
                with self._state() as state:
                    state["s3"]["outage"] = False
                self._start_relay()
        self.log(f"s3: outage {'ON (relay stopped)' if on else 'OFF (relay started)'}")

    def stop_s3(self) -> None:
        """Stop relay and moto: moto's in-memory buckets are gone (use s3_outage to keep them)."""
        with self._lock:
            s3 = self._load().get("s3") or {}
            self._stop_pid(s3.get("relay_pid"), "tcp_relay.py", "s3 relay", 10)
            self._stop_pid(s3.get("moto_pid"), "moto_tls.py", "moto", 10)
            with self._state() as state:
                state.pop("s3", None)
        self.log("s3: stopped")

    def s3_client(self) -> Any:
        """A boto3 S3 client for the test bed's endpoint (verified against its own certificate)."""
        import boto3  # imported late: the rest of the test bed needs only the stdlib
        from botocore.config import Config

        ep = self.s3_endpoint()
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
        client = self.s3_client()
        ep = self.s3_endpoint()
        kwargs: dict[str, Any] = {"Bucket": name}
        if ep.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ep.region}
        try:
            client.create_bucket(**kwargs)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        self.log(f"s3: bucket {name} ready")

    # ------------------------------------------------------------------ teardown

    def down(self) -> None:
        """Take everything down from state.json (works from a fresh process). Never raises for
        things already gone; logs what it could not remove. Raises TestbedError only if another
        live process holds the test bed (waits lock_wait seconds for it first)."""
        with self._lock:
            _MachineLock.acquire(self.lock_wait, self.log)
            try:
                self._down()
            finally:
                _MachineLock.release()

    def _down(self) -> None:
        t0 = time.monotonic()
        try:
            state = self._load()
        except TestbedError as e:
            self.log(f"down: {e}; removing what the fixed names find")
            state = {}
        guests: dict[str, dict[str, Any]] = state.get("guests", {})
        # 1. guests: SIGTERM all (clean poweroff in parallel), then wait, then SIGKILL stragglers.
        running = [(g["pid"], g["merged"], n) for n, g in guests.items() if self._alive(g.get("pid"), g["merged"])]
        for pid, _, _ in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if running and not self._wait_gone([(p, m) for p, m, _ in running], POWEROFF_TIMEOUT):
            for pid, merged, name in running:
                self._stop_pid(pid, merged, f"{name} (systemd-nspawn)", 0, sig=signal.SIGKILL)
        if running:
            self.log(f"down: {len(running)} guest(s) powered off in {time.monotonic() - t0:.1f} s")
        # Whatever still runs in a guest's cgroup (a guest whose nspawn was killed, or one of a lost
        # state: under the machine lock, everything below pgstack-sandbox/ belongs to this test bed).
        own_cgroups = [c for g in guests.values() for c in g.get("cgroups", [])]
        own_cgroups += [str(root / "pgstack-sandbox") for root in _tracking_cgroup_roots()]
        self._kill_cgroups(own_cgroups, "down")
        # 2. S3 processes.
        s3 = state.get("s3") or {}
        self._stop_pid(s3.get("relay_pid"), "tcp_relay.py", "s3 relay", 10)
        self._stop_pid(s3.get("moto_pid"), "moto_tls.py", "moto", 10)
        # 3. overlays (and anything else mounted under run_dir).
        for g in guests.values():
            if g["merged"] in _mountpoints() and not self._try(["umount", g["merged"]], f"umount {g['merged']}"):
                self._try(["umount", "-l", g["merged"]], f"umount -l {g['merged']}")
        if self.run_dir.exists():
            self._unmount_under(self.run_dir)
        self._remove_cgroups(own_cgroups)
        # 4. links before namespaces: deleting a namespace frees its veth asynchronously. Names with
        # the test bed's prefixes that the state does not know (lost state) go too.
        veths = [g["veth"] for g in guests.values()] + [OUTSIDER_VETH]
        veths += [v for v in self._veth_names() if v.startswith("pgsv") and v not in veths]
        namespaces = [g["netns"] for g in guests.values()] + [OUTSIDER_NS]
        if Path("/run/netns").is_dir():
            namespaces += [p.name for p in Path("/run/netns").glob("pgs-*") if p.name not in namespaces]
        for veth in veths:
            if self._link_exists(veth):
                self._try(["ip", "link", "del", veth], f"ip link del {veth}")
        for ns in namespaces:
            if self._netns_exists(ns):
                self._try(["ip", "netns", "del", ns], f"ip netns del {ns}")
        if self._link_exists(BRIDGE):
            self._try(["ip", "link", "del", BRIDGE], f"ip link del {BRIDGE}")
        # 5. state and guest data, unless something is still mounted there.
        if self.run_dir.exists():
            busy = [m for m in _mountpoints() if m.startswith(str(self.run_dir.resolve()) + "/")]
            if busy:
                self.log(f"down: still mounted, keeping {self.run_dir}: {busy}")
            else:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        self._procs = {p: proc for p, proc in self._procs.items() if proc.poll() is None}
        self.log(f"down: done in {time.monotonic() - t0:.1f} s")
