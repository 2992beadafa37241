#!/usr/bin/env bash
# Build pgcdcws against PostgreSQL 15 and install it into that server's directories.
#   scripts/build.sh            make -j2 && make install
#   JOBS=4 scripts/build.sh     other parallelism
# Extra arguments are passed to both make calls (e.g. scripts/build.sh V=1).
set -euo pipefail
_LOG_TAG=build
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

[[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found: run scripts/install-deps.sh first"
[[ -f Makefile ]] || die "no Makefile in $ROOT"
command -v make >/dev/null || die "make not found: run scripts/install-deps.sh first"

log "building in $ROOT with PG_CONFIG=$PG_CONFIG ($("$PG_CONFIG" --version))"
make -j"${JOBS:-2}" PG_CONFIG="$PG_CONFIG" "$@"
log "installing into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension"
as_root make install PG_CONFIG="$PG_CONFIG" "$@"
pgcdcws_installed || die "make install finished but pgcdcws.so / pgcdcws.control are not where $PG_CONFIG says"
ok "pgcdcws built and installed"
