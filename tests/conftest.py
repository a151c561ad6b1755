"""Shared fixtures: run the real program under recording mocks with a stack file plus edits."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import program  # noqa: E402

SECRETS = {
    "pgstack:sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----test-key",
    "pgstack:s3AccessKey": "test-access-key-id",
    "pgstack:s3SecretKey": "test-secret-access-key",
    "pgstack:alertsPingKey": "test-ping-key-0123456789",
    "pgstack:monitoringSmtpPassword": "test-smtp-password",
}


def stack_config(stack: str = "prod", edit=None) -> dict:
    """The stack file as the engine passes it, with test secrets and an optional edit.

    edit(cfg) gets the config with objects decoded (dicts) and may change it in place.
    """
    raw = program.read_stack_file(stack)
    decoded = {k: (json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v) for k, v in raw.items()}
    decoded.update(SECRETS)
    if edit is not None:
        decoded = copy.deepcopy(decoded)
        edit(decoded)
    return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in decoded.items()}


def run_stack(stack: str = "prod", edit=None, mocks=None, **kw) -> program.RunResult:
    mocks = mocks or program.RecordingMocks()
    return program.run(stack_config(stack, edit), mocks, stack=stack, secret_keys=list(SECRETS), **kw)


@pytest.fixture
def prod():
    return run_stack("prod")


def require_root_or_fail():
    """Integration tests need root; in CI a skip would hide a failure, so it fails instead."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("integration tests must run as root in CI")
        pytest.skip("integration tests need root")
