"""Import by config (issue 16), under mocks: the config rules, the source URL, the import step.

What the step does on real guests is tests/integration/test_import.py.
"""

from __future__ import annotations

import pytest

from config import ConfigError
from postgres import import_source
from sandbox import program
from tests.conftest import run_stack
from tests.unit.support import script_param

URL = "postgres://u8abc:s3cr3t-Pa55word@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d9xyz?sslmode=require"
PASSWORD = "s3cr3t-Pa55word"


def with_import(block: dict, url: str | None = URL, gen: str = "g2", **cluster):
    def edit(cfg: dict) -> None:
        cfg["pgstack:clusters"][gen] = {"primaryIp": "10.0.1.20", **cluster, "import": block}
        if url is not None:
            cfg["pgstack:importSourceUrl"] = url

    return edit


def refused(edit) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        run_stack("prod", edit=edit)
    return info.value


# ---- the source URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://u:p@h/db", "postgres://"),
        ("postgres://u:p@h:5432/", "database"),
        ("postgres://h:5432/db", "user"),
        ("postgres://u:p@h:5432/db?sslmode=disable", "sslmode=disable"),
        ("postgres://u:p@h:5432/db?sslmode=prefer", "without TLS"),
        ("postgres://u:p@h:5432/db?sslrootcert=/etc/x", "sslrootcert"),
        ("postgres://u:p@h:99999/db", "port"),
        ("postgres://u:p\n@h/db", "line break"),
    ],
)
def test_a_bad_source_url_is_refused_without_repeating_it(url, words):
    err = refused(with_import({"source": "url"}, url=url))
    assert err.key == "pgstack:importSourceUrl" and words in str(err), str(err)
    assert "p@h" not in str(err) and ":p\n" not in str(err), "the message repeats the URL"


def test_the_service_entry_carries_every_part_and_defaults_to_tls():
    entry = import_source.service_entry("postgresql://us%40er:p%23ss@db.example.com/app")
    assert entry.splitlines() == [
        "[source]",
        "host=db.example.com",
        "port=5432",
        "dbname=app",
        "user=us@er",
        "password=p#ss",
        "sslmode=require",
    ]
    assert import_source.url_problem(URL) is None


def test_a_password_that_libpq_would_trim_is_refused():
    with pytest.raises(ValueError, match="space"):
        import_source.service_entry("postgres://u:%20pw@h/db")


# ---- the rules --------------------------------------------------------------------------------


def test_an_import_from_url_needs_the_url():
    err = refused(with_import({"source": "url"}, url=None))
    assert err.key == "pgstack:importSourceUrl" and "--secret" in str(err)


def test_verification_needs_the_url_even_from_the_bucket():
    err = refused(with_import({"source": "bucket", "dumpKey": "imports/h.dump"}, url=None))
    assert err.key == "pgstack:clusters.g2.import.verify" and "verify: false" in str(err)


def test_a_bucket_import_without_verification_needs_no_url():
    result = run_stack(
        "prod", edit=with_import({"source": "bucket", "dumpKey": "imports/h.dump", "verify": False}, None)
    )
    assert script_param(program.unwrap(result.mocks.find("prod-g2-primary-import").inputs["create"]), "VERIFY") == "0"


@pytest.mark.parametrize(
    ("block", "key", "words"),
    [
        ({"source": "bucket"}, "dumpKey", "imports/heroku.dump"),
        ({"source": "bucket", "dumpKey": "pgbackrest/archive/x.dump"}, "dumpKey", "inside the pgBackRest"),
        ({"source": "bucket", "dumpKey": "pgbackrest"}, "dumpKey", "inside the pgBackRest"),
        ({"source": "bucket", "dumpKey": "imports/../pgbackrest/x"}, "dumpKey", ".."),
        ({"source": "url", "dumpKey": "imports/x.dump"}, "dumpKey", "source: bucket"),
        ({"source": "bucket", "dumpKey": "a.dump", "verify": False, "checks": ["select 1"]}, "checks", "verify"),
    ],
)
def test_an_inconsistent_import_block_is_refused_naming_the_key(block, key, words):
    err = refused(with_import(block))
    assert err.key == f"pgstack:clusters.g2.import.{key}" and words in str(err), str(err)


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"source": "ftp"}, "source"),
        ({"source": "url", "jobs": 0}, "jobs"),
        ({"source": "url", "checks": ["delete from users"]}, "checks.0"),
        ({"source": "url", "checks": ["select 1; drop table users"]}, "checks.0"),
        ({"source": "url", "untrustedExtensions": ["x; drop"]}, "untrustedExtensions.0"),
        ({"source": "bucket", "dumpKey": "../etc/passwd x"}, "dumpKey"),
        ({"source": "url", "jobz": 2}, "jobz"),
    ],
)
def test_a_bad_import_value_is_refused_naming_the_key(block, key):
    assert refused(with_import(block)).key == f"pgstack:clusters.g2.import.{key}"


def test_import_and_restore_exclude_each_other():
    err = refused(with_import({"source": "url"}, restore={"from": "g1", "targetTime": "latest"}))
    assert err.key == "pgstack:clusters.g2.import" and "not both" in str(err)


def test_an_import_needs_the_backup_block():
    def edit(cfg: dict) -> None:
        with_import({"source": "url"})(cfg)
        cfg.pop("pgstack:backup")

    err = refused(edit)
    assert err.key == "pgstack:clusters.g2.import" and "pgstack:backup" in str(err)


# ---- the import step ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported() -> program.RunResult:
    block = {"source": "url", "jobs": 3, "checks": ["select full_name from users where id = 1803"]}
    return run_stack("prod", edit=with_import(block, replicaIps=["10.0.1.21"]))


def test_only_the_importing_generation_has_an_import_step(imported):
    names = {r.name for r in imported.mocks.registrations}
    assert "prod-g2-primary-import" in names
    assert not any(n.endswith("-import") for n in names - {"prod-g2-primary-import"}), sorted(names)
    assert not any(n.endswith("-import") for n in {r.name for r in run_stack("prod").mocks.registrations})


def test_the_import_step_is_create_only_and_runs_after_the_stanza(imported):
    step = imported.mocks.find("prod-g2-primary-import")
    opts = step.options
    assert {"create", "triggers", "stdin", "connection.privateKey"} <= set(opts["ignoreChanges"]), opts
    assert "prod-g2-primary-pgbackrest" in opts["dependencies"], opts["dependencies"]
    # The day-2 steps of the primary come after the imported data (and its full backup).
    for after in ("heartbeats", "exporters", "drills"):
        deps = imported.mocks.find(f"prod-g2-primary-{after}").options["dependencies"]
        assert "prod-g2-primary-import" in deps, (after, deps)


def test_the_import_step_gets_its_parameters_in_the_text_and_the_url_on_stdin(imported):
    step = imported.mocks.find("prod-g2-primary-import")
    text = program.unwrap(step.inputs["create"])
    assert script_param(text, "SOURCE") == "url"
    assert script_param(text, "JOBS") == "3"
    assert script_param(text, "GENERATION") == "g2"
    assert script_param(text, "STANZA") == "hcb_production-g2"
    assert script_param(text, "CHECK_COUNT") == "1"
    assert script_param(text, "CHECK_1") == "select full_name from users where id = 1803"
    assert PASSWORD not in text
    assert program.is_secret(step.inputs["stdin"])
    assert f"password={PASSWORD}" in program.unwrap(step.inputs["stdin"])


def test_the_source_password_is_in_no_output_or_other_input(imported):
    for reg in imported.mocks.registrations:
        if reg.name == "prod-g2-primary-import":
            continue
        assert PASSWORD not in repr(program.redact(reg.inputs)), reg.name
    assert PASSWORD not in repr(program.redact(imported.outputs))
