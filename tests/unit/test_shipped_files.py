"""Files the in-guest scripts install (systemd units in units/, programs in bin/): real files,
checked as they are, and carried in the command text as quoted here-documents."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from components import scripts
from tests.conftest import REPO

DIR = REPO / "components" / "scripts"
# units/: systemd units and drop-ins; bin/: programs; etc/: other configuration files.
SHIPPED = sorted(p for sub in ("units", "bin", "etc") for p in (DIR / sub).rglob("*") if p.is_file())
PROGRAMS = sorted((DIR / "bin").iterdir())
UNITS = sorted(p for p in SHIPPED if p.relative_to(DIR).parts[0] == "units")
# `ship MODE PATH [NAME...] <"$(dirname "$0")/FILE"`: how a script installs a shipped file.
SHIP_LINE = re.compile(r'^\s*ship (\d+) (\S+)((?: [A-Z][A-Z0-9_]*)*) <"\$\(dirname "\$0"\)/(\S+)"$', re.M)
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
UNIT_SECTIONS = {"[Unit]", "[Service]", "[Timer]", "[Install]"}
# Values like the ones the program passes (prod's backup schedules), for filling the templates.
SAMPLE = {
    "STANZA": "hcb_production-g1",
    "PG_SERVICE": "postgresql@15-main",
    "FULL_SCHEDULE": "Sun *-*-* 02:00:00",
    "DIFF_SCHEDULE": "Mon..Sat *-*-* 02:00:00",
    "WATCH_INTERVAL": "2min",
    "JOB": "alive",
    "INTERVAL": "60s",
    "CANARY_INTERVAL": "5s",
    "DRILL_SCHEDULE": "Sun *-*-* 05:00:00",
    "VERIFY_SCHEDULE": "Wed *-*-* 05:00:00",
    "LOGICAL_SCHEDULE": "*-*-* 03:30:00",
    "DATABASE": "hcb_production",
}
PGBACKREST_PARAMS = {
    "PG_VERSION": 15,
    "MODE": "primary",
    **{k: v for k, v in SAMPLE.items() if k in ("STANZA", "FULL_SCHEDULE", "DIFF_SCHEDULE", "WATCH_INTERVAL")},
}


def ship_calls() -> list[tuple[str, str, str, list[str], str]]:
    """(script, mode, guest path, placeholder names, file) for every ship line of every script."""
    calls = []
    for script in sorted(DIR.glob("*.sh")):
        for mode, path, names, rel in SHIP_LINE.findall(script.read_text()):
            calls.append((script.name, mode, path, names.split(), rel))
    return calls


def fill(rel: str, names: list[str], values: dict[str, str]) -> subprocess.CompletedProcess:
    """lib.sh's fill NAMES <FILE in bash, the variables set to `values` (lib.sh cds to /)."""
    lib, template = shlex.quote(str(DIR / "lib.sh")), shlex.quote(str(DIR / rel))
    cmd = f"set -euo pipefail; source {lib}; fill {' '.join(names)} <{template}"
    env = {"PATH": "/usr/bin:/bin", "PG_VERSION": "15", **values}
    return subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=30)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install it to check the shipped files")
    return found


def test_there_are_shipped_files():
    names = {p.name for p in SHIPPED}
    assert {"pgstack-backup", "pgstack-archive-watch", "pgstack-backup@.service", "pgstack.conf"} <= names


def test_every_shipped_file_is_installed_by_a_script_and_every_ship_names_a_file():
    shipped = {rel for *_, rel in ship_calls()}
    on_disk = {str(p.relative_to(DIR)) for p in SHIPPED}
    assert shipped == on_disk, f"not installed by any script: {on_disk - shipped}; missing: {shipped - on_disk}"


def test_every_read_of_a_file_next_to_a_script_is_a_ship_line():
    """The assembler inlines only `<"$(dirname "$0")/FILE"` at a line end; anything else would
    fail on the guest, where the script runs alone from /tmp."""
    for script in sorted(DIR.glob("*.sh")):
        for line in script.read_text().splitlines():
            if '"$(dirname "$0")' in line and "/lib.sh" not in line:
                assert SHIP_LINE.match(line), f"{script.name}: {line}"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_program_is_executable_strict_bash_and_installed_executable(program):
    lines = program.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash", lines[0]
    assert "set -euo pipefail" in lines
    assert program.stat().st_mode & 0o111, f"{program.name} is not executable in the repository"
    modes = {mode for _, mode, _, _, rel in ship_calls() if rel == f"bin/{program.name}"}
    assert modes == {"755"}, f"{program.name} is installed with mode {modes}"


def test_programs_pass_shellcheck():
    proc = subprocess.run(
        [tool("shellcheck"), "-x", *[str(p.relative_to(DIR)) for p in PROGRAMS]],
        cwd=DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"shellcheck found problems in the shipped programs:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: str(p.relative_to(DIR)))
def test_unit_is_well_formed(unit):
    text = unit.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n"), f"{unit.name}: one trailing newline"
    section = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            assert line in UNIT_SECTIONS, f"{unit.name}:{n}: unknown section {line}"
            section = line
            continue
        assert section is not None, f"{unit.name}:{n}: a setting before any section"
        # `ExecStart=` alone resets the list in a drop-in, before the one that replaces it.
        assert re.match(r"^[A-Z][A-Za-z]+=\S", line) or line == "ExecStart=", (
            f"{unit.name}:{n}: not a Key=Value setting: {line!r}"
        )
    for secret_hint in ("PASS", "KEY", "SECRET", "TOKEN"):
        assert secret_hint not in " ".join(PLACEHOLDER.findall(text)), f"{unit.name}: a secret placeholder"


@pytest.mark.parametrize("call", ship_calls(), ids=lambda c: f"{c[0]}:{c[4]}")
def test_ship_fills_exactly_the_placeholders_of_its_file(call):
    script, _, _, names, rel = call
    placeholders = set(PLACEHOLDER.findall((DIR / rel).read_text()))
    assert placeholders == set(names), f"{script} fills {names} into {rel}, which has {sorted(placeholders)}"


@pytest.mark.parametrize("call", ship_calls(), ids=lambda c: f"{c[0]}:{c[4]}")
def test_fill_in_bash_gives_the_unit_the_guest_gets(call):
    """lib.sh's fill with the step's values: every placeholder replaced, nothing else touched."""
    _, _, _, names, rel = call
    proc = fill(rel, names, {n: SAMPLE[n] for n in names})
    assert proc.returncode == 0, proc.stderr
    want = (DIR / rel).read_text()
    for name in names:
        want = want.replace(f"@{name}@", SAMPLE[name])
    assert proc.stdout == want
    assert not PLACEHOLDER.search(proc.stdout)


def test_the_backup_timers_and_unit_get_their_values():
    def filled(rel: str, *names: str) -> str:
        proc = fill(rel, list(names), {n: SAMPLE[n] for n in names})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "OnCalendar=Sun *-*-* 02:00:00\n" in filled("units/pgstack-backup-full.timer", "FULL_SCHEDULE")
    assert "OnCalendar=Mon..Sat *-*-* 02:00:00\n" in filled("units/pgstack-backup-diff.timer", "DIFF_SCHEDULE")
    watch = filled("units/pgstack-archive-watch.timer", "WATCH_INTERVAL")
    assert "OnBootSec=2min\nOnUnitActiveSec=2min\n" in watch
    service = filled("units/pgstack-backup@.service", "STANZA", "PG_SERVICE")
    assert "stanza hcb_production-g1 " in service and "After=postgresql@15-main.service\n" in service


def test_fill_refuses_a_value_with_a_newline_and_an_unfilled_placeholder():
    timer = "units/pgstack-backup-full.timer"
    proc = fill(timer, ["FULL_SCHEDULE"], {"FULL_SCHEDULE": "daily\nExecStart=/bin/evil"})
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout
    assert "FULL_SCHEDULE holds a newline" in proc.stderr, proc.stderr
    proc = fill(timer, [], {"FULL_SCHEDULE": "daily"})
    assert proc.returncode != 0 and "@FULL_SCHEDULE@ is left unfilled" in proc.stderr, proc.stderr


# --- the command text --------------------------------------------------------------------------


def test_command_text_carries_each_shipped_file_as_a_quoted_here_document():
    text = scripts.command("pgbackrest", PGBACKREST_PARAMS)
    calls = [c for c in ship_calls() if c[0] == "pgbackrest.sh"]
    assert len(calls) >= 7
    for _, mode, path, names, rel in calls:
        content = (DIR / rel).read_text()
        line = " ".join(["ship", mode, path, *names])
        assert f"\n{line} <<'PGSTACK_FILE_EOF'\n{content}PGSTACK_FILE_EOF\n" in text, rel
    assert text.count("<<'PGSTACK_FILE_EOF'\n") == len(calls)
    assert '"$(dirname "$0")' not in text


@pytest.mark.parametrize("name", sorted(p.stem for p in DIR.glob("*.sh") if p.name != "lib.sh"))
def test_assembled_script_is_valid_bash(name):
    proc = subprocess.run(
        ["bash", "-n"], input=scripts.script_text(name, {"PG_VERSION": 15}), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_a_change_of_a_shipped_file_changes_the_command_text(tmp_path, monkeypatch):
    before = scripts.command("pgbackrest", PGBACKREST_PARAMS)
    copy = tmp_path / "scripts"
    shutil.copytree(DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(scripts, "SCRIPTS_DIR", copy)
    assert scripts.command("pgbackrest", PGBACKREST_PARAMS) == before
    timer = copy / "units" / "pgstack-archive-watch.timer"
    timer.write_text(timer.read_text().replace("OnBootSec=", "OnBootSec=1min\n#OnBootSec="))
    after = scripts.command("pgbackrest", PGBACKREST_PARAMS)
    assert after != before and scripts.digest(after) != scripts.digest(before)


def test_a_missing_or_unshippable_file_fails_at_render_time(tmp_path, monkeypatch):
    copy = tmp_path / "scripts"
    shutil.copytree(DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(scripts, "SCRIPTS_DIR", copy)
    (copy / "bin" / "pgstack-backup").unlink()
    with pytest.raises(ValueError, match="bin/pgstack-backup"):
        scripts.command("pgbackrest", PGBACKREST_PARAMS)
    Path(copy / "bin" / "pgstack-backup").write_text("#!/usr/bin/env bash\nPGSTACK_FILE_EOF\n")
    with pytest.raises(ValueError, match="PGSTACK_FILE_EOF"):
        scripts.command("pgbackrest", PGBACKREST_PARAMS)
    (copy / "wait.sh").write_text((copy / "wait.sh").read_text() + 'cat "$(dirname "$0")/units/x" >/dev/null\n')
    with pytest.raises(ValueError, match="reads a file next to it"):
        scripts.command("wait", {"PG_VERSION": 15})


# --- PG_VERSION --------------------------------------------------------------------------------


def test_script_text_binds_the_given_pg_version_and_refuses_none():
    with pytest.raises(ValueError, match="PG_VERSION"):
        scripts.script_text("wait", {})
    text = scripts.script_text("install", {"PG_VERSION": 16, "PACKAGE_SOURCE": "distro"})
    assert "\nPG_VERSION=16\n" in text and "PG_VERSION=15" not in text


def test_no_script_names_a_postgres_version_itself():
    """Paths, the unit and the package names derive from PG_VERSION in lib.sh."""
    pattern = re.compile(r"postgresql[@/-]\d|/postgresql/\d|postgresql-(client-)?\d")
    for path in [*DIR.glob("*.sh"), *SHIPPED, REPO / "runbooks" / "promote-replica.sh"]:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        assert not pattern.search(code), f"{path.name}: {pattern.search(code).group(0)}"


def test_the_exporter_queries_define_the_metrics_the_alert_rules_read():
    import yaml

    from monitoring.rules import Thresholds, render

    queries = yaml.safe_load((DIR / "etc" / "pgstack-queries.yaml").read_text())
    defined = {
        f"{name}_{column}"
        for name, query in queries.items()
        for metric in query["metrics"]
        for column, spec in metric.items()
        if spec["usage"] != "LABEL"
    }
    read = set(
        re.findall(
            r"\b(pgstack_(?:standby|replication|slot|connections|database|oldest|archive_newest|canary)_[a-z_]+)",
            render(Thresholds()),
        )
    )
    assert read, "the rules read no custom-query metric"
    assert read <= defined, f"the rules read metrics no query defines: {sorted(read - defined)}"
