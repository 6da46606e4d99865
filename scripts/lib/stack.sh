# Shared by scripts/demo.sh and scripts/bench.sh: the throwaway stack Perseus runs in —
# a work directory, a PostgreSQL cluster, the moto KMS emulator with a key, the
# perseus_auth table, tenant rows, and the perseus daemon — each started here and stopped
# by pid. Source scripts/lib/prereqs.sh first, from the repo root.
#
# State lives in these globals (empty until set): WORK, BINDIR, PG_PORT,
# PG_SUPER_PASSWORD, MOTO_PID, AWS_ID, AWS_SECRET, AWS_REGION, AWS_ENDPOINT, KEY_ARN,
# PERSEUS_PID. Call stack_stop_all from the EXIT trap.
#
# PERSEUS_BIN_DIR names a directory with perseus, genhash and encpass already built (the
# test command's smoke runs use the debug build in target/debug); unset, stack_build makes
# release binaries in target/release.

PERSEUS_BIN_DIR=${PERSEUS_BIN_DIR:-}
WORK=""
BINDIR=""
PG_PORT=""
PG_SUPER_PASSWORD=""
MOTO_PID=""
PERSEUS_PID=""
AWS_ID="" AWS_SECRET="" AWS_REGION="" AWS_ENDPOINT="" KEY_ARN=""

# Makes perseus, genhash and encpass ready in $PERSEUS_BIN_DIR: built in release mode when
# it was not given.
stack_build() {
    if [ -z "$PERSEUS_BIN_DIR" ]; then
        step "building perseus, genhash, encpass (release)"
        cargo build --release --locked --workspace --bins
        PERSEUS_BIN_DIR=target/release
    fi
    local bin
    for bin in perseus genhash encpass; do
        [ -x "$PERSEUS_BIN_DIR/$bin" ] || die "$PERSEUS_BIN_DIR/$bin was not built"
    done
    echo "binaries: $PERSEUS_BIN_DIR" >&2
}

# A work directory the postgres account can use (its parents must be traversable).
stack_workdir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 0755 "$WORK"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$WORK"; fi
}

# Runs a PostgreSQL server program as `postgres` when we are root (it refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$WORK" && runuser -u postgres -- "$@")
    else
        (cd "$WORK" && "$@")
    fi
}

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

# SIGTERM to one pid we started, then SIGKILL if it is still there after $2 seconds (default 10).
stop_pid() {
    local pid=$1 seconds=${2:-10} i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

# Starts a cluster on a free port with password (SCRAM) auth over TCP; extra arguments are
# server options (`-c name=value`), appended to fsync=off.
pg_start() {
    BINDIR=$(pg_bindir)
    PG_SUPER_PASSWORD=${PG_SUPER_PASSWORD:-stack-superuser}
    PG_PORT=$(free_port)
    printf '%s' "$PG_SUPER_PASSWORD" >"$WORK/pwfile"
    chmod 0644 "$WORK/pwfile"
    as_pg "$BINDIR/initdb" -D "$WORK/pgdata" -U postgres --pwfile="$WORK/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions \
        --no-locale -E UTF8 >"$WORK/initdb.log"
    as_pg "$BINDIR/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w -t 60 \
        -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off $*" start >/dev/null \
        || die "PostgreSQL did not start: $(tail -5 "$WORK/postgres.log")"
    echo "PostgreSQL on 127.0.0.1:$PG_PORT" >&2
}

pg_stop() {
    if [ -n "$WORK" ] && [ -f "$WORK/pgdata/postmaster.pid" ]; then
        as_pg "$BINDIR/pg_ctl" -D "$WORK/pgdata" stop -m fast -w -t 60 >/dev/null 2>&1
    fi
}

# psql as the superuser; extra arguments follow.
su_psql() {
    PGPASSWORD=$PG_SUPER_PASSWORD "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

# Starts moto_server and creates one KMS key (KEY_ARN); sets the AWS_* globals.
moto_start() {
    local moto=${PERSEUS_MOTO_SERVER:-$(pwd)/.venv/bin/moto_server} port
    port=$(free_port)
    "$moto" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 </dev/null &
    MOTO_PID=$!
    wait_port "$port" 60 "$MOTO_PID" || die "moto_server did not start: $(tail -5 "$WORK/moto.log")"
    AWS_ID=stack AWS_SECRET=stack AWS_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$port"
    # moto ships boto3 (in the same environment as moto_server); CreateKey is the one KMS
    # call needed that encpass does not make.
    KEY_ARN=$("$(dirname "$moto")/python" - "$AWS_ENDPOINT" <<'PY'
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="stack", aws_secret_access_key="stack")
print(kms.create_key(Description="perseus stack")["KeyMetadata"]["Arn"])
PY
    )
    echo "KMS key $KEY_ARN at $AWS_ENDPOINT" >&2
}

# Encrypts a destination password with the stack's KMS key (prints the base64 blob).
stack_encpass() {
    local enc
    enc=$("$PERSEUS_BIN_DIR"/encpass -access_key_id "$AWS_ID" -secret_access_key "$AWS_SECRET" \
        -region "$AWS_REGION" -endpoint "$AWS_ENDPOINT" -key_arn "$KEY_ARN" -passwd "$1")
    [ -n "$enc" ] || die "encpass printed no ciphertext"
    printf '%s\n' "$enc"
}

# Writes a perseus config to $1: listen port $2, metrics port $3, pool MaxIdle $4, MaxOpen $5,
# log level $6 (default INFO), MaxClientConns $7 (default 10000), WorkerThreads $8 (left
# out when empty). The auth table lives in the database `perseus` of the stack's cluster.
perseus_config() {
    local file=$1 port=$2 metrics=$3 idle=$4 open=$5 level=${6:-INFO} max_clients=${7:-10000}
    local workers=""
    [ -n "${8:-}" ] && workers="\"WorkerThreads\": $8,"
    cat >"$file" <<JSON
{
    $workers
    "ListenAddress": "127.0.0.1:$port",
    "MetricsAddress": "127.0.0.1:$metrics",
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
        "MaxIdle": $idle,
        "MaxOpen": $open,
        "MaxLifetimeSecs": 3600,
        "MaxIdletimeSecs": 300,
        "ConnCreateTimeoutSecs": 5,
        "ConnCloseTimeoutSecs": 1,
        "SchemaExecTimeoutSecs": 5
    },
    "ClientSettings": { "MaxClientConns": $max_clients },
    "LogSettings": { "Level": "$level", "Json": false }
}
JSON
}

# Creates the auth database `perseus` and the perseus_auth table with config $1.
perseus_migrate() {
    su_psql -d postgres -c 'CREATE DATABASE perseus'
    "$PERSEUS_BIN_DIR"/perseus --config "$1" --migrate
}

# Adds a perseus_auth row: source_db $1, schema $2, source_user $3, password $4 (hashed with
# genhash), destination db $5, destination user $6, encrypted destination password $7.
perseus_tenant() {
    local hash
    hash=$("$PERSEUS_BIN_DIR"/genhash -password "$4")
    [ -n "$hash" ] || die "genhash printed no hash"
    su_psql -d perseus -v db="$1" -v schema="$2" -v user="$3" -v hash="$hash" \
        -v host="127.0.0.1:$PG_PORT" -v ddb="$5" -v duser="$6" -v enc="$7" <<'SQL'
INSERT INTO perseus_auth (source_db, source_schema, source_user, source_pass_hashed,
                          dest_host, dest_db, dest_user, dest_pass_enc)
VALUES (:'db', :'schema', :'user', :'hash', :'host', :'ddb', :'duser', :'enc');
SQL
}

# Starts perseus (binary $4, the built one when not given) with config $1, listening on port
# $2, output to $3; PERSEUS_PID.
perseus_start() {
    local config=$1 port=$2 log=$3 bin=${4:-$PERSEUS_BIN_DIR/perseus}
    "$bin" --config "$config" >"$log" 2>&1 </dev/null &
    PERSEUS_PID=$!
    if ! wait_port "$port" 30 "$PERSEUS_PID"; then
        echo "--- perseus output ---" >&2
        tail -20 "$log" >&2
        kill -0 "$PERSEUS_PID" 2>/dev/null || die "perseus exited before listening (output above)"
        die "perseus did not listen on 127.0.0.1:$port within 30 s"
    fi
}

perseus_stop() {
    stop_pid "$PERSEUS_PID" 30
    PERSEUS_PID=""
}

# Stops what the stack started, newest first; removes WORK unless KEEP is set.
stack_stop_all() {
    perseus_stop
    stop_pid "$MOTO_PID"
    MOTO_PID=""
    pg_stop
    if [ -n "$WORK" ]; then
        if [ -n "${KEEP:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    fi
}
