"""`python -m sandbox render`: what `pulumi up` would register and what every server would run.

No cloud and no credentials: secrets the stack file does not hold become placeholders. Every
generated or placeholder secret is a random canary, and the render fails if a canary shows up
in its output, raw, URL-encoded or base64-encoded.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import config

from . import program

COMMAND_TYPE = "command:remote:Command"
LOCAL_COMMAND_TYPE = "command:local:Command"


class CanaryMocks(program.RecordingMocks):
    def __init__(self) -> None:
        self.canaries: list[str] = []
        super().__init__(secret_value=self._canary)

    def _canary(self, _name: str = "", length: int = 40) -> str:
        value = "canary" + secrets.token_hex(max(8, length // 2))[: max(10, length - 6)]
        self.canaries.append(value)
        return value


# Secrets config checks the shape of: their canary takes that shape.
SHAPED = {
    "monitoringWebhookUrl": lambda canary: f"https://hooks.example.invalid/{canary}",
    "monitoringPagerdutyRoutingKey": lambda canary: canary[:32],
}


def secret_placeholders(raw: dict[str, Any], mocks: CanaryMocks) -> tuple[dict[str, Any], list[str]]:
    """Fill every secret key (missing or encrypted) with a canary; return the config and secret keys."""
    filled = dict(raw)
    secret_keys = []
    for key, spec in config.KEYS.items():
        full = f"{config.NAMESPACE}:{key}"
        if spec.secret:
            canary = mocks._canary(full)
            if key in SHAPED:
                canary = SHAPED[key](canary)
                mocks.canaries.append(canary)
            filled[full] = canary
            secret_keys.append(full)
    for full, value in raw.items():
        if isinstance(value, dict) and "secure" in value:
            filled[full] = mocks._canary(full)
            secret_keys.append(full)
    return filled, secret_keys


def encodings(value: str) -> list[str]:
    """The forms a leaked secret could take in a file."""
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    raw = value.encode()
    # base64 of a value embedded in a longer text depends on its offset modulo 3: take the
    # stable middle of each of the three alignments.
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        start = 4 * ((pad + 2) // 3) + 4
        forms.add(enc[start:-4])
    return sorted(f for f in forms if len(f) >= 8)


def find_leaks(directory: Path, canaries: list[str]) -> list[str]:
    leaks = []
    needles = [(c, form) for c in canaries for form in encodings(c)]
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for canary, form in needles:
            if form in text:
                leaks.append(f"{path.relative_to(directory)}: secret {canary[:10]}... appears (as {form[:16]}...)")
    return leaks


def render(stack: str, out: Path) -> program.RunResult:
    mocks = CanaryMocks()
    raw, secret_keys = secret_placeholders(program.read_stack_file(stack), mocks)
    result = program.run(raw, mocks, stack=stack, secret_keys=secret_keys)
    if out.exists():
        shutil.rmtree(out)
    (out / "commands").mkdir(parents=True)
    resources = [
        {"type": r.type, "name": r.name, "parent": r.parent, "inputs": program.redact(r.inputs)}
        for r in mocks.registrations
    ]
    (out / "resources.json").write_text(json.dumps(resources, indent=2, sort_keys=True) + "\n")
    for r in [*mocks.of_type(COMMAND_TYPE), *mocks.of_type(LOCAL_COMMAND_TYPE)]:
        create = program.redact(r.inputs.get("create", ""))
        (out / "commands" / f"{r.name}.sh").write_text(create + "\n")
    outputs = {k: (program.SECRET_MARK if k in result.secret_outputs else v) for k, v in result.outputs.items()}
    (out / "outputs.json").write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    leaks = find_leaks(out, mocks.canaries)
    if leaks:
        raise LeakError(leaks)
    return result


class LeakError(Exception):
    def __init__(self, leaks: list[str]):
        self.leaks = leaks
        super().__init__("secrets leaked into the render:\n  " + "\n  ".join(leaks))
