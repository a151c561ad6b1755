"""Run the real program in-process under Pulumi mocks.

Shared by unit tests, `render` and `rehearse`: only the Mocks object differs. The runtime's
settings, root stack and config are process-global, so every run resets all three.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor

import config
from components import preflight
from components.stack import register

REPO = Path(__file__).resolve().parent.parent
SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key
SECRET_MARK = "[secret]"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def unwrap(value: Any) -> Any:
    """Inputs with the secret envelopes removed: what a provider would act on."""
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def redact(value: Any) -> Any:
    """Inputs with every secret replaced by "[secret]": what may be shown or written."""
    if is_secret(value):
        return SECRET_MARK
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass
class Registration:
    type: str
    name: str
    parent: str | None  # the parent's name
    inputs: dict[str, Any]  # raw, with secret envelopes
    custom: bool
    started: float
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)


_request = threading.local()


class OptionsMonitor(MockMonitor):
    """The stock mock monitor drops resource options; tests need parent, protect, ignoreChanges, provider."""

    def RegisterResource(self, request):
        _request.options = {
            "parent": request.parent.split("::")[-1] if request.parent else None,
            "protect": bool(request.protect),
            "ignoreChanges": list(request.ignoreChanges),
            "retainOnDelete": bool(request.retainOnDelete),
            "deleteBeforeReplace": bool(request.deleteBeforeReplace),
            "additionalSecretOutputs": list(request.additionalSecretOutputs),
            "dependencies": [u.split("::")[-1] for u in request.dependencies],
            "aliases": [str(a) for a in request.aliases],
            # The explicit provider as "<urn of the provider>::<its id>", or None for the default one.
            "provider": request.provider or None,
        }
        try:
            return super().RegisterResource(request)
        finally:
            _request.options = None


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every registration and answers like a provider would (computed outputs).

    Subclasses do real work by overriding `provide` (the rehearsal).
    """

    def __init__(self, secret_value: Callable[[str, int], str] | None = None):
        self.registrations: list[Registration] = []
        self.lock = threading.Lock()
        self._ids: set[str] = set()
        self._public_ips: set[int] = set()
        self.secret_value = secret_value or (lambda name, length: "p" * length)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        options = dict(getattr(_request, "options", None) or {})
        reg = Registration(
            args.typ,
            args.name,
            options.get("parent"),
            dict(args.inputs),
            bool(args.custom),
            time.perf_counter(),
            options,
        )
        with self.lock:
            rid = str(self._stable_number(f"{args.typ}::{args.name}", 1000, 999_999, self._ids))
            self._ids.add(rid)
            self.registrations.append(reg)
        outputs = self.provide(reg, rid)
        reg.seconds = time.perf_counter() - reg.started
        reg.outputs = outputs
        return rid, outputs

    def provide(self, reg: Registration, rid: str) -> dict[str, Any]:
        outs = dict(reg.inputs)
        if reg.type == "random:index/randomPassword:RandomPassword":
            length = int(unwrap(reg.inputs.get("length", 16)))
            outs["result"] = pulumi.Output.secret(self.secret_value(reg.name, length))
        elif reg.type == "hcloud:index/server:Server":
            with self.lock:
                n = self._stable_number(reg.name, 1, 250, self._public_ips)
                self._public_ips.add(n)
            outs["ipv4Address"] = f"203.0.113.{n}"
            outs["ipv6Address"] = f"2001:db8::{n}"
        elif reg.type == "hcloud:index/volume:Volume":
            outs["linuxDevice"] = f"/dev/disk/by-id/scsi-0HC_Volume_{rid}"
        elif reg.type == "command:remote:Command":
            outs.update({"stdout": "", "stderr": ""})
        elif reg.type == "tls:index/privateKey:PrivateKey":
            outs["privateKeyPem"] = pulumi.Output.secret(
                "-----BEGIN PRIVATE KEY-----\n" + self.secret_value(reg.name, 40) + "\n-----END PRIVATE KEY-----\n"
            )
        elif reg.type in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outs["certPem"] = f"-----BEGIN CERTIFICATE-----\n{reg.name}\n-----END CERTIFICATE-----\n"
        elif reg.type == "tls:index/certRequest:CertRequest":
            outs["certRequestPem"] = (
                f"-----BEGIN CERTIFICATE REQUEST-----\n{reg.name}\n-----END CERTIFICATE REQUEST-----\n"
            )
        elif reg.type.startswith("aws:"):
            # What AWS computes: an ARN, the auto-name, and an RDS endpoint named after its identifier.
            outs.setdefault("arn", f"arn:aws:mock:::{reg.name}")
            outs.setdefault("name", f"{reg.name}-mock")
            if reg.type == "aws:rds/instance:Instance":
                outs["address"] = f"{unwrap(reg.inputs.get('identifier', reg.name))}.mock.rds.amazonaws.com"
            elif reg.type == "aws:kms/key:Key":
                outs["keyId"] = rid  # a KMS key's key_id is its id
        return outs

    @staticmethod
    def _stable_number(key: str, low: int, high: int, taken: set) -> int:
        """A number from the name, not the arrival order: registrations arrive from several threads,
        so counters would make two renders of the same program differ."""
        span = high - low + 1
        n = int(hashlib.sha256(key.encode()).hexdigest(), 16) % span
        while (low + n) in taken or str(low + n) in taken:
            n = (n + 1) % span
        return low + n

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def find(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        if not matches:
            raise KeyError(f"no resource named {name!r}; have {sorted(r.name for r in self.registrations)}")
        return matches[0]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]


def read_stack_file(stack: str, repo: Path = REPO) -> dict[str, Any]:
    """The config of Pulumi.<stack>.yaml as the engine hands it to a program (JSON for objects)."""
    path = repo / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name}; stacks here: {', '.join(available_stacks(repo))}")
    data = yaml.safe_load(path.read_text()) or {}
    flat: dict[str, Any] = {}
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            flat[key] = value  # ciphertext: only the engine can decrypt it
        elif isinstance(value, (dict, list)):
            flat[key] = json.dumps(value)
        elif isinstance(value, bool):
            flat[key] = "true" if value else "false"
        else:
            flat[key] = str(value)
    return flat


def available_stacks(repo: Path = REPO) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in repo.glob("Pulumi.*.yaml"))


@dataclass
class RunResult:
    mocks: RecordingMocks
    outputs: dict[str, Any]
    secret_outputs: set[str]
    settings: config.Settings


def run(
    raw_config: dict[str, Any],
    mocks: RecordingMocks,
    stack: str,
    project: str = "pgstack",
    preview: bool = False,
    allow_sandbox: bool = False,
    secret_keys: list[str] | None = None,
    now=None,
    catalog=None,
) -> RunResult:
    """Validate config, run pre-flight, then register under `mocks`; return once every registration finished.

    As `build` does, but both steps run before the mocks are set up, so a ConfigError leaves no runtime
    state and registers nothing. `catalog` (a components.preflight BackupCatalog) checks restores and an
    adopted passphrase against the bucket; without one (and without a World injected with
    `preflight.use`) they are not checked.
    """
    settings = config.settings_from_mapping(
        raw_config, project=project, stack=stack, now=now, allow_sandbox=allow_sandbox
    )
    if catalog is not None:
        preflight.use(preflight.World(backup_catalog=lambda _settings: catalog))
    try:
        preflight.run(settings, now)
    finally:
        if catalog is not None:
            preflight.use(None)
    pulumi.runtime.set_all_config(dict(raw_config), secret_keys=secret_keys or [])
    runtime_settings.ROOT.set(None)
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []
    loop.set_exception_handler(_quiet_after_failure(failed))
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=OptionsMonitor(mocks))

    exported: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    @pulumi.runtime.test
    def program():
        register(settings)
        root = runtime_settings.get_root_resource()
        outputs = dict(getattr(root, "outputs", {}) or {})

        async def collect():
            for key, value in outputs.items():
                out = pulumi.Output.from_input(value)
                exported[key] = await out.future()
                if await out.is_secret():
                    secret_outputs.add(key)

        return pulumi.Output.from_input(asyncio.ensure_future(collect()))

    try:
        program()
    except BaseException as exc:
        failed.append(exc)
        raise
    return RunResult(mocks, exported, secret_outputs, settings)


def _quiet_after_failure(failed: list[BaseException]) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """Report a failed resource once: as the exception `run` raises.

    The engine resolves every output of a failed resource with its exception; the resources that
    would have read them never register, so asyncio finds each unread and prints its traceback
    when it is collected (dozens per failed step). Those are the failure already raised; anything
    else is still reported, in one line.
    """

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not failed or exc is None or "never retrieved" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        chain = _chain(failed[0])
        if not any(exc is e or str(exc) == str(e) for e in chain):
            print(f"also failed in the same run: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)

    return handler


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen
