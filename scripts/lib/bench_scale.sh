# Scale figures and the profile for scripts/bench.sh: logins timed with the credential cache
# cold and warm, idle clients held (RSS per client), many clients under a light load, and
# a perf profile of Perseus under pgbench -S. Needs the other bench libraries sourced and
# bench.sh's globals (OUT, SCALE_JSON, CONFIG, PERSEUS_PORT, the *_CLIENTS counts, QUICK).

# Runs scripts/bench/pgclient.py (mode and arguments follow) against Perseus, bounded in time;
# prints its JSON, or a JSON error when it failed.
pgclient() {
    local mode=$1 out err
    shift
    err="$OUT/pgclient-$mode.err"
    if out=$(timeout -k 5 600 python3 scripts/bench/pgclient.py "$mode" --port "$PERSEUS_PORT" \
        --tenants "$OUT/tenants.json" --deadline 540 "$@" 2>"$err"); then
        printf '%s\n' "$out"
    else
        python3 -c 'import json, sys; print(json.dumps({"error": sys.argv[1][-400:]}))' \
            "$(tail -5 "$err")"
    fi
}

scale_figures() {
    local schema auth_cold auth_warm idle load secs rate
    python3 - "$OUT/tenants.json" "$DEST_DB" bench "${TENANT_SCHEMAS[@]}" <<'PY'
import json, sys
path, db, schemas = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(path, "w") as f:
    json.dump([{"db": db, "schema": s, "user": "u_" + s, "password": "pw-" + s}
               for s in schemas], f)
PY
    step "scale: restarting perseus (nothing cached: tenant rows, credentials, pools)"
    perseus_stop
    perseus_start "$CONFIG" "$PERSEUS_PORT" "$WORK/perseus-scale.log"

    step "scale: $AUTH_CLIENTS logins over $((N_TENANTS + 1)) tenants, 50 at a time, cache cold, then warm"
    auth_cold=$(pgclient auth --clients "$AUTH_CLIENTS" --concurrency 50)
    auth_warm=$(pgclient auth --clients "$AUTH_CLIENTS" --concurrency 50)

    step "scale: $IDLE_CLIENTS idle clients held (RSS of perseus from /proc)"
    idle=$(pgclient idle --clients "$IDLE_CLIENTS" --concurrency 100 --pid "$PERSEUS_PID")

    secs=15 rate=1000
    [ "$QUICK" -eq 1 ] && secs=3 rate=200
    step "scale: $LOAD_CLIENTS clients connected, $rate queries/s among them for ${secs}s, pool of $POOL"
    load=$(pgclient load --clients "$LOAD_CLIENTS" --concurrency 100 --pid "$PERSEUS_PID" \
        --duration "$secs" --rate "$rate")

    printf '{"auth_cold": %s, "auth_warm": %s, "idle": %s, "load": %s}\n' \
        "$auth_cold" "$auth_warm" "$idle" "$load" >"$SCALE_JSON"
}

# Syscalls, context switches and CPU per transaction of the pooler behind target $1 during
# pgbench (PROFILE_ARGS), for $2 seconds.
perf_per_txn() {
    local target=$1 secs=$2 pid perf_pid
    pid=$(pooler_pid "$target")
    # utime and stime of the whole process (fields 14 and 15; the names have no spaces).
    local before after
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    perf stat -x, -o "$OUT/perf-stat-$target.csv" -p "$pid" \
        -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
        -e syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write \
        -e syscalls:sys_enter_read,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait \
        -e syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex,page-faults \
        -e syscalls:sys_enter_brk,syscalls:sys_enter_madvise,syscalls:sys_enter_mmap \
        -e syscalls:sys_enter_munmap -- sleep "$secs" \
        >"$OUT/perf-stat-$target.log" 2>&1 &
    perf_pid=$!
    DURATION=$((secs + 1)) pgbench_one "$target" bench "$OUT/profile-stat-$target.log" "${PROFILE_ARGS[@]}"
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    wait "$perf_pid" || die "perf stat failed: $(tail -3 "$OUT/perf-stat-$target.log")"
    python3 scripts/bench/report.py perfstat --csv "$OUT/perf-stat-$target.csv" \
        --pgbench "$OUT/profile-stat-$target.log" --secs "$secs" --target "$target" \
        --ticks-before "$before" --ticks-after "$after" --pgbench-args "${PROFILE_ARGS[*]}" \
        --out "$PROFILE_JSON"
}

# A flat CPU profile (perf cpu-clock samples: this VM has no hardware counters) of Perseus
# under pgbench (-S with 50 clients unless BENCH_PROFILE_PGBENCH says otherwise), and a second with call graphs for inclusive costs; and
# syscalls, context switches and CPU per transaction for PgBouncer and Perseus side by side.
profile_perseus() {
    local secs=${BENCH_PROFILE_SECS:-15}
    read -r -a PROFILE_ARGS <<<"${BENCH_PROFILE_PGBENCH:--S -c 50 -j 2}"
    step "profile: warm-up"
    DURATION=3 pgbench_one perseus bench "$OUT/profile-warmup.log" "${PROFILE_ARGS[@]}"
    DURATION=3 pgbench_one pgbouncer bench "$OUT/profile-warmup-pgbouncer.log" "${PROFILE_ARGS[@]}"
    step "profile: perf stat per transaction, PgBouncer then Perseus (${secs}s each)"
    perf_per_txn pgbouncer "$secs"
    perf_per_txn perseus "$secs"
    step "profile: perf record (flat, ${secs}s) during pgbench ${PROFILE_ARGS[*]}"
    perf record -F 1999 -p "$PERSEUS_PID" -o "$OUT/perf-flat.data" -- sleep "$secs" \
        >"$OUT/perf-record.log" 2>&1 &
    local perf_pid=$!
    DURATION=$((secs + 1)) pgbench_one perseus bench "$OUT/profile-pgbench.log" "${PROFILE_ARGS[@]}"
    wait "$perf_pid" || die "perf record failed: $(tail -3 "$OUT/perf-record.log")"
    perf report -i "$OUT/perf-flat.data" --stdio --no-children --sort dso \
        >"$OUT/perf-dso.txt" 2>/dev/null
    perf report -i "$OUT/perf-flat.data" --stdio --no-children --sort dso,symbol \
        --percent-limit 0.3 >"$OUT/perf-flat.txt" 2>/dev/null

    step "profile: perf record (call graphs, ${secs}s)"
    perf record -F 299 --call-graph dwarf,8192 -p "$PERSEUS_PID" -o "$OUT/perf-graph.data" \
        -- sleep "$secs" >"$OUT/perf-record-graph.log" 2>&1 &
    perf_pid=$!
    DURATION=$((secs + 1)) pgbench_one perseus bench "$OUT/profile-pgbench-graph.log" "${PROFILE_ARGS[@]}"
    wait "$perf_pid" || die "perf record failed: $(tail -3 "$OUT/perf-record-graph.log")"
    perf report -i "$OUT/perf-graph.data" --stdio --children --sort symbol -g none \
        --percent-limit 2 >"$OUT/perf-inclusive.txt" 2>/dev/null
    echo "profile: $OUT/perf-dso.txt, perf-flat.txt, perf-inclusive.txt" >&2
    grep -v '^#' "$OUT/perf-dso.txt" | grep -v '^$' | sed -n '1,8p' >&2
    grep -v '^#' "$OUT/perf-flat.txt" | grep -v '^$' | sed -n '1,30p' >&2
}

# Instruction counts by function (callgrind) of Perseus serving the profiled pgbench run: the
# daemon is restarted under valgrind, warmed up (logins, pools) with collection off, then
# measured.
callgrind_perseus() {
    local secs=${BENCH_PROFILE_SECS:-15} out="$OUT/callgrind.out"
    read -r -a PROFILE_ARGS <<<"${BENCH_PROFILE_PGBENCH:--S -c 50 -j 2}"
    command -v valgrind >/dev/null 2>&1 || apt_install valgrind
    step "profile: perseus under callgrind (collection starts after the warm-up)"
    perseus_stop
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$PERSEUS_BIN_DIR"/perseus --config "$CONFIG" >"$WORK/perseus-callgrind.log" 2>&1 </dev/null &
    PERSEUS_PID=$!
    wait_port "$PERSEUS_PORT" 120 "$PERSEUS_PID" \
        || die "perseus under valgrind did not listen: $(tail -5 "$WORK/perseus-callgrind.log")"
    DURATION=5 pgbench_one perseus bench "$OUT/callgrind-warmup.log" "${PROFILE_ARGS[@]}"
    callgrind_control -i on "$PERSEUS_PID" >/dev/null
    DURATION=$secs pgbench_one perseus bench "$OUT/callgrind-pgbench.log" "${PROFILE_ARGS[@]}"
    callgrind_control -i off "$PERSEUS_PID" >/dev/null
    perseus_stop
    # Whole reports: a reader that stops early would end the writer with SIGPIPE (pipefail).
    callgrind_annotate --inclusive=no "$out" >"$OUT/callgrind-self.txt" 2>/dev/null
    callgrind_annotate --inclusive=yes "$out" >"$OUT/callgrind-inclusive.txt" 2>/dev/null
    python3 - "$OUT/callgrind-self.txt" "$OUT/callgrind-pgbench.log" "$PROFILE_JSON" <<'PY'
import json, re, sys
total = re.search(r"^([0-9,]+) .*PROGRAM TOTALS", open(sys.argv[1]).read(), re.M)
txns = re.search(r"^number of transactions actually processed: ([0-9]+)",
                 open(sys.argv[2]).read(), re.M)
if total and txns and int(txns.group(1)):
    ir = int(total.group(1).replace(",", ""))
    try:
        profile = json.load(open(sys.argv[3]))
    except FileNotFoundError:
        profile = {}
    profile["callgrind"] = {"instructions": ir, "transactions": int(txns.group(1)),
                            "instructions_per_txn": round(ir / int(txns.group(1)))}
    json.dump(profile, open(sys.argv[3], "w"), indent=2)
    print("callgrind: %d user-space instructions per transaction" % (ir // int(txns.group(1))),
          file=sys.stderr)
PY
    echo "callgrind: $OUT/callgrind-self.txt, callgrind-inclusive.txt" >&2
    grep -E '^ *[0-9,]+ \(' "$OUT/callgrind-self.txt" | sed -n '1,25p' | cut -c1-160 >&2
}
