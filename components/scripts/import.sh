#!/usr/bin/env bash
# Fill this new generation's database from another PostgreSQL (seed 000's move off Heroku), once,
# on its primary: pg_dump over TLS from the source URL (SOURCE=url), or the custom-format dump at
# DUMP_KEY in the backup bucket (SOURCE=bucket); pg_restore --no-owner --no-acl as the owner role,
# so every object belongs to it; then, with VERIFY=1, the exact row count of every table, every
# sequence and each check compared with the live source; then a full backup of the imported data.
# stdin: the source's libpq service file entry ([source], secret), or a comment line without one.
#
# WAL archiving stays on throughout (the primary's stanza exists before this step): the import's
# WAL goes to the bucket like any other, so a point-in-time restore works from the first minute,
# at the price of the import's size in archived WAL until retention expires it.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
: "${PG_VERSION:?}" "${GENERATION:?}" "${DATABASE:?}" "${OWNER:?}" "${SOURCE:?}" "${JOBS:?}" "${VERIFY:?}"
: "${STANZA:?}" "${CHECK_COUNT:?}" "${UNTRUSTED_EXTENSIONS?}" "${DUMP_KEY?}"

state=/var/lib/pgstack
marker="${PG_DATA}/pgstack-imported"
report="${state}/import-report.txt"
key="clusters.${GENERATION}.import"
# The state directory's mode is the other steps' (node_exporter reads its metrics/): the report
# itself is root-only (600), the working copy of the dump postgres-only (700).
install -d -m 755 -o postgres -g postgres "$state"

newest_full_stop() {
  as_postgres pgbackrest --stanza="$STANZA" --output=json info |
    jq -r '[.[0].backup[]? | select(.type == "full") | .timestamp.stop] | max // 0'
}

# The imported data counts as safe once a full backup that ended after the import holds it.
ensure_full_backup() {
  local imported_at=$1
  # Twice at most: a first start may only join the stanza's first full backup, which the
  # pgbackrest step started in the background before the import.
  local attempt
  for attempt in 1 2; do
    (($(newest_full_stop) <= imported_at)) || break
    log "full backup of the imported data (attempt ${attempt})"
    systemctl start pgstack-backup@full.service || die "the full backup after the import failed (journalctl -u pgstack-backup@full); the data is imported, run up again to retry the backup"
  done
  (($(newest_full_stop) > imported_at)) || die "no full backup of ${STANZA} ended after the import"
  log "full backup of the imported data listed (ended $(date -u -d "@$(newest_full_stop)" +%FT%TZ))"
}

if [[ -f $marker ]]; then
  log "already imported ($(cut -d' ' -f2- "$marker")): left untouched"
  ensure_full_backup "$(cut -d' ' -f1 "$marker")"
  exit 0
fi
cluster_running || die "PostgreSQL is not running; the import needs the new primary up"
! in_recovery || die "this server is a standby; an import runs on its generation's primary"

# Tables of the database's own (extension members aside): an import fills an empty database only.
user_tables="select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
    and n.nspname !~ '^pg_toast'
    and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')"
# And what a restore stopped before its first table would have left: schemas and extensions.
leftovers="select (select count(*) from pg_namespace where nspname not in ('public', 'information_schema')
    and nspname !~ '^pg_') + (select count(*) from pg_extension where extname <> 'plpgsql')"
held=$(pg_sql -d "$DATABASE" -c "$user_tables")
left=$(pg_sql -d "$DATABASE" -c "$leftovers")
if ((held > 0 || left > 0)); then
  die "database ${DATABASE} already holds ${held} tables and ${left} schemas or extensions; an import only fills an empty database, it never merges. If they are from an earlier attempt of this import that failed (${report}), build the generation anew: set clusters.${GENERATION}.deleteProtection false, run up, remove ${GENERATION} from clusters, run up, then add it again"
fi

work="${state}/import"
rm -rf "$work"
install -d -o postgres -g postgres -m 700 "$work"
trap 'rm -rf "$work"' EXIT
service="${work}/pg_service.conf"
install_file 600 postgres:postgres "$service" >/dev/null
has_source=0
if grep -q '^\[source\]$' "$service"; then has_source=1; fi

# The source is reached with the service file only: no password on a command line or in the log.
src_sql() { as_postgres env PGSERVICEFILE="$service" PGAPPNAME=pgstack-import PGOPTIONS='-c default_transaction_read_only=on' psql -X -q -At -v ON_ERROR_STOP=1 -d service=source "$@"; }
dst_sql() { as_postgres env PGOPTIONS='-c default_transaction_read_only=on' psql -X -q -At -v ON_ERROR_STOP=1 -d "$DATABASE" "$@"; }

if ((has_source)); then
  source_version=$(src_sql -c 'show server_version_num') ||
    die "cannot connect to the source database (importSourceUrl) over TLS: check its host, port, user and password, and that it accepts connections from this server's public address"
  ((source_version / 10000 <= PG_VERSION)) ||
    die "the source runs PostgreSQL $((source_version / 10000)), and pg_dump ${PG_VERSION} cannot dump a newer server; set postgres.version to at least $((source_version / 10000))"
  log "source: PostgreSQL ${source_version}"
elif [[ $SOURCE == url || $VERIFY == 1 ]]; then
  die "no source service entry on stdin: importSourceUrl is required here"
fi

t_dump=$SECONDS
if [[ $SOURCE == url ]]; then
  dump="${work}/dump"
  log "pg_dump of the source (directory format, ${JOBS} jobs)"
  as_postgres env PGSERVICEFILE="$service" PGAPPNAME=pgstack-import \
    "${PG_BIN}/pg_dump" --format=directory --jobs="$JOBS" --file="$dump" --dbname=service=source ||
    die "pg_dump of the source failed (see above)"
else
  dump="${work}/dump.custom"
  log "fetching ${DUMP_KEY} from the bucket"
  # Outside the repository path, and pgBackRest's own cipher must not touch it: --raw.
  as_postgres pgbackrest --repo1-path=/ repo-get --raw "/${DUMP_KEY}" >"$dump" ||
    die "cannot read ${DUMP_KEY} from the backup bucket (${key}.dumpKey): is it uploaded there?"
  chown postgres:postgres "$dump"
fi
toc="${work}/toc"
as_postgres "${PG_BIN}/pg_restore" --list "$dump" >"$toc" ||
  die "${DUMP_KEY:-the dump} is not a pg_dump archive pg_restore ${PG_VERSION} reads (a custom-format dump, as pg_dump -Fc or heroku pg:backups:download make)"
log "dump ready in $((SECONDS - t_dump))s: $(grep -c '^[0-9]' "$toc") entries"

# Extensions: a trusted one the owner creates during the restore; an untrusted one only the
# superuser may create, so it must be named in untrustedExtensions; a missing one stops here.
as_superuser=()
while read -r ext; do
  [[ -n $ext ]] || continue
  if [[ $(pg_sql -d "$DATABASE" -v ext="$ext" <<<"select count(*) from pg_extension where extname = :'ext'") == 1 ]]; then
    continue
  fi
  trusted=$(pg_sql -d "$DATABASE" -v ext="$ext" <<<"select coalesce((select trusted::text from pg_available_extension_versions v join pg_available_extensions a using (name) where name = :'ext' and v.version = a.default_version), 'missing')")
  case $trusted in
    true) ;;
    false)
      if [[ " ${UNTRUSTED_EXTENSIONS} " == *" ${ext} "* ]]; then
        as_superuser+=("$ext")
      else
        die "the dump needs the extension ${ext}, which is not trusted: only a superuser may create it. If you trust it, add it to ${key}.untrustedExtensions and run up again"
      fi
      ;;
    *) die "the dump needs the extension ${ext}, which this server does not have (not in pg_available_extensions); install its package, or drop it from the source" ;;
  esac
done < <(awk '$4 == "EXTENSION" && $5 == "-" {print $6}' "$toc")

# A restore list per phase: schemas first (an extension may live in one, as Heroku's heroku_ext),
# the superuser's extensions next, then everything else as the owner, in parallel. The public
# schema exists already, owned by the owner (the roles step).
phase_list() {
  awk -v mode="$1" -v exts=" ${as_superuser[*]} " '
    /^[0-9]/ {
      schema = ($4 == "SCHEMA" && $5 == "-")
      ext = ($4 == "EXTENSION" && index(exts, " " $6 " ")) || ($4 == "COMMENT" && $6 == "EXTENSION" && index(exts, " " $7 " "))
      public = (schema && $6 == "public") || ($4 == "COMMENT" && $6 == "SCHEMA" && $7 == "public")
      keep = (mode == "schemas" && schema && !public) || (mode == "superuser" && ext) || (mode == "rest" && !schema && !ext && !public)
      print (keep ? "" : ";") $0
      next
    }
    { print }' "$toc"
}
restore_phase() {
  local phase=$1 list="${work}/toc.$1"
  shift
  phase_list "$phase" >"$list"
  grep -q '^[0-9]' "$list" || return 0
  as_postgres "${PG_BIN}/pg_restore" --no-owner --no-acl --exit-on-error --use-list="$list" --dbname="$DATABASE" "$@" "$dump" ||
    die "pg_restore (${phase}) failed (see above); nothing was verified, the generation is not usable: build it anew"
}
t_restore=$SECONDS
restore_phase schemas --role="$OWNER"
restore_phase superuser
restore_phase rest --role="$OWNER" --jobs="$JOBS"
# The role model reaches every schema the dump brought, as it reaches public (roles step).
pg_sql -d "$DATABASE" -v owner="$OWNER" >/dev/null <<'SQL'
select format($g$
  grant usage on schema %1$I to readonly;
  grant select on all tables in schema %1$I to readonly;
  grant usage, select on all sequences in schema %1$I to readonly;
  grant insert, update, delete on all tables in schema %1$I to write;
  grant usage, select, update on all sequences in schema %1$I to write;
  alter default privileges for role %2$I in schema %1$I grant select on tables to readonly;
  alter default privileges for role %2$I in schema %1$I grant usage, select on sequences to readonly;
  alter default privileges for role %2$I in schema %1$I grant insert, update, delete on tables to write;
  alter default privileges for role %2$I in schema %1$I grant usage, select, update on sequences to write$g$,
  nspname, :'owner')
from pg_namespace where nspowner = (select oid from pg_roles where rolname = :'owner')
\gexec
SQL
as_postgres "${PG_BIN}/vacuumdb" --quiet --analyze-only --jobs="$JOBS" --dbname="$DATABASE"
log "restored and analyzed in $((SECONDS - t_restore))s"

: >"${report}.new"
chmod 600 "${report}.new"
say() { log "$*"; echo "$*" >>"${report}.new"; }
say "import of ${GENERATION} (${SOURCE}${DUMP_KEY:+ ${DUMP_KEY}}) at $(date -u +%FT%TZ)"
failures=()
if ((VERIFY)); then
  # Exact counts, every ordinary table of both sides (extension members aside), as name<TAB>rows.
  count_query="select format('select %L || E''\\t'' || count(*) from %I.%I', n.nspname || '.' || c.relname, n.nspname, c.relname)
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
      and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
    order by 1"
  src_sql <<<"${count_query} \\gexec" | LC_ALL=C sort >"${work}/rows.source"
  dst_sql <<<"${count_query} \\gexec" | LC_ALL=C sort >"${work}/rows.imported"
  while IFS=$'\t' read -r table a b; do
    if [[ $a == "$b" ]]; then
      say "table ${table}: ${a} rows on both"
    else
      say "table ${table}: MISMATCH, ${a} rows in the source, ${b} here"
      failures+=("${table} (${a} rows in the source, ${b} here)")
    fi
  done < <(LC_ALL=C join -t $'\t' -a 1 -a 2 -e missing -o 0,1.2,2.2 "${work}/rows.source" "${work}/rows.imported")
  seq_query="select format('%I.%I', schemaname, sequencename) || E'\\t' || coalesce(last_value, 0)
    from pg_sequences where schemaname not in ('pg_catalog', 'information_schema') order by 1"
  src_sql -c "$seq_query" | LC_ALL=C sort >"${work}/seq.source"
  dst_sql -c "$seq_query" | LC_ALL=C sort >"${work}/seq.imported"
  while IFS=$'\t' read -r sequence a b; do
    if [[ $b != missing && $a != missing ]] && ((b >= a)); then
      say "sequence ${sequence}: ${b} here, ${a} in the source"
    else
      say "sequence ${sequence}: MISMATCH, ${a} in the source, ${b} here"
      failures+=("sequence ${sequence} (${a} in the source, ${b} here)")
    fi
  done < <(LC_ALL=C join -t $'\t' -a 1 -a 2 -e missing -o 0,1.2,2.2 "${work}/seq.source" "${work}/seq.imported")
  for ((i = 1; i <= CHECK_COUNT; i++)); do
    var="CHECK_${i}"
    query=${!var}
    a=$(src_sql -c "$query") || die "check ${i} failed on the source (${key}.checks[$((i - 1))])"
    b=$(dst_sql -c "$query") || die "check ${i} failed on the imported database (${key}.checks[$((i - 1))])"
    # The results may be personal data: the report says whether they match, not what they are.
    if [[ $a == "$b" ]]; then
      say "check ${i}: the same on both ($(wc -l <<<"$a") lines)"
    else
      say "check ${i}: MISMATCH (${key}.checks[$((i - 1))])"
      failures+=("check ${i} (${key}.checks[$((i - 1))])")
    fi
  done
else
  say "not verified (${key}.verify is false): $(dst_sql -c "$user_tables") tables restored"
fi
mv -f "${report}.new" "$report"
if ((${#failures[@]})); then
  die "the import does NOT match the source: ${failures[*]}. Report: ${report}. Was the source written to after the dump (maintenance mode)? Build the generation anew to import again"
fi
imported_at=$(date +%s)
echo "${imported_at} ${SOURCE}${DUMP_KEY:+ ${DUMP_KEY}} at $(date -u -d "@${imported_at}" +%FT%TZ)" | as_postgres tee "$marker" >/dev/null
ensure_full_backup "$imported_at"
log "imported into ${DATABASE}: report ${report}"
