"""`python -m components.rds_stop --region R --active ID`: stop the instance that was active before.

Run by the CutoverStop command, never by the program itself, so a preview stops nothing. The
command prints `active=<ID>`. When it runs again after `pgstack:active` changed, Pulumi hands it
that earlier output in PULUMI_COMMAND_STDOUT. The previously active instance is then read from
there and stopped, so RDS drops every connection still open to it. The first run only records.

A stopped RDS instance is started again by AWS after 7 days: retire it (deleteProtection: false,
up, remove the generation) or stop it again before then.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

_ACTIVE_LINE = re.compile(r"^active=([a-z][a-z0-9-]{0,62})$", re.M)
AUTO_START_NOTE = "AWS starts a stopped instance again after 7 days; retire it or stop it again before then"


class StopError(Exception):
    pass


def previous_active(stdout: str) -> str | None:
    """The identifier an earlier run recorded, if any."""
    found = _ACTIVE_LINE.findall(stdout or "")
    return found[-1] if found else None


def stop_instance(client: Any, identifier: str) -> str:
    """Stop `identifier` if it runs; say what happened. Idempotent: a stopped or gone instance is fine."""
    try:
        instances = client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
    except client.exceptions.DBInstanceNotFoundFault:
        return f"{identifier} does not exist any more; nothing to stop"
    status = instances[0]["DBInstanceStatus"]
    if status in ("stopped", "stopping"):
        return f"{identifier} is already {status}"
    if status != "available":
        raise StopError(
            f"{identifier} is {status}, and RDS only stops an available instance; wait until it is available "
            "and run up again (the stop is retried), or stop it in the console"
        )
    client.stop_db_instance(DBInstanceIdentifier=identifier)
    return f"stopping {identifier}: its open connections are closed. {AUTO_START_NOTE}"


def run(client: Any, active: str, previous_stdout: str) -> tuple[str, str | None]:
    """Returns (the stdout to record, a message for stderr)."""
    previous = previous_active(previous_stdout)
    message = None
    if previous is not None and previous != active:
        message = stop_instance(client, previous)
    return f"active={active}", message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.rds_stop", description=__doc__)
    parser.add_argument("--region", required=True)
    parser.add_argument("--active", required=True, help="identifier of the instance clients use now")
    args = parser.parse_args(argv)
    import boto3

    client = boto3.client("rds", region_name=args.region)
    try:
        stdout, message = run(client, args.active, os.environ.get("PULUMI_COMMAND_STDOUT", ""))
    except StopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if message:
        print(message, file=sys.stderr)
    print(stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
