#!/usr/bin/env bash
# The Perseus demo: a throwaway PostgreSQL and KMS emulator, two tenants in one
# destination database (one schema each), Perseus in front, and psql connecting through
# it as each tenant to show that each sees only its own rows. Everything it starts is
# stopped by pid when it ends, however it ends.
#
#   scripts/demo.sh            build (release) and run
#   KEEP=1 scripts/demo.sh     leave the work directory for a look afterwards
#   PERSEUS_BIN_DIR=target/debug scripts/demo.sh   use binaries already built there
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh

# shellcheck source=scripts/lib/stack.sh
. scripts/lib/stack.sh

cleanup() {
    local status=$?
    set +e
    stack_stop_all
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "prerequisites"
ensure_postgres
ensure_moto

stack_build

stack_workdir perseus-demo

step "starting a throwaway PostgreSQL"
PG_SUPER_PASSWORD=demo-superuser
pg_start

step "starting the KMS emulator (moto_server)"
moto_start

step "destination database 'app': schemas tenant_a and tenant_b, one table each"
DEST_USER=app_owner
DEST_PASSWORD=app-owner-secret
su_psql -d postgres -v u="$DEST_USER" -v p="$DEST_PASSWORD" <<'SQL'
CREATE ROLE :"u" LOGIN PASSWORD :'p';
CREATE DATABASE app OWNER :"u";
SQL
PGPASSWORD=$DEST_PASSWORD "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
    -U "$DEST_USER" -d app <<'SQL'
CREATE SCHEMA tenant_a;
CREATE TABLE tenant_a.notes (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO tenant_a.notes VALUES (1, 'alpha: first note'), (2, 'alpha: second note');
CREATE SCHEMA tenant_b;
CREATE TABLE tenant_b.notes (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO tenant_b.notes VALUES (1, 'bravo: only note');
SQL

step "Perseus config, auth table (perseus --migrate)"
PERSEUS_PORT=$(free_port)
CONFIG="$WORK/config.json"
perseus_config "$CONFIG" "$PERSEUS_PORT" "$(free_port)" 2 4
perseus_migrate "$CONFIG"

step "two tenants: passwords hashed with genhash, destination password encrypted with encpass"
DEST_ENC=$(stack_encpass "$DEST_PASSWORD")
for tenant in a b; do
    perseus_tenant app "tenant_$tenant" "user_$tenant" "tenant-$tenant-password" app "$DEST_USER" "$DEST_ENC"
done
su_psql -d perseus -c 'SELECT id, source_db, source_schema, source_user, dest_host, dest_db, dest_user FROM perseus_auth ORDER BY id'

step "starting perseus on 127.0.0.1:$PERSEUS_PORT"
perseus_start "$CONFIG" "$PERSEUS_PORT" "$WORK/perseus.log"

# What an application does: connect to Perseus as to PostgreSQL, naming its schema.
as_tenant() {
    local tenant=$1
    shift
    PGPASSWORD="tenant-$tenant-password" PGOPTIONS="-c search_path=tenant_$tenant" \
        "$BINDIR/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PERSEUS_PORT" \
        -U "user_$tenant" -d app "$@"
}

for tenant in a b; do
    step "tenant_$tenant through perseus: SELECT * FROM notes"
    as_tenant "$tenant" -c 'SELECT current_schema(), * FROM notes ORDER BY id'
done

step "checking isolation"
rows_a=$(as_tenant a -At -c "SELECT string_agg(body, '|' ORDER BY id) FROM notes")
rows_b=$(as_tenant b -At -c "SELECT string_agg(body, '|' ORDER BY id) FROM notes")
[ "$rows_a" = "alpha: first note|alpha: second note" ] || die "tenant_a saw: $rows_a"
[ "$rows_b" = "bravo: only note" ] || die "tenant_b saw: $rows_b"
if PGPASSWORD=wrong PGOPTIONS="-c search_path=tenant_a" "$BINDIR/psql" -X -h 127.0.0.1 \
    -p "$PERSEUS_PORT" -U user_a -d app -c 'SELECT 1' >/dev/null 2>&1; then
    die "perseus accepted a wrong password"
fi
echo "tenant_a sees only its 2 rows, tenant_b only its 1 row; a wrong password is refused." >&2
echo "demo passed" >&2
