#!/usr/bin/env bash
# Install everything pgcdcws needs to build, test, demo and benchmark on Debian 12.
# Idempotent: when every package is already installed it only says so (set FORCE_APT=1 to run
# apt-get update + install anyway). Uses sudo when not run as root.
set -euo pipefail
_LOG_TAG=install-deps
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
    # server, headers, comparison plugin
    postgresql-15 postgresql-server-dev-15 postgresql-15-wal2json
    # WebSocket server on a libuv loop, JSON
    libwebsockets-dev libwebsockets-evlib-uv libuv1-dev rapidjson-dev
    # JWT verification and minting, keys and random secrets
    libjwt-dev libssl-dev
    # clients and test runners
    python3-websockets python3-psycopg2 python3-pytest libipc-run-perl libgtest-dev
    # the browser test (test_21_browsers.py): headless Chromium, about 80 MB to download
    chromium
    # toolchain
    clang build-essential g++ make
)

missing=()
for p in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)) && [[ ${FORCE_APT:-0} != 1 ]]; then
    ok "all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: this script targets Debian 12"
if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    [[ ${ID:-} == debian && ${VERSION_ID:-} == 12 ]] || warn "expected Debian 12, found ${PRETTY_NAME:-unknown}; continuing"
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
log "missing: ${missing[*]:-none (forced)}"
log "apt-get update"
as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update
log "apt-get install ${PACKAGES[*]}"
as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install "${PACKAGES[@]}"

# Check that what we rely on is really there.
[[ -x $PG_CONFIG ]] || die "$PG_CONFIG missing after install"
[[ -x $PGBIN/pg_recvlogical && -x $PGBIN/pgbench ]] || die "PostgreSQL 15 client programs missing"
"$PY" -c 'import websockets, psycopg2, pytest' || die "$PY cannot import websockets/psycopg2/pytest"
id postgres >/dev/null 2>&1 || die "the postgres OS user does not exist (postgresql-common should create it)"
ok "dependencies installed ($("$PGBIN/postgres" --version))"
