#!/usr/bin/env python3
"""Results of scripts/bench.sh: parse pgbench output into run records, then summarise.

  record   parse one or more pgbench logs (one run; several logs = concurrent processes,
           summed) and append a JSON line to the runs file
  perfstat turn a `perf stat -x,` file taken during a pgbench run into per-transaction
           figures (syscalls, context switches, CPU) and add them to a profile JSON file
  summary  average the rounds per scenario and target, print the table with the ratios
           Perseus/direct and Perseus/PgBouncer, and write the results JSON

Only ratios within one run mean anything: the machines are shared and noisy.
"""

import argparse
import json
import re
import sys

TARGETS = ["direct", "pgbouncer", "perseus"]
# A second Perseus configuration (BENCH_ALT_WORKER_THREADS), shown only when it ran.
ALT = "perseus-alt"
NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse_pgbench(path):
    with open(path, errors="replace") as f:
        text = f.read()
    tps = re.search(r"^tps = " + NUM, text, re.M)
    lat = re.search(r"^latency average = " + NUM + " ms", text, re.M)
    txns = re.search(r"^number of transactions actually processed: ([0-9]+)", text, re.M)
    failed = re.search(r"^number of failed transactions: ([0-9]+)", text, re.M)
    if not (tps and lat and txns):
        tail = " | ".join(line for line in text.strip().splitlines()[-4:])
        return {"error": "no result in %s: %s" % (path, tail[:400])}
    return {
        "tps": float(tps.group(1)),
        "latency_ms": float(lat.group(1)),
        "transactions": int(txns.group(1)),
        "failed": int(failed.group(1)) if failed else 0,
    }


def cmd_record(args):
    parts = [parse_pgbench(p) for p in args.logs]
    rec = {"scenario": args.scenario, "target": args.target, "round": args.round}
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        rec["error"] = errors[0]
    else:
        total = sum(p["transactions"] for p in parts)
        rec["tps"] = round(sum(p["tps"] for p in parts), 1)
        # Average latency of all transactions, whichever process ran them.
        rec["latency_ms"] = round(
            sum(p["latency_ms"] * p["transactions"] for p in parts) / total, 3) if total else None
        rec["transactions"] = total
        rec["failed"] = sum(p["failed"] for p in parts)
        rec["processes"] = len(parts)
    if args.extra:
        rec.update(json.loads(args.extra))
    if rec.get("pooler_cpu_secs") is not None and rec.get("transactions"):
        rec["pooler_cpu_us_per_txn"] = round(1e6 * rec["pooler_cpu_secs"] / rec["transactions"], 2)
    with open(args.runs, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if "error" in rec:
        print("  %-10s %-9s round %d: FAILED %s" % (args.scenario, args.target, args.round,
                                                    rec["error"]), file=sys.stderr)
    else:
        print("  %-10s %-9s round %d: %9.1f tps  %7.3f ms" % (
            args.scenario, args.target, args.round, rec["tps"], rec["latency_ms"]),
            file=sys.stderr)


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def by_round(row, a, b):
    """a/b in each round where both ran: rounds are interleaved, so each pairs two runs made one
    after the other, and their spread shows how far the run's noise moves a ratio."""
    xs, ys = row["targets"][a]["tps_by_round"], row["targets"][b]["tps_by_round"]
    return [ratio(x, y) for x, y in zip(xs, ys)]


def summarise(runs):
    scenarios, table = [], {}
    for r in runs:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
        table.setdefault(r["scenario"], {}).setdefault(r["target"], []).append(r)
    out = []
    for s in scenarios:
        row = {"scenario": s, "targets": {}}
        row["targets_run"] = TARGETS + ([ALT] if ALT in table[s] else [])
        for t in row["targets_run"]:
            rs = table[s].get(t, [])
            ok = [r for r in rs if "error" not in r]
            entry = {
                "rounds": len(rs),
                "failed_rounds": len(rs) - len(ok),
                "tps": round(mean([r["tps"] for r in ok]), 1) if ok else None,
                "latency_ms": round(mean([r["latency_ms"] for r in ok]), 3) if ok else None,
                "tps_by_round": [r.get("tps") for r in rs],
                "failed_transactions": sum(r.get("failed", 0) for r in ok),
            }
            # Many-tenant runs carry how often a checkout had to SET search_path.
            cpu = [r["pooler_cpu_us_per_txn"] for r in ok if r.get("pooler_cpu_us_per_txn")]
            if cpu:
                entry["pooler_cpu_us_per_txn"] = round(mean(cpu), 2)
            for k in ("search_path_sets", "checkouts", "set_ratio", "set_ratio_source",
                      "pgss_set_calls", "pgss_select_calls"):
                vals = [r[k] for r in ok if r.get(k) is not None]
                if vals and isinstance(vals[0], str):
                    entry[k] = vals[0]
                elif vals and k == "set_ratio":
                    entry[k] = round(mean(vals), 4)
                elif vals:
                    entry[k] = sum(vals)
            errors = [r["error"] for r in rs if "error" in r]
            if errors:
                entry["errors"] = errors
            row["targets"][t] = entry
        tps = {t: row["targets"][t]["tps"] for t in TARGETS}
        row["perseus_vs_direct"] = ratio(tps["perseus"], tps["direct"])
        row["perseus_vs_pgbouncer"] = ratio(tps["perseus"], tps["pgbouncer"])
        row["pgbouncer_vs_direct"] = ratio(tps["pgbouncer"], tps["direct"])
        row["perseus_vs_pgbouncer_by_round"] = by_round(row, "perseus", "pgbouncer")
        if ALT in row["targets"]:
            alt = row["targets"][ALT]["tps"]
            row["alt_vs_pgbouncer"] = ratio(alt, tps["pgbouncer"])
            row["alt_vs_perseus"] = ratio(alt, tps["perseus"])
        out.append(row)
    return out


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def print_table(rows):
    print()
    print("%-10s %-10s %10s %10s   %s" % ("scenario", "target", "TPS", "lat ms", "notes"))
    print("-" * 72)
    for row in rows:
        for t in row.get("targets_run", TARGETS):
            e = row["targets"][t]
            note = ""
            notes = []
            if e.get("failed_rounds"):
                notes.append("%d round(s) FAILED" % e["failed_rounds"])
            if e.get("failed_transactions"):
                notes.append("%d failed txns" % e["failed_transactions"])
            if e.get("pooler_cpu_us_per_txn") is not None:
                notes.append("pooler CPU %.1f us/txn" % e["pooler_cpu_us_per_txn"])
            if e.get("set_ratio") is not None:
                notes.append("SET search_path on %.1f%% of checkouts (%s)" % (
                    100 * e["set_ratio"], e.get("set_ratio_source", "?")))
            note = "; ".join(notes)
            print("%-10s %-10s %10s %10s   %s" % (row["scenario"], t, fmt(e["tps"], ".1f"),
                                               fmt(e["latency_ms"], ".3f"), note))
        print("%-10s %-10s perseus/direct %s   perseus/pgbouncer %s   (pgbouncer/direct %s)" % (
            "", "ratios", fmt(row["perseus_vs_direct"], ".3f"),
            fmt(row["perseus_vs_pgbouncer"], ".3f"), fmt(row["pgbouncer_vs_direct"], ".3f")))
        rounds = row.get("perseus_vs_pgbouncer_by_round") or []
        if len(rounds) > 1:
            print("%-10s %-10s perseus/pgbouncer by round: %s" % (
                "", "", " ".join(fmt(r, ".3f") for r in rounds)))
        if "alt_vs_perseus" in row:
            print("%-10s %-10s perseus-alt/pgbouncer %s   perseus-alt/perseus %s" % (
                "", "", fmt(row["alt_vs_pgbouncer"], ".3f"), fmt(row["alt_vs_perseus"], ".3f")))
        print()


def print_scale(scale):
    if not scale:
        return
    print("scale figures (perseus, pool of 20)")
    print("-" * 72)
    idle = scale.get("idle")
    if idle:
        if "error" in idle:
            print("  idle clients: FAILED %s" % idle["error"])
        else:
            print("  %d idle clients: RSS %.1f MiB -> %.1f MiB (%.1f MiB just after connecting), "
                  "%s bytes per client (growth), connect %.1f s, errors %s" % (
                      idle["clients"], idle["rss_before_kib"] / 1024,
                      idle["rss_after_kib"] / 1024, idle.get("rss_connected_kib", 0) / 1024,
                      idle["rss_per_client_bytes"], idle["connect_secs"],
                      sum(idle["connect_errors"].values()) + idle["probe_errors"]))
    load = scale.get("load")
    if load and "error" in load:
        print("  many clients under load: FAILED %s" % load["error"])
    elif load:
        print("  %d clients under light load: RSS %.1f MiB, %s queries at %s/s, avg %s ms, "
              "p99 %s ms, connect errors %d, query errors %d" % (
                  load["clients"], (load.get("rss_kib") or 0) / 1024, load["queries"],
                  load["qps"], load["latency_avg_ms"],
                  load["latency_p99_ms"], sum(load["connect_errors"].values()),
                  sum(load["query_errors"].values())))
    for k in ("auth_cold", "auth_warm"):
        a = scale.get(k)
        if a and "error" in a:
            print("  logins, %s cache: FAILED %s" % (k.split("_")[1], a["error"]))
        elif a:
            print("  %d logins over %d tenants, %s cache: %.2f s (%s/s), errors %d" % (
                a["connections"], a["tenants"], k.split("_")[1], a["secs"], a["per_sec"],
                sum(a["errors"].values())))
    print()


def cmd_perfstat(args):
    run = parse_pgbench(args.pgbench)
    if "error" in run:
        sys.exit(run["error"])
    txns = run["tps"] * args.secs
    counts = {}
    with open(args.csv) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            try:
                value = float(parts[0])
            except ValueError:
                continue
            event = parts[2].replace("raw_syscalls:sys_enter", "syscalls") \
                .replace("syscalls:sys_enter_", "")
            counts[event] = value
    entry = {"target": args.target, "tps": round(run["tps"], 1), "transactions": round(txns)}
    for event, value in counts.items():
        if event == "task-clock":  # milliseconds of CPU
            entry["cpu_us_per_txn"] = round(1000 * value / txns, 2)
        else:
            entry[event.replace("-", "_") + "_per_txn"] = round(value / txns, 3)
    if args.ticks_before and args.ticks_after and "cpu_us_per_txn" in entry:
        # The split of that CPU between user space and the kernel, from /proc utime/stime.
        u0, s0 = (int(x) for x in args.ticks_before.split())
        u1, s1 = (int(x) for x in args.ticks_after.split())
        busy = (u1 - u0) + (s1 - s0)
        if busy > 0:
            share = (u1 - u0) / busy
            entry["user_cpu_us_per_txn"] = round(entry["cpu_us_per_txn"] * share, 2)
            entry["kernel_cpu_us_per_txn"] = round(entry["cpu_us_per_txn"] * (1 - share), 2)
    try:
        with open(args.out) as f:
            profile = json.load(f)
    except FileNotFoundError:
        profile = {"per_txn": []}
    profile["per_txn"].append(entry)
    if args.pgbench_args:
        profile["pgbench"] = args.pgbench_args
    with open(args.out, "w") as f:
        json.dump(profile, f, indent=2)
    print("  " + ", ".join("%s %s" % (k, v) for k, v in entry.items()), file=sys.stderr)


def print_profile(profile):
    rows = (profile or {}).get("per_txn") or []
    if not rows and not (profile or {}).get("callgrind"):
        return
    keys = [k for k in rows[0] if k.endswith("_per_txn")] if rows else []
    print("per transaction under pgbench %s (perf stat on the pooler)" % (profile or {}).get("pgbench", "-S -c 50 -j 2"))
    print("-" * 72)
    print("%-24s" % "" + "".join("%12s" % r["target"] for r in rows))
    for k in ["tps"] + keys:
        print("%-24s" % k.replace("_per_txn", "") + "".join(
            "%12s" % r.get(k, "-") for r in rows))
    cg = (profile or {}).get("callgrind")
    if cg:
        print("perseus user-space instructions per transaction (callgrind): %d" %
              cg["instructions_per_txn"])
    print()


def cmd_summary(args):
    runs = []
    try:
        with open(args.runs) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        pass
    result = json.loads(args.meta) if args.meta else {}
    result["scenarios"] = summarise(runs)
    result["runs"] = runs
    if args.scale:
        try:
            with open(args.scale) as f:
                result["scale"] = json.load(f)
        except FileNotFoundError:
            pass
    if args.profile:
        try:
            with open(args.profile) as f:
                result["profile"] = json.load(f)
        except FileNotFoundError:
            pass
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if runs:
        print_table(result["scenarios"])
    print_scale(result.get("scale"))
    print_profile(result.get("profile"))
    failed = sum(1 for r in runs if "error" in r)
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--runs", required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--target", required=True, choices=TARGETS + [ALT])
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--extra", help="JSON object merged into the record")
    r.add_argument("logs", nargs="+")
    s = sub.add_parser("summary")
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--scale", help="JSON file with the scale figures")
    s.add_argument("--meta", help="JSON object put at the top of the results")
    s.add_argument("--profile", help="JSON file with the profile figures")
    ps = sub.add_parser("perfstat")
    ps.add_argument("--csv", required=True)
    ps.add_argument("--pgbench", required=True)
    ps.add_argument("--secs", type=float, required=True, help="length of the perf stat window")
    ps.add_argument("--target", required=True)
    ps.add_argument("--pgbench-args", help="the pgbench arguments profiled")
    ps.add_argument("--ticks-before", help="utime stime of the pooler before the window")
    ps.add_argument("--ticks-after", help="utime stime of the pooler after the window")
    ps.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cmd == "record":
        cmd_record(args)
        return 0
    if args.cmd == "perfstat":
        cmd_perfstat(args)
        return 0
    return cmd_summary(args)


if __name__ == "__main__":
    sys.exit(main())
