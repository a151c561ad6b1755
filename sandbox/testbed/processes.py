"""Commands the test bed runs, and the long-lived children it starts (guests, moto, relay)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import TestbedError


def tail(text: str | bytes | None, lines: int = 40) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def run(
    argv: Sequence[str | Path | int],
    check: bool = True,
    timeout: float | None = 120,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture text output; raise TestbedError with that output on failure."""
    args = [str(a) for a in argv]
    try:
        res = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise TestbedError(
            f"timed out after {timeout} s: {shlex.join(args)}\nstdout:\n{tail(e.stdout)}\nstderr:\n{tail(e.stderr)}"
        ) from None
    except OSError as e:
        raise TestbedError(f"cannot run {shlex.join(args)}: {e}") from None
    out = subprocess.CompletedProcess(
        args, res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
    )
    if check and out.returncode != 0:
        raise TestbedError(
            f"command failed (rc={out.returncode}): {shlex.join(args)}\n"
            f"stdout:\n{tail(out.stdout)}\nstderr:\n{tail(out.stderr)}"
        )
    return out


def try_run(argv: Sequence[str | Path], what: str, log: Callable[[str], None]) -> bool:
    """Teardown step: run, log a failure instead of raising."""
    try:
        run(argv, check=True, timeout=60)
        return True
    except TestbedError as e:
        log(f"{what}: {e}")
        return False


class Processes:
    """The processes the test bed starts and stops, ours (children) or recorded by another process.

    Not locked itself: callers that spawn hold the state file's lock, as they record the pid.
    """

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # reaped by us, not left as zombies

    def spawn(self, argv: Sequence[str | Path | int], log_file: Path, env: dict[str, str] | None = None) -> int:
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
        self._children[proc.pid] = proc
        return proc.pid

    def alive(self, pid: int | None, needle: str) -> bool:
        """Is pid running and still the process we started (cmdline contains needle)?"""
        if not pid:
            return False
        proc = self._children.get(pid)
        if proc is not None:
            # Our own child: its pid cannot be reused before we reap it. Its cmdline is no proof:
            # /proc/<pid>/cmdline reads empty while it execs (sh -> systemd-nspawn), which once
            # passed for "exited during boot".
            return proc.poll() is None
        if pid_state(pid) in ("", "Z", "X"):
            return False
        cmdline = pid_cmdline(pid)
        if not cmdline:  # mid-exec: look again
            time.sleep(0.05)
            cmdline = pid_cmdline(pid)
        return needle in cmdline

    def stop(self, pid: int | None, needle: str, what: str, timeout: float, sig: int = signal.SIGTERM) -> bool:
        """Signal, wait up to timeout, then SIGKILL. Returns True if it ended cleanly (before SIGKILL)."""
        if pid is None or not self.alive(pid, needle):
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if self.wait_gone([(pid, needle)], timeout):
            return True
        self._log(f"{what} (pid {pid}) still running after {timeout:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self.wait_gone([(pid, needle)], 10):
            self._log(f"{what} (pid {pid}) survived SIGKILL")
        return False

    def wait_gone(self, pids: list[tuple[int, str]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(self.alive(p, n) for p, n in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def forget_exited(self) -> None:
        self._children = {p: proc for p, proc in self._children.items() if proc.poll() is None}
