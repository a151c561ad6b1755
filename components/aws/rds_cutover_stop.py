"""CutoverStop: after a cutover, stop the RDS instance that was active before (seed 001).

Changing the DNS record does not close connections already open to the old instance, and
stopping the old instance does. This is a resource, a pulumi-command local.Command, so a
preview never stops anything, and it runs only when `pgstack:active` changes:

- create (first up): runs components.rds_stop, which records `active=<id>` and stops nothing.
- update (active changed): the same text with the new identifier. Pulumi passes the recorded
  output in PULUMI_COMMAND_STDOUT, so rds_stop stops exactly the instance that was active.
  The identifier is the trigger, so nothing else re-runs it.

It runs after the DNS records (depends_on), so clients are already being sent elsewhere.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command

# The project's virtualenv (Pulumi.yaml: runtime.options.virtualenv), relative to the project
# directory the command provider runs in; boto3 is a project requirement.
PYTHON = ".venv/bin/python"


@dataclass
class CutoverStopArgs:
    region: str
    active_identifier: str
    active_generation: str
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def stop_command(region: str, active_identifier: str) -> str:
    return f"{PYTHON} -m components.rds_stop --region {shlex.quote(region)} --active {shlex.quote(active_identifier)}"


class CutoverStop(pulumi.ComponentResource):
    def __init__(self, name: str, args: CutoverStopArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:rds_cutover_stop:CutoverStop", name, None, opts)
        text = stop_command(args.region, args.active_identifier)
        self.command = command.local.Command(
            f"{name}-previous",
            create=text,
            update=text,
            triggers=[args.active_generation],
            add_previous_output_in_env=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.register_outputs({"active": args.active_identifier})
