"""The machine-wide test bed lock: one test bed per machine, held from up() to down()."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import TestbedError
from .processes import pid_cmdline

# One test bed per machine: the bridge, namespace and cgroup names are fixed. Held from up() to down().
LOCK_FILE = Path("/run/pgstack-sandbox.lock")


class MachineLock:
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
            os.pwrite(fd, f"pid {os.getpid()}: {pid_cmdline(os.getpid())[:300]}\n".encode(), 0)
            cls._fd = fd

    @classmethod
    def release(cls) -> None:
        with cls._mutex:
            if cls._fd is not None:
                os.ftruncate(cls._fd, 0)
                os.close(cls._fd)  # closing drops the flock
                cls._fd = None
