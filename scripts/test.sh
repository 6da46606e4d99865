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

# Last, so its summary line closes the output.
step "cargo nextest run (profile $profile)"
cargo nextest run --workspace --locked --profile "$profile"
