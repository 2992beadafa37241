# shellcheck shell=bash
# Shared helpers for scripts/*.sh and bench/run.sh. Source it; do not run it.
#
# Provides: log/warn/die, PGBIN/PG_CONFIG/PY, as_pg (run as the postgres OS user when root),
# free_port, pg_has_guc, and a throwaway-cluster API (tc_init / tc_start / tc_stop / tc_psql).

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PG_CONFIG=${PG_CONFIG:-$PGBIN/pg_config}
# Debian's python3-* packages are only visible to the system interpreter.
PY=/usr/bin/python3
export PATH="$PGBIN:$PATH"

_LOG_TAG=${_LOG_TAG:-$(basename "$0" .sh)}
if [[ -t 1 ]]; then _C_B=$'\e[1m'; _C_R=$'\e[31m'; _C_Y=$'\e[33m'; _C_G=$'\e[32m'; _C_0=$'\e[0m'
else _C_B=; _C_R=; _C_Y=; _C_G=; _C_0=; fi

log()  { printf '%s[%s]%s %s\n' "$_C_B" "$_LOG_TAG" "$_C_0" "$*"; }
ok()   { printf '%s[%s]%s %s%s%s\n' "$_C_B" "$_LOG_TAG" "$_C_0" "$_C_G" "$*" "$_C_0"; }
warn() { printf '%s[%s]%s %sWARNING: %s%s\n' "$_C_B" "$_LOG_TAG" "$_C_0" "$_C_Y" "$*" "$_C_0" >&2; }
die()  { printf '%s[%s]%s %sERROR: %s%s\n' "$_C_B" "$_LOG_TAG" "$_C_0" "$_C_R" "$*" "$_C_0" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as root: directly when root, else through sudo.
as_root() {
    if is_root; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $* (and sudo is not installed)"; fi
}

# Run a command as the unprivileged cluster owner: the `postgres` OS user when we are root
# (initdb refuses root), the current user otherwise. Runs from / so that a cwd the postgres
# user cannot read (e.g. /root) does not produce warnings.
as_pg() {
    if is_root; then (cd / && runuser -u postgres -- "$@")
    else (cd / && "$@"); fi
}

# Give a directory to the cluster owner.
give_to_pg() {
    if is_root; then chown -R postgres:postgres "$@"; fi
}

# free_port [preferred]: print the preferred TCP port if it is free on localhost, else any free one.
free_port() {
    "$PY" - "${1:-0}" <<'EOF'
import errno, socket, sys
def bindable(port):
    """True when port can be bound on 127.0.0.1 and (if this host has IPv6) on ::1."""
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.bind((addr, port))
        except OSError as e:
            if fam == socket.AF_INET6 and e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue
            return False
        finally:
            s.close()
    return True
want = int(sys.argv[1])
if want and bindable(want):
    print(want)
    sys.exit(0)
for _ in range(100):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if bindable(port):
        print(port)
        sys.exit(0)
sys.exit("no free port found")
EOF
}

# pg_has_guc NAME: true when this server binary knows the parameter.
pg_has_guc() {
    # (no early-exiting grep -q in a pipe: with pipefail the writer's SIGPIPE would count as failure)
    local names
    names=$("$PGBIN/postgres" --describe-config 2>/dev/null | cut -f1) || return 1
    grep -qx -- "$1" <<<"$names"
}

# output_plugin_libraries exists from 15.19 on (Debian 15.20 has it). Print a conf line that
# allows the given plugins, or nothing on older servers (where every plugin is allowed).
opl_conf_line() {
    if pg_has_guc output_plugin_libraries; then
        printf "output_plugin_libraries = '%s'\n" "$1"
    fi
}

pgcdcws_installed() {
    [[ -f "$("$PG_CONFIG" --pkglibdir)/pgcdcws.so" && -f "$("$PG_CONFIG" --sharedir)/extension/pgcdcws.control" ]]
}

# ---------------------------------------------------------------------------------------------
# Throwaway cluster. tc_init DIR PORT creates DIR/data (owned by the cluster owner), with the
# unix socket in DIR and the log in DIR/postgres.log. Extra postgresql.conf lines come on stdin.
# Sets TC_DIR, TC_PORT, TC_DATA, TC_LOG.
tc_init() {
    TC_DIR=$1; TC_PORT=$2; TC_DATA=$1/data; TC_LOG=$1/postgres.log
    give_to_pg "$TC_DIR"
    chmod 0755 "$TC_DIR"   # so root and the current user can reach the socket and log
    log "initdb $TC_DATA (port $TC_PORT, socket dir $TC_DIR)"
    as_pg "$PGBIN/initdb" -D "$TC_DATA" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$TC_DIR/initdb.log" 2>&1 \
        || { cat "$TC_DIR/initdb.log" >&2; die "initdb failed"; }
    {
        echo "# --- added by ${_LOG_TAG} ---"
        echo "port = $TC_PORT"
        echo "listen_addresses = 'localhost'"
        echo "unix_socket_directories = '$TC_DIR'"
        echo "logging_collector = off"
        cat
    } | as_pg tee -a "$TC_DATA/postgresql.conf" >/dev/null
}

tc_start() {
    log "starting postgres on port $TC_PORT"
    if ! as_pg "$PGBIN/pg_ctl" -D "$TC_DATA" -l "$TC_LOG" -w -t 120 start >/dev/null; then
        tail -n 40 "$TC_LOG" >&2 || true
        die "postgres did not start (log: $TC_LOG)"
    fi
}

tc_stop() {
    [[ -n ${TC_DATA:-} && -f $TC_DATA/postmaster.pid ]] || return 0
    log "stopping postgres"
    as_pg "$PGBIN/pg_ctl" -D "$TC_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
        || as_pg "$PGBIN/pg_ctl" -D "$TC_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}

# tc_teardown RC DIR: after a failure (RC != 0) show the server log's tail, then stop
# the throwaway cluster and remove DIR. For the EXIT traps of demo.sh and bench/run.sh.
tc_teardown() {
    if (($1 != 0)) && [[ -f ${TC_LOG:-/nonexistent} ]]; then
        echo "---- last lines of the server log ----" >&2
        tail -n 30 "$TC_LOG" >&2
    fi
    tc_stop
    rm -rf "$2"
}

# tc_psql [psql args...]: psql against the throwaway cluster, stopping at the first error.
tc_psql() {
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TC_DIR" -p "$TC_PORT" -U postgres -d postgres "$@"
}

# tc_val SQL: print a single value, unaligned.
tc_val() {
    tc_psql -At -c "$1"
}

# wait_until DEADLINE_SECONDS DESCRIPTION CMD...: poll CMD (every 0.1 s) until it succeeds.
wait_until() {
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS >= end)); then warn "timed out after ${secs}s waiting for: $what"; return 1; fi
        sleep 0.1
    done
}

# install_traps FUNCTION: run FUNCTION on exit, also when interrupted, terminated, hung up or
# when stdout goes away (e.g. `| head`). FUNCTION should begin with `quiet_cleanup_start`.
install_traps() {
    # shellcheck disable=SC2064  # the function name is meant to be expanded now
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    trap 'exit 141' PIPE
}
# Inside a cleanup function: no re-entry through signals, and writes to a closed pipe only fail.
quiet_cleanup_start() {
    trap '' PIPE INT TERM HUP
    set +e
}
