"""Snapshot hardening (issue: hardening, parts 1, 2, 3, 5 first bullet, 6 cdc_slots/cdc_snapshot).

1. Nothing a client controls runs with the worker's privileges: the temporary-domain
   escalation, lookups, privilege checks and "after" input run as the reading role in a
   security-restricted operation, for a REPLICATION cdc_init() caller and a superuser one; the
   reading role is the session user too (session_user, is_superuser), also after a cancel.
2. No lock outlives a read: ALTER TABLE with lock_timeout right after 200/400/403/404, and a
   403 is answered while another session holds ACCESS EXCLUSIVE on the table.
3. Held snapshots are short and optional: pgcdcws.snapshot_idle_timeout, cdc_init(snapshot =>
   false), CREATE INDEX CONCURRENTLY finishing once no snapshot is held; unused temporary slots
   are dropped after 60 s.
5. A client that stops reading a large reply does not hold up other reads of the same slot;
   a read the worker never answered (it ended) gets a 410 that says why.
6. cdc_slots() and cdc_snapshot() need REPLICATION or superuser.
"""

import asyncio
import json
import os
import socket
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

from cdcws import StreamClient, apoll
from conftest import wait_for
from test_13_snapshot import snap_error, snap_post, snap_rows

REPL_ROLE = "hard_repl"        # LOGIN REPLICATION, not superuser: calls cdc_init()
ATTACKER = "hard_attacker"     # LOGIN only
NOBODY = "hard_nobody"         # LOGIN only, never owns anything
CALLERS = ["postgres", REPL_ROLE]


@pytest.fixture(scope="module")
def roles(cluster):
    for role, attrs in ((REPL_ROLE, "LOGIN REPLICATION"), (ATTACKER, "LOGIN"), (NOBODY, "LOGIN")):
        cluster.sql(f"CREATE ROLE {role} {attrs}")
    yield
    for role in (REPL_ROLE, ATTACKER, NOBODY):
        cluster.sql(f"DROP OWNED BY {role}")
        cluster.sql(f"DROP ROLE {role}")


@pytest.fixture
def slot_as(cluster, roles):
    """slot_as(role, name, **kw) -> (slot, lsn, snapshot_name) from cdc_init() called by role."""
    made = []

    def make(role, name, snapshot=True, temporary=False):
        conn = cluster.connect(user=role)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT slot_name, lsn::text, snapshot_name "
                            "FROM cdc_init(%s, temporary => %s, snapshot => %s)", (name, temporary, snapshot))
                row = cur.fetchone()
        finally:
            conn.close()
        made.append(name)
        assert row[0] == name
        return row

    yield make
    for name in made:
        cluster.drop_slot_quietly(name)


def read_req(slot, table, **kw):
    return dict({"slotName": slot, "table": table}, **kw)


def worker_locks(cluster, relation):
    """Locks any pgcdcws snapshot worker holds on `relation` (a regclass text)."""
    return cluster.sql("SELECT l.pid, l.mode FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                       "WHERE a.backend_type = 'pgcdcws snapshot' AND l.locktype = 'relation' "
                       "AND l.relation = %s::regclass", (relation,))


def alter_within(cluster, statement, lock_timeout="2s"):
    """Runs a DDL statement with lock_timeout on a new session (fails the test if it times out)."""
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = '{lock_timeout}'")
            cur.execute(statement)
    finally:
        conn.close()


# ------------------------------------------------------ 1. whose privileges run what
@pytest.mark.parametrize("caller", CALLERS)
def test_temporary_domain_escalation_runs_nothing(cluster, slot_as, caller):
    """The issue's exact escalation: a LOGIN-only role's temporary domain whose CHECK runs
    COPY ... TO PROGRAM. The read is refused before any of its code runs; no marker file."""
    marker = os.path.join(cluster.tmpdir, f"hard_marker_{caller}.txt")
    slot = slot_as(caller, f"hard_esc_{caller}")[0]
    attacker = cluster.connect(user=ATTACKER)  # temporary objects live as long as this session
    try:
        with attacker.cursor() as cur:
            cur.execute("CREATE FUNCTION pg_temp.ev(int) RETURNS bool LANGUAGE sql AS "
                        f"$$ copy (select 1) to program 'id > {marker}'; select true $$")
            cur.execute("CREATE DOMAIN pg_temp.dd AS int CHECK (pg_temp.ev(value))")
            cur.execute("CREATE TEMP TABLE tt (k pg_temp.dd)")
            cur.execute("GRANT SELECT ON tt TO PUBLIC")
            cur.execute("CREATE TEMP VIEW tv AS SELECT pg_temp.ev(1) AS k")
            cur.execute("GRANT SELECT ON tv TO PUBLIC")
            cur.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")
            nsp = cur.fetchone()[0]
        for table in (f"{nsp}.tt", f"{nsp}.tv"):
            r = snap_post(cluster.ws_port, read_req(slot, table, order_by={"column": "k"}, after="1"))
            assert not os.path.exists(marker), f"the attacker's code ran: {open(marker).read()!r}"
            message = r.json()["error"]
            if caller == "postgres":
                # A superuser may look into any schema: the temporary object itself is refused.
                assert r.status == 400, r
                assert f"{table} is a temporary table or view of another session" in message, message
            else:
                # Another session's temporary schema is not even visible to the role.
                assert r.status == 403, r
                assert message == f"permission denied for schema {nsp}", message
    finally:
        attacker.close()
    assert not os.path.exists(marker)


@pytest.mark.parametrize("caller", CALLERS)
def test_after_input_runs_as_reading_role_restricted(cluster, slot_as, caller):
    """A domain CHECK reached through "after" runs as the role that called cdc_init(), inside a
    security-restricted operation (SET ROLE is refused there, even for a superuser); for a REPLICATION caller COPY ... TO PROGRAM is refused and writes nothing."""
    marker = os.path.join(cluster.tmpdir, f"hard_marker_after_{caller}.txt")
    cluster.sql(f"CREATE SCHEMA hard_evil AUTHORIZATION {ATTACKER}")
    try:
        attacker = cluster.connect(user=ATTACKER)
        try:
            with attacker.cursor() as cur:
                cur.execute("""
                    CREATE FUNCTION hard_evil.probe(int) RETURNS bool LANGUAGE plpgsql AS $$
                    DECLARE set_role text := 'allowed';
                    BEGIN
                      BEGIN
                        PERFORM set_config('role', current_user, true);
                      EXCEPTION WHEN others THEN set_role := sqlerrm;
                      END;
                      RAISE EXCEPTION 'check ran as %; SET ROLE: %', current_user, set_role;
                    END $$""")
                cur.execute("CREATE DOMAIN hard_evil.probed AS int CHECK (hard_evil.probe(value))")
                cur.execute(f"""
                    CREATE FUNCTION hard_evil.ev(int) RETURNS bool LANGUAGE plpgsql AS $$
                    BEGIN
                      COPY (SELECT 1) TO PROGRAM 'id > {marker}';
                      RETURN true;
                    END $$""")
                cur.execute("CREATE DOMAIN hard_evil.dd AS int CHECK (hard_evil.ev(value))")
                cur.execute("CREATE TABLE hard_evil.t (p hard_evil.probed, k hard_evil.dd)")
                cur.execute("GRANT USAGE ON SCHEMA hard_evil TO PUBLIC")
                cur.execute("GRANT SELECT ON hard_evil.t TO PUBLIC")
        finally:
            attacker.close()
        slot = slot_as(caller, f"hard_after_{caller}")[0]

        if caller == "postgres":
            # A superuser reading role runs no code of another role: refused before the input.
            for column in ("p", "k"):
                msg = snap_error(cluster.ws_port, read_req(slot, "hard_evil.t", order_by={"column": column},
                                                           after="1"), 403)
                assert msg.startswith("refused: the slot's reading role postgres is a superuser and type "
                                      f'hard_evil.{"probed" if column == "p" else "dd"} (of column "{column}", '
                                      f"used to read \"after\") is owned by role {ATTACKER}"), msg
        else:
            msg = snap_error(cluster.ws_port, read_req(slot, "hard_evil.t", order_by={"column": "p"}, after="1"),
                             400)
            assert msg.startswith('invalid "after" value for column "p": '), msg
            assert (f'check ran as {caller}; SET ROLE: cannot set parameter "role" within '
                    "security-restricted operation") in msg, msg

        if caller == REPL_ROLE:
            msg = snap_error(cluster.ws_port, read_req(slot, "hard_evil.t", order_by={"column": "k"}, after="1"),
                             400)
            assert "pg_execute_server_program" in msg, msg
            assert not os.path.exists(marker), f"COPY TO PROGRAM ran: {open(marker).read()!r}"
        # Without "after", no input function runs: the (empty) table reads fine.
        assert snap_rows(cluster.ws_port, read_req(slot, "hard_evil.t", order_by={"column": "k"})) == []
    finally:
        cluster.sql("DROP SCHEMA hard_evil CASCADE")
    assert not os.path.exists(marker)


def test_keyset_operator_is_the_ordering_one(cluster, slot_as):
    """A better-matching '>' operator visible on the search_path (here: for a domain type, in
    public) does not replace the btree ordering operator in the keyset condition."""
    cluster.sql("CREATE DOMAIN hard_key AS int")
    cluster.sql("CREATE FUNCTION public.hard_always(hard_key, hard_key) RETURNS bool LANGUAGE sql "
                "AS 'select true'")
    cluster.sql("CREATE OPERATOR public.> (LEFTARG = hard_key, RIGHTARG = hard_key, "
                "FUNCTION = public.hard_always)")
    cluster.sql("CREATE TABLE hard_keyset (id hard_key PRIMARY KEY)")
    cluster.sql("INSERT INTO hard_keyset SELECT g FROM generate_series(1, 5) g")
    cluster.sql(f"GRANT SELECT ON hard_keyset TO {REPL_ROLE}")
    try:
        # The hijack works in plain SQL...
        assert cluster.sql1("SELECT count(*) FROM hard_keyset WHERE id > 3::hard_key") == 5
        slot = slot_as(REPL_ROLE, "hard_keyset")[0]
        rows = snap_rows(cluster.ws_port, read_req(slot, "hard_keyset", order_by={"column": "id"}, after="3"))
        assert [r["id"] for r in rows] == [4, 5]
        rows = snap_rows(cluster.ws_port, read_req(slot, "hard_keyset", order_by={"column": "id", "order": "desc"},
                                                   after="3"))
        assert [r["id"] for r in rows] == [2, 1]
    finally:
        cluster.sql("DROP TABLE hard_keyset")
        cluster.sql("DROP OPERATOR public.> (hard_key, hard_key)")
        cluster.sql("DROP FUNCTION public.hard_always(hard_key, hard_key)")
        cluster.sql("DROP DOMAIN hard_key")


# ------------------------------------------------------------- 2. no lock outlives a read
def test_no_lock_outlives_a_read(cluster, slot_as):
    cluster.sql("CREATE TABLE hard_lock (id int PRIMARY KEY, v text)")
    cluster.sql("CREATE TABLE hard_lock_closed (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO hard_lock SELECT g, 'v' || g FROM generate_series(1, 3) g")
    cluster.sql(f"GRANT SELECT ON hard_lock TO {REPL_ROLE}")
    log_offset = cluster.log_size()
    try:
        slot = slot_as(REPL_ROLE, "hard_lock")[0]
        # 200
        rows = snap_rows(cluster.ws_port, read_req(slot, "hard_lock", order_by={"column": "id"}))
        assert [r["id"] for r in rows] == [1, 2, 3]
        assert worker_locks(cluster, "hard_lock") == []
        alter_within(cluster, "ALTER TABLE hard_lock ADD COLUMN c1 int")
        # 400 after the table was found (and locked): unknown column
        msg = snap_error(cluster.ws_port, read_req(slot, "hard_lock", order_by={"column": "nope"}), 400)
        assert 'column "nope" does not exist' in msg, msg
        assert worker_locks(cluster, "hard_lock") == []
        alter_within(cluster, "ALTER TABLE hard_lock ADD COLUMN c2 int")
        # 403
        msg = snap_error(cluster.ws_port, read_req(slot, "hard_lock_closed"), 403)
        assert msg == f"permission denied for table public.hard_lock_closed (role {REPL_ROLE}, which called cdc_init())"
        assert worker_locks(cluster, "hard_lock_closed") == []
        alter_within(cluster, "ALTER TABLE hard_lock_closed ADD COLUMN c1 int")
        # 404
        msg = snap_error(cluster.ws_port, read_req(slot, "hard_lock_missing"), 404)
        assert msg == 'table "hard_lock_missing" does not exist', msg
        alter_within(cluster, "ALTER TABLE hard_lock ADD COLUMN c3 int")
        rows = snap_rows(cluster.ws_port, read_req(slot, "hard_lock", order_by={"column": "id"}))
        assert [r["id"] for r in rows] == [1, 2, 3]
        alter_within(cluster, "TRUNCATE hard_lock")
        # Ending every read with a rollback leaks nothing (no "resource/snapshot leak" warnings).
        assert "WARNING" not in cluster.log_since(log_offset), cluster.log_since(log_offset)
    finally:
        cluster.sql("DROP TABLE hard_lock, hard_lock_closed")


def test_refusal_takes_no_lock(cluster, slot_as):
    """A 403 is decided before any lock: it comes back while another session holds ACCESS
    EXCLUSIVE on the table, and pg_authid is never locked."""
    cluster.sql("CREATE TABLE hard_secret (id int)")
    holder = cluster.connect(autocommit=False)
    try:
        slot = slot_as(REPL_ROLE, "hard_secret")[0]
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE hard_secret IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        r = snap_post(cluster.ws_port, read_req(slot, "hard_secret"), timeout=60)
        assert r.status == 403, r
        assert r.json()["error"] == (f"permission denied for table public.hard_secret (role {REPL_ROLE}, "
                                     "which called cdc_init())")
        assert time.monotonic() - t0 < 30
        msg = snap_error(cluster.ws_port, read_req(slot, "pg_catalog.pg_authid"), 403)
        assert msg.startswith("permission denied for table pg_catalog.pg_authid"), msg
        assert worker_locks(cluster, "pg_authid") == []
        # another user's schema without USAGE: 403 too, not a lookup as the superuser
        cluster.sql("CREATE SCHEMA hard_private")
        cluster.sql("CREATE TABLE hard_private.t (id int)")
        msg = snap_error(cluster.ws_port, read_req(slot, "hard_private.t"), 403)
        assert msg == "permission denied for schema hard_private", msg
    finally:
        holder.rollback()
        holder.close()
        cluster.sql("DROP SCHEMA IF EXISTS hard_private CASCADE")
        cluster.sql("DROP TABLE hard_secret")


# ------------------------------------------------- 3. held snapshots are short and optional
def create_index_concurrently(cluster, table, index, statement_timeout):
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = '{statement_timeout}'")
            cur.execute(f"CREATE INDEX CONCURRENTLY {index} ON {table} (v)")
    finally:
        conn.close()


def test_idle_snapshot_is_released(cluster, slot_as):
    cluster.sql("CREATE TABLE hard_idle (id int PRIMARY KEY, v int)")
    cluster.sql("INSERT INTO hard_idle SELECT g, g FROM generate_series(1, 3) g")
    try:
        cluster.alter_system("pgcdcws.snapshot_idle_timeout", 4, expect_show="4s")
        slot, _, snap = slot_as("postgres", "hard_idle")
        # While held, CREATE INDEX CONCURRENTLY waits for the snapshot.
        assert cluster.sql1("SELECT cdc_snapshot(%s)", (slot,)) == snap  # restarts the idle clock
        with pytest.raises(psycopg2.errors.QueryCanceled):
            create_index_concurrently(cluster, "hard_idle", "hard_idle_v_blocked", "1s")
        cluster.sql("DROP INDEX hard_idle_v_blocked")  # left invalid by the cancel

        # Reads keep it alive: for three idle timeouts, one read every half second.
        t_end = time.monotonic() + 12
        while time.monotonic() < t_end:
            rows = snap_rows(cluster.ws_port, read_req(slot, "hard_idle", order_by={"column": "id"}))
            assert [r["id"] for r in rows] == [1, 2, 3]
            time.sleep(0.5)  # pacing, not an assertion
        assert cluster.sql1("SELECT snapshot_name FROM cdc_slots() WHERE slot_name = %s", (slot,)) == snap

        # Unused, it goes (cdc_slots() does not count as a use).
        wait_for(lambda: cluster.sql1("SELECT snapshot_name IS NULL FROM cdc_slots() WHERE slot_name = %s",
                                      (slot,)), 30, interval=0.2, what="the idle snapshot to be released")
        with pytest.raises(psycopg2.Error) as ei:
            cluster.sql("SELECT cdc_snapshot(%s)", (slot,))
        err = ei.value
        assert err.pgcode == "55000", err.pgcode
        assert err.diag.message_primary == (f'the snapshot of replication slot "{slot}" was released because '
                                            "it was idle")
        assert "pgcdcws.snapshot_idle_timeout (4 s)" in err.diag.message_detail, err.diag.message_detail
        msg = snap_error(cluster.ws_port, read_req(slot, "hard_idle"), 410)
        assert msg == (f'the snapshot of replication slot "{slot}" was released because it was idle '
                       "(pgcdcws.snapshot_idle_timeout)"), msg
        assert cluster.slot_exists(slot)
        create_index_concurrently(cluster, "hard_idle", "hard_idle_v", "60s")
        assert cluster.sql1("SELECT indisvalid FROM pg_index WHERE indexrelid = 'hard_idle_v'::regclass") is True
    finally:
        cluster.alter_system("pgcdcws.snapshot_idle_timeout", None, expect_show="5min")
        cluster.sql("DROP TABLE hard_idle")


def test_cdc_init_without_snapshot(cluster, slot_as):
    cluster.sql("CREATE TABLE hard_nosnap (id int PRIMARY KEY, v int)")
    try:
        before = len(cluster.pids_by_backend_type("pgcdcws snapshot", fresh=True))
        for caller in CALLERS:
            slot, lsn, snap = slot_as(caller, f"hard_nosnap_{caller}", snapshot=False)
            assert snap is None and lsn is not None
            # No worker outlives the call.
            assert len(cluster.pids_by_backend_type("pgcdcws snapshot", fresh=True)) == before
            assert cluster.slot_row(slot)[3] == "pgcdcws"
            assert cluster.sql("SELECT snapshot_name, snapshot_held_since FROM cdc_slots() WHERE slot_name = %s",
                               (slot,)) == [(None, None)]
            with pytest.raises(psycopg2.Error) as ei:
                cluster.sql("SELECT cdc_snapshot(%s)", (slot,))
            assert ei.value.pgcode == "55000"
            assert ei.value.diag.message_primary == f'replication slot "{slot}" was created without a snapshot'
            assert ei.value.diag.message_detail == "cdc_init() was called with snapshot => false."
            msg = snap_error(cluster.ws_port, read_req(slot, "hard_nosnap"), 410)
            assert msg == (f'the snapshot of replication slot "{slot}" never existed: cdc_init() was called '
                           "with snapshot => false"), msg
        create_index_concurrently(cluster, "hard_nosnap", "hard_nosnap_v", "60s")
        # cdc_init() with no arguments still exports one.
        row = cluster.sql("SELECT slot_name, snapshot_name FROM cdc_init()")[0]
        try:
            assert row[1] and cluster.sql1("SELECT cdc_snapshot(%s)", (row[0],)) == row[1]
        finally:
            cluster.sql("SELECT cdc_drop(%s)", (row[0],))
    finally:
        cluster.sql("DROP TABLE hard_nosnap")


UNUSED_TEMPORARY_GRACE_S = 60  # slots::kUnusedTemporaryGraceS (docs/PROTOCOL.md, cdc_init)


def test_unused_temporary_slots_are_dropped(cluster, slot_as):
    """A temporary slot that nothing uses (no stream, no held snapshot) is dropped 60 s after
    its last use: one never streamed goes about 60 s after cdc_init(), one whose snapshot is
    released goes 60 s after the release (not after its creation), and one with an open
    stream stays however long the stream runs (and goes with it, as before)."""
    grace = UNUSED_TEMPORARY_GRACE_S
    streamed, held, unused = "hard_tmp_streamed", "hard_tmp_held", "hard_tmp_unused"
    cluster.sql("CREATE TABLE hard_tmp_t (id int PRIMARY KEY)")
    cluster.sql(f"GRANT SELECT ON hard_tmp_t TO {REPL_ROLE}")  # its streams show what it may SELECT

    async def main():
        slot_as(REPL_ROLE, streamed, snapshot=False, temporary=True)
        slot_as(REPL_ROLE, held, snapshot=True, temporary=True)
        client = await StreamClient.open_retry(cluster.ws_port, streamed)
        try:
            slot_as(REPL_ROLE, unused, snapshot=False, temporary=True)
            created = time.monotonic()

            async def stream_delivers(n):
                cluster.sql("INSERT INTO hard_tmp_t VALUES (%s)", (n,))
                assert (await client.recv_txn(30)).ids() == [n]

            # Half the grace period: nothing is dropped early (a client has time to go from
            # cdc_init() to its stream).
            await asyncio.sleep(grace / 2)  # pacing, not an assertion
            assert [cluster.slot_exists(s) for s in (streamed, held, unused)] == [True, True, True]
            cluster.sql("SELECT cdc_snapshot_release(%s)", (held,))
            released = time.monotonic()
            await stream_delivers(1)

            await apoll(lambda: not cluster.slot_exists(unused), grace * 3, interval=0.5,
                        what=f"{unused} dropped")
            assert time.monotonic() - created >= grace - 2
            # Released half a grace period later than the unused slot was made: still there.
            assert cluster.slot_exists(held)
            assert cluster.slot_exists(streamed)
            await stream_delivers(2)

            await apoll(lambda: not cluster.slot_exists(held), grace * 3, interval=0.5, what=f"{held} dropped")
            assert time.monotonic() - released >= grace - 2
            assert cluster.slot_exists(streamed)
            assert cluster.sql("SELECT temporary, active FROM cdc_slots() WHERE slot_name = %s",
                               (streamed,)) == [(True, True)]
            await stream_delivers(3)
        finally:
            await client.close()
        await apoll(lambda: not cluster.slot_exists(streamed), 30, what=f"{streamed} dropped with its stream")

    log_offset = cluster.log_size()
    try:
        asyncio.run(main())
        log = cluster.log_since(log_offset)
        for slot in (unused, held):
            assert (f'dropped temporary replication slot "{slot}": no stream and no held snapshot for '
                    f"{grace} s") in log, cluster.log_tail()
    finally:
        cluster.sql("DROP TABLE hard_tmp_t")


def test_temporary_slot_moved_by_a_consumer_is_in_use(cluster, slot_as):
    """A temporary slot that a consumer moves between the server's looks (here
    pg_replication_slot_advance, as pg_logical_slot_get_changes or cdc_ack would) is in use:
    it outlives the grace period while it moves, and goes about 60 s after it stops moving."""
    grace = UNUSED_TEMPORARY_GRACE_S
    slot = "hard_tmp_moved"
    cluster.sql("CREATE TABLE hard_tmp_moved_t (id int PRIMARY KEY)")
    try:
        slot_as(REPL_ROLE, slot, snapshot=False, temporary=True)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < grace + 15:
            n += 1
            cluster.sql("INSERT INTO hard_tmp_moved_t VALUES (%s)", (n,))
            cluster.sql("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (slot,))
            last_move = time.monotonic()
            time.sleep(4)  # pacing the consumer, not an assertion
        assert cluster.slot_exists(slot)

        async def main():
            await apoll(lambda: not cluster.slot_exists(slot), grace * 3, interval=0.5, what=f"{slot} dropped")
        asyncio.run(main())
        assert time.monotonic() - last_move >= grace - 2
    finally:
        cluster.sql("DROP TABLE hard_tmp_moved_t")


# ------------------------------------------------------ 5. one client cannot starve others
@pytest.mark.parametrize("rows", [1000, 2500, 20000])
def test_stalled_reader_does_not_hold_up_others(cluster, slot_as, rows):
    """Client A asks for a reply of rows * ~2 kB and never reads it. Depending on the size, the
    worker is still producing (the ring is full) or already done (the rest waits in the ring)
    when A stops: either way, client B's read on the same slot is answered within seconds."""
    cluster.sql("CREATE TABLE hard_big (id int PRIMARY KEY, v text)")
    cluster.sql("INSERT INTO hard_big SELECT g, repeat(md5(g::text), 64) FROM generate_series(1, %s) g",
                (rows,))
    cluster.sql("CREATE TABLE hard_small (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO hard_small VALUES (1), (2)")
    stalled = None
    log_offset = cluster.log_size()
    try:
        cluster.alter_system("pgcdcws.snapshot_max_rows", 20000)
        slot = slot_as("postgres", "hard_stall")[0]
        # A small receive buffer fills at once.
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("localhost", cluster.ws_port))
        body = ('{"slotName": "%s", "table": "hard_big", "limit": %d}' % (slot, rows)).encode()
        stalled.sendall(b"POST /v1/snapshot/data HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        def serving_a():
            # Either the worker is still reading for A, or it already was: a small reply can
            # be produced whole between two polls, but its first bytes then wait in A's socket.
            if cluster.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                           "AND query LIKE 'reading hard_big%'"):
                return True
            try:
                return len(stalled.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) == 1
            except BlockingIOError:
                return False
        wait_for(serving_a, 30, interval=0.05, what="the snapshot worker to serve client A")
        if rows == 20000:
            # Alone, A may pause as long as it likes: nobody waits for it. (Something that does
            # not happen can only be shown over time: 7 s, past the 5 s limit.)
            time.sleep(7)
            assert cluster.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                               "AND query LIKE 'reading hard_big%'") == [(1,)]
            assert "closed a snapshot data client" not in cluster.log_since(log_offset)
        # Client B on the same slot: served once A is given up (5 s without progress).
        t0 = time.monotonic()
        got = snap_rows(cluster.ws_port, read_req(slot, "hard_small", order_by={"column": "id"}), timeout=60)
        waited = time.monotonic() - t0
        assert [r["id"] for r in got] == [1, 2]
        assert waited < 15, waited
        # A's connection was closed with its reply cut short (unless the whole reply fitted in
        # the socket buffers: then A never held anyone up).
        stalled.settimeout(30)
        received = b""
        while True:
            try:
                chunk = stalled.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        assert received == b"" or received.startswith(b"HTTP/1.1 200 OK"), received[:100]
        if rows == 20000:
            assert not received.endswith(b"]"), len(received)
        if not received.endswith(b"]"):
            assert ('closed a snapshot data client that read nothing of its reply for 5 s while other requests '
                    'waited (slot "hard_stall")' in cluster.log_since(log_offset))
    finally:
        if stalled is not None:
            stalled.close()
        cluster.alter_system("pgcdcws.snapshot_max_rows", None, expect_show="10000")
        cluster.sql("DROP TABLE hard_big, hard_small")


def test_read_cut_off_by_worker_end_gets_a_status(cluster, slot_as):
    """The snapshot worker ends (here: pg_terminate_backend) while a read has produced nothing
    yet: the client gets a 410 saying why, not a connection closed without a reply."""
    cluster.sql("CREATE VIEW hard_slow AS SELECT 1 AS x FROM pg_sleep(60)")
    try:
        slot = slot_as("postgres", "hard_slow")[0]
        result = {}

        def read():
            try:
                result["reply"] = snap_post(cluster.ws_port, read_req(slot, "hard_slow"), timeout=60)
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = e

        reader = threading.Thread(target=read)
        reader.start()
        pid = wait_for(lambda: cluster.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = "
                                           "'pgcdcws snapshot' AND query LIKE 'reading hard_slow%'"),
                       30, interval=0.05, what="the worker to run the read")[0][0]
        assert cluster.sql1("SELECT pg_terminate_backend(%s)", (pid,)) is True
        reader.join(60)
        assert not reader.is_alive()
        assert "error" not in result, result
        r = result["reply"]
        assert r.status == 410, r
        assert r.json() == {"error": f'the snapshot of replication slot "{slot}" ended when its worker stopped'}
    finally:
        cluster.sql("DROP VIEW hard_slow")


# --------------------------------------------------- 6. privileges of the SQL functions
def test_slots_and_snapshot_need_the_slot_privilege(cluster, slot_as):
    """A slot is for its owner (here the superuser postgres), members of the owner role and
    superusers (docs/SECURITY.md, "Tokens and slot ownership"; sql/auth.sql covers members):
    other roles, with or without REPLICATION, do not see it in cdc_slots() and get 42501."""
    slot = slot_as("postgres", "hard_priv")[0]
    for role in (NOBODY, REPL_ROLE):
        conn = cluster.connect(user=role)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM cdc_slots() WHERE slot_name = %s", (slot,))
                assert cur.fetchone()[0] == 0
                with pytest.raises(psycopg2.errors.InsufficientPrivilege) as ei:
                    cur.execute("SELECT cdc_snapshot(%s)", (slot,))
                assert ei.value.pgcode == "42501"
                assert ei.value.diag.message_primary == f'permission denied for replication slot "{slot}"'
                assert ei.value.diag.message_detail == 'The slot belongs to role "postgres".'
        finally:
            conn.close()
    # The owner may.
    assert cluster.sql1("SELECT count(*) FROM cdc_slots() WHERE slot_name = %s", (slot,)) == 1
    assert cluster.sql1("SELECT cdc_snapshot(%s) IS NOT NULL", (slot,)) is True


# ------------------------------------------- 7. review of the hardening (issue 6, second round)
def raw_exchange(port, data, timeout=40):
    """Sends raw bytes, returns everything received until the server closes."""
    sock = socket.create_connection(("localhost", port), timeout=timeout)
    try:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received
    finally:
        sock.close()


def post_head(body_length, extra=b""):
    return (b"POST /v1/snapshot/data HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(body_length).encode() + b"\r\n\r\n")


def read_reply(sock):
    """One HTTP reply with a Content-Length, read without waiting for the connection to close."""
    received = b""
    while True:
        head, sep, body = received.partition(b"\r\n\r\n")
        if sep:
            length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                return received
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def json_reply(data):
    """(status, body object) of a raw HTTP reply with a JSON body."""
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


def test_superuser_reading_role_refuses_other_roles_code(cluster, slot_as):
    """A slot whose reading role is a superuser: a view owned by a LOGIN role (calling its
    plpgsql function that runs COPY TO PROGRAM), and an "after" value whose column type is (or
    contains) that role's domain, are refused before any of its code runs. A superuser's view
    still reads."""
    marker = os.path.join(cluster.tmpdir, "hard_su_marker.txt")
    cluster.sql(f"CREATE SCHEMA hard_evil AUTHORIZATION {ATTACKER}")
    try:
        attacker = cluster.connect(user=ATTACKER)
        try:
            with attacker.cursor() as cur:
                cur.execute("CREATE FUNCTION hard_evil.f(int) RETURNS bool LANGUAGE plpgsql AS $$ begin "
                            f"execute 'copy (select current_user) to program ''cat > {marker}'''; "
                            "return true; end $$")
                cur.execute("CREATE VIEW hard_evil.v AS SELECT 1 AS x WHERE hard_evil.f(1)")
                cur.execute("CREATE DOMAIN hard_evil.d AS int CHECK (hard_evil.f(value))")
                cur.execute("CREATE TYPE hard_evil.c AS (a int, b hard_evil.d)")
                cur.execute("CREATE TABLE hard_evil.t (k int PRIMARY KEY, d hard_evil.d, a hard_evil.d[], "
                            "c hard_evil.c)")
                cur.execute("GRANT USAGE ON SCHEMA hard_evil TO PUBLIC")
                cur.execute("GRANT SELECT ON hard_evil.v, hard_evil.t TO PUBLIC")
        finally:
            attacker.close()
        cluster.sql("CREATE VIEW hard_su_view AS SELECT 7 AS x")
        slot = slot_as("postgres", "hard_su")[0]
        message = snap_error(cluster.ws_port, read_req(slot, "hard_evil.v"), 403)
        assert message == ('refused: the slot\'s reading role postgres is a superuser and view hard_evil.v is owned '
                           f'by role {ATTACKER}, whose code would run with superuser rights; create the slot with '
                           'cdc_init() as a non-superuser role that may read it'), message
        for column, after, type_name in (("d", "1", "hard_evil.d"), ("a", "{1}", "hard_evil.d"),
                                          ("c", "(1,1)", "hard_evil.c")):
            message = snap_error(cluster.ws_port, read_req(slot, "hard_evil.t", order_by={"column": column},
                                                           after=after), 403)
            assert message.startswith(f"refused: the slot's reading role postgres is a superuser and type "
                                      f'{type_name} (of column "{column}", used to read "after") is owned by role '
                                      f"{ATTACKER}"), message
        # The table itself (no "after") runs none of the attacker's code for a superuser.
        assert snap_rows(cluster.ws_port, read_req(slot, "hard_evil.t")) == []
        assert not os.path.exists(marker), f"the attacker's code ran: {open(marker).read()!r}"
        assert snap_rows(cluster.ws_port, read_req(slot, "hard_su_view")) == [{"x": 7}]
    finally:
        cluster.sql("DROP SCHEMA hard_evil CASCADE")
        cluster.sql("DROP VIEW IF EXISTS hard_su_view")


def test_paused_lone_reader_is_cut_off(cluster, slot_as):
    """A lone client that stops reading a large reply is closed after 30 s without progress:
    the read's table lock goes, and ALTER TABLE with lock_timeout = 2s succeeds."""
    cluster.sql("CREATE TABLE hard_paused (id int PRIMARY KEY, v text)")
    cluster.sql("INSERT INTO hard_paused SELECT g, repeat(md5(g::text), 64) FROM generate_series(1, 10000) g")
    log_offset = cluster.log_size()
    paused = None
    try:
        slot = slot_as("postgres", "hard_paused")[0]
        paused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        paused.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        paused.connect(("localhost", cluster.ws_port))
        body = ('{"slotName": "%s", "table": "hard_paused", "limit": 10000}' % slot).encode()
        paused.sendall(post_head(len(body)) + body)
        wait_for(lambda: worker_locks(cluster, "hard_paused"), 30, interval=0.05,
                 what="the worker to lock the table for the read")
        t0 = time.monotonic()
        wait_for(lambda: not worker_locks(cluster, "hard_paused"), 90, interval=0.5,
                 what="the paused read to be cut off")
        assert time.monotonic() - t0 > 20  # not the 5 s rule: nobody else waits
        alter_within(cluster, "ALTER TABLE hard_paused ADD COLUMN z int")
        assert ('closed a snapshot data client that read nothing of its reply for 30 s (slot "hard_paused")'
                in cluster.log_since(log_offset))
    finally:
        if paused is not None:
            paused.close()
        cluster.sql("DROP TABLE hard_paused")


def test_session_advisory_lock_does_not_outlive_the_read(cluster, slot_as):
    """A view taking a session-level advisory lock: the lock is gone once the reply is in."""
    cluster.sql("CREATE VIEW hard_advisory AS SELECT 1 AS x FROM (SELECT pg_advisory_lock(4242)) s")
    try:
        slot = slot_as("postgres", "hard_advisory")[0]
        assert snap_rows(cluster.ws_port, read_req(slot, "hard_advisory")) == [{"x": 1}]
        assert cluster.sql("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                           "WHERE a.backend_type = 'pgcdcws snapshot' AND l.locktype = 'advisory' "
                           "AND l.objid = 4242") == []
        # Another session can take it.
        assert cluster.sql1("SELECT pg_try_advisory_lock(4242)") is True
    finally:
        cluster.sql("DROP VIEW hard_advisory")


def test_slow_request_body(cluster, slot_as):
    """A body with one 7 s gap (under the 10 s request deadline) gets its normal answer; one that
    never completes gets a 408 JSON reply at about 10 s (not a silent close at lws's 5 s)."""
    cluster.sql("CREATE TABLE hard_gap (id int)")
    cluster.sql("INSERT INTO hard_gap VALUES (5)")
    try:
        slot = slot_as("postgres", "hard_gap")[0]
        body = ('{"slotName": "%s", "table": "hard_gap"}' % slot).encode()
        sock = socket.create_connection(("localhost", cluster.ws_port), timeout=40)
        try:
            sock.sendall(post_head(len(body)) + body[:-3])
            time.sleep(7)  # the gap under test, not an assertion
            sock.sendall(body[-3:])
            received = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        finally:
            sock.close()
        head, _, rows = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), received[:200]
        assert json.loads(rows) == [{"id": 5}]

        t0 = time.monotonic()
        sock = socket.create_connection(("localhost", cluster.ws_port), timeout=40)
        try:
            sock.sendall(post_head(len(body)) + body[:-3])
            received = read_reply(sock)
            took = time.monotonic() - t0
        finally:
            sock.close()
        status, obj = json_reply(received)
        assert status == 408, received
        assert obj == {"error": "request not complete within 10 s of connecting"}, obj
        assert 8 < took < 18, took
    finally:
        cluster.sql("DROP TABLE hard_gap")


def test_two_content_length_headers_are_refused(cluster, slot_as):
    slot = slot_as("postgres", "hard_two_cl")[0]
    body = ('{"slotName": "%s", "table": "pg_class", "limit": 1}' % slot).encode()
    for second in (b"500", b"" + str(len(body)).encode()):
        received = raw_exchange(cluster.ws_port, post_head(len(body), b"Content-Length: " + second + b"\r\n") + body)
        status, obj = json_reply(received)
        assert (status, obj) == (400, {"error": "more than one Content-Length header"}), received


def start_read(cluster, slot, table):
    """A read in a thread: returns (thread, result dict with "reply" or "error")."""
    result = {}

    def read():
        try:
            result["reply"] = snap_post(cluster.ws_port, read_req(slot, table), timeout=90)
        except Exception as e:  # noqa: BLE001 - the caller looks at it
            result["error"] = e

    thread = threading.Thread(target=read)
    thread.start()
    return thread, result


def wait_reading(cluster, table):
    return wait_for(lambda: cluster.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                                        "AND query LIKE %s", (f"reading {table}%",)),
                    30, interval=0.05, what=f"the worker to read {table}")[0][0]


def test_client_leaving_cancels_a_slow_read(cluster, slot_as):
    """A view sleeping 25 s: when its client leaves, the worker stops the query at once, and the
    next read of the slot is served within seconds (not after the sleep)."""
    cluster.sql("CREATE VIEW hard_sleepy AS SELECT 1 AS x FROM pg_sleep(25)")
    cluster.sql("CREATE TABLE hard_quick (id int)")
    cluster.sql("INSERT INTO hard_quick VALUES (3)")
    try:
        slot = slot_as("postgres", "hard_leave")[0]
        body = ('{"slotName": "%s", "table": "hard_sleepy"}' % slot).encode()
        sock = socket.create_connection(("localhost", cluster.ws_port), timeout=30)
        sock.sendall(post_head(len(body)) + body)
        wait_reading(cluster, "hard_sleepy")
        sock.close()
        t0 = time.monotonic()
        wait_for(lambda: not cluster.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                                         "AND query LIKE 'reading hard_sleepy%'"), 20, interval=0.05,
                 what="the worker to stop the abandoned read")
        assert snap_rows(cluster.ws_port, read_req(slot, "hard_quick"), timeout=30) == [{"id": 3}]
        assert time.monotonic() - t0 < 12
        # The worker survived the cancel: the snapshot is still held.
        assert cluster.sql1("SELECT cdc_snapshot(%s) IS NOT NULL", (slot,)) is True
    finally:
        cluster.sql("DROP VIEW hard_sleepy")
        cluster.sql("DROP TABLE hard_quick")


@pytest.mark.parametrize("caller", CALLERS)
def test_session_user_is_the_reading_role_also_after_a_cancel(cluster, slot_as, caller):
    """Trust mode: a read runs with the cdc_init() caller as session user too (a policy on
    session_user gives the rows psql gives that role), before and after a read the client
    abandoned (cancelled inside the query) and one that failed (a bad "after")."""
    whoami = ("SELECT session_user::text AS s, current_user::text AS c, current_setting('is_superuser') AS su, "
              "current_setting('session_authorization') AS sa")
    cluster.sql("CREATE TABLE hard_sess (id int PRIMARY KEY, who name)")
    cluster.sql("ALTER TABLE hard_sess ENABLE ROW LEVEL SECURITY")
    cluster.sql("CREATE POLICY by_session ON hard_sess FOR SELECT USING (who = session_user)")
    cluster.sql(f"INSERT INTO hard_sess VALUES (1, 'postgres'), (2, '{REPL_ROLE}'), (3, '{NOBODY}')")
    cluster.sql(f"CREATE VIEW hard_whoami AS {whoami}")
    cluster.sql("CREATE VIEW hard_sleepy3 AS SELECT 1 AS x FROM pg_sleep(25)")
    cluster.sql("GRANT SELECT ON hard_sess, hard_whoami, hard_sleepy3 TO PUBLIC")
    try:
        slot = slot_as(caller, f"hard_sess_{caller}")[0]
        conn = cluster.connect(user=caller)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id, who::text FROM hard_sess ORDER BY id")
                in_psql = [{"id": i, "who": w} for i, w in cur.fetchall()]
                cur.execute(whoami)
                psql_whoami = [dict(zip(("s", "c", "su", "sa"), cur.fetchone()))]
        finally:
            conn.close()
        assert in_psql == ([{"id": 2, "who": REPL_ROLE}] if caller == REPL_ROLE else
                           [{"id": 1, "who": "postgres"}, {"id": 2, "who": REPL_ROLE}, {"id": 3, "who": NOBODY}])
        assert psql_whoami == [{"s": caller, "c": caller, "su": "on" if caller == "postgres" else "off",
                                "sa": caller}]

        def check():
            assert snap_rows(cluster.ws_port, read_req(slot, "hard_sess", order_by={"column": "id"})) == in_psql
            assert snap_rows(cluster.ws_port, read_req(slot, "hard_whoami")) == psql_whoami

        check()
        body = ('{"slotName": "%s", "table": "hard_sleepy3"}' % slot).encode()
        sock = socket.create_connection(("localhost", cluster.ws_port), timeout=30)
        sock.sendall(post_head(len(body)) + body)
        wait_reading(cluster, "hard_sleepy3")
        sock.close()
        wait_for(lambda: not cluster.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                                         "AND query LIKE 'reading hard_sleepy3%'"), 20, interval=0.05,
                 what="the worker to stop the abandoned read")
        check()
        msg = snap_error(cluster.ws_port, read_req(slot, "hard_sess", order_by={"column": "id"}, after="x"), 400)
        assert msg.startswith('invalid "after" value'), msg
        check()
    finally:
        cluster.sql("DROP VIEW hard_whoami, hard_sleepy3")
        cluster.sql("DROP TABLE hard_sess")


def test_release_during_a_slow_read_is_prompt(cluster, slot_as):
    """cdc_snapshot_release() while a read sleeps in a view returns within seconds; the reader
    gets a JSON error, not a hang."""
    cluster.sql("CREATE VIEW hard_sleepy2 AS SELECT 1 AS x FROM pg_sleep(25)")
    try:
        slot = slot_as("postgres", "hard_release")[0]
        reader, result = start_read(cluster, slot, "hard_sleepy2")
        wait_reading(cluster, "hard_sleepy2")
        t0 = time.monotonic()
        cluster.sql("SELECT cdc_snapshot_release(%s)", (slot,))
        assert time.monotonic() - t0 < 10
        reader.join(30)
        assert not reader.is_alive()
        assert "error" not in result, result
        r = result["reply"]
        assert r.status in (410, 503), r
        assert set(r.json()) == {"error"}, r
    finally:
        cluster.sql("DROP VIEW hard_sleepy2")


def test_read_behind_an_exclusive_lock_answers_503(cluster, slot_as):
    """A read waiting behind ACCESS EXCLUSIVE gives up after its 5 s lock_timeout with a 503."""
    cluster.sql("CREATE TABLE hard_locked (id int)")
    holder = cluster.connect()
    try:
        slot = slot_as("postgres", "hard_locked")[0]
        holder.autocommit = False
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE hard_locked IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        message = snap_error(cluster.ws_port, read_req(slot, "hard_locked"), 503)
        took = time.monotonic() - t0
        assert message == ('table "hard_locked" is locked by another session (the read waited 5s for it); '
                           'retry later'), message
        assert 4 < took < 20, took
        holder.rollback()
        assert snap_rows(cluster.ws_port, read_req(slot, "hard_locked")) == []
    finally:
        holder.close()
        cluster.sql("DROP TABLE hard_locked")
