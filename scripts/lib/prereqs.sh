# Shared by scripts/test.sh and scripts/demo.sh: messages, root/apt helpers, and the
# idempotent installs of what the tests and the demo need. Source it from the repo root.

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install them by hand"
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# The directory with initdb/pg_ctl/postgres: `pg_config --bindir`, else Debian's location
# for PostgreSQL 15 (the same search as tests/integration/support/pg.rs).
pg_bindir() {
    local dir
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
    elif [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        echo /usr/lib/postgresql/15/bin
    fi
}

ensure_postgres() {
    local bindir
    bindir=$(pg_bindir)
    if [ -z "$bindir" ] || [ ! -x "$bindir/psql" ] || [ ! -x "$bindir/pgbench" ] \
        || ! command -v psql >/dev/null 2>&1 || ! command -v pgbench >/dev/null 2>&1; then
        step "installing PostgreSQL 15 (server, psql, pgbench)"
        apt_install postgresql-15 postgresql-client-15
        bindir=$(pg_bindir)
        [ -n "$bindir" ] || die "PostgreSQL 15 server binaries still missing after apt-get install"
    fi
    # The tests run the server as `postgres` when they run as root.
    if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
        die "running as root needs the 'postgres' account (created by the postgresql-15 package)"
    fi
    echo "PostgreSQL: $("$bindir/postgres" --version) in $bindir" >&2
}

ensure_moto() {
    if [ -n "${PERSEUS_MOTO_SERVER:-}" ]; then
        [ -x "$PERSEUS_MOTO_SERVER" ] || die "PERSEUS_MOTO_SERVER=$PERSEUS_MOTO_SERVER is not executable"
        return
    fi
    if [ -x .venv/bin/moto_server ]; then
        return
    fi
    step "installing moto[server] (KMS emulator) into .venv"
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    if ! python3 -m venv .venv; then
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
    [ -x .venv/bin/moto_server ] || die "moto_server missing from .venv after pip install"
}

# psycopg 3 for the Python-driver test (server-side prepared statements through Perseus).
ensure_psycopg() {
    if .venv/bin/python -c 'import psycopg' >/dev/null 2>&1; then
        return
    fi
    step "installing psycopg (Python driver for the client tests) into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check 'psycopg[binary]>=3.1,<4'
}

ensure_rust_tools() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
    for component in rustfmt clippy; do
        if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
            step "adding the $component component"
            rustup component add "$component"
        fi
    done
    if ! cargo nextest --version >/dev/null 2>&1; then
        step "installing cargo-nextest"
        cargo install --locked cargo-nextest
    fi
}
