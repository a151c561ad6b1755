"""What the Pulumi engine would do with each resource, given the state of the last run.

The rehearsal's mocks are asked to register every resource on every run; the real engine acts
only on differences. So the rehearsal keeps, per stack, the inputs each resource had at its last
successful registration (a small JSON file next to the test bed's state) and decides as the
engine does:

- a resource not in the state is created;
- pulumi-command's Command has no update: a change of `create`, `triggers`, `stdin`,
  `environment` or `connection` replaces it, which runs `create` again; any other change, and
  any change of an input named in `ignoreChanges` (a property path, e.g. `connection.privateKey`),
  runs nothing;
- any other resource is updated when an input that is not ignored changed;
- a resource in the state that the program no longer registers is deleted.

The file lives in the test bed's run directory, so it goes with the guests it describes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Action = Literal["create", "replace", "update", "same", "delete"]

COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"
# Both kinds of Command replace (run create again) on the same inputs.
COMMANDS = (COMMAND, LOCAL_COMMAND)
# pulumi-command's documented behaviour for a Command without an `update` script.
COMMAND_REPLACE_ON = ("create", "triggers", "stdin", "environment", "connection")


def _without(inputs: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """`inputs` without the ignored property paths (`a` or `a.b`)."""
    kept = json.loads(json.dumps(inputs))
    for path in paths:
        node: Any = kept
        *parents, last = path.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return kept


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def key(type_: str, name: str) -> str:
    return f"{type_}::{name}"


@dataclass
class EngineState:
    path: Path
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path) -> EngineState:
        resources = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, resources)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(self.resources, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path)

    def plan(self, type_: str, name: str, inputs: dict[str, Any], ignore_changes: list[str]) -> Action:
        """What the engine does with this registration (inputs unwrapped, without secret envelopes)."""
        k = key(type_, name)
        with self._lock:
            self.seen.add(k)
            old = self.resources.get(k)
        if old is None:
            return "create"
        relevant = _without(inputs, ignore_changes)
        if type_ in COMMANDS:
            replace = {p: relevant.get(p) for p in COMMAND_REPLACE_ON}
            return "replace" if _digest(replace) != old["replace_digest"] else "same"
        return "update" if _digest(relevant) != old["digest"] else "same"

    def outputs(self, type_: str, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.resources[key(type_, name)].get("outputs", {}))

    def record(
        self, type_: str, name: str, inputs: dict[str, Any], ignore_changes: list[str], outputs: dict[str, Any]
    ) -> None:
        """After a successful registration: what the state holds from now on (saved at once, as the engine does)."""
        k = key(type_, name)
        with self._lock:
            old = self.resources.get(k)
            if old is not None and ignore_changes:
                # Ignored inputs keep the values of the state, as in the engine.
                inputs = {**inputs, **{p: old["inputs"].get(p) for p in ignore_changes if "." not in p}}
            relevant = _without(inputs, ignore_changes)
            self.resources[k] = {
                "inputs": inputs,
                "digest": _digest(relevant),
                "replace_digest": _digest({p: relevant.get(p) for p in COMMAND_REPLACE_ON}),
                "outputs": outputs,
            }
            self._save()

    def deleted(self) -> list[tuple[str, str]]:
        """(type, name) of every resource in the state that this run did not register."""
        with self._lock:
            gone = sorted(set(self.resources) - self.seen)
        return [tuple(k.split("::", 1)) for k in gone]  # type: ignore[misc]

    def forget(self, type_: str, name: str) -> None:
        with self._lock:
            self.resources.pop(key(type_, name), None)
            self._save()
