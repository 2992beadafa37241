#!/usr/bin/env bash
# pgcdcws broadcast benchmark (issue 8): N subscriber sockets on GET /ws?query=..., each with its own
# filter, on workloads where 1%, 10% and 100% of them match every change.
#
#   bench/broadcast/run.sh            the matrix: 100, 1,000, 10,000 subscribers x 1%, 10%, 100%
#   BENCH_QUICK=1 bench/broadcast/run.sh   smoke run: 100 subscribers, short phases (about two minutes)
#   bench/broadcast/run.sh --mock     check the harness against bench/broadcast/mock_server.py
#                                     (a polling stand-in, no pgcdcws needed; its numbers mean nothing)
#
# Environment (defaults in brackets):
#   BENCH_SUBSCRIBERS ["10000 1000 100"]  BENCH_MATCH ["1 10 100"] (percent)
#   BENCH_DURATION [8]                  seconds of the fixed-rate phase
#   BENCH_RATE [1000]                   fixed-rate phase: changes/s, capped so that ...
#   BENCH_FIXED_DELIVERIES [50000]      ... changes/s x recipients per change <= this (messages/s)
#   BENCH_BURST_ROWS [200000]           max-rate phase: rows, capped so that ...
#   BENCH_BURST_DELIVERIES [2000000]    ... rows x recipients per change <= this (messages) and
#   BENCH_BURST_PER_CLIENT [5000]       ... the frames each socket gets <= this (about 1.5 MB: well
#                                       inside the send queue, so a client that lags gets no 1013)
#   BENCH_BURST_SECONDS [15]            ... and rows x recipients <= what the fixed phase delivered in this
#                                       many seconds (so a slow engine makes no endless phase)
#   BENCH_PHASE_TIMEOUT [60]            seconds after the writer to wait for the last frame; then the
#                                       phase is reported incomplete and the cell's later phases skipped
#   BENCH_PING_INTERVAL [server default] pgcdcws.ping_interval (seconds)
#   BENCH_PERF [0]                      1: profile the pgcdcws server per cell (perf record; top symbols
#                                       in out/perf_<subscribers>_<match>.txt)
#   BENCH_TIME_BUDGET [660]             seconds; cells not started by then are reported as skipped
#   BENCH_CLIENT_QUEUE_KB [4096]        pgcdcws.client_queue_size
#   BENCH_RLS_ROLES [0]                 0: the sockets connect with pgcdcws.auth = trust as the bootstrap
#                                       superuser (no row security). R > 0: pgcdcws.auth = token, R login
#                                       roles with SELECT on bench_t under row security (a policy every row
#                                       passes, so every change is checked per role), socket i with role
#                                       i % R's token
#   BENCH_CLIENT [node]                 node: the sockets are Debian's ws in the Node.js load generator;
#                                       c: receiver.c (compiled here with gcc), a lean epoll client in a
#                                       child process, so that the latency at 10,000 sockets is the
#                                       server's and not the client's (ws pays 12-18 us per frame there)
#
# Each cell (subscribers x match): the load generator (loadgen.mjs, Node.js + Debian's node-ws)
# opens the sockets, waits for every "subscribed" frame, then runs two phases, each with a writer
# (pgbench, inserting into bench_t) and waits until every expected frame has arrived:
#   fixed  BENCH_RATE changes/s (single-row transactions) for BENCH_DURATION s: latency at a steady rate
#   max    the burst rows as fast as pgbench can insert them (multi-row INSERTs, 2 clients): throughput
#   txn    the same number of rows in ONE transaction: nothing is decoded before its commit, so
#          commit -> last frame is the pace of decoding, matching and delivery without the writer's
# Latency of a frame = its receive time - pg_xact_commit_timestamp(xid) (track_commit_timestamp=on).
# Results: bench/broadcast/out/results.jsonl (one JSON line per cell) and results.md (the table,
# also printed). Run as root (the cluster runs as the postgres OS user); keep other work off the
# machine while it runs.
set -euo pipefail
_LOG_TAG=bbench
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"

MOCK=0
for a in "$@"; do
    case $a in
        --mock) MOCK=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $a (see --help)" ;;
    esac
done

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    SUBSCRIBERS=${BENCH_SUBSCRIBERS:-100}
    DURATION=${BENCH_DURATION:-3}
    BURST_ROWS=${BENCH_BURST_ROWS:-20000}
    BURST_DELIVERIES=${BENCH_BURST_DELIVERIES:-200000}
else
    # the biggest first: if the time budget runs out, the cells it skips are the cheap ones
    SUBSCRIBERS=${BENCH_SUBSCRIBERS:-10000 1000 100}
    DURATION=${BENCH_DURATION:-8}
    BURST_ROWS=${BENCH_BURST_ROWS:-200000}
    BURST_DELIVERIES=${BENCH_BURST_DELIVERIES:-2000000}
fi
MATCH=${BENCH_MATCH:-1 10 100}
RATE=${BENCH_RATE:-1000}
FIXED_DELIVERIES=${BENCH_FIXED_DELIVERIES:-50000}
BURST_SECONDS=${BENCH_BURST_SECONDS:-15}
PHASE_TIMEOUT=${BENCH_PHASE_TIMEOUT:-60}
PING_INTERVAL=${BENCH_PING_INTERVAL:-}
TIME_BUDGET=${BENCH_TIME_BUDGET:-660}
CLIENT_QUEUE_KB=${BENCH_CLIENT_QUEUE_KB:-4096}
CLIENT=${BENCH_CLIENT:-node}
RLS_ROLES=${BENCH_RLS_ROLES:-0}
[[ $RLS_ROLES =~ ^[0-9]+$ ]] || die "BENCH_RLS_ROLES must be a number"
AUTH=trust
((RLS_ROLES > 0)) && AUTH=token
[[ $CLIENT == node || $CLIENT == c ]] || die "BENCH_CLIENT must be node or c"
if [[ $CLIENT == c ]]; then
    command -v gcc >/dev/null || die "gcc is missing (scripts/install-deps.sh installs it)"
fi
BURST_PER_CLIENT=${BENCH_BURST_PER_CLIENT:-5000}

is_root || die "run as root: the cluster runs as the postgres OS user and 10,000 sockets need a raised open-file limit"
[[ -x $PGBIN/pgbench && -x $PGBIN/psql ]] || die "PostgreSQL 15 binaries missing: run scripts/install-deps.sh"
command -v node >/dev/null || die "node is missing (apt-get install nodejs)"
if ! node -e 'require("/usr/share/nodejs/ws")' 2>/dev/null; then
    log "installing Debian's node-ws (the load generator's WebSocket client)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq node-ws >/dev/null \
        || die "apt-get install node-ws failed"
fi
if ((MOCK)); then
    "$PY" -c 'import websockets, psycopg2' 2>/dev/null || die "--mock needs python3-websockets and python3-psycopg2"
else
    pgcdcws_installed || die "pgcdcws is not installed (make && make install)"
fi

# 10,000 sockets on each side. Raising a hard limit needs CAP_SYS_RESOURCE, which a sandbox may
# not grant: then the soft limits go up to the hard one (the pgcdcws server raises its own soft
# limit to its hard limit at start, and runuser's pam_limits resets the soft one to 1024).
NOFILE=65536
ulimit -Hn "$NOFILE" 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 10100)) || warn "open-file limit $(ulimit -n): not enough for 10,000 sockets"

OUT=$HERE/out
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)

TMP=$(mktemp -d /tmp/pgcdcws-bbench.XXXXXX)
MOCK_PID=""
cleanup() {
    local rc=$?
    quiet_cleanup_start
    [[ -n $MOCK_PID ]] && kill "$MOCK_PID" 2>/dev/null
    tc_teardown "$rc" "$TMP"
    exit "$rc"
}
install_traps cleanup
if [[ $CLIENT == c ]]; then
    gcc -O2 -Wall -o "$TMP/receiver" "$HERE/receiver.c" || die "could not compile receiver.c"
fi

PG_PORT=$(free_port 0)
WS_PORT=$(free_port 12312)
CDC_CONF=""
if ((!MOCK)); then
    CDC_CONF="shared_preload_libraries = 'pgcdcws'
pgcdcws.port = $WS_PORT
pgcdcws.listen_addresses = '127.0.0.1'
pgcdcws.database = 'postgres'
pgcdcws.auth = $AUTH
pgcdcws.max_connections = 20000
pgcdcws.max_connections_per_role = 0
pgcdcws.client_queue_size = $CLIENT_QUEUE_KB
${PING_INTERVAL:+pgcdcws.ping_interval = $PING_INTERVAL}
$(opl_conf_line "pgoutput, pgcdcws")"
fi
tc_init "$TMP" "$PG_PORT" <<EOF
$CDC_CONF
wal_level = logical
track_commit_timestamp = on
max_replication_slots = 16
max_worker_processes = 32
shared_buffers = 1GB
max_wal_size = 16GB
min_wal_size = 1GB
checkpoint_timeout = 1h
autovacuum = off
EOF
# As tc_start, with the open-file limit raised (runuser's pam_limits set the soft one back to 1024;
# prlimit as the postgres user may raise it up to the hard limit).
log "starting postgres on port $TC_PORT (open files: $(ulimit -Hn))"
if ! as_pg prlimit --nofile="$(ulimit -Hn)":"$(ulimit -Hn)" "$PGBIN/pg_ctl" -D "$TC_DATA" -l "$TC_LOG" -w -t 120 start >/dev/null; then
    tail -n 40 "$TC_LOG" >&2 || true
    die "postgres did not start (log: $TC_LOG)"
fi
PM_PID=$(head -n1 "$TC_DATA/postmaster.pid")
PM_NOFILE=$(awk '/Max open files/ {print $4}' "/proc/$PM_PID/limits")
log "postmaster $PM_PID, open-file limit $PM_NOFILE"
((PM_NOFILE >= 10100)) || warn "the postmaster's open-file limit is $PM_NOFILE: the server cannot hold 10,000 sockets"

tc_psql <<'SQL'
CREATE TABLE bench_t (id bigserial PRIMARY KEY, k int NOT NULL, payload text NOT NULL);
SQL
if ((MOCK)); then
    "$PY" "$HERE/mock_server.py" --port "$WS_PORT" --pghost "$TMP" --pgport "$PG_PORT" 2>"$TMP/mock.err" &
    MOCK_PID=$!
    wait_until 20 "the mock server to listen" bash -c "exec 3<>/dev/tcp/127.0.0.1/$WS_PORT" 2>/dev/null \
        || { cat "$TMP/mock.err" >&2; die "mock server did not start"; }
else
    tc_psql -c "CREATE EXTENSION pgcdcws;"
fi
if ((RLS_ROLES > 0 && !MOCK)); then
    tc_psql <<SQL
ALTER TABLE bench_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY bench_visible ON bench_t FOR SELECT USING (k >= 0);
DO \$\$ BEGIN
    FOR i IN 1..$RLS_ROLES LOOP
        EXECUTE format('CREATE ROLE bench_r%s LOGIN', i);
        EXECUTE format('GRANT SELECT ON bench_t TO bench_r%s', i);
    END LOOP;
END \$\$;
SQL
    : >"$TMP/tokens.txt"
    for ((i = 1; i <= RLS_ROLES; i++)); do
        tc_psql -At -c "SET ROLE bench_r$i" -c "SELECT cdc_token('6 hours')" >>"$TMP/tokens.txt"
    done
    log "$RLS_ROLES roles under row security, one token each"
fi

ws_connections() { ss -Htn state established "( sport = :$WS_PORT )" 2>/dev/null | wc -l; }
no_ws_connections() { (($(ws_connections) == 0)); }

FAILURES=0
for n in $SUBSCRIBERS; do
    for pct in $MATCH; do
        m=$((100 / pct))
        if ((n % m)); then warn "skipping $n subscribers at $pct%: $n is not a multiple of $m"; continue; fi
        if ((SECONDS > TIME_BUDGET)); then
            warn "time budget of ${TIME_BUDGET}s spent: skipping $n subscribers at $pct%"
            printf '{"subscribers": %d, "match_percent": %d, "skipped": "time budget"}\n' "$n" "$pct" >>"$RESULTS"
            continue
        fi
        recipients=$((n * pct / 100))
        rate=$((FIXED_DELIVERIES / recipients))
        ((rate > RATE)) && rate=$RATE
        ((rate < 1)) && rate=1
        fixed_clients=1
        ((rate > 200)) && fixed_clients=2
        burst=$((BURST_DELIVERIES / recipients))
        ((burst > BURST_ROWS)) && burst=$BURST_ROWS
        # each socket receives pct% of the rows: keep that within its send queue
        per_client_cap=$((BURST_PER_CLIENT * 100 / pct))
        ((burst > per_client_cap)) && burst=$per_client_cap
        log "cell: $n subscribers, $pct% match ($recipients per change); fixed $rate changes/s for ${DURATION}s; then up to $burst rows at max rate, and in 1 transaction"
        wait_until 60 "the previous cell's sockets to close" no_ws_connections || true
        extra=()
        [[ $CLIENT == c ]] && extra+=(--client c --receiver "$TMP/receiver")
        ((RLS_ROLES > 0)) && extra+=(--tokens "$TMP/tokens.txt")
        ((MOCK)) && extra=(--server-pid "$MOCK_PID")
        perf_pid=""
        if [[ ${BENCH_PERF:-0} == 1 ]] && command -v perf >/dev/null; then
            server_pid=$(pgrep -P "$PM_PID" -f 'pgcdcws server' | head -n1 || true)
            if [[ -n $server_pid ]]; then
                perf record -q -F 299 -g -p "$server_pid" -o "$OUT/perf_${n}_$pct.data" >/dev/null 2>&1 &
                perf_pid=$!
            fi
        fi
        # --foreground: stay in this process group, so that an interrupt reaches the load generator
        if res=$(timeout --foreground 900 node "$HERE/loadgen.mjs" --port "$WS_PORT" --subscribers "$n" --match "$pct" \
            --pghost "$TMP" --pgport "$PG_PORT" --pgbin "$PGBIN" --postmaster-pid "$PM_PID" --workdir "$TMP" \
            --rate "$rate" --duration "$DURATION" --fixed-clients "$fixed_clients" \
            --burst-rows "$burst" --burst-seconds "$BURST_SECONDS" --phase-timeout "$PHASE_TIMEOUT" \
            "${extra[@]}" 2>"$TMP/loadgen.err"); then
            sed -n 's/^\[loadgen\] /    /p' "$TMP/loadgen.err"
            echo "$res" >>"$RESULTS"
            node -e '
                const r = JSON.parse(process.argv[1]);
                for (const p of r.phases) {
                    const l = p.latency_ms;
                    console.log(`    ${p.phase.padEnd(5)} ${p.rows} rows, ${p.frames}/${p.expected_frames} frames, ` +
                        `${Math.round(p.changes_per_s)} changes/s, ${Math.round(p.messages_per_s)} msgs/s, ` +
                        `p50 ${l.p50} ms, p99 ${l.p99} ms` + (p.missing_frames ? `  MISSING ${p.missing_frames}` : ""));
                }' "$res"
            if node -e 'const r = JSON.parse(process.argv[1]); process.exit(r.phases.some((p) => p.missing_frames !== 0 || p.sockets_closed || p.sockets_with_wrong_count || p.unknown_xid_frames) ? 1 : 0)' "$res"; then :; else
                warn "frames missing, misrouted or sockets closed in this cell (see $RESULTS)"
                FAILURES=$((FAILURES + 1))
            fi
        else
            rc=$?
            warn "load generator failed (exit $rc): $(tail -n 5 "$TMP/loadgen.err")"
            [[ -n $res ]] && echo "$res" >>"$RESULTS"
            [[ -z $res ]] && printf '{"subscribers": %d, "match_percent": %d, "error": %s}\n' "$n" "$pct" \
                "$(tail -n 3 "$TMP/loadgen.err" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s.trim())))')" >>"$RESULTS"
            FAILURES=$((FAILURES + 1))
        fi
        if [[ -n $perf_pid ]]; then
            kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true
            perf report -i "$OUT/perf_${n}_$pct.data" --no-children --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 40 >"$OUT/perf_${n}_$pct.txt" || true
            log "server profile: $OUT/perf_${n}_$pct.txt"
        fi
    done
done

META=$OUT/meta.json
node -e '
    const [file, ...kv] = process.argv.slice(1);
    const o = {};
    for (let i = 0; i < kv.length; i += 2) o[kv[i]] = kv[i + 1];
    require("fs").writeFileSync(file, JSON.stringify(o, null, 1));' "$META" \
    date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -n1)" \
    cores "$(nproc)" \
    loadavg_start "$LOAD_START" \
    postgres "$("$PGBIN/postgres" --version)" \
    pgcdcws "$( ((MOCK)) && echo "mock_server.py (harness check)" || git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no git)')" \
    node "$(node --version)" \
    ws "$(node -p 'require("/usr/share/nodejs/ws/package.json").version') (Debian node-ws)" \
    client "$( [[ $CLIENT == c ]] && echo 'bench/broadcast/receiver.c (epoll, one process)' || echo 'Debian ws in the Node.js load generator')" \
    auth "$( ((RLS_ROLES > 0)) && echo "token, $RLS_ROLES roles under row security" || echo 'trust, the bootstrap superuser (no row security)')" \
    client_queue_kb "$CLIENT_QUEUE_KB" \
    ping_interval "${PING_INTERVAL:-default}"
node "$HERE/report.mjs" "$RESULTS" "$META" | tee "$OUT/results.md"
if grep -q 'WARNING' "$TC_LOG" 2>/dev/null; then
    log "server log warnings (first 5):"
    grep 'WARNING' "$TC_LOG" | head -n 5
fi
log "results: $OUT/results.md (raw: $RESULTS)"
((FAILURES == 0)) || die "$FAILURES cell(s) failed or lost frames; see the warnings above"
ok "broadcast benchmark finished"
