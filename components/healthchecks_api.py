"""`python -m components.healthchecks_api [--insecure]`: create or update the checks on a Healthchecks service.

Run by the HeartbeatChecks command (components/hetzner/heartbeat_checks.py) on the operator's
machine, never by the program itself, so a preview changes nothing. Reads JSON on stdin, so that
the API key is never on a command line: {"api_url": ..., "api_key": ..., "checks": [{"name",
"slug", "timeout", "grace", "tags", "desc"}, ...]}. Each check is POSTed to
<api_url>/api/v3/checks/ with `unique: ["slug"]`: Healthchecks creates it, or updates the one with
that slug (so re-running is harmless). Prints one line per check; a refused check fails the run.
Checks the stack no longer declares are left alone (a retired generation's history stays; pause
or delete them by hand).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

ATTEMPTS = 3


class ApiError(Exception):
    pass


def upsert(api_url: str, api_key: str, check: dict[str, Any], context: ssl.SSLContext | None) -> str:
    body = json.dumps({**check, "unique": ["slug"]}).encode()
    request = urllib.request.Request(
        api_url.rstrip("/") + "/api/v3/checks/",
        data=body,
        method="POST",
        headers={"X-Api-Key": api_key, "Content-Type": "application/json"},
    )
    last = ""
    for attempt in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=20, context=context) as response:
                return "created" if response.status == 201 else "updated"
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code in (401, 403):
                raise ApiError(f"the API key was refused ({exc.code}); set a read-write key of the project") from None
            if exc.code < 500:
                raise ApiError(f"check {check['slug']} refused ({exc.code}): {detail}") from None
            last = f"{exc.code}: {detail}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(1 + attempt)
    raise ApiError(f"{api_url} did not answer for check {check['slug']} after {ATTEMPTS} attempts ({last})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.healthchecks_api", description=__doc__)
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS (the rehearsal's receiver only)")
    args = parser.parse_args(argv)
    spec = json.loads(sys.stdin.read())
    context = None
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        for check in spec["checks"]:
            what = upsert(spec["api_url"], spec["api_key"], check, context)
            print(f"{what} {check['slug']} (period {check['timeout']} s, grace {check['grace']} s)")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
