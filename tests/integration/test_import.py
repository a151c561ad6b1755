"""Import by config on real guests (issue 16): from a Heroku-like source by URL and from a dump in the bucket.

Its own test bed, kept small: no g1, no monitoring server, no heartbeats; two generations imported
by one `up`, g2 from the source's URL and g3 from a custom-format dump uploaded to the bucket.
The source (sandbox/source_database.py) is a guest outside the private network with TLS and a
password required. Tests run in file order; the failing import is last, as it leaves its server.
"""

from __future__ import annotations

import json
import time

import pytest

from sandbox import scenarios
from sandbox import source_database as src
from sandbox.rehearse import PG, CommandFailed, Rehearsal
from sandbox.testbed import Testbed
from tests.conftest import require_root_or_fail

pytestmark = pytest.mark.integration

DUMP_KEY = scenarios.DUMP_KEY
CHECK = f"select full_name from users where id = {src.CHECK_ID}"
URL_GEN, BUCKET_GEN = "g2", "g3"
TABLES = {"public.users": src.USERS, "public.orders": src.ORDERS, "billing.invoices": src.INVOICES}
REPORT = "/var/lib/pgstack/import-report.txt"
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module")
def bed():
    require_root_or_fail()
    testbed = Testbed(lock_wait=1800)
    rehearsal = Rehearsal("prod", testbed)
    try:
        rehearsal.prepare()
        # The bed of its own: no g1, no monitoring server, no heartbeats; the scenario's generations only.
        for key in ("pgstack:alerts", "pgstack:monitoring"):
            rehearsal.raw.pop(key, None)
        source = scenarios.import_database(rehearsal, clusters_only=True)
        for what in ("source booted and filled", "up"):
            FIGURES[f"import scenario: {what}"] = rehearsal.timings[f"import:{what}"]
        failed = [c for c in rehearsal.checks if not c.ok]
        assert not failed, failed
        yield rehearsal, source
    finally:
        testbed.down()
        for what, seconds in FIGURES.items():
            print(f"import figure: {what}: {seconds:.2f}")


def primary(gen: str) -> str:
    return f"prod-{gen}-primary"


def sh(reh: Rehearsal, server: str, script: str) -> str:
    res = reh.testbed.ssh(reh.ip(server), script)
    assert res.returncode == 0, f"{server}: {script}\n{res.stdout}\n{res.stderr}"
    return res.stdout.strip()


def counts(query) -> dict[str, int]:
    found = {}
    for table in TABLES:
        found[table] = int(query(f"select count(*) from {table}"))
    return found


@pytest.mark.parametrize("gen", [URL_GEN, BUCKET_GEN])
def test_every_count_matches_the_source(bed, gen):
    reh, source = bed
    db = reh.settings().database.name
    assert counts(source.psql) == TABLES
    assert counts(lambda q: reh.sql(primary(gen), q, db)) == TABLES
    report = sh(reh, primary(gen), f"cat {REPORT}")
    for table, rows in TABLES.items():
        assert f"table {table}: {rows} rows on both" in report, report
    assert "MISMATCH" not in report, report
    # The sequences went along: the next id continues the source's, and the standalone one too.
    assert int(reh.sql(primary(gen), "select last_value from billing.invoice_numbers", db)) >= 1041
    assert int(reh.sql(primary(gen), "select last_value from users_id_seq", db)) >= src.USERS


@pytest.mark.parametrize("gen", [URL_GEN, BUCKET_GEN])
def test_the_check_query_gives_the_sources_answer(bed, gen):
    reh, source = bed
    db = reh.settings().database.name
    assert reh.sql(primary(gen), CHECK, db) == source.psql(CHECK) == src.CHECK_NAME
    assert "check 1: the same on both" in sh(reh, primary(gen), f"cat {REPORT}")


@pytest.mark.parametrize("gen", [URL_GEN, BUCKET_GEN])
def test_every_object_belongs_to_the_owner_role(bed, gen):
    reh, _ = bed
    s = reh.settings()
    db = s.database.name
    owner = s.roles.owner
    objects = reh.sql(
        primary(gen),
        f"""select string_agg(what, ', ') from (
          select 'relation ' || n.nspname || '.' || c.relname || ' of ' || pg_get_userbyid(c.relowner) as what
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
             and pg_get_userbyid(c.relowner) <> '{owner}'
             and not exists (select from pg_depend d where d.objid = c.oid and d.deptype = 'e')
          union all
          select 'function ' || p.proname || ' of ' || pg_get_userbyid(p.proowner)
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname not in ('pg_catalog', 'information_schema') and pg_get_userbyid(p.proowner) <> '{owner}'
             and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e')
          union all
          select 'schema ' || nspname || ' of ' || pg_get_userbyid(nspowner) from pg_namespace
           where nspname in ('public', 'billing', 'heroku_ext') and pg_get_userbyid(nspowner) <> '{owner}'
        ) o""".replace("\n", " "),  # reh.sql passes one line
        db,
    )
    assert objects == "", f"not owned by {owner}: {objects}"
    assert reh.sql(primary(gen), f"select count(*) from pg_roles where rolname = '{src.OWNER}'") == "0"
    # The extensions came along in the dump's own schema (Heroku's heroku_ext).
    exts = reh.sql(
        primary(gen),
        "select string_agg(extname || '@' || extnamespace::regnamespace, ',' order by extname) from pg_extension"
        " where extname <> 'plpgsql'",
        db,
    )
    assert exts == "citext@heroku_ext,pgcrypto@public", exts


def test_the_app_role_reads_and_writes_the_imported_tables(bed):
    reh, _ = bed
    s = reh.settings()
    app = s.roles.app.name
    wrote = reh.as_role(app, "insert into users (full_name, email) values ('new here', 'NEW@example.com') returning id")
    assert wrote["ok"], wrote
    read = reh.as_role(app, "select count(*) from billing.invoices")
    assert read["ok"] and read["rows"] == [[str(src.INVOICES)]], read
    # The reporting role reads every schema the dump brought, and writes none.
    reporting = s.roles.reporting.name
    assert reh.as_role(reporting, "select count(*) from billing.invoices")["rows"] == [[str(src.INVOICES)]]
    denied = reh.as_role(reporting, "delete from billing.invoices")
    assert not denied["ok"] and denied["sqlstate"] == "42501", denied


@pytest.mark.parametrize("gen", [URL_GEN, BUCKET_GEN])
def test_a_full_backup_holds_the_imported_data(bed, gen):
    reh, _ = bed
    stanza = reh.settings().stanza(gen)
    imported_at = int(sh(reh, primary(gen), f"cut -d' ' -f1 {PG.data_dir}/pgstack-imported"))
    info = json.loads(sh(reh, primary(gen), f"runuser -u postgres -- pgbackrest --stanza={stanza} --output=json info"))
    fulls = [b for b in info[0]["backup"] if b["type"] == "full"]
    assert any(b["timestamp"]["stop"] > imported_at for b in fulls), (imported_at, fulls)


def test_a_second_up_with_the_import_blocks_changes_nothing(bed):
    reh, _ = bed
    reh.run_program("again, import blocks unchanged")
    last = reh.runs[-1]
    assert last["commands_run"] == [], last
    assert last["counts"]["create"] == last["counts"]["replace"] == 0, last["counts"]


def test_a_point_in_time_restore_to_after_the_import(bed):
    reh, _ = bed
    s = reh.settings()
    db = s.database.name
    p = primary(URL_GEN)
    reh.sql(p, "insert into billing.invoices values (9001, 1, '2026-12-02')", db)
    time.sleep(1.2)
    target = reh.sql(p, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00')")
    reh.sql(p, "insert into billing.invoices values (9002, 1, '2026-12-02')", db)
    walfile = reh.sql(p, "select pg_walfile_name(pg_switch_wal())")
    deadline = time.time() + 60
    while reh.sql(p, "select coalesce(last_archived_wal, '') from pg_stat_archiver") < walfile:
        assert time.time() < deadline, f"{walfile} not archived within 60 s"
        time.sleep(1)
    clusters = json.loads(reh.raw["pgstack:clusters"])
    clusters["g4"] = {"primaryIp": "10.0.1.40", "restore": {"from": URL_GEN, "targetTime": target}}
    original = reh.raw
    reh.raw = {**reh.raw, "pgstack:clusters": json.dumps(clusters)}
    try:
        t0 = time.monotonic()
        reh.run_program("restore g4 from the imported g2")
        FIGURES["up restoring g4 from the imported g2"] = time.monotonic() - t0
        for step in reh.mocks.steps:
            if step["resource"].startswith("prod-g4-"):
                FIGURES[f"step {step['resource']}"] = step["seconds"]
        print(reh.mocks.find("prod-g4-primary-restore").outputs.get("stderr", ""))
        restored = primary("g4")
        assert reh.sql(restored, "select count(*) from public.orders", db) == str(src.ORDERS)
        assert reh.sql(restored, "select string_agg(id::text, ',') from billing.invoices where id > 9000", db) == "9001"
    finally:
        reh.raw = original


def test_an_untrusted_extension_stops_the_import_until_listed_then_a_late_row_fails_the_verification(bed):
    """One server for both refusals: the first stops before anything is restored, so the next `up` retries."""
    reh, source = bed
    db = reh.settings().database.name
    bucket = json.loads(reh.raw["pgstack:backup"])["bucket"]
    # file_fdw is not trusted: only a superuser may create it.
    source.psql("create extension if not exists file_fdw")
    source.upload_dump(bucket, "imports/with-fdw.dump")
    # Then a row the dump does not hold: the verification counts the live source.
    source.psql(f"set role {src.OWNER}; insert into billing.invoices values (5000, 1, '2026-12-01')")
    block = {"source": "bucket", "dumpKey": "imports/with-fdw.dump"}
    clusters = json.loads(reh.raw["pgstack:clusters"])
    clusters["g5"] = {"primaryIp": "10.0.1.50", "import": block}
    reh.raw = {**reh.raw, "pgstack:clusters": json.dumps(clusters)}
    with pytest.raises(CommandFailed) as info:
        reh.run_program("import g5: the dump needs an untrusted extension")
    message = str(info.value)
    assert info.value.name == "prod-g5-primary-import", info.value
    assert "extension file_fdw, which is not trusted" in message, message
    assert "clusters.g5.import.untrustedExtensions" in message, message
    assert reh.sql(primary("g5"), "select count(*) from pg_tables where schemaname <> 'pg_catalog' "
                   "and schemaname <> 'information_schema'", db) == "0"  # fmt: skip

    clusters["g5"]["import"] = {**block, "untrustedExtensions": ["file_fdw"]}
    reh.raw = {**reh.raw, "pgstack:clusters": json.dumps(clusters)}
    with pytest.raises(CommandFailed) as info:
        reh.run_program("import g5 again, file_fdw allowed, from a dump older than the source")
    message = str(info.value)
    assert info.value.name == "prod-g5-primary-import", info.value
    assert "does NOT match the source" in message and "billing.invoices" in message, message
    assert f"{src.INVOICES + 1} rows in the source, {src.INVOICES} here" in message, message
    assert source.password not in message
    # The superuser made the listed extension; the tables came with the dump, as the owner's.
    assert reh.sql(primary("g5"), "select count(*) from pg_extension where extname = 'file_fdw'", db) == "1"
    # Nothing claims the import: a later up refuses to merge into these tables.
    assert sh(reh, primary("g5"), f"test -e {PG.data_dir}/pgstack-imported && echo yes || echo no") == "no"
