"""The guest root filesystem: made once by debootstrap, cached under cache_dir, keyed by its package list."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import TestbedError
from .mounts import unmount_under
from .processes import pid_cmdline, run, tail

PACKAGES_FILE = Path(__file__).resolve().parent.parent / "rootfs-packages.txt"

# pgBackRest as production runs it (the release series postgres/pgbackrest.py pins): built from
# the vendored release source inside the rootfs, since Debian 12 carries 2.45 and the PostgreSQL
# apt repository is out of reach here. On a machine that reaches that repository, set
# PGSTACK_PGBACKREST=pgdg to take the package from there instead (not run on these machines).
PGBACKREST_TARBALL = Path(__file__).resolve().parent.parent / "vendor" / "pgbackrest-2.59.1.tar.gz"
PGBACKREST_BUILD_PACKAGES = (
    "meson", "ninja-build", "gcc", "pkg-config", "libpq-dev", "libssl-dev", "libxml2-dev", "liblz4-dev",
    "libzstd-dev", "libbz2-dev", "libyaml-dev", "libssh2-1-dev", "zlib1g-dev",
)  # fmt: skip


def pgbackrest_source() -> str:
    source = os.environ.get("PGSTACK_PGBACKREST", "vendored")
    if source not in ("vendored", "pgdg"):
        raise TestbedError(f"PGSTACK_PGBACKREST={source!r}: use vendored (the default) or pgdg")
    return source


SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bump when _prepare changes: part of the rootfs hash, so the next run builds a new one.
ROOTFS_VERSION = "2"
ROOTFS_MARKER = ".pgstack-rootfs-complete"

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

# Installed in the image but not started at boot, as on a server where exporters.sh or
# monitoring.sh installed them with policy-rc.d: their packaged defaults would listen on every
# address without auth until the step configures and starts them.
DISABLED_UNITS = (
    "prometheus.service",
    "prometheus-alertmanager.service",
    "prometheus-node-exporter.service",
    "prometheus-postgres-exporter.service",
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


def read_packages(path: Path) -> list[str]:
    pkgs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pkgs.append(line)
    if not pkgs:
        raise TestbedError(f"{path}: no packages listed")
    return pkgs


class Rootfs:
    """The cached rootfs every guest's overlay is mounted on (read-only lower dir)."""

    def __init__(self, cache_dir: Path, mirror: str, log: Callable[[str], None]) -> None:
        self.cache_dir = cache_dir
        self.mirror = mirror
        self._log = log
        self._lock = threading.Lock()
        self._path: Path | None = None

    def key(self) -> str:
        """Hash of everything that decides the rootfs contents: a change means a new build."""
        pkgs = sorted(set(read_packages(PACKAGES_FILE)))
        source = pgbackrest_source()
        parts = [SUITE, *pkgs, ROOTFS_VERSION, f"pgbackrest:{source}"]
        if source == "vendored":
            parts += [hashlib.sha256(PGBACKREST_TARBALL.read_bytes()).hexdigest(), *PGBACKREST_BUILD_PACKAGES]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]

    def pgbackrest(self) -> dict[str, str]:
        """Which pgBackRest the guests run and where it came from (from the rootfs marker)."""
        marker = json.loads((self.ensure() / ROOTFS_MARKER).read_text())
        found: dict[str, str] = marker.get("pgbackrest", {})
        return found

    def ensure(self) -> Path:
        """Build the guest rootfs once (debootstrap), reuse it while the package list is unchanged."""
        with self._lock:
            if self._path is not None and (self._path / ROOTFS_MARKER).is_file():
                return self._path
            pkgs = sorted(set(read_packages(PACKAGES_FILE)))
            if pgbackrest_source() == "vendored":
                pkgs = sorted({*pkgs, *PGBACKREST_BUILD_PACKAGES})
            final = self.cache_dir / f"rootfs-{self.key()}"
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # Another process may be building the same rootfs: one builds, the other waits and reuses.
            with open(self.cache_dir / ".rootfs.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if (final / ROOTFS_MARKER).is_file():
                    self._log(f"rootfs: reusing {final}")
                else:
                    self._build(final, pkgs)
            self._remove_old(final)
            self._path = final
            return final

    def _build(self, final: Path, pkgs: list[str]) -> None:
        tmp = final.with_name(final.name + ".partial")
        for d in (tmp, final):  # leftovers of an interrupted build
            if d.exists():
                unmount_under(d, self._log)
                shutil.rmtree(d)
        log_file = final.with_name(final.name + ".log")
        self._log(f"rootfs: debootstrap {SUITE} with {len(pkgs)} packages into {tmp} (log: {log_file})")
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
                output = tail(log_file.read_text(errors="replace"))
                raise TestbedError(f"command failed (rc={rc}): {shlex.join(argv)}\n{output}")
            self._kill_processes_in(tmp)
            self._prepare(tmp)
            pgbackrest = self._install_pgbackrest(tmp)
        except BaseException:
            self._kill_processes_in(tmp)
            unmount_under(tmp, self._log)
            raise
        unmount_under(tmp, self._log)
        # The marker is written last, then the rename makes the complete tree appear at once.
        (tmp / ROOTFS_MARKER).write_text(
            json.dumps(
                {
                    "suite": SUITE,
                    "packages": pkgs,
                    "version": ROOTFS_VERSION,
                    "built": time.time(),
                    "pgbackrest": pgbackrest,
                }
            )
        )
        os.rename(tmp, final)
        self._log(f"rootfs: built {final} in {time.monotonic() - t0:.1f} s")

    def _install_pgbackrest(self, root: Path) -> dict[str, str]:
        """Put the pgBackRest release production runs at /usr/bin/pgbackrest; say which and from where."""
        t0 = time.monotonic()
        source = pgbackrest_source()
        if source == "vendored":
            src = root / "usr/local/src"
            src.mkdir(parents=True, exist_ok=True)
            run(["tar", "-xzf", PGBACKREST_TARBALL, "-C", src])
            tree = next(src.glob("pgbackrest-*"))
            inside = "/" + str(tree.relative_to(root))
            run(["mount", "-t", "proc", "proc", root / "proc"])
            try:
                run(["chroot", root, "sh", "-c",
                     f"cd {inside} && meson setup build --buildtype=release >/dev/null && ninja -C build >/dev/null"],
                    timeout=900)  # fmt: skip
            finally:
                run(["umount", root / "proc"])
            # The Debian package's binary stays, diverted, so dpkg never puts 2.45 back.
            run(["chroot", root, "dpkg-divert", "--local", "--rename", "--divert", "/usr/bin/pgbackrest.distrib",
                 "--add", "/usr/bin/pgbackrest"])  # fmt: skip
            shutil.copy2(tree / "build/src/pgbackrest", root / "usr/bin/pgbackrest")
            os.chmod(root / "usr/bin/pgbackrest", 0o755)
            shutil.rmtree(tree)
            origin = f"built from the vendored release source {PGBACKREST_TARBALL.name}"
        else:
            resolv = root / "etc/resolv.conf"
            saved = resolv.read_text()
            shutil.copy2("/etc/resolv.conf", resolv)
            try:
                run(["chroot", root, "/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh", "-y"], timeout=600)
                run(["chroot", root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "pgbackrest"],
                    timeout=600)  # fmt: skip
            finally:
                resolv.write_text(saved)
            origin = "the PostgreSQL apt repository's package"
        version = run(["chroot", root, "pgbackrest", "version"]).stdout.strip()
        self._log(f"rootfs: {version}, {origin}, in {time.monotonic() - t0:.1f} s")
        return {"version": version, "source": origin}

    @staticmethod
    def _prepare(root: Path) -> None:
        """One-time settings every guest shares (per-guest files are written at boot)."""
        etc = root / "etc"
        (etc / "ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
        (etc / "ssh/sshd_config.d/10-pgstack-sandbox.conf").write_text(SSHD_CONFIG)
        # Root has no password (shadow '*'): login is by the harness key only.
        run(["chroot", root, "usermod", "-p", "*", "root"])
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
        for unit in DISABLED_UNITS:
            (etc / "systemd/system/multi-user.target.wants" / unit).unlink(missing_ok=True)
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
                self._log(f"rootfs: killing leftover process {proc.name} ({pid_cmdline(int(proc.name))})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _remove_old(self, keep: Path) -> None:
        in_use = " ".join(Path("/proc/self/mounts").read_text().split("\n"))
        for old in self.cache_dir.glob("rootfs-*"):
            if old.name in (keep.name, keep.name + ".log", keep.name + ".partial"):
                continue
            if str(old) in in_use:
                self._log(f"rootfs: {old} is still used by a mount: kept")
                continue
            self._log(f"rootfs: removing old {old}")
            if old.is_dir():
                unmount_under(old, self._log)
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
