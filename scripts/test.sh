#!/usr/bin/env bash
# The single test command: installs dependencies, builds and installs pgcdcws, then runs
#   unit         make unit          (GoogleTest binary)
#   fuzz-smoke   make fuzz-smoke
#   installcheck make installcheck  (pg_regress on a temporary instance, as the postgres user)
#   integration  python3 -m pytest -v test/integration   (as the postgres user)
# and prints a summary. Exits non-zero if any stage fails.
#
#   scripts/test.sh                     everything, in that order
#   scripts/test.sh unit integration    only the named stages (deps/build only if named)
#
# Environment:
#   SKIP_DEPS=1          do not run scripts/install-deps.sh
#   KEEP_TMP=1           keep the writable copy of the tree (always kept when a stage failed)
#   PYTEST_ARGS="-x -k 'a or b'"   extra pytest arguments, split as a shell would (quotes kept)
#   TIMEOUT_UNIT / TIMEOUT_FUZZ / TIMEOUT_INSTALLCHECK / TIMEOUT_INTEGRATION   seconds per stage
#
# Postgres refuses to run as root, and the postgres OS user cannot write a root-owned checkout,
# so installcheck and the integration suite run as `postgres` in a copy of the tree that the user
# owns (when not root, they run as the current user in such a copy).
set -euo pipefail
_LOG_TAG="test"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ALL_STAGES=(deps build unit fuzz-smoke installcheck integration)
if (($# > 0)); then
    STAGES=("$@")
    for s in "${STAGES[@]}"; do
        [[ " ${ALL_STAGES[*]} " == *" $s "* ]] || die "unknown stage '$s' (stages: ${ALL_STAGES[*]})"
    done
else
    STAGES=("${ALL_STAGES[@]}")
fi

TIMEOUT_UNIT=${TIMEOUT_UNIT:-900}
TIMEOUT_FUZZ=${TIMEOUT_FUZZ:-900}
TIMEOUT_INSTALLCHECK=${TIMEOUT_INSTALLCHECK:-1200}
TIMEOUT_INTEGRATION=${TIMEOUT_INTEGRATION:-2700}

declare -A RESULT=() DURATION=() NOTE=()
WORK=""          # writable copy of the tree, made on first use
FAILED=0

cleanup() {
    local rc=$?
    quiet_cleanup_start
    if [[ -n $WORK && -d $WORK ]]; then
        stop_leftovers
        if ((FAILED)) || [[ ${KEEP_TMP:-0} == 1 ]]; then
            log "kept the test copy for inspection: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
install_traps cleanup

banner() { printf '\n%s==== %s ====%s\n' "$_C_B" "$*" "$_C_0"; }

# run_in_copy TIMEOUT CMD...: run CMD inside the writable copy as the cluster owner, with
# TMPDIR inside the copy so that every cluster a test creates lives there (see stop_leftovers).
run_in_copy() {
    local t=$1; shift
    if is_root; then
        (cd "$WORK" && timeout -k 30 "$t" runuser -u postgres -- \
            env HOME="$(getent passwd postgres | cut -d: -f6)" TMPDIR="$WORK/tmp" "$@")
    else
        (cd "$WORK" && TMPDIR="$WORK/tmp" timeout -k 30 "$t" "$@")
    fi
}

# Stop clusters that a killed or timed-out stage left running inside the copy.
stop_leftovers() {
    local pidfile
    while IFS= read -r pidfile; do
        warn "stopping a leftover cluster: $(dirname "$pidfile")"
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    done < <(find "$WORK" -name postmaster.pid 2>/dev/null)
}

make_copy() {
    [[ -n $WORK ]] && return 0
    WORK=$(mktemp -d /tmp/pgcdcws-test.XXXXXX)
    log "copying the tree to $WORK (writable by $(is_root && echo postgres || id -un))"
    tar -C "$ROOT" --exclude=./.git -cf - . | tar -C "$WORK" -xf -
    mkdir -p "$WORK/tmp"
    chmod 0755 "$WORK"
    give_to_pg "$WORK"
}

# ------------------------------------------------------------------ stages
# Each stage runs in a subshell with errexit on: the first failing command fails the stage.

stage_deps() {
    bash "$ROOT/scripts/install-deps.sh"
}

stage_build() {
    bash "$ROOT/scripts/build.sh"
}

stage_unit() {
    timeout -k 30 "$TIMEOUT_UNIT" make unit PG_CONFIG="$PG_CONFIG"
}

stage_fuzz_smoke() {
    timeout -k 30 "$TIMEOUT_FUZZ" make fuzz-smoke PG_CONFIG="$PG_CONFIG"
}

stage_installcheck() {
    pgcdcws_installed || { echo "pgcdcws is not installed: run the build stage first" >&2; return 1; }
    local rc=0
    run_in_copy "$TIMEOUT_INSTALLCHECK" make installcheck PG_CONFIG="$PG_CONFIG" || rc=$?
    if ((rc != 0)); then
        local f
        while IFS= read -r f; do
            banner "$f"
            head -n 3000 "$f"
        done < <(find "$WORK" -name regression.diffs -not -path '*/.git/*' 2>/dev/null)
        while IFS= read -r f; do
            banner "last 60 lines of $f"
            tail -n 60 "$f"
        done < <(find "$WORK" -name postmaster.log -path '*/log/*' 2>/dev/null)
        ((rc == 124)) && echo "installcheck timed out after ${TIMEOUT_INSTALLCHECK}s" >&2
    fi
    return "$rc"
}

stage_integration() {
    pgcdcws_installed || { echo "pgcdcws is not installed: run the build stage first" >&2; return 1; }
    [[ -d $WORK/test/integration ]] || { echo "no test/integration directory" >&2; return 1; }
    local rc=0 out=$WORK/pytest-output.txt extra=()
    # Shell-like splitting without eval: "-k 'a or b'" is two arguments, not four.
    if [[ -n ${PYTEST_ARGS:-} ]]; then
        mapfile -t extra < <("$PY" -c 'import shlex, sys; print("\n".join(shlex.split(sys.argv[1])))' "$PYTEST_ARGS") \
            || { echo "PYTEST_ARGS is not valid shell quoting: $PYTEST_ARGS" >&2; return 2; }
    fi
    run_in_copy "$TIMEOUT_INTEGRATION" "$PY" -m pytest -v -p no:cacheprovider "${extra[@]}" test/integration \
        2>&1 | tee "$out" || rc=${PIPESTATUS[0]}
    local summary
    summary=$(grep -E '^=+ .*( in [0-9.]+s).* =+$' "$out" | tail -n 1 || true)
    [[ -n $summary ]] && echo "$summary" >"$WORK/pytest-summary.txt"
    case $rc in
        0) ;;
        5) echo "pytest collected no tests" >&2 ;;
        124) echo "the integration suite timed out after ${TIMEOUT_INTEGRATION}s" >&2 ;;
    esac
    return "$rc"
}

run_stage() {
    local name=$1 fn=stage_${1//-/_} start rc
    banner "stage: $name"
    case $name in installcheck | integration) make_copy ;; esac
    start=$SECONDS
    set +e
    (set -e; "$fn")
    rc=$?
    set -e
    DURATION[$name]=$((SECONDS - start))
    [[ -n $WORK ]] && stop_leftovers
    if ((rc == 0)); then
        RESULT[$name]=PASS
        ok "stage $name passed (${DURATION[$name]}s)"
    else
        RESULT[$name]="FAIL"
        NOTE[$name]="exit $rc"
        ((rc == 124 || rc == 137)) && NOTE[$name]="timed out (exit $rc)"
        FAILED=1
        warn "stage $name FAILED with exit code $rc (${DURATION[$name]}s)"
    fi
    if [[ $name == integration && -f $WORK/pytest-summary.txt ]]; then
        NOTE[$name]="${NOTE[$name]:+${NOTE[$name]}; }$(sed -E 's/^=+ | =+$//g' "$WORK/pytest-summary.txt")"
    fi
    return 0
}

if [[ ${CI:-} == true ]]; then
    log "CI run on $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}"), $(nproc) cores, as $(id -un)"
fi

BLOCKED=""
for s in "${STAGES[@]}"; do
    if [[ $s == deps && ${SKIP_DEPS:-0} == 1 ]]; then
        RESULT[$s]=SKIP
        NOTE[$s]="SKIP_DEPS=1"
        continue
    fi
    if [[ -n $BLOCKED ]]; then
        RESULT[$s]=SKIP
        NOTE[$s]="not run: $BLOCKED failed"
        continue
    fi
    run_stage "$s"
    # Without dependencies or a build nothing after can give a meaningful answer.
    if [[ ${RESULT[$s]} != PASS && ($s == deps || $s == build) ]]; then BLOCKED=$s; fi
done

banner "pgcdcws test summary"
for s in "${ALL_STAGES[@]}"; do
    [[ -n ${RESULT[$s]:-} ]] || continue
    case ${RESULT[$s]} in
        PASS) c=$_C_G ;; FAIL) c=$_C_R ;; *) c=$_C_Y ;;
    esac
    dur=${DURATION[$s]:+${DURATION[$s]}s}
    printf '  %-13s %s%-4s%s %6s  %s\n' "$s" "$c" "${RESULT[$s]}" "$_C_0" "${dur:--}" "${NOTE[$s]:-}"
done
npass=0 nfail=0
for s in "${ALL_STAGES[@]}"; do
    case ${RESULT[$s]:-} in PASS) npass=$((npass + 1)) ;; FAIL) nfail=$((nfail + 1)) ;; esac
done
if ((FAILED)) || [[ -n $BLOCKED ]]; then
    FAILED=1
    printf '%sFAILED%s\n' "$_C_R" "$_C_0"
    echo "stages: $npass passed, $nfail failed"
    exit 1
fi
printf '%sALL STAGES PASSED%s\n' "$_C_G" "$_C_0"
echo "stages: $npass passed, $nfail failed"
