"""In-guest scripts: real files next to this module, assembled into remote command text.

Each script sources lib.sh and reads its parameters from upper-case variables. The command text
inlines lib.sh and prepends the parameters, each shell-quoted: stock sshd drops `environment`,
so values travel in the text, and secrets never do (they go through stdin).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent
_SOURCE_LIB = re.compile(r'^# shellcheck source=lib\.sh\n(?:source|\.) "\$\(dirname "\$0"\)/lib\.sh"\n', re.M)
_PARAM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def script_text(name: str, params: dict[str, str | int]) -> str:
    """The full script with lib.sh inlined and parameters bound, as it runs on the guest."""
    body = (SCRIPTS_DIR / f"{name}.sh").read_text()
    lib = (SCRIPTS_DIR / "lib.sh").read_text()
    if not _SOURCE_LIB.search(body):
        raise ValueError(f"{name}.sh must source lib.sh the standard way")
    lib_body = lib.split("\n", 1)[1]  # drop lib's shebang
    body = _SOURCE_LIB.sub(lambda _: lib_body, body, count=1)
    head, _, rest = body.partition("set -euo pipefail\n")
    if not rest:
        raise ValueError(f"{name}.sh must start with set -euo pipefail")
    bound = []
    for key, value in params.items():
        if not _PARAM_NAME.match(key):
            raise ValueError(f"parameter {key!r} of {name}.sh must be upper case")
        bound.append(f"{key}={shlex.quote(str(value))}")
    return f"{head}set -euo pipefail\n# parameters\n" + "\n".join(bound) + "\n" + rest


_DELIMITER = "PGSTACK_SCRIPT_EOF"


def command(name: str, params: dict[str, str | int]) -> str:
    """Remote command text: the script, verbatim in a quoted here-document, run by bash.

    The here-document feeds only `cat`, so the script's own stdin stays free for secrets, and
    a reviewer reads the script as it is, without a second layer of quoting.
    """
    text = script_text(name, params)
    if _DELIMITER in text:
        raise ValueError(f"{name}.sh must not contain {_DELIMITER}")
    return (
        f"set -e\nf=$(mktemp /tmp/pgstack-{name}.XXXXXX)\ntrap 'rm -f \"$f\"' EXIT\n"
        f'cat >"$f" <<\'{_DELIMITER}\'\n{text}{_DELIMITER}\nbash "$f"\n'
    )


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()
