"""Restore and cutover on target aws, as before/after comparisons of two runs under mocks.

The lifecycle of seed 001's runbook, as config edits: g1 alone; a restore block adds g2 (a new
instance, restored from g1); `active: g2` moves the DNS weight, the alarms and the stop; the
restore block is removed, or its time edited (nothing happens); g1 is retired in two steps.
Each step checks what appears, what goes, which inputs change, and that the active instance
and every secret stay as they were.
"""

from __future__ import annotations

import pytest

from components import preflight
from config import ConfigError
from sandbox import program
from tests.unit import aws_support as s
from tests.unit.support import IdMocks

G1_DB = (s.INSTANCE, "staging-g1-db")
G2_DB = (s.INSTANCE, "staging-g2-db")
RETIMED = "2025-01-10T00:00:00+00:00"


def _no_aws(*_args, **_kwargs):
    raise AssertionError("the program reached for AWS under mocks")


@pytest.fixture(scope="module")
def runs():
    """Every step of the lifecycle, run once for the whole module.

    boto3 fails if touched: under mocks the program reaches no AWS API, it only notes the skip.
    """
    import boto3

    restore = s.add_restore("g2", "g1", s.TARGET)
    cut = s.set_active("g2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boto3, "client", _no_aws)
        patch.setattr(boto3, "Session", _no_aws)
        return {
            "base": s.base(),
            "restored": s.run(restore),
            "cutover": s.run(restore, cut),
            "block_removed": s.run(restore, cut, s.drop_restore("g2")),
            # The real flow for "another restore point": g2's time edited (ignored), g3 added.
            "g3_latest": s.run(s.add_restore("g2", "g1", RETIMED), cut, s.add_restore("g3", "g2", "latest")),
            "g1_retired": s.run(restore, cut, s.drop_restore("g2"), lambda c: c["pgstack:clusters"].pop("g1")),
        }


def secrets_of(result: program.RunResult) -> dict:
    """What decides every secret: the RandomPasswords' names and inputs (keepers, length)."""
    return {k: v for k, v in s.snapshot(result).items() if k[0] == s.PASSWORD}


def test_restore_block_adds_a_new_instance_and_touches_nothing_else(runs):
    d = s.diff(runs["base"], runs["restored"])
    assert d.appeared == {
        (s.RDS_COMPONENT, "staging-g2"),
        G2_DB,
        (s.RECORD, "staging-cutover-g2"),
        (s.REMOTE, "staging-g2-roles"),
    }
    assert d.gone == set()
    assert d.changed == {}
    assert secrets_of(runs["base"]) == secrets_of(runs["restored"])


def test_restored_instance_restores_g1_to_the_target_time_with_the_same_settings(runs):
    r = runs["restored"]
    g1, g2 = s.inputs(r, *G1_DB), s.inputs(r, *G2_DB)
    assert g2["restoreToPointInTime"] == {"sourceDbInstanceIdentifier": "staging-g1-db", "restoreTime": s.TARGET_UTC}
    differing = {k for k in g1.keys() | g2.keys() if g1.get(k) != g2.get(k)}
    assert differing == {"identifier", "finalSnapshotIdentifier", "tags", "restoreToPointInTime"}
    assert g2["identifier"] == "staging-g2-db"
    # Created after its source, and under the same ignore rules.
    opts = s.reg(r, *G2_DB).options
    assert "staging-g1-db" in opts["dependencies"]
    assert "restoreToPointInTime" in opts["ignoreChanges"]
    # Not active yet: DNS weight 0, no alarms on it, the stop command unchanged.
    assert s.inputs(r, s.RECORD, "staging-cutover-g2")["weightedRoutingPolicies"] == [{"weight": 0}]
    assert s.inputs(r, s.RECORD, "staging-cutover-g1")["weightedRoutingPolicies"] == [{"weight": 100}]
    assert {a.name.split("-alarms")[0] for a in r.mocks.of_type(s.ALARM)} == {"staging-g1"}


def test_latest_restores_to_the_latest_restorable_time(runs):
    g3 = s.inputs(runs["g3_latest"], s.INSTANCE, "staging-g3-db")
    assert g3["restoreToPointInTime"] == {
        "sourceDbInstanceIdentifier": "staging-g2-db",
        "useLatestRestorableTime": True,
    }


def test_cutover_moves_weight_alarms_and_stop_and_keeps_instances_and_secrets(runs):
    before, after = runs["restored"], runs["cutover"]
    d = s.diff(before, after)
    alarms = {
        (s.ALARMS, "staging-{}-alarms"),
        (s.EVENTS, "staging-{}-events"),
        (s.EVENT_SUBSCRIPTION, "staging-{}-events-critical"),
    } | {
        (s.ALARM, f"staging-{{}}-alarms-{m}-{lv}")
        for m in ("cpu", "memory", "connections", "storage")
        for lv in ("warning", "critical")
    }
    assert d.appeared == {(t, n.format("g2")) for t, n in alarms}
    assert d.gone == {(t, n.format("g1")) for t, n in alarms}
    assert d.changed == {
        (s.RECORD, "staging-cutover-g1"): {"weightedRoutingPolicies"},
        (s.RECORD, "staging-cutover-g2"): {"weightedRoutingPolicies"},
        (s.LOCAL, "staging-cutover-stop-previous"): {"create", "update", "triggers"},
    }
    assert s.inputs(after, s.RECORD, "staging-cutover-g2")["weightedRoutingPolicies"] == [{"weight": 100}]
    assert s.inputs(after, s.RECORD, "staging-cutover-g1")["weightedRoutingPolicies"] == [{"weight": 0}]
    stop = s.inputs(after, s.LOCAL, "staging-cutover-stop-previous")
    assert stop["triggers"] == ["g2"]
    assert stop["update"] == stop["create"]
    assert stop["update"].endswith("--region eu-west-2 --active staging-g2-db")
    assert stop["addPreviousOutputInEnv"] is True
    deps = s.reg(after, s.LOCAL, "staging-cutover-stop-previous").options["dependencies"]
    assert {"staging-cutover-g1", "staging-cutover-g2", "staging-g2-db"} <= set(deps), "stop only after DNS moved"
    assert secrets_of(before) == secrets_of(after)
    # Clients keep the same URL: the DNS name, not an instance endpoint.
    assert before.outputs["database_url"] == after.outputs["database_url"]
    assert after.outputs["active_endpoint"] == "staging-g2-db.mock.rds.amazonaws.com"


def test_removing_the_restore_block_after_cutover_changes_only_ignored_inputs(runs):
    d = s.diff(runs["cutover"], runs["block_removed"])
    assert (d.appeared, d.gone) == (set(), set())
    assert d.changed == {G2_DB: {"restoreToPointInTime"}}
    assert "restoreToPointInTime" in s.reg(runs["block_removed"], *G2_DB).options["ignoreChanges"]
    assert secrets_of(runs["cutover"]) == secrets_of(runs["block_removed"])


def test_a_changed_restore_time_is_ignored_and_a_new_target_is_a_new_generation(runs):
    d = s.diff(runs["cutover"], runs["g3_latest"])
    assert d.appeared == {
        (s.RDS_COMPONENT, "staging-g3"),
        (s.INSTANCE, "staging-g3-db"),
        (s.RECORD, "staging-cutover-g3"),
        (s.REMOTE, "staging-g3-roles"),
    }
    assert d.gone == set()
    # g2's edited time reaches only an input the engine ignores after creation: no replacement.
    assert d.changed == {G2_DB: {"restoreToPointInTime"}}
    assert s.inputs(runs["g3_latest"], *G2_DB)["restoreToPointInTime"]["restoreTime"] == "2025-01-10T00:00:00Z"
    assert "restoreToPointInTime" in s.reg(runs["g3_latest"], *G2_DB).options["ignoreChanges"]
    assert secrets_of(runs["cutover"]) == secrets_of(runs["g3_latest"])


def test_retiring_the_old_generation_removes_it_and_spares_the_active_one(runs):
    # Step 1, deleteProtection: false on g1, is checked in test_aws_stack (the variant run).
    d = s.diff(runs["block_removed"], runs["g1_retired"])
    assert d.appeared == set()
    assert d.gone == {
        (s.RDS_COMPONENT, "staging-g1"),
        G1_DB,
        (s.RECORD, "staging-cutover-g1"),
        (s.REMOTE, "staging-g1-roles"),
    }
    assert d.changed == {}
    assert secrets_of(runs["block_removed"]) == secrets_of(runs["g1_retired"])


def test_the_active_generation_cannot_be_removed():
    with pytest.raises(ConfigError) as err:
        s.run(s.add_restore(), s.set_active("g2"), lambda c: c["pgstack:clusters"].pop("g2"))
    assert err.value.key == "pgstack:active"


def test_a_source_cannot_go_while_a_restore_block_names_it():
    with pytest.raises(ConfigError) as err:
        s.run(s.add_restore(), s.set_active("g2"), lambda c: c["pgstack:clusters"].pop("g1"))
    assert err.value.key == "pgstack:clusters.g2.restore.from"


def test_a_refused_restore_stops_the_program_before_any_registration():
    fake = s.FakeInspector()  # the source does not exist
    preflight.use(preflight.World(rds=lambda _settings: fake))
    mocks = IdMocks()
    try:
        with pytest.raises(ConfigError) as err:
            s.run(s.add_restore(), mocks=mocks)
    finally:
        preflight.use(None)
    assert err.value.key == "pgstack:clusters.g2.restore.from"
    assert "staging-g1-db does not exist" in str(err.value)
    assert fake.asked[:2] == ["staging-g2-db", "staging-g1-db"]
    assert mocks.registrations == []


def test_under_mocks_the_check_is_skipped_explicitly(runs, capsys):
    # `runs` ran every step with boto3 failing if touched; the skip itself is said, not silent.
    assert preflight.run(runs["restored"].settings) == [preflight.RDS_SKIP_NOTE]
    assert preflight.RDS_SKIP_NOTE in capsys.readouterr().err
