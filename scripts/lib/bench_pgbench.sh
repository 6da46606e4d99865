# pgbench runs for scripts/bench.sh: how each target is reached as a given tenant, one timed
# run per (scenario, target, round) recorded by scripts/bench/report.py, and the count of
# checkouts that needed `SET search_path` in the many-tenant runs.
# Needs prereqs.sh, stack.sh and bench_pgbouncer.sh sourced, and these globals from the
# caller: DEST_USER, DEST_PASSWORD, DEST_DB, PERSEUS_PORT, METRICS_PORT, DURATION, OUT, RUNS,
# and for the optional second Perseus (target perseus-alt) ALT_PORT, ALT_METRICS_PORT, ALT_PID.

# A tenant's Perseus login for schema $1 (rows are made by bench.sh with the same rule).
tenant_user() { printf 'u_%s' "$1"; }
tenant_password() { printf 'pw-%s' "$1"; }

# Runs a command with libpq's environment set to reach target $1 as the tenant of schema $2:
# direct PostgreSQL (search_path from options), PgBouncer (one database alias per schema,
# its connect_query sets search_path) or Perseus (the tenant's own login).
with_target() {
    local target=$1 schema=$2
    shift 2
    case $target in
        direct)
            env PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER="$DEST_USER" PGPASSWORD="$DEST_PASSWORD" \
                PGDATABASE="$DEST_DB" PGOPTIONS="-c search_path=$schema" PGSSLMODE=disable "$@"
            ;;
        pgbouncer)
            env -u PGOPTIONS PGHOST=127.0.0.1 PGPORT="$PGBOUNCER_PORT" PGUSER="$DEST_USER" \
                PGPASSWORD="$DEST_PASSWORD" PGDATABASE="$schema" PGSSLMODE=disable "$@"
            ;;
        perseus | perseus-alt)
            env PGHOST=127.0.0.1 PGPORT="$(perseus_port "$target")" \
                PGUSER="$(tenant_user "$schema")" PGPASSWORD="$(tenant_password "$schema")" \
                PGDATABASE="$DEST_DB" PGOPTIONS="-c search_path=$schema" PGSSLMODE=disable "$@"
            ;;
        *) die "unknown target $target" ;;
    esac
}

# The client port and metrics port of Perseus target $1 (perseus or perseus-alt).
perseus_port() { if [ "$1" = perseus-alt ]; then echo "$ALT_PORT"; else echo "$PERSEUS_PORT"; fi; }
perseus_metrics_port() {
    if [ "$1" = perseus-alt ]; then echo "$ALT_METRICS_PORT"; else echo "$METRICS_PORT"; fi
}

# One pgbench process against target $1 as schema $2, output to file $3, bounded in time;
# the rest are pgbench arguments. Never fails: a failed run is recorded as such.
pgbench_one() {
    local target=$1 schema=$2 log=$3
    shift 3
    with_target "$target" "$schema" timeout -k 5 $((DURATION + 60)) \
        "$BINDIR/pgbench" -n -T "$DURATION" "$@" >"$log" 2>&1 || true
}

# The pooler process behind target $1 (none for direct).
pooler_pid() {
    case $1 in
        perseus) echo "$PERSEUS_PID" ;;
        perseus-alt) echo "$ALT_PID" ;;
        pgbouncer) echo "$PGBOUNCER_PID" ;;
    esac
}

# CPU time (user + system, all threads) pid $1 has used so far, in clock ticks.
cpu_ticks() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0
    # Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# JSON member with the pooler's CPU seconds between tick counts $1 and $2.
cpu_extra() {
    [ -n "$1" ] && [ -n "$2" ] || return 0
    printf '"pooler_cpu_secs": %s' "$(python3 -c "print(($2 - $1) / $(getconf CLK_TCK))")"
}

# scenario $1 on target $2, round $3; the rest are pgbench arguments (schema bench).
bench_run() {
    local scenario=$1 target=$2 round=$3 log pid t0 t1
    shift 3
    log="$OUT/pgbench-$scenario-$target-$round.log"
    pid=$(pooler_pid "$target")
    t0=$(cpu_ticks "$pid")
    pgbench_one "$target" bench "$log" "$@"
    t1=$(cpu_ticks "$pid")
    python3 scripts/bench/report.py record --runs "$RUNS" --scenario "$scenario" \
        --target "$target" --round "$round" --extra "{$(cpu_extra "$t0" "$t1")}" "$log"
}

# Sum of counter $2 (all pools) from the metrics endpoint of Perseus target $1; empty when
# not exposed.
perseus_counter() {
    python3 - "http://127.0.0.1:$(perseus_metrics_port "$1")/metrics" "$2" <<'PY' 2>/dev/null || true
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
vals = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
        if l.startswith(sys.argv[2] + "{") or l.startswith(sys.argv[2] + " ")]
if vals:
    print(int(sum(vals)))
PY
}

# `calls` of statements in pg_stat_statements whose text starts with $1 (all databases).
pgss_calls() {
    su_psql -d "$DEST_DB" -At -v prefix="$1" <<'SQL'
SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE :'prefix' || '%';
SQL
}

# The many-tenant run on target $1, round $2: one pgbench process per active tenant schema
# (the rest are pgbench arguments, shared), all at once. Records the summed TPS and how many
# checkouts needed `SET search_path`: Perseus's own counters when its metrics endpoint
# exposes them, else pg_stat_statements (SET search_path calls against pgbench SELECTs).
bench_tenants() {
    local target=$1 round=$2 schema p pids=() logs=() sets0="" outs0="" extra pid t0 t1
    shift 2
    pid=$(pooler_pid "$target")
    su_psql -d "$DEST_DB" -c 'SELECT pg_stat_statements_reset()' >/dev/null
    if [[ $target == perseus* ]]; then
        sets0=$(perseus_counter "$target" perseus_search_path_sets_total)
        outs0=$(perseus_counter "$target" perseus_checkouts_total)
    fi
    t0=$(cpu_ticks "$pid")
    for schema in "${ACTIVE_SCHEMAS[@]}"; do
        logs+=("$OUT/pgbench-tenants-$target-$round-$schema.log")
        pgbench_one "$target" "$schema" "${logs[-1]}" "$@" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    t1=$(cpu_ticks "$pid")
    local pgss_sets pgss_selects
    pgss_sets=$(pgss_calls 'SET search_path')
    pgss_selects=$(pgss_calls 'SELECT abalance FROM pgbench_accounts')
    extra="\"pgss_set_calls\": $pgss_sets, \"pgss_select_calls\": $pgss_selects"
    if [[ $target == perseus* ]]; then
        local sets1 outs1
        sets1=$(perseus_counter "$target" perseus_search_path_sets_total)
        outs1=$(perseus_counter "$target" perseus_checkouts_total)
        if [ -n "$sets0" ] && [ -n "$sets1" ] && [ -n "$outs0" ] && [ -n "$outs1" ] \
            && [ $((outs1 - outs0)) -gt 0 ]; then
            extra+=", \"search_path_sets\": $((sets1 - sets0)), \"checkouts\": $((outs1 - outs0))"
            extra+=", \"set_ratio\": $(python3 -c "print(($sets1 - $sets0) / ($outs1 - $outs0))")"
            extra+=", \"set_ratio_source\": \"perseus metrics\""
        elif [ "$pgss_selects" -gt 0 ]; then
            extra+=", \"set_ratio\": $(python3 -c "print($pgss_sets / $pgss_selects)")"
            extra+=", \"set_ratio_source\": \"pg_stat_statements\""
        fi
    fi
    [ -n "$t0" ] && extra+=", $(cpu_extra "$t0" "$t1")"
    python3 scripts/bench/report.py record --runs "$RUNS" --scenario tenants \
        --target "$target" --round "$round" --extra "{$extra}" "${logs[@]}"
}
