#!/usr/bin/env python3
"""Checks a results file of `scripts/bench.sh --quick` for the test command: every target of
every scenario served transactions with none failed, the many-tenant run read its switch
rate, and the scale steps connected and queried without an error. Speed is not judged here
(a smoke run is seconds long on a shared machine); only that the benchmark still works."""

import json
import sys

SCENARIOS = ("select", "extended", "tpcb", "churn", "tenants")
TARGETS = ("direct", "pgbouncer", "perseus")


def problems(result):
    found = []
    by_name = {s["scenario"]: s for s in result.get("scenarios", [])}
    for name in SCENARIOS:
        s = by_name.get(name)
        if s is None:
            found.append("scenario %s did not run" % name)
            continue
        for target in TARGETS:
            t = s["targets"].get(target)
            if t is None:
                found.append("%s: target %s did not run" % (name, target))
            elif t["failed_rounds"] or t["failed_transactions"] or not t["tps"] > 0:
                found.append("%s on %s: %r" % (name, target, t))
    tenants = by_name.get("tenants", {}).get("targets", {}).get("perseus", {})
    if "tenants" in by_name and not (tenants.get("checkouts") and "set_ratio" in tenants):
        found.append("tenants on perseus: no search_path switch rate read (%r)" % tenants)
    for run in result.get("runs", []):
        if "error" in run:
            found.append("pgbench %s on %s: %s" % (run["scenario"], run["target"], run["error"]))
    scale = result.get("scale") or {}
    for step in ("idle", "load", "auth_cold", "auth_warm"):
        s = scale.get(step)
        if s is None:
            found.append("scale step %s did not run" % step)
            continue
        errors = [k for k in ("error", "probe_errors") if s.get(k)]
        errors += [k for k in ("connect_errors", "query_errors", "errors") if sum(s.get(k, {}).values())]
        if errors:
            found.append("scale step %s: %s" % (step, {k: s[k] for k in errors}))
    return found


def main():
    with open(sys.argv[1]) as f:
        result = json.load(f)
    found = problems(result)
    for p in found:
        print("bench smoke: " + p, file=sys.stderr)
    if found:
        return 1
    print("bench smoke: %d scenarios on %d targets and the scale steps ran without an error"
          % (len(SCENARIOS), len(TARGETS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
