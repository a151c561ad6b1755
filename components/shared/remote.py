"""Remote steps: one pulumi-command remote.Command per in-guest script."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components import scripts


@dataclass
class Ssh:
    """How the program reaches a server: its public address and the stack's admin key."""

    host: pulumi.Input[str]
    private_key: pulumi.Input[str]

    def connection(self) -> command.remote.ConnectionArgs:
        return command.remote.ConnectionArgs(
            host=self.host,
            user="root",
            private_key=pulumi.Output.secret(self.private_key),
            dial_error_limit=30,
        )


def step(
    name: str,
    ssh: Ssh,
    script: str,
    params: pulumi.Input[Mapping[str, str | int]],
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource],
    stdin: pulumi.Input[str] | None = None,
    create_only: bool = False,
) -> command.remote.Command:
    """Run `script` on the server. It runs again whenever its text or stdin changes.

    create_only: for steps that must run once in a server's life (a restore, a base backup):
    later edits of their inputs (and of the admin SSH key) are ignored, so a config change can
    never re-run them over live data. The scripts guard against that too.
    """
    text = pulumi.Output.from_input(params).apply(lambda p: scripts.command(script, dict(p)))
    triggers: list[pulumi.Input[str]] = [text.apply(scripts.digest)]
    if stdin is not None:
        # A digest of the secret input, itself kept secret: the step re-runs when it changes.
        triggers.append(pulumi.Output.secret(stdin).apply(lambda s: scripts.digest(s)))
    return command.remote.Command(
        name,
        connection=ssh.connection(),
        create=text,
        stdin=pulumi.Output.secret(stdin) if stdin is not None else None,
        triggers=triggers,
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=depends_on,
            # A new admin key (connection.privateKey) would replace every command, and so run it
            # again: harmless for the idempotent steps, but a create-only step must never run twice.
            ignore_changes=["create", "triggers", "stdin", "connection.privateKey"] if create_only else None,
        ),
    )
