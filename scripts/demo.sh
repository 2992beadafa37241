#!/usr/bin/env bash
# The pgcdcws demo: installs dependencies, builds and installs the extension, starts a throwaway
# PostgreSQL cluster with pgcdcws preloaded, opens a WebSocket stream on a new slot and shows live
# INSERT/UPDATE/DELETE/TRUNCATE changes arriving and being acknowledged. Ends by itself; exits 0
# when every change arrived and the slot's confirmed_flush_lsn followed the acks.
#
#   scripts/demo.sh
#   SKIP_BUILD=1 scripts/demo.sh      use the installed extension (no apt, no make)
#   DEMO_PAUSE=0 scripts/demo.sh      no pauses between statements
set -euo pipefail
_LOG_TAG=demo
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PAUSE=${DEMO_PAUSE:-1.5}
SLOT=demo

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "step 1/6: installing dependencies"
    bash "$ROOT/scripts/install-deps.sh"
    log "step 2/6: building and installing pgcdcws"
    bash "$ROOT/scripts/build.sh"
else
    log "steps 1-2 skipped (SKIP_BUILD=1)"
fi
pgcdcws_installed || die "pgcdcws is not installed (run without SKIP_BUILD=1)"

TMP=$(mktemp -d /tmp/pgcdcws-demo.XXXXXX)
CLIENT_PID=""
cleanup() {
    local rc=$?
    quiet_cleanup_start
    if [[ -n $CLIENT_PID ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then kill "$CLIENT_PID" 2>/dev/null; wait "$CLIENT_PID" 2>/dev/null; fi
    tc_teardown "$rc" "$TMP"
    exit "$rc"
}
install_traps cleanup

PG_PORT=$(free_port 0)
WS_PORT=$(free_port 12312)
log "step 3/6: creating a throwaway cluster in $TMP"
tc_init "$TMP" "$PG_PORT" <<EOF
shared_preload_libraries = 'pgcdcws'
wal_level = logical
$(opl_conf_line 'pgoutput, test_decoding, pgcdcws')
pgcdcws.port = $WS_PORT
pgcdcws.database = 'postgres'
EOF
tc_start

log "step 4/6: CREATE EXTENSION pgcdcws, a table, and the slot '$SLOT'"
tc_psql <<'SQL'
CREATE EXTENSION pgcdcws;
CREATE TABLE public.demo_items (
    id         int PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(10,2),
    tags       text[],
    in_stock   boolean DEFAULT true,
    updated_at timestamptz DEFAULT now()
);
SQL
echo "SELECT * FROM cdc_init('$SLOT');"
tc_psql -c "SELECT * FROM cdc_init('$SLOT');"
INIT_LSN=$(tc_val "SELECT confirmed_flush_lsn FROM cdc_slots() WHERE slot_name = '$SLOT'")

# pgcdcws.auth = token (the default): the client presents a token minted for the role.
TOKEN=$(tc_val "SELECT cdc_token()")
URL="ws://localhost:$WS_PORT/v1/lr/stream?slotName=$SLOT"
log "step 5/6: starting the WebSocket client: $URL (with a token from cdc_token())"
EXPECT=5   # transactions issued below
"$PY" -u "$ROOT/scripts/demo_client.py" --url "$URL&access_token=$TOKEN" --expect "$EXPECT" --timeout 90 \
    --ready-file "$TMP/client-ready" --slot "$SLOT" \
    --dsn "host=$TMP port=$PG_PORT dbname=postgres user=postgres" &
CLIENT_PID=$!
client_ready() {
    [[ -f $TMP/client-ready ]] && return 0
    kill -0 "$CLIENT_PID" 2>/dev/null || die "the client exited before connecting"
    return 1
}
wait_until 30 "the client to connect" client_ready || die "the client did not connect"

run() {
    printf '\n%s%s%s\n' "$_C_B" "postgres=# $1" "$_C_0"
    tc_psql -c "$1"
    sleep "$PAUSE"   # only so a viewer can follow; success is decided by the client
}
log "step 6/6: changing data (each statement is one transaction)"
run "INSERT INTO demo_items (id, name, price, tags) VALUES (1, 'apple', 0.50, '{fruit,red}'), (2, 'pear', 0.75, '{fruit}'), (3, 'banana', 0.25, NULL);"
run "UPDATE demo_items SET price = price * 2, updated_at = now() WHERE name = 'apple';"
run "BEGIN; INSERT INTO demo_items (id, name, price) VALUES (4, 'kiwi \"gold\"', 1.10); UPDATE demo_items SET in_stock = false WHERE id = 2; DELETE FROM demo_items WHERE id = 3; COMMIT;"
run "DELETE FROM demo_items WHERE id = 2;"
run "TRUNCATE demo_items;"

log "waiting for the client to receive and acknowledge all $EXPECT transactions"
rc=0
wait "$CLIENT_PID" || rc=$?
CLIENT_PID=""
((rc == 0)) || die "the client failed (exit $rc): changes did not arrive or were not acknowledged"

echo
log "cdc_slots() after the acks (confirmed_flush_lsn was $INIT_LSN right after cdc_init):"
tc_psql -c "SELECT slot_name, temporary, active, confirmed_flush_lsn, restart_lsn, retained_wal_bytes FROM cdc_slots();"
MOVED=$(tc_val "SELECT confirmed_flush_lsn > '$INIT_LSN'::pg_lsn FROM cdc_slots() WHERE slot_name = '$SLOT'")
[[ $MOVED == t ]] || die "confirmed_flush_lsn did not move past $INIT_LSN"
ok "demo finished: every change arrived live and confirmed_flush_lsn moved from $INIT_LSN on acks"
