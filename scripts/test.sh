#!/usr/bin/env bash
# The project's test command (CI runs exactly this). It installs what the tests need when
# it is missing (PostgreSQL 15, moto[server] in .venv, cargo-nextest), then checks
# formatting, runs clippy with warnings as errors, and runs every test of the workspace
# against real PostgreSQL and a KMS emulator. Safe to run again: installs are skipped
# when already done.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh

step "prerequisites"
ensure_postgres
ensure_moto
ensure_psycopg
ensure_rust_tools

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

profile=default
[ -n "${CI:-}" ] && profile=ci

step "doc tests"
cargo test --workspace --doc --locked --quiet

# The README's demo and the benchmark's smoke mode, on the debug binaries (scrypt is optimised
# in that profile too), so the scripts a newcomer and the performance work rely on keep
# working. Speed is not judged: only that every step of each ran and answered correctly.
step "scripts/demo.sh and scripts/bench.sh --quick (smoke, debug binaries)"
cargo build --workspace --bins --locked --quiet
mkdir -p .tmp
PERSEUS_BIN_DIR=target/debug scripts/demo.sh >.tmp/demo.log 2>&1 \
    || { tail -40 .tmp/demo.log >&2; die "scripts/demo.sh failed (output above)"; }
grep -q '^demo passed' .tmp/demo.log || die "scripts/demo.sh did not say 'demo passed'"
echo "demo passed" >&2
PERSEUS_BIN_DIR=target/debug scripts/bench.sh --quick >.tmp/bench.log 2>&1 \
    || { tail -40 .tmp/bench.log >&2; die "scripts/bench.sh --quick failed (output above)"; }
bench_result=$(sed -n 's/^results: \([^ ]*\.json\) .*/\1/p' .tmp/bench.log)
[ -n "$bench_result" ] || die "scripts/bench.sh --quick named no results file"
scripts/bench/check_smoke.py "$bench_result"
rm -f .tmp/demo.log .tmp/bench.log

# Last, so its summary line closes the output.
step "cargo nextest run (profile $profile)"
cargo nextest run --workspace --locked --profile "$profile"
