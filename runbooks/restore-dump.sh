#!/usr/bin/env bash
# Restore one of pgstack's logical dumps (README, Logical dumps) into a NAMED database, new or
# empty, locally or on a server:
#   runbooks/restore-dump.sh -k KEYFILE -d DATABASE [-o OWNER] [-u URL] SOURCE
# SOURCE is where the encrypted dump (<database>-<UTC time>.dump.age) is:
#   ./file.dump.age            a local file (downloaded before);
#   s3://BUCKET/PREFIX/NAME    fetched with `aws s3 cp` and YOUR OWN credentials (the usual AWS_*
#                              variables; AWS_ENDPOINT_URL=https://fsn1.your-objectstorage.com for
#                              Hetzner);
#   repo:NAME | repo:latest    fetched with `pgbackrest repo-get --raw` from the dumps' prefix
#                              (PREFIX, default /logical) where pgBackRest is configured for the
#                              bucket: on a pgstack server, run this as postgres.
# KEYFILE is an age identity (a private key, `age-keygen -o KEYFILE`) whose public key is in
# logicalBackup.recipients. The servers hold none: only this step can read a dump.
# The database is created when missing (owned by OWNER, if given) and refused when it already
# holds a table: a restore never mixes into data. pg_restore --no-owner --no-acl restores every
# object as the connecting role (or OWNER with -o, through pg_restore --role), in one transaction:
# a failure leaves the database empty. The connection is libpq's: PGHOST, PGPORT, PGUSER,
# PGPASSWORD or ~/.pgpass, PGSSLMODE... (unset: the local socket), or -u with a URL such as
# postgresql://admin@db.example.net:5432/postgres?sslmode=verify-full, whose database is the one
# the new database is created from.
# The decrypted dump exists only in a private temporary directory, removed on exit. Tables whose
# data the dump left out (logicalBackup.excludeTableData) are restored empty, and listed at the end.
set -euo pipefail
log() { printf '[restore-dump %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

key="" database="" owner="" url=""
while getopts k:d:o:u:h opt; do
  case $opt in
    k) key=$OPTARG ;;
    d) database=$OPTARG ;;
    o) owner=$OPTARG ;;
    u) url=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
(($# == 1)) || usage
source=$1
[[ -n $key && -r $key ]] || die "-k KEYFILE: an age private key this user can read"
[[ $database =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "-d DATABASE: a PostgreSQL identifier (lower-case letters, digits, _)"
[[ -z $owner || $owner =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "-o OWNER: a role name (lower-case letters, digits, _)"
for tool in age psql pg_restore; do command -v "$tool" >/dev/null || die "${tool} is not installed"; done

# The connection to the maintenance database (for CREATE DATABASE) and to the new one.
admin=() target=()
if [[ -n $url ]]; then
  [[ $url =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]] || die "-u URL: write postgresql://user@host:port/database?options"
  admin=(-d "$url")
  target=(-d "${BASH_REMATCH[1]}/${database}${BASH_REMATCH[4]}")
else
  admin=(-d "${PGDATABASE:-postgres}")
  target=(-d "$database")
fi
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/restore-dump.XXXXXX")
chmod 700 "$work"
trap 'rm -rf "$work"' EXIT
encrypted=${work}/dump.age
plain=${work}/dump

# ---- fetch ------------------------------------------------------------------------------------
case $source in
  s3://*)
    command -v aws >/dev/null || die "aws (the AWS CLI) is not installed; download the file another way and pass its path"
    log "fetching ${source}"
    aws s3 cp --only-show-errors "$source" "$encrypted" || die "aws s3 cp ${source} failed"
    ;;
  repo:*)
    prefix=${PREFIX:-/logical}
    name=${source#repo:}
    [[ $prefix =~ ^(/[a-z0-9_-]+)+$ ]] || die "PREFIX ${prefix} is not a bucket path such as /logical"
    repo() { pgbackrest --repo1-path="$prefix" --log-level-console=warn "$@"; }
    if [[ $name == latest ]]; then
      name=$(repo repo-ls --output=json --filter='^[a-z_][a-z0-9_]*-[0-9]{8}T[0-9]{6}Z\.dump\.age$' \
        | jq -r 'to_entries | map(select(.value.type == "file")) | .[].key' | sort | tail -n 1)
      [[ -n $name ]] || die "no dump in ${prefix}"
    fi
    [[ $name =~ ^[a-z_][a-z0-9_]*-[0-9]{8}T[0-9]{6}Z\.dump\.age$ ]] || die "${name} is not a dump's name (<database>-<time>.dump.age)"
    log "fetching ${prefix}/${name} with pgbackrest repo-get"
    # --raw: the file is age's; pgBackRest must not try its own repository cipher on it.
    repo repo-get --raw "$name" >"$encrypted" || die "pgbackrest repo-get ${prefix}/${name} failed"
    ;;
  *)
    [[ -r $source ]] || die "${source}: no such file (or not readable)"
    cp -- "$source" "$encrypted"
    ;;
esac
log "encrypted dump: $(stat -c %s "$encrypted") bytes"

# ---- decrypt and check ------------------------------------------------------------------------
(umask 077 && age -d -i "$key" -o "$plain" "$encrypted") \
  || die "the dump does not decrypt with ${key}: it was encrypted to other keys (logicalBackup.recipients), or is damaged"
listing=$(pg_restore --list "$plain") || die "the decrypted file is not a pg_dump custom-format archive"
log "decrypted: $(grep -c '^[0-9]' <<<"$listing") archive entries"

# ---- the database -------------------------------------------------------------------------------
exists=$(sql "${admin[@]}" -c "select count(*) from pg_database where datname = '${database}'")
if ((exists)); then
  tables=$(sql "${target[@]}" -c "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\_toast%'")
  ((tables == 0)) || die "database ${database} already holds ${tables} tables: restore into a new name, or drop it first"
  log "database ${database} exists and holds no table: restoring into it"
else
  sql "${admin[@]}" -c "create database ${database}${owner:+ owner ${owner}}"
  log "created database ${database}${owner:+ owned by ${owner}}"
fi

# ---- restore --------------------------------------------------------------------------------------
log "restoring into ${database}"
pg_restore --no-owner --no-acl --exit-on-error --single-transaction ${owner:+--role="$owner"} "${target[@]}" "$plain" \
  || die "pg_restore failed (the transaction was rolled back: ${database} holds nothing of the dump)"
summary=$(sql "${target[@]}" -c "select count(*) || ' tables, ' || coalesce(sum(n_live_tup), 0) || ' rows (estimated)' from pg_stat_user_tables")
# The tables whose definition is in the dump without data: left out by excludeTableData.
mapfile -t empty < <(comm -23 \
  <(awk '$4 == "TABLE" && $5 != "DATA" {print $5 "." $6}' <<<"$listing" | sort -u) \
  <(awk '$4 == "TABLE" && $5 == "DATA" {print $6 "." $7}' <<<"$listing" | sort -u))
log "restored ${database}: ${summary}"
if ((${#empty[@]})); then
  log "restored WITHOUT DATA (the dump left it out): ${empty[*]}"
fi
