"""Restore drills, repository verification and the write canary, under mocks (issue 15).

What the program registers and what the shipped programs say; what they do on real guests is
tests/integration/test_drills.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from config import ConfigError
from postgres import roles as roles_sql
from sandbox import program
from tests.conftest import REPO, run_stack
from tests.unit import aws_support as aws
from tests.unit.support import script_param
from tests.unit.test_shipped_files import SHIP_LINE, fill

DIR = REPO / "components" / "scripts"
DRILL = (DIR / "bin" / "pgstack-drill").read_text()
SERVERS = ("prod-g1-primary", "prod-g1-replica-1")


def drills_step(result: program.RunResult, server: str) -> tuple[str, program.Registration]:
    step = result.mocks.find(f"{server}-drills")
    return program.unwrap(step.inputs["create"]), step


def params(text: str, *names: str) -> dict[str, str]:
    return {name: script_param(text, name) for name in names}


@pytest.fixture(scope="module")
def prod() -> program.RunResult:
    return run_stack("prod")


# ---- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drill", "key"),
    [
        ({"schedule": "Sun; rm -rf /"}, "drill.schedule"),
        ({"verifySchedule": "weekly\nExecStart=/bin/evil"}, "drill.verifySchedule"),
        ({"server": "replica-2"}, "drill.server"),
        ({"marginPercent": -1}, "drill.marginPercent"),
        ({"canaryIntervalSeconds": 0}, "drill.canaryIntervalSeconds"),
        ({"heapallindexed": "sometimes"}, "drill.heapallindexed"),
        ({"schedules": "daily"}, "drill.schedules"),
    ],
)
def test_bad_drill_config_is_refused_naming_the_key(drill, key):
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:drill": drill}))
    assert info.value.key == f"pgstack:{key}", str(info.value)


def test_a_bad_schedule_says_how_to_write_one():
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:drill": {"schedule": "Sun; reboot"}}))
    assert "OnCalendar" in str(info.value) and "value not allowed" in str(info.value)


def test_a_drill_block_needs_backups():
    def edit(cfg: dict) -> None:
        cfg.pop("pgstack:backup")
        cfg["pgstack:drill"] = {"server": "primary"}

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    assert info.value.key == "pgstack:drill" and "pgstack:backup" in str(info.value)


def test_target_aws_refuses_the_drill_block():
    with pytest.raises(ConfigError) as info:
        aws.run(lambda cfg: cfg.update({"pgstack:drill": {}}))
    assert info.value.key == "pgstack:drill" and "RDS" in str(info.value)


def test_the_canary_database_name_is_reserved():
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=lambda cfg: cfg["pgstack:database"].update({"name": "pgstack"}))
    assert info.value.key == "pgstack:database.name" and "canary" in str(info.value)


def test_the_canary_age_bound_must_be_above_the_canary_interval():
    def edit(cfg: dict) -> None:
        cfg["pgstack:drill"] = {"canaryIntervalSeconds": 30}
        cfg["pgstack:monitoring"].setdefault("thresholds", {})["canaryMaxAgeSeconds"] = 30

    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    assert info.value.key == "pgstack:monitoring.thresholds.canaryMaxAgeSeconds"
    assert "above 30" in str(info.value)


# ---- the steps --------------------------------------------------------------------------------


def test_every_server_gets_the_drills_step_after_pgbackrest(prod):
    for server in SERVERS:
        text, step = drills_step(prod, server)
        assert step.type == "command:remote:Command"
        got = params(
            text, "PG_VERSION", "BACKUPS", "STANZA", "DATABASE", "CANARY_INTERVAL", "DRILL_SCHEDULE",
            "VERIFY_SCHEDULE", "HEAPALLINDEXED", "MARGIN_PERCENT",
        )  # fmt: skip
        assert got == {
            "PG_VERSION": "15",
            "BACKUPS": "1",
            "STANZA": "hcb_production-g1",
            "DATABASE": "hcb_production",
            "CANARY_INTERVAL": "5s",
            "DRILL_SCHEDULE": "Sun *-*-* 05:00:00",
            "VERIFY_SCHEDULE": "Wed *-*-* 05:00:00",
            "HEAPALLINDEXED": "0",
            "MARGIN_PERCENT": "20",
        }, server
        # The drill reads pgBackRest's configuration and the stanza file the pgbackrest step writes.
        assert f"{server}-pgbackrest" in step.options["dependencies"], step.options["dependencies"]
        # Nothing secret: no stdin at all.
        assert step.inputs.get("stdin") is None


def test_the_drill_timer_is_on_the_first_replica_by_default(prod):
    timers = {s: script_param(drills_step(prod, s)[0], "DRILL_TIMER") for s in SERVERS}
    assert timers == {"prod-g1-primary": "0", "prod-g1-replica-1": "1"}


def test_server_primary_puts_the_drill_timer_on_the_primary():
    result = run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:drill": {"server": "primary"}}))
    timers = {s: script_param(drills_step(result, s)[0], "DRILL_TIMER") for s in SERVERS}
    assert timers == {"prod-g1-primary": "1", "prod-g1-replica-1": "0"}


def test_a_generation_without_replicas_drills_on_its_primary():
    """Decided: drill.server replica means the first replica where there is one, else the primary
    (no error, so a stack can drop its replicas without editing the drill block)."""

    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"]["g1"]["replicaIps"] = []
        cfg["pgstack:drill"] = {"server": "replica"}

    result = run_stack("prod", edit=edit)
    assert script_param(drills_step(result, "prod-g1-primary")[0], "DRILL_TIMER") == "1"
    assert not [r for r in result.mocks.registrations if r.name == "prod-g1-replica-1-drills"]


def test_drill_settings_reach_the_step():
    drill = {"schedule": "Sat *-*-* 03:30:00", "verifySchedule": "*-*-01 04:00:00", "heapallindexed": True,
             "marginPercent": 50, "canaryIntervalSeconds": 10}  # fmt: skip
    result = run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:drill": drill}))
    text, _ = drills_step(result, "prod-g1-replica-1")
    assert params(text, "DRILL_SCHEDULE", "VERIFY_SCHEDULE", "HEAPALLINDEXED", "MARGIN_PERCENT", "CANARY_INTERVAL") == {
        "DRILL_SCHEDULE": "Sat *-*-* 03:30:00",
        "VERIFY_SCHEDULE": "*-*-01 04:00:00",
        "HEAPALLINDEXED": "1",
        "MARGIN_PERCENT": "50",
        "CANARY_INTERVAL": "10s",
    }


def test_without_backups_every_server_still_writes_the_canary():
    def edit(cfg: dict) -> None:
        cfg.pop("pgstack:backup")

    result = run_stack("prod", edit=edit)
    for server in SERVERS:
        text, _ = drills_step(result, server)
        assert params(text, "BACKUPS", "STANZA", "DRILL_TIMER") == {"BACKUPS": "0", "STANZA": "", "DRILL_TIMER": "0"}


def test_the_drill_and_verify_checks_are_every_servers_with_their_periods():
    result = run_stack("prod", edit=lambda cfg: cfg.update({"pgstack:alertsApiKey": "k"}))
    import json

    spec = json.loads(program.unwrap(result.mocks.find("prod-heartbeat-checks-api").inputs["stdin"]))
    got = {c["slug"]: (c["timeout"], c["grace"]) for c in spec["checks"]}
    for server in SERVERS:
        assert got[f"{server}-drill"] == got[f"{server}-verify"] == (7 * 86400, 86400)


# ---- the canary ---------------------------------------------------------------------------------


def test_the_role_sql_makes_the_canary_database_idempotently_and_lets_monitoring_read_it(prod):
    sql = program.unwrap(prod.mocks.find("prod-g1-primary-roles").inputs["stdin"])
    create = (
        "SELECT 'CREATE DATABASE pgstack' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'pgstack')\\gexec"
    )
    assert create in sql
    # Made before the logins' CONNECT grants name it.
    assert sql.index(create) < sql.index("GRANT CONNECT ON DATABASE pgstack TO monitoring;")
    assert "CREATE TABLE IF NOT EXISTS public.canary (id int PRIMARY KEY, at timestamptz NOT NULL);" in sql
    assert "INSERT INTO public.canary (id, at) VALUES (1, now()) ON CONFLICT (id) DO NOTHING;" in sql
    assert "GRANT SELECT ON TABLE public.canary TO monitoring;" in sql
    canary_part = sql.split("\\connect pgstack\n", 1)[1].split("\\connect hcb_production\n", 1)[0]
    # Nobody else: no other role is granted anything there.
    assert re.findall(r"GRANT \w+ ON TABLE public\.canary TO (\w+);", canary_part) == ["monitoring"]


def test_rds_gets_no_canary_database():
    sql = program.unwrap(next(r for r in aws.base().mocks.registrations if r.name.endswith("-roles")).inputs["stdin"])
    assert f"DATABASE {roles_sql.CANARY_DATABASE}" not in sql and "canary" not in sql


def test_the_exporter_reads_the_canary_in_its_database():
    exporters = (DIR / "exporters.sh").read_text()
    assert 'DATA_SOURCE_URI="127.0.0.1:5432/pgstack?sslmode=disable"' in exporters
    queries = (DIR / "etc" / "pgstack-queries.yaml").read_text()
    assert "pgstack_canary:" in queries and "FROM public.canary WHERE id = 1" in queries


# ---- the drill program ----------------------------------------------------------------------------


def test_the_drill_restores_with_archive_mode_off_into_the_scratch_directory_only():
    command = DRILL.split('out=$(as_postgres pgbackrest --stanza="$STANZA" --pg1-path="$data"', 1)
    assert len(command) == 2, "the restore must name --pg1-path=$data"
    restore = command[1].split("restore 2>&1", 1)[0]
    for option in ("--archive-mode=off", "--type=default", '--spool-path="${scratch}/spool"',
                   '--lock-path="${scratch}/lock"', '--tablespace-map-all="${scratch}/tablespaces"'):  # fmt: skip
        assert option in restore, option
    assert "\nscratch=/var/lib/pgstack/drill\ndata=${scratch}/data\n" in DRILL
    # Never the live data directory, nor the live configuration.
    for pg1 in re.findall(r"--pg1-path=(\S+)", DRILL):
        assert pg1 == '"$data"', pg1
    code = "\n".join(line for line in DRILL.splitlines() if not line.lstrip().startswith("#"))
    # live_data is named once, for the guard that it is never removed.
    assert code.count("/var/lib/postgresql") == 1 and 'data != "$live_data"' in code
    assert "/etc/postgresql" not in code and "PG_DATA" not in code
    assert "pg_ctlcluster" not in code and "systemctl" not in code


def test_the_restored_copy_cannot_archive_listens_on_its_socket_only_and_is_small():
    conf = DRILL.split('"${data}/postgresql.conf" >/dev/null <<CONF\n', 1)[1].split("\nCONF\n", 1)[0]
    for setting in ("archive_mode = off", "listen_addresses = ''", "unix_socket_directories = '${socket_dir}'",
                    "port = ${port}", "primary_conninfo = ''", "hot_standby = off", "max_connections = 10",
                    "shared_buffers = 32MB", "recovery_target_action = 'promote'", "max_wal_senders = 0"):  # fmt: skip
        assert setting in conf, setting
    # The command line wins over postgresql.auto.conf, which the backup and pgBackRest wrote.
    start = DRILL.split('"${pg_bin}/pg_ctl" -D "$data" -l "$pg_log"', 1)[1].split("start 2>&1", 1)[0]
    for option in ("-c archive_mode=off", "-c listen_addresses=''", "-c unix_socket_directories=${socket_dir}",
                   "-c port=${port}", "-c hot_standby=off", "-c primary_conninfo=''",
                   "-c config_file=${data}/postgresql.conf"):  # fmt: skip
        assert option in start, option
    assert 'rm -f "${data}/standby.signal"' in DRILL


def test_the_drill_checks_and_reports_what_the_issue_asks():
    for needle in ('pg_amcheck" -h "$socket_dir"', "--install-missing", "--heapallindexed", "pg_checksums\" --check",
                   "public.canary where id = 1", "select count(*) from ${table}", "trap finish EXIT",
                   'remove_scratch', '.[0].backup[-1].info.size', "df -B1 --output=avail"):  # fmt: skip
        assert needle in DRILL, needle
    for field in ("restore_seconds", "recovery_seconds", "ready_seconds", "rpo_seconds", "bytes", "checks"):
        assert f"{field}: $" in DRILL, field
    metrics = ("last_success_timestamp_seconds", "last_run_success", "rpo_seconds", "restore_seconds", "ready_seconds")
    for metric in (f"pgstack_drill_{m}" for m in metrics):
        assert f"'{metric}{{stanza=" in DRILL, metric
    assert '"$heartbeat" send drill "$([[ $ok == 1 ]] && echo success || echo fail)" "$report"' in DRILL
    # Both numbers in the refusal.
    assert "it needs ${needed} bytes" in DRILL and "${available} bytes are available" in DRILL


def test_verify_reads_its_status_from_the_output_and_runs_on_the_primary_only():
    verify = (DIR / "bin" / "pgstack-verify").read_text()
    assert 'pgbackrest --stanza="$STANZA" --output=text --verbose verify' in verify
    assert "'^status: error'" in verify and "select pg_is_in_recovery()" in verify
    assert "pgstack_verify_last_run_success" in verify and "pgstack_verify_last_success_timestamp_seconds" in verify
    assert 'send fail "$report"' in verify and 'send success "$report"' in verify


def test_pgbackrest_runs_as_postgres_in_the_drill_and_verify():
    for name in ("pgstack-drill", "pgstack-verify"):
        for line in (DIR / "bin" / name).read_text().splitlines():
            if re.search(r"(^|[\s(])pgbackrest --", line):
                assert "as_postgres pgbackrest" in line, f"{name}: {line.strip()}"


# ---- the units -------------------------------------------------------------------------------------


def test_the_timers_get_their_calendar_and_interval():
    values = {"DRILL_SCHEDULE": "Sun *-*-* 05:00:00", "VERIFY_SCHEDULE": "Wed *-*-* 05:00:00", "CANARY_INTERVAL": "5s"}
    calls = {rel: names.split() for _, _, names, rel in SHIP_LINE.findall((DIR / "drills.sh").read_text())}
    drill = fill("units/pgstack-drill.timer", calls["units/pgstack-drill.timer"], values)
    verify = fill("units/pgstack-verify.timer", calls["units/pgstack-verify.timer"], values)
    canary = fill("units/pgstack-canary.timer", calls["units/pgstack-canary.timer"], values)
    assert drill.returncode == verify.returncode == canary.returncode == 0, drill.stderr + verify.stderr + canary.stderr
    assert "OnCalendar=Sun *-*-* 05:00:00\n" in drill.stdout and "Persistent=true\n" in drill.stdout
    assert "OnCalendar=Wed *-*-* 05:00:00\n" in verify.stdout
    assert "OnBootSec=5s\nOnUnitActiveSec=5s\n" in canary.stdout and "\nAccuracySec=1s\n" in canary.stdout


def test_the_units_run_as_intended():
    canary = (DIR / "units" / "pgstack-canary.service").read_text()
    assert "User=postgres\n" in canary
    drill = (DIR / "units" / "pgstack-drill.service").read_text()
    # Root (it pings through the root-only heartbeat file), reading both environment files.
    assert "User=" not in drill and "EnvironmentFile=/etc/pgstack/drill.env\n" in drill
    assert "EnvironmentFile=/etc/pgstack/pgbackrest.env\n" in drill
    assert "ExecStart=/usr/local/sbin/pgstack-drill\n" in drill
    verify = (DIR / "units" / "pgstack-verify.service").read_text()
    assert "User=" not in verify and "ExecStart=/usr/local/sbin/pgstack-verify\n" in verify


def test_the_drills_step_enables_the_drill_timer_only_on_the_drill_server():
    script = (DIR / "drills.sh").read_text()
    assert "if ((DRILL_TIMER)); then\n    systemctl enable --quiet pgstack-drill.timer" in script
    assert "systemctl disable --quiet --now pgstack-drill.timer" in script
    assert "timers=(pgstack-canary.timer)" in script and "timers+=(pgstack-verify.timer)" in script
    assert 'systemd-analyze calendar "$schedule"' in script


def test_the_new_scripts_pass_shellcheck():
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is not installed")
    files = ["drills.sh", "bin/pgstack-drill", "bin/pgstack-verify", "bin/pgstack-canary", "bin/pgstack-heartbeat"]
    proc = subprocess.run([found, "-x", *files], cwd=DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_heartbeat_sends_a_body_file_for_drill_verify_and_the_logical_dump_only():
    hb = (DIR / "bin" / "pgstack-heartbeat").read_text()
    assert "  send)\n" in hb and "[[ $check =~ ^(drill|verify|logical-dump)$ ]]" in hb
    assert 'body=$(head -c 10000 "$4"' in hb
