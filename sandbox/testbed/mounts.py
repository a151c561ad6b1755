"""The mount table as this mount namespace sees it, and unmounting trees of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .processes import try_run


def unescape(field: str) -> str:
    """A /proc/self/mountinfo field: blanks and backslashes are escaped as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountpoints() -> list[str]:
    """Mount points of this mount namespace (mountinfo escapes blanks as octal)."""
    return [unescape(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def unmount_under(path: Path, log: Callable[[str], None]) -> None:
    """Unmount path and everything mounted below it, deepest first; lazily if busy."""
    prefix = str(path.resolve())
    for mp in sorted(mountpoints(), key=len, reverse=True):
        inside = mp == prefix or mp.startswith(prefix + "/")
        if inside and not try_run(["umount", mp], f"umount {mp}", log):
            try_run(["umount", "-l", mp], f"umount -l {mp}", log)
