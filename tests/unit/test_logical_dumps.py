"""Scheduled logical dumps (issue 16, the logicalBackup block), under mocks.

What the program registers and what the shipped programs say; what they do on real guests is in
tests/integration/test_drills.py (the drills bed carries the block).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from config import ConfigError
from monitoring import rules as monitoring_rules
from sandbox import program
from tests.conftest import REPO, SECRETS, run_stack
from tests.unit import aws_support as aws
from tests.unit.support import script_param
from tests.unit.test_shipped_files import SHIP_LINE, fill

DIR = REPO / "components" / "scripts"
DUMP = (DIR / "bin" / "pgstack-logical-dump").read_text()
RESTORE = (REPO / "runbooks" / "restore-dump.sh").read_text()
SERVERS = ("prod-g1-primary", "prod-g1-replica-1")
KEY = "age18vv9ugyqdurdj2vpq3z4japdtpe4kmz607m475vm4sv862n9jqesel8zvt"
KEY2 = "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"
BLOCK = {"recipients": [KEY], "excludeTableData": ["public.notifications", "ft_*"], "excludeSchemas": ["pglogical"]}


def with_block(block: dict | None = None, **more):
    def edit(cfg: dict) -> None:
        cfg["pgstack:logicalBackup"] = {**BLOCK, **(block or {})}
        cfg.update(more)

    return edit


def dump_step(result: program.RunResult, server: str) -> tuple[str, program.Registration]:
    step = result.mocks.find(f"{server}-logical-dump")
    return program.unwrap(step.inputs["create"]), step


@pytest.fixture(scope="module")
def dumps() -> program.RunResult:
    return run_stack("prod", edit=with_block())


# ---- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"recipients": []}, "logicalBackup.recipients"),
        ({"recipients": ["AGE-SECRET-KEY-1QQQQ"]}, "logicalBackup.recipients.0"),
        ({"recipients": ["age1short"]}, "logicalBackup.recipients.0"),
        ({"recipients": [KEY, KEY]}, "logicalBackup.recipients"),
        ({"excludeTableData": ["public.x; rm -rf /"]}, "logicalBackup.excludeTableData.0"),
        ({"excludeTableData": ["a.b.c"]}, "logicalBackup.excludeTableData.0"),
        ({"excludeTableData": ['"Quoted"']}, "logicalBackup.excludeTableData.0"),
        ({"excludeSchemas": ["public.x"]}, "logicalBackup.excludeSchemas.0"),
        ({"excludeSchemas": ["$(reboot)"]}, "logicalBackup.excludeSchemas.0"),
        ({"schedule": "daily; reboot"}, "logicalBackup.schedule"),
        ({"keep": 0}, "logicalBackup.keep"),
        ({"prefix": "logical"}, "logicalBackup.prefix"),
        ({"prefix": "/Logical dumps"}, "logicalBackup.prefix"),
        ({"prefix": "/pgbackrest"}, "logicalBackup.prefix"),
        ({"prefix": "/pgbackrest/logical"}, "logicalBackup.prefix"),
        ({"keeps": 3}, "logicalBackup.keeps"),
    ],
)
def test_bad_logical_backup_config_is_refused_naming_the_key(block, key):
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=with_block(block))
    assert info.value.key == f"pgstack:{key}", str(info.value)


def test_a_prefix_inside_the_repository_path_says_so_and_how_to_fix_it():
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=with_block({"prefix": "/pgbackrest/dumps"}))
    assert "inside backup.repoPath (/pgbackrest)" in str(info.value) and "e.g. /logical" in str(info.value)


def test_a_prefix_that_holds_the_repository_path_is_refused():
    def edit(cfg: dict) -> None:
        with_block({"prefix": "/backups"})(cfg)
        cfg["pgstack:backup"]["repoPath"] = "/backups/pgbackrest"

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    assert info.value.key == "pgstack:logicalBackup.prefix" and "holds backup.repoPath" in str(info.value)


def test_a_repository_at_the_bucket_root_leaves_no_room_for_dumps():
    def edit(cfg: dict) -> None:
        with_block()(cfg)
        cfg["pgstack:backup"]["repoPath"] = "/"

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    assert info.value.key == "pgstack:logicalBackup.prefix"


def test_a_bad_table_pattern_says_how_to_write_one():
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=with_block({"excludeTableData": ["x y"]}))
    assert "value not allowed" in str(info.value) and "schema.table" in str(info.value)


def test_the_block_needs_backups():
    def edit(cfg: dict) -> None:
        with_block()(cfg)
        cfg.pop("pgstack:backup")

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    assert info.value.key == "pgstack:logicalBackup" and "pgstack:backup" in str(info.value)


def test_target_aws_refuses_the_block():
    with pytest.raises(ConfigError) as info:
        aws.run(lambda cfg: cfg.update({"pgstack:logicalBackup": BLOCK}))
    assert info.value.key == "pgstack:logicalBackup" and "target aws" in str(info.value)


def test_the_defaults():
    result = run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:logicalBackup": {"recipients": [KEY]}}))
    lb = result.settings.logical_backup
    assert lb is not None
    assert (lb.schedule, lb.prefix, lb.keep, lb.exclude_table_data, lb.exclude_schemas) == (
        "*-*-* 03:30:00", "/logical", 7, [], []
    )  # fmt: skip


# ---- the steps --------------------------------------------------------------------------------


def test_without_the_block_there_is_no_step_and_no_check():
    result = run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:alertsApiKey": "k"}))
    assert not [r.name for r in result.mocks.registrations if "logical-dump" in r.name]
    spec = json.loads(program.unwrap(result.mocks.find("prod-heartbeat-checks-api").inputs["stdin"]))
    assert not [c for c in spec["checks"] if "logical-dump" in c["slug"]]


def test_every_server_gets_the_step_after_pgbackrest_with_the_params(dumps):
    for server in SERVERS:
        text, step = dump_step(dumps, server)
        assert step.type == "command:remote:Command"
        names = ("PG_VERSION", "DATABASE", "PREFIX", "KEEP", "RECIPIENTS", "LOGICAL_SCHEDULE", "EXCLUDE_TABLE_DATA",
                 "EXCLUDE_SCHEMAS", "DUMP_TIMER", "DUMP_STANDBY")  # fmt: skip
        assert {n: script_param(text, n) for n in names} == {
            "PG_VERSION": "15",
            "DATABASE": "hcb_production",
            "PREFIX": "/logical/hcb_production-g1",  # one folder per generation
            "KEEP": "7",
            "RECIPIENTS": KEY,
            "LOGICAL_SCHEDULE": "*-*-* 03:30:00",
            "EXCLUDE_TABLE_DATA": "public.notifications ft_*",
            "EXCLUDE_SCHEMAS": "pglogical",
            "DUMP_TIMER": "1",
            "DUMP_STANDBY": "prod-g1-replica-1",
        }, server
        assert f"{server}-pgbackrest" in step.options["dependencies"], step.options["dependencies"]
        # Nothing secret: public keys only, no stdin.
        assert step.inputs.get("stdin") is None
        for secret in SECRETS.values():
            assert secret not in text


def test_the_timer_is_on_the_primary_and_the_first_replica_only():
    def edit(cfg: dict) -> None:
        with_block()(cfg)
        cfg["pgstack:clusters"]["g1"]["replicaIps"] = ["10.0.1.6", "10.0.1.7"]

    result = run_stack("prod", edit=edit)
    timers = {s: script_param(dump_step(result, s)[0], "DUMP_TIMER") for s in (*SERVERS, "prod-g1-replica-2")}
    assert timers == {"prod-g1-primary": "1", "prod-g1-replica-1": "1", "prod-g1-replica-2": "0"}


def test_a_generation_without_replicas_dumps_on_its_primary():
    def edit(cfg: dict) -> None:
        with_block()(cfg)
        cfg["pgstack:clusters"]["g1"]["replicaIps"] = []

    text, _ = dump_step(run_stack("prod", edit=edit), "prod-g1-primary")
    assert (script_param(text, "DUMP_TIMER"), script_param(text, "DUMP_STANDBY")) == ("1", "")


def test_settings_reach_the_step():
    block = {"schedule": "Mon..Fri *-*-* 01:00:00", "prefix": "/dumps/prod", "keep": 30, "recipients": [KEY, KEY2]}
    text, _ = dump_step(run_stack("prod", edit=with_block(block)), "prod-g1-replica-1")
    assert script_param(text, "LOGICAL_SCHEDULE") == "Mon..Fri *-*-* 01:00:00"
    assert (script_param(text, "PREFIX"), script_param(text, "KEEP")) == ("/dumps/prod/hcb_production-g1", "30")
    assert script_param(text, "RECIPIENTS") == f"{KEY} {KEY2}"


def test_the_logical_dump_check_is_every_servers_with_its_period():
    result = run_stack("prod", edit=with_block(**{"pgstack:alertsApiKey": "k"}))
    spec = json.loads(program.unwrap(result.mocks.find("prod-heartbeat-checks-api").inputs["stdin"]))
    got = {c["slug"]: (c["timeout"], c["grace"]) for c in spec["checks"]}
    for server in SERVERS:
        assert got[f"{server}-logical-dump"] == (86400, 6 * 3600)


# ---- the rules ---------------------------------------------------------------------------------


def test_the_rules_render_the_logical_dump_alerts_with_the_configured_bound():
    rendered = monitoring_rules.render(monitoring_rules.Thresholds(logical_dump_max_age_seconds=3 * 86400))
    assert "alert: LogicalDumpFailed\n    expr: pgstack_logical_dump_last_run_success == 0\n" in rendered
    assert (
        "expr: time() - max by (stanza, database) (pgstack_logical_dump_last_success_timestamp_seconds) > 259200"
    ) in rendered
    assert "runbook: README.md#logicaldumptooold" in rendered


def test_the_threshold_is_config():
    def edit(cfg: dict) -> None:
        with_block()(cfg)
        cfg["pgstack:monitoring"].setdefault("thresholds", {})["logicalDumpMaxAgeSeconds"] = 30

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    assert info.value.key == "pgstack:monitoring.thresholds.logicalDumpMaxAgeSeconds"


# ---- the program --------------------------------------------------------------------------------


def test_the_dump_is_piped_into_age_and_uploaded_raw_as_postgres():
    code = "\n".join(line for line in DUMP.splitlines() if not line.lstrip().startswith("#"))
    # pg_dump's output goes nowhere but age's stdin, to the public keys.
    assert re.search(
        r'pg_dump" "\$\{dump_args\[@\]\}" 2>"\$errors" \\\n\s+\| age -e -R "\$recipients" -o "\$tmp"', code
    )
    assert 'dump_args=(-Fc -d "$DATABASE")' in code
    assert '"--exclude-table-data=${p}"' in code and '"--exclude-schema=${p}"' in code
    # pgBackRest on the dumps' prefix, as postgres, without its own cipher.
    assert 'repo() { as_postgres pgbackrest --repo1-path="$PREFIX"' in code
    assert 'repo repo-put --raw "$name" <"$tmp"' in code
    for line in code.splitlines():
        if re.search(r"(^|[\s(])pgbackrest ", line):
            assert "as_postgres pgbackrest" in line, line
    assert "repo repo-ls --output=json --filter=" in code and 'repo repo-rm "$old"' in code
    assert "/etc/pgstack/logical-dump.recipients" in code
    # No decryption on the server.
    assert "age -d" not in code and "--decrypt" not in code


def test_retention_removes_only_its_own_files_beyond_keep():
    assert 'name_re="^${DATABASE}-[0-9]{8}T[0-9]{6}Z\\\\.dump\\\\.age\\$"' in DUMP
    assert 'name="${DATABASE}-$(date -u +%Y%m%dT%H%M%SZ).dump.age"' in DUMP
    assert '"${dumps[@]:0:${#dumps[@]}-KEEP}"' in DUMP


def test_where_it_dumps_and_the_retry_with_replay_paused():
    assert "application_name = '${DUMP_STANDBY}' and state = 'streaming'" in DUMP
    assert "takes the dump there; nothing to do here" in DUMP
    assert "grep -q 'conflict with recovery'" in DUMP and "PGOPTIONS='-c lc_messages=C'" in DUMP
    assert "select pg_wal_replay_pause()" in DUMP and "select pg_wal_replay_resume()" in DUMP
    assert "trap finish EXIT" in DUMP and "resume ||" in DUMP
    unit = (DIR / "units" / "pgstack-logical-dump.service").read_text()
    # However the program ends, a paused standby resumes.
    assert "ExecStopPost=/usr/local/sbin/pgstack-logical-dump resume\n" in unit
    assert "User=" not in unit and "EnvironmentFile=/etc/pgstack/logical-dump.env\n" in unit


def test_the_dump_reports_and_writes_metrics():
    assert '"$heartbeat" send logical-dump start' in DUMP
    assert '"$heartbeat" send logical-dump "$([[ $ok == 1 ]] && echo success || echo fail)" "$report"' in DUMP
    for metric in ("last_run_success", "last_run_timestamp_seconds", "last_success_timestamp_seconds",
                   "last_size_bytes", "last_duration_seconds", "count"):  # fmt: skip
        assert f"'pgstack_logical_dump_{metric}{{%s}} %s\\n'" in DUMP, metric
    hb = (DIR / "bin" / "pgstack-heartbeat").read_text()
    assert "[[ $check =~ ^(drill|verify|logical-dump)$ ]]" in hb


def test_the_timer_gets_its_calendar_and_the_step_installs_age():
    calls = {rel: names.split() for _, _, names, rel in SHIP_LINE.findall((DIR / "logical_dump.sh").read_text())}
    timer = fill("units/pgstack-logical-dump.timer", calls["units/pgstack-logical-dump.timer"],
                 {"LOGICAL_SCHEDULE": "*-*-* 03:30:00"})  # fmt: skip
    assert timer.returncode == 0, timer.stderr
    assert "OnCalendar=*-*-* 03:30:00\n" in timer.stdout and "Persistent=true\n" in timer.stdout
    step = (DIR / "logical_dump.sh").read_text()
    assert "install_unstarted age" in step
    assert "install_file 644 root:root /etc/pgstack/logical-dump.recipients" in step
    assert "install -d -m 700 -o root -g root /var/lib/pgstack/logical-dump" in step
    assert "systemctl disable --quiet --now pgstack-logical-dump.timer" in step
    assert "age" in (REPO / "sandbox" / "rootfs-packages.txt").read_text().split()


def test_the_restore_runbook_refuses_a_database_with_tables_and_restores_without_owner_or_acl():
    assert "pg_restore --no-owner --no-acl --exit-on-error --single-transaction" in RESTORE
    assert "already holds ${tables} tables" in RESTORE
    assert 'age -d -i "$key"' in RESTORE
    assert 'repo repo-get --raw "$name"' in RESTORE and 'aws s3 cp --only-show-errors "$source"' in RESTORE


def test_the_new_scripts_pass_shellcheck():
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is not installed")
    files = [
        str(DIR / "logical_dump.sh"),
        str(DIR / "bin" / "pgstack-logical-dump"),
        str(REPO / "runbooks" / "restore-dump.sh"),
    ]
    proc = subprocess.run([found, "-x", *files], cwd=DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
