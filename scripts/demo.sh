#!/usr/bin/env bash
# The Perseus demo: a throwaway PostgreSQL and KMS emulator, two tenants in one
# destination database (one schema each), Perseus in front, and psql connecting through
# it as each tenant to show that each sees only its own rows. Everything it starts is
# stopped by pid when it ends, however it ends.
#
#   scripts/demo.sh            build (release) and run
#   KEEP=1 scripts/demo.sh     leave the work directory for a look afterwards
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh

repo=$(pwd)
PG_PID_FILE=""
MOTO_PID=""
PERSEUS_PID=""
WORK=""

# Runs a PostgreSQL server program as `postgres` when we are root (it refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$WORK" && runuser -u postgres -- "$@")
    else
        (cd "$WORK" && "$@")
    fi
}

cleanup() {
    local status=$?
    set +e
    if [ -n "$PERSEUS_PID" ]; then kill "$PERSEUS_PID" 2>/dev/null; wait "$PERSEUS_PID" 2>/dev/null; fi
    if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null; wait "$MOTO_PID" 2>/dev/null; fi
    if [ -n "$PG_PID_FILE" ] && [ -f "$PG_PID_FILE" ]; then
        as_pg "$BINDIR/pg_ctl" -D "$WORK/pgdata" stop -m fast -w >/dev/null 2>&1
    fi
    if [ -n "$WORK" ]; then
        if [ -n "${KEEP:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts connections, for at most $2 seconds, while pid $3 lives.
wait_port() {
    local port=$1 seconds=$2 pid=${3:-} i
    for ((i = 0; i < seconds * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# psql as the superuser on the demo cluster; extra arguments follow.
su_psql() {
    PGPASSWORD=$PG_SUPER_PASSWORD "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

step "prerequisites"
ensure_postgres
ensure_moto
BINDIR=$(pg_bindir)

step "building perseus, genhash, encpass (release)"
cargo build --release --locked --workspace --bins
for bin in perseus genhash encpass; do
    [ -x "target/release/$bin" ] || die "target/release/$bin was not built"
done

WORK=$(mktemp -d /tmp/perseus-demo.XXXXXX)
chmod 0755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"

step "starting a throwaway PostgreSQL"
PG_SUPER_PASSWORD=demo-superuser
PG_PORT=$(free_port)
printf '%s' "$PG_SUPER_PASSWORD" >"$WORK/pwfile"
chmod 0644 "$WORK/pwfile"
as_pg "$BINDIR/initdb" -D "$WORK/pgdata" -U postgres --pwfile="$WORK/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions \
    --no-locale -E UTF8 >"$WORK/initdb.log"
PG_PID_FILE="$WORK/pgdata/postmaster.pid"
as_pg "$BINDIR/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
echo "PostgreSQL on 127.0.0.1:$PG_PORT" >&2

step "starting the KMS emulator (moto_server)"
MOTO_PORT=$(free_port)
MOTO=${PERSEUS_MOTO_SERVER:-$repo/.venv/bin/moto_server}
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 </dev/null &
MOTO_PID=$!
wait_port "$MOTO_PORT" 60 "$MOTO_PID" || die "moto_server did not start: $(tail -5 "$WORK/moto.log")"
AWS_ID=demo AWS_SECRET=demo AWS_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
# moto ships boto3 (in the same environment as moto_server); CreateKey is the one KMS
# call the demo needs that encpass does not make.
KEY_ARN=$("$(dirname "$MOTO")/python" - "$AWS_ENDPOINT" <<'PY'
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="demo", aws_secret_access_key="demo")
print(kms.create_key(Description="perseus demo")["KeyMetadata"]["Arn"])
PY
)
echo "KMS key $KEY_ARN at $AWS_ENDPOINT" >&2

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
METRICS_PORT=$(free_port)
CONFIG="$WORK/config.json"
cat >"$CONFIG" <<JSON
{
    "ListenAddress": "127.0.0.1:$PERSEUS_PORT",
    "MetricsAddress": "127.0.0.1:$METRICS_PORT",
    "AuthDBSettings": {
        "AuthDBDSN": "postgres://postgres:$PG_SUPER_PASSWORD@127.0.0.1:$PG_PORT/perseus?sslmode=disable",
        "AuthQueryTimeoutSecs": 2
    },
    "AWSSettings": {
        "AccessKeyId": "$AWS_ID",
        "SecretAccessKey": "$AWS_SECRET",
        "Region": "$AWS_REGION",
        "Endpoint": "$AWS_ENDPOINT",
        "KMSKeyARN": "$KEY_ARN"
    },
    "PoolSettings": {
        "MaxIdle": 2,
        "MaxOpen": 4,
        "MaxLifetimeSecs": 3600,
        "MaxIdletimeSecs": 300,
        "ConnCreateTimeoutSecs": 5,
        "ConnCloseTimeoutSecs": 1,
        "SchemaExecTimeoutSecs": 5
    },
    "LogSettings": { "Level": "INFO", "Json": false }
}
JSON
su_psql -d postgres -c 'CREATE DATABASE perseus'
target/release/perseus --config "$CONFIG" --migrate

step "two tenants: passwords hashed with genhash, destination password encrypted with encpass"
DEST_ENC=$(target/release/encpass -access_key_id "$AWS_ID" -secret_access_key "$AWS_SECRET" \
    -region "$AWS_REGION" -endpoint "$AWS_ENDPOINT" -key_arn "$KEY_ARN" -passwd "$DEST_PASSWORD")
[ -n "$DEST_ENC" ] || die "encpass printed no ciphertext"
for tenant in a b; do
    password="tenant-$tenant-password"
    hash=$(target/release/genhash -password "$password")
    [ -n "$hash" ] || die "genhash printed no hash"
    su_psql -d perseus -v schema="tenant_$tenant" -v user="user_$tenant" -v hash="$hash" \
        -v host="127.0.0.1:$PG_PORT" -v duser="$DEST_USER" -v enc="$DEST_ENC" <<'SQL'
INSERT INTO perseus_auth (source_db, source_schema, source_user, source_pass_hashed,
                          dest_host, dest_db, dest_user, dest_pass_enc)
VALUES ('app', :'schema', :'user', :'hash', :'host', 'app', :'duser', :'enc');
SQL
done
su_psql -d perseus -c 'SELECT id, source_db, source_schema, source_user, dest_host, dest_db, dest_user FROM perseus_auth ORDER BY id'

step "starting perseus on 127.0.0.1:$PERSEUS_PORT"
target/release/perseus --config "$CONFIG" >"$WORK/perseus.log" 2>&1 </dev/null &
PERSEUS_PID=$!
if ! wait_port "$PERSEUS_PORT" 30 "$PERSEUS_PID"; then
    echo "--- perseus output ---" >&2
    tail -20 "$WORK/perseus.log" >&2
    if ! kill -0 "$PERSEUS_PID" 2>/dev/null; then
        die "perseus data path not available yet: the daemon exited before listening (output above)"
    fi
    die "perseus did not listen on 127.0.0.1:$PERSEUS_PORT within 30 s"
fi

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
