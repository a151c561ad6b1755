"""In-guest scripts: real files next to this module, assembled into remote command text.

Each script sources lib.sh and reads its parameters from upper-case variables. The command text
inlines lib.sh and prepends the parameters, each shell-quoted: stock sshd drops `environment`,
so values travel in the text, and secrets never do (they go through stdin).

Files a script installs on the guest (systemd units in units/, programs in bin/) are real files
here too. A script reads one with a redirect at the end of a line,
`ship 644 /etc/systemd/system/x.timer NAME <"$(dirname "$0")/units/x.timer"`, which works from
this directory (for shellcheck and a reader); the command text replaces the redirect with the
file's content as a quoted here-document. So a change of a shipped file changes the text, and
pulumi-command runs the step again.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent
_SOURCE_LIB = re.compile(r'^# shellcheck source=lib\.sh\n(?:source|\.) "\$\(dirname "\$0"\)/lib\.sh"\n', re.M)
_PARAM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# A redirect from a file next to the script, ending its line: `<"$(dirname "$0")/units/x.timer"`.
_SHIPPED = re.compile(r'<"\$\(dirname "\$0"\)/([A-Za-z0-9@._/-]+)"$', re.M)
_NEXT_TO_SCRIPT = '"$(dirname "$0")'
_FILE_DELIMITER = "PGSTACK_FILE_EOF"


def _shipped_file(name: str, relative: str) -> str:
    path = SCRIPTS_DIR / relative
    if ".." in Path(relative).parts or not path.is_file():
        raise ValueError(f"{name}.sh ships {relative}, which is not a file in {SCRIPTS_DIR}")
    content = path.read_text()
    if not content.endswith("\n"):
        raise ValueError(f"{relative} must end with a newline (its here-document delimiter needs a line)")
    if _FILE_DELIMITER in content:
        raise ValueError(f"{relative} must not contain {_FILE_DELIMITER}")
    return content


def _inline_shipped(name: str, body: str) -> str:
    """Each `<"$(dirname "$0")/FILE"` at a line's end becomes a quoted here-document of FILE."""
    out = []
    for line in body.splitlines(keepends=True):
        match = _SHIPPED.search(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        content = _shipped_file(name, match.group(1))
        head = line.rstrip("\n")[: match.start()]
        out.append(f"{head}<<'{_FILE_DELIMITER}'\n{content}{_FILE_DELIMITER}\n")
    text = "".join(out)
    if _NEXT_TO_SCRIPT in text:
        # On the guest the script runs from /tmp: nothing is next to it.
        raise ValueError(f'{name}.sh reads a file next to it other than by `<"$(dirname "$0")/FILE"` at a line end')
    return text


def script_text(name: str, params: dict[str, str | int]) -> str:
    """The full script with lib.sh inlined and parameters bound, as it runs on the guest."""
    body = (SCRIPTS_DIR / f"{name}.sh").read_text()
    lib = (SCRIPTS_DIR / "lib.sh").read_text()
    if not _SOURCE_LIB.search(body):
        raise ValueError(f"{name}.sh must source lib.sh the standard way")
    lib_body = lib.split("\n", 1)[1]  # drop lib's shebang
    body = _inline_shipped(name, _SOURCE_LIB.sub(lambda _: lib_body, body, count=1))
    head, _, rest = body.partition("set -euo pipefail\n")
    if not rest:
        raise ValueError(f"{name}.sh must start with set -euo pipefail")
    if "PG_VERSION" not in params:
        # lib.sh derives every path from it; the caller has it from postgres.layout.
        raise ValueError(f"{name}.sh needs the parameter PG_VERSION (the stack's postgres.version)")
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
