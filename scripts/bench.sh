#!/usr/bin/env bash
# Perseus side by side with direct PostgreSQL and PgBouncer on this machine, in one run.
#
# Starts a throwaway PostgreSQL 15 cluster, the moto KMS emulator, Perseus and PgBouncer
# (transaction pooling, pool of 20 each, search_path set per tenant), then runs pgbench
# against the three targets interleaved (direct, PgBouncer, Perseus, direct, ...) so the
# machine's noise falls on all of them alike; only the ratios within one run count. Then the
# scale figures: idle clients held (RSS per client), many clients under light load, and the
# time to log in 1,000 clients with the verified-credential cache cold and warm.
# Results: a table on stdout, .bench/results-<timestamp>.json, logs in .bench/run-<timestamp>/.
# Everything it starts is stopped by pid when it ends, however it ends.
#
#   scripts/bench.sh              the full run (pgbench suite, then scale), about 10 minutes
#   scripts/bench.sh --quick      smoke check: 2 s runs, one round, small scale figures
#   scripts/bench.sh --no-scale   only the pgbench suite
#   scripts/bench.sh --scale      only the scale figures
#   scripts/bench.sh --profile    perf profile of Perseus under pgbench -S (50 clients), and
#                                 syscalls/context switches/CPU per transaction vs PgBouncer,
#                                 and instruction counts by function (callgrind); another
#                                 scenario with BENCH_PROFILE_PGBENCH (e.g. "-C -S -c 20 -j 2")
#
# Environment: BENCH_SCENARIOS (some of "select extended tpcb churn tenants"; all when unset),
# BENCH_DURATION (s per run, 10), BENCH_ROUNDS (2), BENCH_SCALE (pgbench scale
# of the main schema, 10), BENCH_TENANTS (tenant schemas, 50), BENCH_ACTIVE_TENANTS (pgbench
# processes in the many-tenant run, 10), BENCH_TENANT_CLIENTS (clients each, 4),
# BENCH_IDLE_CLIENTS (5000), BENCH_LOAD_CLIENTS (10000), BENCH_AUTH_CLIENTS (1000),
# BENCH_WORKER_THREADS (WorkerThreads of target perseus; 1, single-threaded like PgBouncer;
# "default" leaves the key out), BENCH_ALT_WORKER_THREADS (WorkerThreads of a second
# Perseus, target perseus-alt, interleaved with the others in the pgbench suite; 0, the
# daemon's default of one worker per CPU; "none" runs no second Perseus), BENCH_ALT_BIN (the
# perseus binary of that second daemon, e.g. a build of another commit to compare with;
# the same binary when unset),
# BENCH_PROFILE_PGBENCH (pgbench arguments of --profile, "-S -c 50 -j 2"),
# BENCH_PROFILE_SECS (15),
# PERSEUS_BIN_DIR (binaries already built, e.g. target/debug for a smoke run; unset, release
# binaries are built), KEEP=1 keeps the work directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
# shellcheck source=scripts/lib/stack.sh
. scripts/lib/stack.sh
# shellcheck source=scripts/lib/bench_pgbouncer.sh
. scripts/lib/bench_pgbouncer.sh
# shellcheck source=scripts/lib/bench_pgbench.sh
. scripts/lib/bench_pgbench.sh
# shellcheck source=scripts/lib/bench_scale.sh
. scripts/lib/bench_scale.sh

QUICK=0 SUITE=1 SCALE=1 PROFILE=0
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        --no-scale) SCALE=0 ;;
        --scale) SUITE=0 SCALE=1 ;;
        --profile) SUITE=0 SCALE=0 PROFILE=1 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $arg (see --help)" ;;
    esac
done

DURATION=${BENCH_DURATION:-10}
ONLY=${BENCH_SCENARIOS:-}
for name in $ONLY; do
    case $name in select | extended | tpcb | churn | tenants) ;; *) die "unknown scenario $name in BENCH_SCENARIOS" ;; esac
done
# Whether scenario $1 is to run: all of them unless BENCH_SCENARIOS names some.
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
ROUNDS=${BENCH_ROUNDS:-2}
WORKERS=${BENCH_WORKER_THREADS:-1}
[ "$WORKERS" = default ] && WORKERS=""
ALT_WORKERS=${BENCH_ALT_WORKER_THREADS:-0}
[ "$ALT_WORKERS" = none ] && ALT_WORKERS=""
ALT_BIN=${BENCH_ALT_BIN:-}
[ -z "$ALT_BIN" ] || [ -x "$ALT_BIN" ] || die "BENCH_ALT_BIN $ALT_BIN is not an executable"
PGBENCH_SCALE=${BENCH_SCALE:-10}
N_TENANTS=${BENCH_TENANTS:-50}
N_ACTIVE=${BENCH_ACTIVE_TENANTS:-10}
TENANT_CLIENTS=${BENCH_TENANT_CLIENTS:-4}
IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-5000}
LOAD_CLIENTS=${BENCH_LOAD_CLIENTS:-10000}
AUTH_CLIENTS=${BENCH_AUTH_CLIENTS:-1000}
if [ "$QUICK" -eq 1 ]; then
    DURATION=2 ROUNDS=1 PGBENCH_SCALE=1 N_TENANTS=6 N_ACTIVE=3
    IDLE_CLIENTS=200 LOAD_CLIENTS=300 AUTH_CLIENTS=100
fi
POOL=20
[ "$N_ACTIVE" -le "$N_TENANTS" ] || die "BENCH_ACTIVE_TENANTS ($N_ACTIVE) exceeds BENCH_TENANTS ($N_TENANTS)"
[ "$N_ACTIVE" -le "$POOL" ] || die "BENCH_ACTIVE_TENANTS must be at most the pool size $POOL"

# Thousands of client sockets, in this shell's children: perseus, pgclient.py.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DEST_USER=app_owner
DEST_PASSWORD=app-owner-secret
DEST_DB=app
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=.bench/run-$STAMP
RUNS=$OUT/runs.jsonl
SCALE_JSON=$OUT/scale.json
PROFILE_JSON=$OUT/profile.json
RESULT=.bench/results-$STAMP.json
mkdir -p "$OUT"
ALT_PID=""

TENANT_SCHEMAS=()
for ((i = 1; i <= N_TENANTS; i++)); do TENANT_SCHEMAS+=("$(printf 'tenant_%02d' "$i")"); done
ACTIVE_SCHEMAS=("${TENANT_SCHEMAS[@]:0:N_ACTIVE}")

cleanup() {
    local status=$?
    set +e
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        cp "$WORK"/perseus*.log "$WORK/postgres.log" "$OUT/" 2>/dev/null
        cp "$WORK/pgbouncer/pgbouncer.log" "$OUT/" 2>/dev/null
    fi
    pgbouncer_stop
    stop_pid "$ALT_PID" 30
    stack_stop_all
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "prerequisites"
ensure_postgres
ensure_moto
ensure_pgbouncer
if [ "$PROFILE" -eq 1 ]; then
    command -v perf >/dev/null 2>&1 || apt_install linux-perf
    command -v valgrind >/dev/null 2>&1 || apt_install valgrind
fi

stack_build

stack_workdir perseus-bench
step "PostgreSQL (pg_stat_statements on)"
PG_SUPER_PASSWORD=bench-superuser
pg_start -c max_connections=500 -c shared_buffers=256MB \
    -c shared_preload_libraries=pg_stat_statements

step "destination database '$DEST_DB': schema bench (pgbench scale $PGBENCH_SCALE), $N_TENANTS tenant schemas"
su_psql -d postgres -v u="$DEST_USER" -v p="$DEST_PASSWORD" -v db="$DEST_DB" <<'SQL'
CREATE ROLE :"u" LOGIN PASSWORD :'p';
CREATE DATABASE :"db" OWNER :"u";
SQL
su_psql -d "$DEST_DB" -c 'CREATE EXTENSION pg_stat_statements'
schema_list=$(IFS=,; echo "bench,${TENANT_SCHEMAS[*]}")
su_psql -d "$DEST_DB" -v list="$schema_list" -v u="$DEST_USER" <<'SQL'
SELECT format('CREATE SCHEMA %I AUTHORIZATION %I', s, :'u')
FROM unnest(string_to_array(:'list', ',')) AS s \gexec
SQL
if [ "$SUITE" -eq 1 ] || [ "$PROFILE" -eq 1 ]; then
    with_target direct bench "$BINDIR/pgbench" -i -q -s "$PGBENCH_SCALE" >"$OUT/init-bench.log" 2>&1 \
        || die "pgbench -i failed: $(tail -3 "$OUT/init-bench.log")"
fi
if [ "$SUITE" -eq 1 ]; then
    # Only the schemas the many-tenant run uses need tables; two at a time.
    for ((i = 0; i < N_ACTIVE; i += 2)); do
        for schema in "${ACTIVE_SCHEMAS[@]:i:2}"; do
            with_target direct "$schema" "$BINDIR/pgbench" -i -q -s 1 -I dtgp \
                >"$OUT/init-$schema.log" 2>&1 &
        done
        wait || die "pgbench -i of a tenant schema failed (see $OUT/init-*.log)"
    done
    su_psql -d "$DEST_DB" -c 'VACUUM ANALYZE'
fi

step "KMS emulator"
moto_start

step "perseus: config (pool MaxOpen $POOL, MaxIdle $POOL), auth table, $((N_TENANTS + 1)) tenants"
PERSEUS_PORT=$(free_port)
METRICS_PORT=$(free_port)
CONFIG="$WORK/perseus.json"
perseus_config "$CONFIG" "$PERSEUS_PORT" "$METRICS_PORT" "$POOL" "$POOL" warn 20000 \
    "$WORKERS"
perseus_migrate "$CONFIG" >/dev/null
DEST_ENC=$(stack_encpass "$DEST_PASSWORD")
for schema in bench "${TENANT_SCHEMAS[@]}"; do
    perseus_tenant "$DEST_DB" "$schema" "$(tenant_user "$schema")" "$(tenant_password "$schema")" \
        "$DEST_DB" "$DEST_USER" "$DEST_ENC"
done
perseus_start "$CONFIG" "$PERSEUS_PORT" "$WORK/perseus.log"
echo "perseus on 127.0.0.1:$PERSEUS_PORT (pid $PERSEUS_PID), metrics on :$METRICS_PORT" >&2

step "pgbouncer: transaction mode, pool $POOL; tenant aliases share $POOL between $N_ACTIVE active tenants"
aliases=(bench=bench)
for schema in "${TENANT_SCHEMAS[@]}"; do aliases+=("$schema=$schema:$((POOL / N_ACTIVE))"); done
pgbouncer_start "$DEST_USER" "$DEST_PASSWORD" "$DEST_DB" "$POOL" "${aliases[@]}"

TARGETS=(direct pgbouncer perseus)
if [ "$SUITE" -eq 1 ] && [ -n "$ALT_WORKERS" ]; then
    step "perseus-alt: a second daemon, WorkerThreads $ALT_WORKERS, same tenants${ALT_BIN:+, binary $ALT_BIN}"
    ALT_PORT=$(free_port)
    ALT_METRICS_PORT=$(free_port)
    perseus_config "$WORK/perseus-alt.json" "$ALT_PORT" "$ALT_METRICS_PORT" "$POOL" "$POOL" warn \
        20000 "$ALT_WORKERS"
    # perseus_start records the daemon it starts in PERSEUS_PID; the first one stays there.
    main_pid=$PERSEUS_PID
    perseus_start "$WORK/perseus-alt.json" "$ALT_PORT" "$WORK/perseus-alt.log" "$ALT_BIN"
    ALT_PID=$PERSEUS_PID PERSEUS_PID=$main_pid
    TARGETS+=(perseus-alt)
fi

if [ "$SUITE" -eq 1 ]; then
    step "warm-up: every target, every active tenant"
    for target in "${TARGETS[@]}"; do
        for schema in bench "${ACTIVE_SCHEMAS[@]}"; do
            with_target "$target" "$schema" timeout 60 "$BINDIR/psql" -X -q -At -c 'SELECT 1' \
                >/dev/null 2>&1 || die "warm-up: $target as $schema failed"
        done
        DURATION=2 pgbench_one "$target" bench "$OUT/warmup-$target.log" -S -c 20 -j 2
    done

    # name | pgbench arguments
    SCENARIOS=(
        "select|-S -M simple -c 50 -j 2"
        "extended|-S -M extended -c 50 -j 2"
        "tpcb|-M simple -c 50 -j 2"
        "churn|-C -S -M simple -c 20 -j 2"
    )
    step "pgbench: ${ONLY:-all} scenarios, $ROUNDS round(s) of ${DURATION}s, targets interleaved"
    for entry in "${SCENARIOS[@]}"; do
        name=${entry%%|*}
        wanted "$name" || continue
        read -r -a args <<<"${entry#*|}"
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in "${TARGETS[@]}"; do
                bench_run "$name" "$target" "$round" "${args[@]}"
            done
        done
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        wanted tenants || break
        for target in "${TARGETS[@]}"; do
            bench_tenants "$target" "$round" -S -M simple -c "$TENANT_CLIENTS" -j 1
        done
    done
fi

if [ "$SCALE" -eq 1 ]; then
    scale_figures
fi

if [ "$PROFILE" -eq 1 ]; then
    profile_perseus
    callgrind_perseus
fi

step "results"
meta=$(python3 - "$STAMP" "$DURATION" "$ROUNDS" "$PGBENCH_SCALE" "$N_TENANTS" "$N_ACTIVE" \
    "$TENANT_CLIENTS" "$POOL" "$QUICK" "$(pgbouncer --version | sed -n 1p)" \
    "$("$BINDIR/postgres" --version)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$WORKERS" "$([ "$SUITE" -eq 1 ] && echo "$ALT_WORKERS")" "$ALT_BIN" <<'PY'
import json, os, sys
a = sys.argv[1:]
print(json.dumps({
    "timestamp": a[0], "duration_secs": int(a[1]), "rounds": int(a[2]),
    "pgbench_scale": int(a[3]), "tenants": int(a[4]), "active_tenants": int(a[5]),
    "clients_per_tenant": int(a[6]), "pool_size": int(a[7]), "quick": a[8] == "1",
    "pgbouncer": a[9], "postgres": a[10], "commit": a[11], "cpus": os.cpu_count(),
    "perseus_worker_threads": int(a[12]) if a[12] else "default",
    "perseus_alt_worker_threads": int(a[13]) if a[13] else None,
    "perseus_alt_binary": a[14] or None,
}))
PY
)
status=0
python3 scripts/bench/report.py summary --runs "$RUNS" --scale "$SCALE_JSON" \
    --profile "$PROFILE_JSON" --meta "$meta" --out "$RESULT" || status=$?
echo "results: $RESULT (logs in $OUT)" >&2
exit "$status"
