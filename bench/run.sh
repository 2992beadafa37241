#!/usr/bin/env bash
# pgcdcws end-to-end throughput benchmark against pg_recvlogical + wal2json and + pgoutput.
#
#   bench/run.sh               full run (500k rows in 1000-row transactions, 100k 1-row transactions, best of 3)
#   bench/run.sh --quick       small run (50k rows, 10k transactions, 1 trial) to check the machinery
#   bench/run.sh --build       run scripts/install-deps.sh and scripts/build.sh first
#   Environment: BENCH_ROWS_A, BENCH_TXNS_B, BENCH_TRIALS, BENCH_NO_CDC=1 (skip pgcdcws),
#                W2J_OPTS (default "-o format-version=1").
#
# One throwaway cluster (as the postgres OS user when root). For each workload the slots are
# created BEFORE the workload is written: one pgcdcws slot (cdc_init), and one wal2json and one
# pgoutput slot per trial (pg_recvlogical confirms what it receives, so each trial needs its own;
# the pgcdcws clients send no ack, so every trial re-reads the same slot from its start).
# Then every consumer drains its slot from the start to the workload's end LSN, timed:
#   pgcdcws   bench/ws_drain.mjs (Node.js + npm `ws`, JSON.parse of every message; also a receive-only run)
#             bench/ws_drain.py (Python websockets + json.loads of every message)
#   wal2json  pg_recvlogical --start -E <end> -o format-version=1 -f /dev/null
#   pgoutput  pg_recvlogical --start -E <end> -o proto_version=1 -o publication_names=bench_pub -f /dev/null
# changes/s = rows written / seconds. Results: a table on stdout and bench/out/results.md.
#
# The end LSN is pg_current_wal_insert_lsn() after the workload, followed by a one-row "fence"
# transaction, so a pgcdcws frame with nextlsn >= end always exists (pg_recvlogical stops at the
# end position by itself). The pgcdcws client therefore sees the rows plus at most the fence row.
# The Node client's dependency (ws, pinned in bench/package-lock.json) is installed with
# `npm ci` into bench/node_modules when it is missing or older than the lockfile.
set -euo pipefail
_LOG_TAG=bench
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib.sh
source "$ROOT/scripts/lib.sh"

ROWS_A=${BENCH_ROWS_A:-500000}
TXNS_B=${BENCH_TXNS_B:-100000}
TRIALS=${BENCH_TRIALS:-3}
W2J_OPTS=${W2J_OPTS:--o format-version=1}
DO_BUILD=0
for a in "$@"; do
    case $a in
        --quick) ROWS_A=${BENCH_ROWS_A:-50000}; TXNS_B=${BENCH_TXNS_B:-10000}; TRIALS=${BENCH_TRIALS:-1} ;;
        --build) DO_BUILD=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $a (see --help)" ;;
    esac
done
((ROWS_A % 1000 == 0 && ROWS_A > 0)) || die "BENCH_ROWS_A must be a positive multiple of 1000"
((TXNS_B % 2 == 0 && TXNS_B > 0)) || die "BENCH_TXNS_B must be a positive even number"

if ((DO_BUILD)); then
    bash "$ROOT/scripts/install-deps.sh"
    bash "$ROOT/scripts/build.sh"
fi
[[ -x $PGBIN/pg_recvlogical && -x $PGBIN/pgbench ]] || die "PostgreSQL 15 binaries missing: run scripts/install-deps.sh"
[[ -f $("$PG_CONFIG" --pkglibdir)/wal2json.so ]] || die "wal2json is not installed (postgresql-15-wal2json)"

HAVE_CDC=0
if [[ ${BENCH_NO_CDC:-0} != 1 ]]; then
    if pgcdcws_installed; then HAVE_CDC=1
    else warn "pgcdcws is not installed: benchmarking wal2json and pgoutput only (use --build to build it)"; fi
fi

OUT=$ROOT/bench/out
mkdir -p "$OUT"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.7 else 1)" "$LOAD_START"; then
    warn "load average is $LOAD_START before the benchmark: other work on this machine will skew the numbers"
fi
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

HAVE_NODE=0
if ((HAVE_CDC)); then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        warn "node or npm missing: no Node.js drain client (only the Python one)"
    elif ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a == 18 && b >= 14) ? 0 : 1)'; then
        warn "node $(node --version) is older than 18.14: no Node.js drain client (only the Python one)"
    elif [[ ! -f $ROOT/bench/node_modules/ws/package.json || $ROOT/bench/package-lock.json -nt $ROOT/bench/node_modules/.package-lock.json ]]; then
        log "installing the Node client's dependencies: (cd bench && npm ci --no-audit --no-fund)"
        if (cd "$ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error); then HAVE_NODE=1
        else warn "npm ci failed: no Node.js drain client (only the Python one)"; fi
    else
        HAVE_NODE=1
    fi
fi

TMP=$(mktemp -d /tmp/pgcdcws-bench.XXXXXX)
cleanup() {
    local rc=$?
    quiet_cleanup_start
    tc_teardown "$rc" "$TMP"
    exit "$rc"
}
install_traps cleanup

PG_PORT=$(free_port 0)
WS_PORT=$(free_port 12312)
PLUGINS="pgoutput, test_decoding, wal2json"
CDC_CONF=""
if ((HAVE_CDC)); then
    PLUGINS="$PLUGINS, pgcdcws"
    CDC_CONF="shared_preload_libraries = 'pgcdcws'
pgcdcws.port = $WS_PORT
pgcdcws.database = 'postgres'
# the consumers present no token; trust is accepted on the default loopback listener
pgcdcws.auth = trust"
fi
tc_init "$TMP" "$PG_PORT" <<EOF
$CDC_CONF
wal_level = logical
$(opl_conf_line "$PLUGINS")
max_replication_slots = 32
max_wal_senders = 16
max_worker_processes = 32
shared_buffers = 1GB
max_wal_size = 16GB
min_wal_size = 1GB
checkpoint_timeout = 1h
autovacuum = off
EOF
tc_start

tc_psql <<'SQL'
CREATE TABLE bench_a (id int PRIMARY KEY, a text, b bigint, c numeric, d timestamptz);
CREATE TABLE bench_b (id int PRIMARY KEY, a text, b bigint, c numeric, d timestamptz);
CREATE SEQUENCE bench_b_id_seq CACHE 1000;
CREATE TABLE bench_fence (id serial PRIMARY KEY, at timestamptz DEFAULT now());
CREATE PUBLICATION bench_pub FOR ALL TABLES;
SQL
if ((HAVE_CDC)); then tc_psql -c "CREATE EXTENSION pgcdcws;"; fi

FAILURES=0
CDC_SLOT="" W2J_SLOTS=() PGO_SLOTS=()

# create_slots SUFFIX: the slots for one workload, created before it is written.
create_slots() {
    local sfx=$1 t name tsfx
    W2J_SLOTS=() PGO_SLOTS=() CDC_SLOT=""
    if ((HAVE_CDC)); then
        CDC_SLOT=bench_cdc$sfx
        log "creating slot $CDC_SLOT: SELECT * FROM cdc_init('$CDC_SLOT')"
        if ! tc_psql -c "SELECT * FROM cdc_init('$CDC_SLOT');"; then
            warn "cdc_init failed: no pgcdcws numbers for this workload"
            CDC_SLOT=""
            FAILURES=$((FAILURES + 1))
        fi
    fi
    for ((t = 1; t <= TRIALS; t++)); do
        tsfx=""
        ((t > 1)) && tsfx=_t$t
        name=bench_w2j$sfx$tsfx
        tc_val "SELECT slot_name FROM pg_create_logical_replication_slot('$name', 'wal2json')" >/dev/null
        W2J_SLOTS+=("$name")
        name=bench_pgo$sfx$tsfx
        tc_val "SELECT slot_name FROM pg_create_logical_replication_slot('$name', 'pgoutput')" >/dev/null
        PGO_SLOTS+=("$name")
    done
    log "created slots: ${CDC_SLOT:+$CDC_SLOT }${W2J_SLOTS[*]} ${PGO_SLOTS[*]}"
}

drop_slots() {
    if [[ -n $CDC_SLOT ]]; then
        wait_until 60 "slot $CDC_SLOT to be released" slot_idle "$CDC_SLOT" || true
        tc_psql -c "SELECT cdc_drop('$CDC_SLOT');" >/dev/null || warn "cdc_drop($CDC_SLOT) failed"
    fi
    tc_psql -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench\_w2j%' OR slot_name LIKE 'bench\_pgo%';" >/dev/null
}

slot_idle() {
    [[ $(tc_val "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1' AND active") == 0 &&
       $(tc_val "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcdcws decoder'") == 0 ]]
}

# finish_workload: END_LSN = insert position after the workload, then the fence transaction.
finish_workload() {
    END_LSN=$(tc_val "SELECT pg_current_wal_insert_lsn()")
    tc_psql -c "INSERT INTO bench_fence DEFAULT VALUES;"
    log "end LSN $END_LSN; checkpoint so that it does not overlap the drains"
    tc_psql -c "CHECKPOINT;"
}

# record WORKLOAD CONSUMER TRIAL ROWS JSON_RESULT_OR_EMPTY [ERROR]
record() {
    "$PY" - "$@" >>"$RESULTS" <<'EOF'
import json, sys
wl, consumer, trial, rows, res = sys.argv[1:6]
err = sys.argv[6] if len(sys.argv) > 6 else None
out = {"workload": wl, "consumer": consumer, "trial": int(trial), "rows": int(rows)}
if res:
    out.update(json.loads(res))
if err:
    out["error"] = err
print(json.dumps(out))
EOF
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" "$1" "$2"; }

# drain_recvlogical WORKLOAD CONSUMER TRIAL ROWS SLOT OPTS...
drain_recvlogical() {
    local wl=$1 consumer=$2 trial=$3 rows=$4 slot=$5; shift 5
    local t0 t1 secs err=$TMP/recvlogical.err
    t0=$(now)
    if timeout 900 "$PGBIN/pg_recvlogical" -h "$TMP" -p "$PG_PORT" -U postgres -d postgres --no-loop \
        --slot "$slot" --start -E "$END_LSN" "$@" -f /dev/null 2>"$err"; then
        t1=$(now)
        secs=$(elapsed "$t0" "$t1")
        record "$wl" "$consumer" "$trial" "$rows" "{\"seconds\": $secs}"
        printf '    %-12s trial %d: %8.3f s  %10.0f changes/s\n' "$consumer" "$trial" "$secs" "$("$PY" -c "print($rows/$secs)")"
    else
        warn "$consumer drain of $slot failed: $(tail -n 3 "$err")"
        record "$wl" "$consumer" "$trial" "$rows" "" "$(tail -n 1 "$err")"
        FAILURES=$((FAILURES + 1))
    fi
}

# drain_cdc WORKLOAD CONSUMER TRIAL ROWS CMD...: CMD prints one JSON result line.
drain_cdc() {
    local wl=$1 consumer=$2 trial=$3 rows=$4; shift 4
    local res err=$TMP/cdc.err
    if ! wait_until 60 "slot $CDC_SLOT to be released by the previous client" slot_idle "$CDC_SLOT"; then
        record "$wl" "$consumer" "$trial" "$rows" "" "slot still active before the drain"
        FAILURES=$((FAILURES + 1))
        return 0
    fi
    if res=$(timeout 900 "$@" 2>"$err"); then
        local changes secs
        changes=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['changes'])" "$res")
        secs=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['seconds'])" "$res")
        if ((changes < rows || changes > rows + 1)); then
            warn "$consumer received $changes changes, expected $rows (+1 fence row)"
            record "$wl" "$consumer" "$trial" "$rows" "$res" "received $changes changes, expected $rows"
            FAILURES=$((FAILURES + 1))
        else
            record "$wl" "$consumer" "$trial" "$rows" "$res"
        fi
        printf '    %-12s trial %d: %8.3f s  %10.0f changes/s  (%s)\n' "$consumer" "$trial" "$secs" "$("$PY" -c "print($rows/$secs)")" \
            "$("$PY" -c "import json,sys; r = json.loads(sys.argv[1]); print(f\"{r['changes']} changes, {r['messages']} messages, client CPU {r['cpu_seconds']:.3f} s\")" "$res")"
    else
        warn "$consumer drain failed: $(tail -n 3 "$err")"
        record "$wl" "$consumer" "$trial" "$rows" "" "$(tail -n 1 "$err")"
        FAILURES=$((FAILURES + 1))
    fi
}

# drain_all WORKLOAD ROWS: every consumer, TRIALS times, interleaved.
drain_all() {
    local wl=$1 rows=$2 t url
    local -a rec
    url="ws://localhost:$WS_PORT/v1/lr/stream?slotName=$CDC_SLOT"
    for ((t = 1; t <= TRIALS; t++)); do
        log "workload $wl: trial $t of $TRIALS"
        if [[ -n $CDC_SLOT ]]; then
            if ((HAVE_NODE)); then
                drain_cdc "$wl" cdc_node "$t" "$rows" node "$ROOT/bench/ws_drain.mjs" --host localhost --port "$WS_PORT" --slot "$CDC_SLOT" --end-lsn "$END_LSN"
                drain_cdc "$wl" cdc_node_raw "$t" "$rows" node "$ROOT/bench/ws_drain.mjs" --host localhost --port "$WS_PORT" --slot "$CDC_SLOT" --end-lsn "$END_LSN" --no-parse
            fi
            rec=()
            ((t == 1)) && rec=(--record "$OUT/frames_$wl.bin")
            drain_cdc "$wl" cdc_py "$t" "$rows" "$PY" "$ROOT/bench/ws_drain.py" --url "$url" --end-lsn "$END_LSN" "${rec[@]}"
        fi
        # shellcheck disable=SC2086
        drain_recvlogical "$wl" wal2json "$t" "$rows" "${W2J_SLOTS[$((t - 1))]}" $W2J_OPTS
        drain_recvlogical "$wl" pgoutput "$t" "$rows" "${PGO_SLOTS[$((t - 1))]}" -o proto_version=1 -o publication_names=bench_pub
    done
    # Parse-only ceilings on the recorded pgcdcws messages.
    if [[ -s $OUT/frames_$wl.bin ]]; then
        log "workload $wl: parse-only throughput on the $(du -h "$OUT/frames_$wl.bin" | cut -f1) of recorded messages"
        local res
        res=$("$PY" "$ROOT/bench/parse_bench.py" "$OUT/frames_$wl.bin") && record "$wl" parse_py 1 "$rows" "$res"
        if ((HAVE_NODE)); then
            res=$(node "$ROOT/bench/ws_drain.mjs" --replay "$OUT/frames_$wl.bin") && record "$wl" parse_node 1 "$rows" "$res"
        fi
    fi
}

# ---------------------------------------------------------------- workload A
log "workload A: $ROWS_A rows in $((ROWS_A / 1000)) transactions of 1000 rows"
create_slots ""
T0=$(now)
PGOPTIONS="-c synchronous_commit=off" tc_psql <<SQL
DO \$\$
BEGIN
  FOR i IN 0..$((ROWS_A / 1000 - 1)) LOOP
    INSERT INTO bench_a (id, a, b, c, d)
      SELECT g, md5(g::text), g::bigint * 1000003, g * 1.25, now() FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g;
    COMMIT;
  END LOOP;
END
\$\$;
SQL
T1=$(now)
record A generate 1 "$ROWS_A" "{\"seconds\": $(elapsed "$T0" "$T1")}"
finish_workload
log "workload A written in $(elapsed "$T0" "$T1") s; WAL to decode: $(tc_val "SELECT pg_size_pretty(pg_wal_lsn_diff('$END_LSN', min(restart_lsn))) FROM pg_replication_slots")"
drain_all A "$ROWS_A"
drop_slots

# ---------------------------------------------------------------- workload B
log "workload B: $TXNS_B single-row transactions (pgbench, 2 clients)"
create_slots _b
cat >"$TMP/b.sql" <<'EOF'
INSERT INTO bench_b (id, a, b, c, d) VALUES (nextval('bench_b_id_seq'), md5(random()::text), (random() * 1e12)::bigint, round((random() * 1e6)::numeric, 2), now());
EOF
chmod 0644 "$TMP/b.sql"
T0=$(now)
PGOPTIONS="-c synchronous_commit=off" "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -t $((TXNS_B / 2)) -f "$TMP/b.sql" \
    -h "$TMP" -p "$PG_PORT" -U postgres postgres >"$TMP/pgbench.out" 2>&1 || { cat "$TMP/pgbench.out" >&2; die "pgbench failed"; }
T1=$(now)
record B generate 1 "$TXNS_B" "{\"seconds\": $(elapsed "$T0" "$T1")}"
[[ $(tc_val "SELECT count(*) FROM bench_b") == "$TXNS_B" ]] || die "bench_b does not hold $TXNS_B rows"
finish_workload
log "workload B written in $(elapsed "$T0" "$T1") s; WAL to decode: $(tc_val "SELECT pg_size_pretty(pg_wal_lsn_diff('$END_LSN', min(restart_lsn))) FROM pg_replication_slots")"
drain_all B "$TXNS_B"
drop_slots

# ---------------------------------------------------------------- report
META=$OUT/meta.json
"$PY" - "$META" <<EOF
import json, subprocess, sys, platform
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
json.dump({
    "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"),
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p' | head -n1") or platform.processor(),
    "cores": int(sh("nproc") or 0),
    "mem": sh("free -h | awk '/^Mem:/ {print \$2}'"),
    "loadavg_start": "$LOAD_START",
    "postgres": sh("$PGBIN/postgres --version"),
    "wal2json": sh("dpkg-query -W -f='\${Version}' postgresql-15-wal2json"),
    "pgcdcws": sh("git -C '$ROOT' describe --always --dirty 2>/dev/null") or "(no git commit)",
    "pgcdcws_installed": bool($HAVE_CDC),
    "node": sh("node --version") if $HAVE_NODE else "",
    "ws": sh("node -p \"require('$ROOT/bench/node_modules/ws/package.json').version\"") if $HAVE_NODE else "",
    "rows_a": $ROWS_A, "txns_b": $TXNS_B, "trials": $TRIALS,
    "w2j_opts": "$W2J_OPTS",
}, open(sys.argv[1], "w"), indent=1)
EOF
"$PY" "$ROOT/bench/report.py" "$RESULTS" "$META" "$OUT/results.md"
log "results: $OUT/results.md (raw: $RESULTS)"
if ((FAILURES)); then
    die "$FAILURES drain(s) or checks failed; see the warnings above"
fi
ok "benchmark finished"
