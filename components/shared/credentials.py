"""Credentials: generated passwords for every login role, shared by a stack's generations.

Passwords belong to the stack, not to a cluster generation: a restored cluster gets the same
roles with the same passwords, so clients keep working after a cutover. Rotation is a config
counter (`passwordVersion`) that is a keeper of the RandomPassword: bumping it makes a new one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pulumi
import pulumi_random as random

from postgres.roles import scram_verifier

REPLICATOR = "replicator"


@dataclass
class RoleSecret:
    name: str
    password: pulumi.Output[str]  # secret
    verifier: pulumi.Output[str]  # secret


class Credentials(pulumi.ComponentResource):
    def __init__(self, name: str, versions: dict[str, int], opts: pulumi.ResourceOptions | None = None):
        """versions: login role name -> password version (the rotation counter)."""
        super().__init__("pgstack:credentials:Credentials", name, None, opts)
        self.roles: dict[str, RoleSecret] = {}
        for role, version in versions.items():
            pw = random.RandomPassword(
                f"{name}-{role}",
                length=40,
                # URL-safe: the password goes into DATABASE_URL connection strings.
                special=False,
                keepers={"role": role, "version": str(version)},
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
            )
            password: pulumi.Output[str] = pulumi.Output.secret(pw.result)
            verifier: pulumi.Output[str] = pulumi.Output.secret(password.apply(functools.partial(scram_verifier, role)))
            self.roles[role] = RoleSecret(role, password, verifier)
        self.register_outputs({})

    def __getitem__(self, role: str) -> RoleSecret:
        return self.roles[role]
