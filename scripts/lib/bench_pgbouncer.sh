# PgBouncer for scripts/bench.sh: installed from Debian when missing, configured like the
# Perseus under test (transaction pooling, the same pool size, search_path set by
# connect_query), run as the unprivileged `postgres` account and stopped by pid.
# Needs scripts/lib/prereqs.sh and scripts/lib/stack.sh sourced first.

PGBOUNCER_PID=""
PGBOUNCER_PORT=""

ensure_pgbouncer() {
    if ! command -v pgbouncer >/dev/null 2>&1; then
        step "installing pgbouncer"
        apt_install pgbouncer
        command -v pgbouncer >/dev/null 2>&1 || die "pgbouncer missing after apt-get install"
    fi
    echo "PgBouncer: $(pgbouncer --version | sed -n 1p)" >&2
}

# Writes the config and userlist into $WORK/pgbouncer and starts it on a free port.
#   $1 client user (also the server user), $2 its password, $3 server database,
#   $4 pool size, then one or more alias=schema pairs: each alias is a database clients name,
#   served from $3 with search_path set to schema by connect_query. An alias given as
#   alias=schema:N has a pool of N instead of $4.
pgbouncer_start() {
    local user=$1 password=$2 dbname=$3 pool=$4 dir="$WORK/pgbouncer" pair alias schema size
    shift 4
    mkdir -p "$dir"
    printf '"%s" "%s"\n' "$user" "$password" >"$dir/userlist.txt"
    PGBOUNCER_PORT=$(free_port)
    {
        echo "[databases]"
        for pair in "$@"; do
            alias=${pair%%=*}
            schema=${pair#*=}
            size=$pool
            case $schema in *:*) size=${schema#*:} schema=${schema%%:*} ;; esac
            echo "$alias = host=127.0.0.1 port=$PG_PORT dbname=$dbname pool_size=$size connect_query='SET search_path TO $schema'"
        done
        cat <<INI
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = plain
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 5000
logfile = $dir/pgbouncer.log
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
INI
    } >"$dir/pgbouncer.ini"
    chmod 0644 "$dir/pgbouncer.ini"
    chmod 0600 "$dir/userlist.txt"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$dir"
        # setpriv execs pgbouncer itself, so $! is pgbouncer's pid (runuser would stand between).
        setpriv --reuid=postgres --regid=postgres --init-groups \
            pgbouncer "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 </dev/null &
    else
        pgbouncer "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 </dev/null &
    fi
    PGBOUNCER_PID=$!
    wait_port "$PGBOUNCER_PORT" 30 "$PGBOUNCER_PID" \
        || die "pgbouncer did not start: $(tail -5 "$dir/pgbouncer.log" "$dir/stdout.log" 2>/dev/null)"
    echo "PgBouncer on 127.0.0.1:$PGBOUNCER_PORT (pid $PGBOUNCER_PID)" >&2
}

pgbouncer_stop() {
    stop_pid "$PGBOUNCER_PID" 10
    PGBOUNCER_PID=""
}
