"""The rehearsal's engine state: a resource is acted on only as the Pulumi engine would."""

from __future__ import annotations

from sandbox.engine import COMMAND, EngineState

SERVER = "hcloud:index/server:Server"


def command(create="echo hi", key="k1", stdin=None, host="10.0.1.5"):
    inputs = {"create": create, "connection": {"host": host, "privateKey": key}, "triggers": ["d1"]}
    if stdin is not None:
        inputs["stdin"] = stdin
    return inputs


def test_create_then_same_then_replace(tmp_path):
    state = EngineState.load(tmp_path / "s.json")
    assert state.plan(COMMAND, "c", command(), []) == "create"
    state.record(COMMAND, "c", command(), [], {"stdout": "out"})
    again = EngineState.load(tmp_path / "s.json")  # a new run reads the file
    assert again.plan(COMMAND, "c", command(), []) == "same"
    assert again.outputs(COMMAND, "c") == {"stdout": "out"}
    assert again.plan(COMMAND, "c", command(create="echo other"), []) == "replace"
    assert again.plan(COMMAND, "c", command(stdin="secret"), []) == "replace"
    assert again.plan(COMMAND, "c", command(key="k2"), []) == "replace", "a new SSH key replaces a command"


def test_a_change_of_an_input_pulumi_command_does_not_replace_on_runs_nothing(tmp_path):
    state = EngineState(tmp_path / "s.json")
    state.record(COMMAND, "c", {**command(), "addPreviousOutputInEnv": False}, [], {})
    assert state.plan(COMMAND, "c", {**command(), "addPreviousOutputInEnv": True}, []) == "same"


def test_ignored_paths_run_nothing(tmp_path):
    state = EngineState(tmp_path / "s.json")
    ignored = ["create", "triggers", "stdin", "connection.privateKey"]
    state.record(COMMAND, "restore", command(), ignored, {})
    assert state.plan(COMMAND, "restore", command(create="new text", key="k2", stdin="x"), ignored) == "same"
    assert state.plan(COMMAND, "restore", command(host="10.0.1.9"), ignored) == "replace"


def test_other_resources_update_and_deleted_ones_are_listed(tmp_path):
    state = EngineState(tmp_path / "s.json")
    state.record(SERVER, "a", {"image": "x", "labels": {}}, ["image"], {})
    state.record(SERVER, "b", {"image": "x"}, [], {})
    state.seen.clear()
    assert state.plan(SERVER, "a", {"image": "y", "labels": {}}, ["image"]) == "same"
    assert state.plan(SERVER, "a", {"image": "x", "labels": {"k": "v"}}, ["image"]) == "update"
    assert state.deleted() == [(SERVER, "b")]


def test_a_local_command_replaces_on_the_same_inputs_as_a_remote_one(tmp_path):
    from sandbox.engine import LOCAL_COMMAND

    state = EngineState(tmp_path / "s.json")
    inputs = {"create": "python -m x", "stdin": "key and checks", "triggers": ["a"]}
    state.record(LOCAL_COMMAND, "checks", inputs, [], {"stdout": "created"})
    assert state.plan(LOCAL_COMMAND, "checks", dict(inputs), []) == "same"
    assert state.plan(LOCAL_COMMAND, "checks", {**inputs, "stdin": "new key"}, []) == "replace"
    assert state.plan(LOCAL_COMMAND, "checks", {**inputs, "triggers": ["b"]}, []) == "replace"
