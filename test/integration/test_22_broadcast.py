"""Filtered broadcast on GET /ws (issue 8; docs/PROTOCOL.md "Broadcast subscriptions" through
"Close codes on /ws"), driven by the `websockets` library against clusters of this module's own:

- `bc`: trust mode (requests run as the bootstrap superuser), no per-role connection cap,
  pg_walinspect to read every commit's end LSN from the WAL (what a change frame's "lsn" is);
- `small_window`: the same with pgcdcws.broadcast_replay_size = 1MB, for the gap frame;
- `sec`: token mode, for SELECT (403) and row security.

"Nothing arrives" is never waited for: after changes that must not be delivered, a change
that must be is written, and the next frame has to be exactly that one (frames arrive in
commit order). The load tests (200 clients, a stalled client) are in test_24_broadcast_load.py.
"""

import asyncio
import decimal
import threading
import time

import pytest

from cdcws import (BroadcastClient, apoll, commit_end_lsns, http_request, lsn_int, matched_of, oldkeys_of,
                   open_subscribed, row_of, token_for, ws_target)
from conftest import logs_reported, started_cluster

D = decimal.Decimal

BC_CONF = [
    # the tests hold several sockets while running blocking SQL: keep server pings rare
    "pgcdcws.ping_interval = 10",
    "pgcdcws.max_connections = 1000",
    "pgcdcws.max_connections_per_role = 0",
    # commit_end_lsns() reads the WAL of a test back from its start: keep it around
    "wal_keep_size = '1GB'",
]


@pytest.fixture(scope="module")
def bc():
    c = started_cluster(BC_CONF)
    try:
        c.sql("CREATE EXTENSION pg_walinspect")
        with logs_reported(c):
            yield c
    finally:
        c.destroy()


def run(coro):
    return asyncio.run(coro)


def wal_position(c):
    return c.sql1("SELECT pg_current_wal_insert_lsn()::text")


def ids(frames):
    """The id of each change frame: from the new row, else from the old key."""
    return [row_of(f)["id"] if "columnnames" in f else oldkeys_of(f)["id"] for f in frames]


def assert_http_error(c, target, status, expected, headers=()):
    """The upgrade request gets `status` with {"error": expected}; expected is the exact text,
    or a function that checks it."""
    r = http_request(c.ws_port, target, extra_headers=headers)
    assert r.status == status, (target, r)
    assert r.version == "HTTP/1.1", r
    assert r.headers.get("content-type") == "application/json", r
    assert r.headers.get("connection") == "close", r
    body = r.json()
    assert list(body) == ["error"], body
    if callable(expected):
        assert expected(body["error"]), (target, body)
    else:
        assert body["error"] == expected, (target, body)


# --------------------------------------------------------------- subscribed = live
def test_subscribed_frame_means_the_subscription_is_live(bc):
    """The first subscriptions of the cluster (they start the broadcast decoder): a change
    committed before the subscribe request is not delivered, one committed right after the
    subscribed frame arrived is; subscribed.lsn is past the first and before the second."""
    bc.sql("CREATE TABLE b_live1 (id int PRIMARY KEY)")
    start = wal_position(bc)

    async def main():
        c = await BroadcastClient.open(bc.ws_port)  # bare /ws: no subscription, no frame
        try:
            x1 = bc.exec_txn("INSERT INTO b_live1 VALUES (1)")
            sub = await c.subscribe("insert:public.b_live1", "live")
            x2 = bc.exec_txn("INSERT INTO b_live1 VALUES (2)")
            f2 = await c.change()
            # the same through the URL (id "query"), on a second socket
            x3 = bc.exec_txn("INSERT INTO b_live1 VALUES (3)")
            c2 = await BroadcastClient.open(bc.ws_port, query="insert:public.b_live1")
            try:
                sub2 = await c2.subscribed()
                x4 = bc.exec_txn("INSERT INTO b_live1 VALUES (4)")
                f4 = await c2.change()
            finally:
                await c2.close()
            rest = await c.changes(2)
            return sub, f2, sub2, f4, rest, (x1, x2, x3, x4)
        finally:
            await c.close()

    sub, f2, sub2, f4, rest, (x1, x2, x3, x4) = run(main())
    ends = commit_end_lsns(bc, start)
    assert row_of(f2) == {"id": 2} and f2["xid"] == x2 and f2["lsn"] == ends[x2], f2
    assert f2["subscriptions"] == ["live"]
    assert lsn_int(ends[x1]) <= lsn_int(sub["lsn"]) < lsn_int(ends[x2]), (sub, ends)
    assert row_of(f4) == {"id": 4} and f4["xid"] == x4 and f4["subscriptions"] == ["query"], f4
    assert lsn_int(ends[x3]) <= lsn_int(sub2["lsn"]) < lsn_int(ends[x4]), (sub2, ends)
    # the first socket got 3 and 4 too, in commit order
    assert ids(rest) == [3, 4] and [f["lsn"] for f in rest] == [ends[x3], ends[x4]], rest


class XidWriter(threading.Thread):
    """Inserts ids first, first+1, ... into `table`, one transaction each, remembering each
    id's xid, until stopped (or n rows)."""

    def __init__(self, cluster, table, first=1, n=None):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.table = table
        self.first = first
        self.n = n
        self.xids = {}
        self.written = 0
        self.last_id = None
        self.error = None
        self._halt = threading.Event()

    def run(self):
        try:
            conn = self.cluster.connect()
            try:
                with conn.cursor() as cur:
                    i = self.first
                    while not self._halt.is_set() and (self.n is None or self.written < self.n):
                        cur.execute(f"INSERT INTO {self.table} VALUES (%s) RETURNING pg_current_xact_id()::text::bigint",
                                    (i,))
                        self.xids[i] = cur.fetchone()[0]
                        self.last_id = i
                        self.written += 1
                        i += 1
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def stop(self):
        self._halt.set()
        if self.ident is not None:
            self.join(60)
            assert not self.is_alive(), "writer thread did not stop"


async def apoll_written(writer, n, timeout=120):
    await apoll(lambda: writer.written >= n or writer.error is not None, timeout, what=f"the writer to write {n} rows")
    assert writer.error is None, repr(writer.error)


def test_subscribed_lsn_splits_a_running_writer(bc):
    """A writer commits one row per transaction while a socket subscribes: every row whose
    commit ends after subscribed.lsn is delivered, none that committed before the request
    is, the delivered rows are a gap-free run in commit order, and each frame's lsn is its
    commit's end LSN (read from the WAL)."""
    bc.sql("CREATE TABLE b_live2 (id int PRIMARY KEY)")
    start = wal_position(bc)
    writer = XidWriter(bc, "b_live2")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            writer.start()
            await apoll_written(writer, 50)
            before = bc.sql1("SELECT pg_current_wal_flush_lsn()::text")
            sub = await c.subscribe("insert:public.b_live2", "live")
            await apoll_written(writer, writer.written + 100)
            writer.stop()
            last = writer.last_id
            frames = await c.collect_until(lambda got: bool(got) and ids(got[-1:]) == [last], 120,
                                           what=f"row {last}")
            return before, sub, frames
        finally:
            writer.stop()
            await c.close()

    before, sub, frames = run(main())
    assert writer.error is None, repr(writer.error)
    ends = commit_end_lsns(bc, start)
    got = ids(frames)
    delivered = set(got)
    assert got == list(range(got[0], writer.last_id + 1)), f"not a gap-free run in commit order: {got[:20]}..."
    for f in frames:
        i = row_of(f)["id"]
        xid = writer.xids[i]
        assert f["xid"] == xid and f["lsn"] == ends[xid] and f["subscriptions"] == ["live"], (f, ends[xid])
        assert lsn_int(ends[xid]) > lsn_int(before), f"row {i} committed before the request ({before}): {f}"
    missed = [i for i, xid in writer.xids.items() if lsn_int(ends[xid]) > lsn_int(sub["lsn"]) and i not in delivered]
    assert missed == [], f"rows committed after subscribed {sub['lsn']} not delivered: {missed[:20]}"
    assert got[0] > 50


def test_changes_arrive_in_commit_order(bc):
    """Statement order is not commit order: a transaction that commits first is delivered first,
    a transaction's changes stay together, lsn increases between transactions; then three
    concurrent writers: the frames follow the commit records in the WAL."""
    bc.sql("CREATE TABLE b_order (id int PRIMARY KEY)")
    start = wal_position(bc)

    async def main():
        c = await open_subscribed(bc.ws_port, "insert:public.b_order")
        try:
            a = bc.connect(autocommit=False)
            b = bc.connect(autocommit=False)
            try:
                with a.cursor() as ca, b.cursor() as cb:
                    ca.execute("INSERT INTO b_order VALUES (1) RETURNING pg_current_xact_id()::text::bigint")
                    xa = ca.fetchone()[0]
                    cb.execute("INSERT INTO b_order VALUES (2) RETURNING pg_current_xact_id()::text::bigint")
                    xb = cb.fetchone()[0]
                    cb.execute("INSERT INTO b_order VALUES (4)")
                    b.commit()
                    ca.execute("INSERT INTO b_order VALUES (3)")
                    a.commit()
            finally:
                a.close()
                b.close()
            first = await c.changes(4)
            writers = [XidWriter(bc, "b_order", first=1000 * (w + 1), n=200) for w in range(3)]
            for w in writers:
                w.start()
            for w in writers:
                w.join(120)
                assert w.error is None, repr(w.error)
            more = await c.changes(600, timeout=120)
            return xa, xb, first, writers, more
        finally:
            await c.close()

    xa, xb, first, writers, more = run(main())
    ends = commit_end_lsns(bc, start)
    assert [(row_of(f)["id"], f["xid"], f["lsn"]) for f in first] == [
        (2, xb, ends[xb]), (4, xb, ends[xb]), (1, xa, ends[xa]), (3, xa, ends[xa])], first
    assert lsn_int(ends[xb]) < lsn_int(ends[xa])
    xids = {i: x for w in writers for i, x in w.xids.items()}
    assert sorted(ids(more)) == sorted(xids)
    lsns = [lsn_int(f["lsn"]) for f in more]
    assert lsns == sorted(lsns) and len(set(lsns)) == 600, "one row per transaction: lsn must strictly increase"
    for f in more:
        x = xids[row_of(f)["id"]]
        assert f["xid"] == x and f["lsn"] == ends[x], f
    assert lsn_int(more[0]["lsn"]) > lsn_int(ends[xa])


# ------------------------------------------------------------------ frame shape
def test_change_frames_carry_the_stream_change_object_xid_lsn_and_ids(bc):
    bc.sql("CREATE TABLE b_shape (id int PRIMARY KEY, name varchar(5), amount numeric(10,2), score float8, "
           "ok bool, note text)")
    start = wal_position(bc)

    async def main():
        c = await open_subscribed(bc.ws_port, "*:public.b_shape")
        try:
            x = [bc.exec_txn("INSERT INTO b_shape VALUES (1, 'hello', 10.50, 4.5, true, NULL)"),
                 bc.exec_txn("UPDATE b_shape SET name = 'world' WHERE id = 1"),
                 bc.exec_txn("DELETE FROM b_shape WHERE id = 1"),
                 bc.exec_txn("TRUNCATE b_shape")]
            fs = await c.changes(4)
            return x, fs, c.raws[1:5]
        finally:
            await c.close()

    x, fs, raws = run(main())
    e = commit_end_lsns(bc, start)
    names = ["id", "name", "amount", "score", "ok", "note"]
    types = ["integer", "character varying(5)", "numeric(10,2)", "double precision", "boolean", "text"]
    key = {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [1]}
    head = {"type": "change", "schema": "public", "table": "b_shape", "subscriptions": ["query"]}
    assert fs[0] == dict(head, kind="insert", columnnames=names, columntypes=types,
                         columnvalues=[1, "hello", D("10.50"), D("4.5"), True, None], xid=x[0], lsn=e[x[0]])
    # numbers digit for digit, as in a stream
    assert '"columnvalues":[1,"hello",10.50,4.5,true,null]' in raws[0], raws[0]
    assert fs[1] == dict(head, kind="update", columnnames=names, columntypes=types,
                         columnvalues=[1, "world", D("10.50"), D("4.5"), True, None], oldkeys=key,
                         xid=x[1], lsn=e[x[1]], matched=["both"])
    assert fs[2] == dict(head, kind="delete", oldkeys=key, xid=x[2], lsn=e[x[2]])
    assert fs[3] == dict(head, kind="truncate", xid=x[3], lsn=e[x[3]])


# --------------------------------------------------------------------- operators
OPS_ROWS = [
    # id, i, f (float8), n (numeric), tc (text COLLATE "C"), host (text)
    "(1, 5, 4.5, 10.50, 'hello', 'db.example.com')",
    "(2, -3, 4.50001, 10.49, 'Zeta', 'db:5432')",
    "(3, 10, -1.5, 0, 'b', 'a.b')",
    "(4, 0, 100, -0.001, 'a:b', '')",
    "(5, NULL, NULL, NULL, NULL, NULL)",
    "(6, 2147483647, 1e300, 123456789012345678901234567890.5, 'é', 'x')",
    "(7, 9, 4.4999, 1.0, 'a', 'db.example.com.')",
]

# subscription id -> (query, ids of OPS_ROWS it matches). A NULL matches no filter (row 5).
OPS_SUBS = {
    "i_eq": ("insert:public.b_ops:i.eq.5", {1}),
    "i_neq": ("insert:public.b_ops:i.neq.5", {2, 3, 4, 6, 7}),
    "i_lt": ("insert:public.b_ops:i.lt.0", {2}),
    "i_lte": ("insert:public.b_ops:i.lte.0", {2, 4}),
    "i_gt": ("insert:public.b_ops:i.gt.9", {3, 6}),
    "i_gte": ("insert:public.b_ops:i.gte.9", {3, 6, 7}),
    "i_in": ("insert:public.b_ops:i.in.0,5,2147483647", {1, 4, 6}),
    "i_in_one": ("insert:public.b_ops:i.in.10", {3}),
    "i_op_case": ("insert:public.b_ops:i.EQ.5", {1}),
    "f_eq": ("insert:public.b_ops:f.eq.4.5", {1}),
    "f_neq": ("insert:public.b_ops:f.neq.4.5", {2, 3, 4, 6, 7}),
    "f_lt": ("insert:public.b_ops:f.lt.-1", {3}),
    "f_lte": ("insert:public.b_ops:f.lte.4.4999", {3, 7}),
    "f_gt": ("insert:public.b_ops:f.gt.4.5", {2, 4, 6}),
    "f_gte": ("insert:public.b_ops:f.gte.1e2", {4, 6}),
    "f_in": ("insert:public.b_ops:f.in.-1.5,100", {3, 4}),
    "n_eq": ("insert:public.b_ops:n.eq.10.5", {1}),
    "n_neq": ("insert:public.b_ops:n.neq.0", {1, 2, 4, 6, 7}),
    "n_lt": ("insert:public.b_ops:n.lt.0", {4}),
    "n_lte": ("insert:public.b_ops:n.lte.1", {3, 4, 7}),
    "n_gt": ("insert:public.b_ops:n.gt.10.49", {1, 6}),
    "n_gte": ("insert:public.b_ops:n.gte.10.49", {1, 2, 6}),
    "n_in": ("insert:public.b_ops:n.in.1,10.49,0.0", {2, 3, 7}),
    "n_precise": ("insert:public.b_ops:n.gt.123456789012345678901234567890.4", {6}),
    "t_eq": ("insert:public.b_ops:tc.eq.hello", {1}),
    "t_neq": ("insert:public.b_ops:tc.neq.hello", {2, 3, 4, 6, 7}),
    "t_lt": ("insert:public.b_ops:tc.lt.b", {2, 4, 7}),       # C collation: 'Zeta' < 'b'
    "t_lte": ("insert:public.b_ops:tc.lte.b", {2, 3, 4, 7}),
    "t_gt": ("insert:public.b_ops:tc.gt.a", {1, 3, 4, 6}),
    "t_gte": ("insert:public.b_ops:tc.gte.hello", {1, 6}),
    "t_in": ("insert:public.b_ops:tc.in.a,b,zzz", {3, 7}),
    "t_colon": ("insert:public.b_ops:tc.eq.a%3Ab", {4}),
    "t_utf8": ("insert:public.b_ops:tc.eq.é", {6}),
    "t_utf8_escaped": ("insert:public.b_ops:tc.eq.%C3%A9", {6}),
    "h_dots": ("insert:public.b_ops:host.eq.db.example.com", {1}),
    "h_colon": ("insert:public.b_ops:host.eq.db%3A5432", {2}),
    "h_empty": ("insert:public.b_ops:host.eq.", {4}),
    "h_in_dots": ("insert:public.b_ops:host.in.a.b,db.example.com.", {3, 7}),
    "and_i_f": ("insert:public.b_ops:i.gte.0:f.gt.4.4", {1, 4, 6, 7}),
    "and_same_column": ("insert:public.b_ops:i.gt.1:i.lt.10", {1, 7}),
    "and_n_t": ("insert:public.b_ops:n.gte.0:tc.lt.b", {2, 7}),
    "star_kinds": ("*:public.b_ops:id.eq.1", {1}),  # * includes delete: a key filter
    "unqualified": ("insert:b_ops:i.eq.9", {7}),
    "all": ("insert:public.b_ops", {1, 2, 3, 4, 5, 6, 7}),
}


def test_every_operator_on_int_float_numeric_and_text(bc):
    """One socket, one subscription per case; one transaction inserts the rows. Each row
    arrives once (the unfiltered "all" matches every row) listing exactly the subscriptions
    whose filters it passes, compared with the types' own operators."""
    bc.sql('CREATE TABLE b_ops (id int PRIMARY KEY, i int, f float8, n numeric, tc text COLLATE "C", host text)')

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            for sid, (query, _) in OPS_SUBS.items():
                await c.subscribe(query, sid)
            xid = bc.exec_txn("INSERT INTO b_ops VALUES " + ", ".join(OPS_ROWS))
            return xid, await c.changes(len(OPS_ROWS))
        finally:
            await c.close()

    xid, frames = run(main())
    assert ids(frames) == [1, 2, 3, 4, 5, 6, 7]
    assert len({f["lsn"] for f in frames}) == 1 and all(f["xid"] == xid for f in frames)
    for f in frames:
        i = row_of(f)["id"]
        want = {sid for sid, (_, rows) in OPS_SUBS.items() if i in rows}
        assert len(f["subscriptions"]) == len(set(f["subscriptions"]))
        assert set(f["subscriptions"]) == want, (i, sorted(set(f["subscriptions"]) ^ want))
    assert row_of(frames[0])["n"] == D("10.50") and row_of(frames[5])["n"] == D("123456789012345678901234567890.5")


def test_filters_in_the_url_are_url_encoded_once_more(bc):
    """In the URL the query is URL-encoded as a whole: a %3A inside a value travels as %253A;
    values keep their dots; two filters are ANDed. Each socket gets exactly its rows of the
    first transaction, then its row of the second one (which proves nothing else came)."""
    bc.sql('CREATE TABLE b_url (id int PRIMARY KEY, i int, f float8, host text)')
    cases = {
        "insert:public.b_url:host.eq.db.example.com": [1, 9],
        "insert:public.b_url:host.eq.db%3A5432": [2, 10],
        "insert:public.b_url:f.gt.4.5": [2, 3, 9],
        "insert:public.b_url:i.gte.0:f.gt.4.4": [1, 3, 9],
        "insert:public.b_url:i.in.5,7": [1, 3, 9],
    }

    async def main():
        clients = {}
        try:
            for q in cases:
                clients[q] = await open_subscribed(bc.ws_port, q)
            bc.exec_txn("INSERT INTO b_url VALUES (1, 5, 4.5, 'db.example.com'), (2, -1, 4.6, 'db:5432'), "
                        "(3, 7, 1e10, 'db.example.com.x'), (4, 0, 4.4, 'db')")
            bc.exec_txn("INSERT INTO b_url VALUES (9, 5, 4.5e300, 'db.example.com'), (10, -1, 0, 'db:5432')")
            return {q: await c.changes(len(cases[q])) for q, c in clients.items()}
        finally:
            for c in clients.values():
                await c.close()

    got = run(main())
    for q, want in cases.items():
        assert ids(got[q]) == want, (q, ids(got[q]))
        assert all(f["subscriptions"] == ["query"] for f in got[q]), got[q]


def test_text_filters_compare_with_the_column_collation(bc):
    assert bc.sql1("SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'") == 1, \
        "this PostgreSQL has no ICU collations"
    bc.sql('CREATE TABLE b_coll (id int PRIMARY KEY, c text COLLATE "C", u text COLLATE "und-x-icu")')
    subs = {
        # C compares bytes: 'B' < 'Z' < 'a' < 'b'; ICU's root collation: 'a' < 'b' < 'B' < 'Z'
        "c_lt": ("insert:public.b_coll:c.lt.b", {1, 2, 3}),
        "u_lt": ("insert:public.b_coll:u.lt.b", {2}),
        "c_gt": ("insert:public.b_coll:c.gt.B", {1, 2}),
        "u_gt": ("insert:public.b_coll:u.gt.B", {1}),
        "all": ("insert:public.b_coll", {1, 2, 3}),
    }

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            for sid, (q, _) in subs.items():
                await c.subscribe(q, sid)
            bc.exec_txn("INSERT INTO b_coll VALUES (1, 'Z', 'Z'), (2, 'a', 'a'), (3, 'B', 'B')")
            return await c.changes(3)
        finally:
            await c.close()

    frames = run(main())
    assert ids(frames) == [1, 2, 3]
    for f in frames:
        i = row_of(f)["id"]
        assert set(f["subscriptions"]) == {s for s, (_, rows) in subs.items() if i in rows}, (i, f["subscriptions"])


def test_enum_and_domain_columns_compare_as_their_types(bc):
    """An enum compares in its declared order (not alphabetically), a domain as its base type;
    their input functions (a domain's CHECK included) judge the values."""
    bc.sql("CREATE TYPE b_mood AS ENUM ('sad', 'ok', 'happy')")
    bc.sql("CREATE DOMAIN b_pos AS int CHECK (VALUE > 0)")
    bc.sql("CREATE TABLE b_typed (id int PRIMARY KEY, mood b_mood, qty b_pos)")
    subs = {
        "m_gt": ("insert:public.b_typed:mood.gt.ok", {3}),      # alphabetically 'sad' > 'ok' too
        "m_lt": ("insert:public.b_typed:mood.lt.ok", {1}),
        "m_in": ("insert:public.b_typed:mood.in.sad,happy", {1, 3}),
        "q_gte": ("insert:public.b_typed:qty.gte.10", {2, 3}),
        "all": ("insert:public.b_typed", {1, 2, 3, 4}),
    }

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            for sid, (q, _) in subs.items():
                await c.subscribe(q, sid)
            bad_enum = await c.subscribe_error("insert:public.b_typed:mood.eq.angry", "bad_enum")
            bad_domain = await c.subscribe_error("insert:public.b_typed:qty.eq.-1", "bad_domain")
            bc.exec_txn("INSERT INTO b_typed VALUES (1, 'sad', 1), (2, 'ok', 10), (3, 'happy', 100), (4, NULL, NULL)")
            return bad_enum, bad_domain, await c.changes(4)
        finally:
            await c.close()

    bad_enum, bad_domain, frames = run(main())
    assert bad_enum == 'filter "mood.eq.angry": invalid input value for enum b_mood: "angry"', bad_enum
    assert bad_domain == 'filter "qty.eq.-1": value for domain b_pos violates check constraint "b_pos_check"', bad_domain
    assert [row_of(f) for f in frames] == [{"id": 1, "mood": "sad", "qty": 1}, {"id": 2, "mood": "ok", "qty": 10},
                                           {"id": 3, "mood": "happy", "qty": 100},
                                           {"id": 4, "mood": None, "qty": None}], frames
    assert frames[0]["columntypes"] == ["integer", "b_mood", "b_pos"]
    for f in frames:
        i = row_of(f)["id"]
        assert set(f["subscriptions"]) == {s for s, (_, rows) in subs.items() if i in rows}, (i, f["subscriptions"])


def test_a_partitioned_table_delivers_the_changes_of_its_partitions(bc):
    """A partitioned table is accepted (PROTOCOL.md): its rows live in its partitions, and their
    changes reach the subscription, filters applied."""
    bc.sql("CREATE TABLE b_part (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
    bc.sql("CREATE TABLE b_part_eu PARTITION OF b_part FOR VALUES IN ('eu')")
    bc.sql("CREATE TABLE b_part_us PARTITION OF b_part FOR VALUES IN ('us')")
    bc.sql("CREATE TABLE b_part_mark (id int PRIMARY KEY)")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("insert:public.b_part", "all")
            await c.subscribe("insert:public.b_part:region.eq.us", "us")
            await c.subscribe("insert:public.b_part_mark", "mark")
            bc.exec_txn("INSERT INTO b_part VALUES (1, 'eu'), (2, 'us')")
            bc.sql("INSERT INTO b_part_mark VALUES (1)")
            # up to the marker: the partitions' rows come before it, or never
            return await c.collect_until(lambda got: bool(got) and got[-1]["subscriptions"] == ["mark"], 60,
                                         what="the marker row")
        finally:
            await c.close()

    frames = run(main())
    assert [(row_of(f), sorted(f["subscriptions"])) for f in frames] == [
        ({"id": 1, "region": "eu"}, ["all"]), ({"id": 2, "region": "us"}, ["all", "us"]), ({"id": 1}, ["mark"])], \
        [(f["table"], row_of(f), f["subscriptions"]) for f in frames]


def test_detach_and_attach_partition_follow_the_hierarchy_while_subscribed(bc):
    """The decoder keeps each partition's ancestors between changes: DETACH PARTITION stops a
    partition's rows reaching the parent's subscription from the next transaction on, and
    ATTACH PARTITION (of a table, then of a sub-partitioned table) starts it, as the
    hierarchy stood when each row was written."""
    bc.sql("CREATE TABLE b_hier (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
    bc.sql("CREATE TABLE b_hier_eu PARTITION OF b_hier FOR VALUES IN ('eu')")
    bc.sql("CREATE TABLE b_hier_us (id int, region text, PRIMARY KEY (id, region))")
    bc.sql("CREATE TABLE b_hier_as (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
    bc.sql("CREATE TABLE b_hier_as_jp PARTITION OF b_hier_as FOR VALUES IN ('jp')")
    bc.sql("CREATE TABLE b_hier_mark (id int PRIMARY KEY)")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("insert:public.b_hier", "all")
            await c.subscribe("insert:public.b_hier_mark", "mark")
            bc.sql("INSERT INTO b_hier VALUES (1, 'eu')")                       # through the parent
            bc.sql("ALTER TABLE b_hier DETACH PARTITION b_hier_eu")
            bc.sql("INSERT INTO b_hier_eu VALUES (2, 'eu')")                    # detached: not the parent's
            bc.sql("INSERT INTO b_hier_us VALUES (3, 'us')")                    # not attached yet
            bc.sql("ALTER TABLE b_hier ATTACH PARTITION b_hier_us FOR VALUES IN ('us')")
            bc.sql("INSERT INTO b_hier_us VALUES (4, 'us')")                    # attached: the parent's
            bc.sql("INSERT INTO b_hier_as_jp VALUES (5, 'jp')")                 # its parent not attached yet
            bc.sql("ALTER TABLE b_hier ATTACH PARTITION b_hier_as FOR VALUES IN ('jp')")
            bc.sql("INSERT INTO b_hier_as_jp VALUES (6, 'jp')")                 # two levels down
            bc.sql("ALTER TABLE b_hier ATTACH PARTITION b_hier_eu FOR VALUES IN ('eu')")
            bc.sql("INSERT INTO b_hier_eu VALUES (7, 'eu')")
            bc.sql("INSERT INTO b_hier_mark VALUES (1)")
            return await c.collect_until(lambda got: bool(got) and got[-1]["subscriptions"] == ["mark"], 60,
                                         what="the marker row")
        finally:
            await c.close()

    frames = run(main())
    assert [(f["table"], row_of(f)["id"]) for f in frames if f["subscriptions"] == ["all"]] == [
        ("b_hier_eu", 1), ("b_hier_us", 4), ("b_hier_as_jp", 6), ("b_hier_eu", 7)], \
        [(f["table"], row_of(f), f["subscriptions"]) for f in frames]


# ------------------------------------------------------ updates and deletes
def test_updates_in_and_out_of_a_filter_with_replica_identity_full(bc):
    """Under REPLICA IDENTITY FULL the old row is whole: an update is delivered when the old
    or the new row matches, and "matched" says which (new: moved in, old: moved out, both)."""
    bc.sql("CREATE TABLE b_full (id int PRIMARY KEY, status text, v int)")
    bc.sql("ALTER TABLE b_full REPLICA IDENTITY FULL")
    bc.sql("INSERT INTO b_full VALUES (1, 'new', 1), (2, 'paid', 5)")
    steps = [
        ("UPDATE b_full SET status = 'paid' WHERE id = 1", {"paid": "new", "notpaid": "old"}),
        ("UPDATE b_full SET v = 20 WHERE id = 1", {"paid": "both", "big": "new"}),
        ("UPDATE b_full SET status = 'shipped' WHERE id = 1", {"paid": "old", "notpaid": "new", "big": "both"}),
        ("UPDATE b_full SET v = 2 WHERE id = 1", {"notpaid": "both", "big": "old"}),
        ("UPDATE b_full SET v = 3 WHERE id = 2", {"paid": "both"}),
        ("DELETE FROM b_full WHERE id = 2", ["paid"]),
        ("DELETE FROM b_full WHERE id = 1", None),  # matches no delete filter: nothing
        ("INSERT INTO b_full VALUES (3, 'paid', 50)", None),  # nobody takes inserts
        ("UPDATE b_full SET v = 60 WHERE id = 3", {"paid": "both", "big": "both"}),
    ]

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("update,delete:public.b_full:status.eq.paid", "paid")
            await c.subscribe("update:public.b_full:status.neq.paid", "notpaid")
            await c.subscribe("update:public.b_full:v.gt.10", "big")
            for sql, _ in steps:
                bc.sql(sql)
            return await c.changes(sum(1 for _, w in steps if w is not None))
        finally:
            await c.close()

    frames = run(main())
    want = [w for _, w in steps if w is not None]
    for f, w in zip(frames, want):
        if isinstance(w, dict):
            assert f["kind"] == "update" and matched_of(f) == w, (f, w)
        else:
            assert f["kind"] == "delete" and f["subscriptions"] == w and "matched" not in f, (f, w)
    # the old row is whole
    assert oldkeys_of(frames[0]) == {"id": 1, "status": "new", "v": 1} and row_of(frames[0]) == {
        "id": 1, "status": "paid", "v": 1}
    assert oldkeys_of(frames[2]) == {"id": 1, "status": "paid", "v": 20}
    assert oldkeys_of(frames[5]) == {"id": 2, "status": "paid", "v": 3} and "columnnames" not in frames[5]
    assert row_of(frames[6]) == {"id": 3, "status": "paid", "v": 60}


def test_updates_and_deletes_with_the_replica_identity_key(bc):
    """Default replica identity: the old side is the key (logged when the key changed, else
    taken from the new row). Filters on the key see rows move in and out; a filter on another
    column sees only the new side (the old row does not carry that column: a NULL matches no
    filter), so a row moving out of it is not seen: that needs REPLICA IDENTITY FULL."""
    bc.sql("CREATE TABLE b_key (id int PRIMARY KEY, status text, v int)")
    bc.sql("INSERT INTO b_key VALUES (5, 'new', 0), (50, 'new', 0), (3, 'new', 0)")
    steps = [
        ("UPDATE b_key SET id = 15 WHERE id = 5", {"low": "old"}, {"id": 5}),
        ("UPDATE b_key SET id = 7 WHERE id = 15", {"low": "new"}, {"id": 15}),
        ("UPDATE b_key SET v = 1 WHERE id = 7", {"low": "both"}, {"id": 7}),
        ("UPDATE b_key SET status = 'paid' WHERE id = 50", {"st": "new"}, {"id": 50}),
        ("UPDATE b_key SET status = 'new' WHERE id = 50", None, None),
        ("DELETE FROM b_key WHERE id = 7", ["low"], {"id": 7}),
        ("DELETE FROM b_key WHERE id = 50", None, None),
        ("UPDATE b_key SET id = 4 WHERE id = 3", {"low": "both"}, {"id": 3}),
    ]

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("update,delete:public.b_key:id.lt.10", "low")
            await c.subscribe("update:public.b_key:status.eq.paid", "st")
            for sql, _, _ in steps:
                bc.sql(sql)
            return await c.changes(sum(1 for _, w, _ in steps if w is not None))
        finally:
            await c.close()

    frames = run(main())
    want = [(w, k) for _, w, k in steps if w is not None]
    for f, (w, k) in zip(frames, want):
        if isinstance(w, dict):
            assert f["kind"] == "update" and matched_of(f) == w, (f, w)
        else:
            assert f["kind"] == "delete" and f["subscriptions"] == w, (f, w)
        assert oldkeys_of(f) == k, (f, k)
        assert f["oldkeys"]["keytypes"] == ["integer"]


def test_truncate_reaches_every_subscription_that_asked_for_it(bc):
    bc.sql("CREATE TABLE b_trunc (id int PRIMARY KEY, v int)")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("*:public.b_trunc:id.eq.1", "star")  # * includes delete: a key filter
            await c.subscribe("truncate,insert:public.b_trunc:v.eq.2", "two")
            await c.subscribe("insert:public.b_trunc", "inserts")
            bc.sql("INSERT INTO b_trunc VALUES (1, 1)")
            bc.sql("TRUNCATE b_trunc")
            bc.sql("INSERT INTO b_trunc VALUES (2, 2)")
            return await c.changes(3)
        finally:
            await c.close()

    f1, t, f2 = run(main())
    assert f1["kind"] == "insert" and set(f1["subscriptions"]) == {"star", "inserts"}
    assert t["kind"] == "truncate" and t["table"] == "b_trunc" and set(t["subscriptions"]) == {"star", "two"}, t
    assert f2["kind"] == "insert" and set(f2["subscriptions"]) == {"two", "inserts"}


# -------------------------------------------------------------------- names
def test_schema_qualified_quoted_and_unqualified_names(bc):
    bc.sql("CREATE SCHEMA b_app")
    bc.sql("CREATE TABLE b_app.b_events (id int PRIMARY KEY)")
    bc.sql("CREATE TABLE public.b_events (id int PRIMARY KEY)")
    bc.sql('CREATE SCHEMA "B Mixed"')
    bc.sql('CREATE TABLE "B Mixed"."Order Items" ("Id" int PRIMARY KEY, "Status" text)')

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        url = await open_subscribed(bc.ws_port, 'insert:"B Mixed"."Order Items":"Status".eq.Paid')
        try:
            await c.subscribe("insert:b_app.b_events", "app")
            await c.subscribe("insert:B_APP.B_Events", "folded")  # unquoted names fold to lower case
            await c.subscribe("insert:b_events", "unqualified")  # the role's search_path: public
            await c.subscribe("insert:public.b_events", "public")
            await c.subscribe('insert:"B Mixed"."Order Items":"Status".eq.Paid', "mixed")
            await c.subscribe('insert:"B Mixed"."Order Items":"Status".eq.paid', "lower")
            await c.subscribe('insert: "B Mixed" . "Order Items" :"Status".in.Paid%2C,x', "spaced")
            err = await c.subscribe_error('insert:"B_APP".b_events', "quoted_upper")
            bc.sql("INSERT INTO b_app.b_events VALUES (1)")
            bc.sql("INSERT INTO public.b_events VALUES (2)")
            bc.sql("""INSERT INTO "B Mixed"."Order Items" VALUES (3, 'Paid')""")
            bc.sql("""INSERT INTO "B Mixed"."Order Items" VALUES (4, 'paid')""")
            bc.sql("""INSERT INTO "B Mixed"."Order Items" VALUES (5, 'Paid,')""")
            return err, await c.changes(5), await url.change()
        finally:
            await c.close()
            await url.close()

    err, fs, url_frame = run(main())
    assert err.startswith("unknown table ") and "B_APP" in err, err
    assert [(f["schema"], f["table"], set(f["subscriptions"])) for f in fs] == [
        ("b_app", "b_events", {"app", "folded"}),
        ("public", "b_events", {"unqualified", "public"}),
        ("B Mixed", "Order Items", {"mixed"}),
        ("B Mixed", "Order Items", {"lower"}),
        ("B Mixed", "Order Items", {"spaced"}),
    ], fs
    assert fs[2]["columnnames"] == ["Id", "Status"] and fs[2]["columnvalues"] == [3, "Paid"]
    assert url_frame["table"] == "Order Items" and url_frame["columnvalues"] == [3, "Paid"]


def test_table_created_after_the_engine_started(bc):
    bc.sql("CREATE TABLE b_early (id int PRIMARY KEY)")

    async def main():
        c = await open_subscribed(bc.ws_port, "insert:public.b_early")  # the engine runs
        try:
            bc.sql("INSERT INTO b_early VALUES (1)")
            early = await c.change()
            bc.sql("CREATE TABLE b_late (id int PRIMARY KEY, v text)")
            await c.subscribe("insert,update:public.b_late:id.in.2,4", "late")
            bc.sql("INSERT INTO b_late VALUES (1, 'y'), (2, 'x')")
            f = await c.change()
            # a column added after subscribing shows in later frames
            bc.sql("ALTER TABLE b_late ADD COLUMN w int DEFAULT 7")
            bc.sql("UPDATE b_late SET w = 8 WHERE id = 2")
            g = await c.change()
            late2 = await open_subscribed(bc.ws_port, "insert:b_late")
            try:
                bc.exec_txn("INSERT INTO b_late VALUES (3, 'x', 9), (4, 'z', 10)")
                h = await late2.changes(2)
                h2 = await c.change()
            finally:
                await late2.close()
            return early, f, g, h, h2
        finally:
            await c.close()

    early, f, g, h, h2 = run(main())
    assert ids([early]) == [1]
    assert (f["table"], row_of(f), f["subscriptions"]) == ("b_late", {"id": 2, "v": "x"}, ["late"]), f
    assert g["kind"] == "update" and row_of(g) == {"id": 2, "v": "x", "w": 8} and matched_of(g) == {"late": "both"}, g
    assert [row_of(x) for x in h] == [{"id": 3, "v": "x", "w": 9}, {"id": 4, "v": "z", "w": 10}]
    assert all(x["subscriptions"] == ["query"] for x in h)
    assert row_of(h2) == {"id": 4, "v": "z", "w": 10} and h2["subscriptions"] == ["late"]


def test_dropping_the_table_ends_its_subscriptions_with_an_error_frame(bc):
    bc.sql("CREATE TABLE b_drop (id int PRIMARY KEY)")
    bc.sql("CREATE TABLE b_drop_mark (id int PRIMARY KEY)")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("insert:public.b_drop", "d")
            await c.subscribe("insert:public.b_drop_mark", "m")
            bc.sql("INSERT INTO b_drop VALUES (1)")
            first = await c.change()
            bc.sql("DROP TABLE b_drop")
            ended = await c.expect("error", timeout=60, id="d")
            bc.sql("CREATE TABLE b_drop (id int PRIMARY KEY)")  # same name, another table
            bc.sql("INSERT INTO b_drop VALUES (2)")
            bc.sql("INSERT INTO b_drop_mark VALUES (1)")
            return first, ended, await c.change()
        finally:
            await c.close()

    first, ended, mark = run(main())
    assert row_of(first) == {"id": 1} and first["subscriptions"] == ["d"]
    assert "b_drop" in ended["error"], ended
    assert row_of(mark) == {"id": 1} and mark["subscriptions"] == ["m"], mark


# ------------------------------------------------------------------ refusals
@pytest.fixture(scope="module")
def err_tables(bc):
    bc.sql("CREATE TABLE b_err (id int PRIMARY KEY, n int, status text, p point, j json, arr int[], note text)")
    bc.sql("CREATE VIEW b_err_v AS SELECT * FROM b_err")
    bc.sql("CREATE TABLE b_err_full (id int PRIMARY KEY, status text)")
    bc.sql("ALTER TABLE b_err_full REPLICA IDENTITY FULL")
    return bc


GRAMMAR = "grammar"   # the parser's message: "invalid query: " (URL) / "invalid subscription query: " (message)
CATALOG = "catalog"   # checked in the catalog: the same text both ways

DELETE_KEY_ONLY = ('filter "status.eq.x": a DELETE carries only the replica identity key (id) of table public.b_err; '
                   'filter delete on those columns, or ALTER TABLE public.b_err REPLICA IDENTITY FULL')

# (case, query, kind, expected error text or a check)
REFUSED_QUERIES = [
    ("unknown type", "inserts:public.b_err", GRAMMAR,
     'unknown type "inserts" (types: insert, update, delete, truncate, *)'),
    ("unknown operator", "insert:public.b_err:n.like.1", GRAMMAR,
     'filter "n.like.1": unknown operator "like" (operators: eq, neq, lt, lte, gt, gte, in)'),
    ("missing value", "insert:public.b_err:n.eq", GRAMMAR, 'filter "n.eq": missing value: write <column>.<op>.<value>'),
    ("missing table", "insert", GRAMMAR, "missing table: expected <types>:<table>[:<column>.<op>.<value>]..."),
    ("comma outside in", "insert:public.b_err:n.eq.1,2", GRAMMAR,
     "filter \"n.eq.1,2\": ',' separates values only after in; write a comma inside a value as %2C"),
    ("too many in values", "insert:public.b_err:n.in." + ",".join(str(i) for i in range(101)), GRAMMAR,
     lambda e: e.startswith('filter "n.in.0,1,2,') and e.endswith(": too many values for in: at most 100")),
    ("malformed escape", "insert:public.b_err:note.eq.%ZZ", GRAMMAR,
     'filter "note.eq.%ZZ": value "%ZZ": malformed %-escape (write % as %25)'),
    ("unknown table", "insert:public.b_nosuch", CATALOG, 'unknown table "public.b_nosuch"'),
    ("unknown unqualified table", "insert:b_nosuch", CATALOG, lambda e: e.startswith('unknown table "b_nosuch"')),
    ("unknown column", "insert:public.b_err:x.eq.1", CATALOG, 'filter "x.eq.1": unknown column "x" of table public.b_err'),
    ("value the type rejects", "insert:public.b_err:n.eq.x", CATALOG,
     'filter "n.eq.x": invalid input syntax for type integer: "x"'),
    ("float for an int column", "insert:public.b_err:n.gt.4.5", CATALOG,
     'filter "n.gt.4.5": invalid input syntax for type integer: "4.5"'),
    ("int out of range", "insert:public.b_err:n.in.1,99999999999", CATALOG,
     lambda e: e.startswith('filter "n.in.1,99999999999": ') and 'value "99999999999" is out of range for type integer' in e),
    # the operator class is checked before the value (PROTOCOL.md's order)
    ("point has no btree", "insert:public.b_err:p.eq.x", CATALOG,
     'filter "p.eq.x": type point has no default btree operator class: it cannot be compared'),
    ("json has no btree", "insert:public.b_err:j.eq.{}", CATALOG,
     'filter "j.eq.{}": type json has no default btree operator class: it cannot be compared'),
    ("array column", "insert:public.b_err:arr.eq.{1}", CATALOG, lambda e: e.startswith('filter "arr.eq.{1}": ')),
    ("delete filter on a non-key column", "delete:public.b_err:status.eq.x", CATALOG, DELETE_KEY_ONLY),
    ("star includes delete", "*:public.b_err:status.eq.x", CATALOG, DELETE_KEY_ONLY),
    ("a view", "insert:public.b_err_v", CATALOG, lambda e: "b_err_v" in e),
]


def _http_text(kind, expected):
    if callable(expected):
        return (lambda e: e.startswith("invalid query: ") and expected(e[len("invalid query: "):])) \
            if kind == GRAMMAR else expected
    return ("invalid query: " + expected) if kind == GRAMMAR else expected


def _message_text(kind, expected):
    p = "invalid subscription query: "
    if callable(expected):
        return (lambda e: e.startswith(p) and expected(e[len(p):])) if kind == GRAMMAR else expected
    return (p + expected) if kind == GRAMMAR else expected


@pytest.mark.parametrize("case,query,kind,expected", REFUSED_QUERIES, ids=[r[0] for r in REFUSED_QUERIES])
def test_refused_query_in_the_url_is_400_with_json(err_tables, case, query, kind, expected):
    assert_http_error(err_tables, ws_target(query), 400, _http_text(kind, expected))


def test_refused_queries_in_messages_are_error_frames_and_the_socket_stays_open(err_tables):
    bc = err_tables

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            got = {}
            for case, query, kind, _ in REFUSED_QUERIES:
                got[case] = await c.subscribe_error(query, "e-" + case)
            # a message naming no id: "id": null
            await c.send_json({"subscribe": "insert:public.b_err"})
            no_id = await c.expect("error", id=None)
            await c.ws.send("not json")
            bad_json = await c.expect("error", id=None)
            # filters that are fine: delete on the key, delete on any column under FULL, and
            # update on a non-key column
            await c.subscribe("delete:public.b_err:id.eq.1", "ok-key")
            await c.subscribe("delete:public.b_err_full:status.eq.x", "ok-full")
            await c.subscribe("update:public.b_err:status.eq.x", "ok-update")
            bc.sql("INSERT INTO b_err (id) VALUES (1)")
            bc.sql("DELETE FROM b_err WHERE id = 1")
            f = await c.change()
            return got, no_id, bad_json, f
        finally:
            await c.close()

    got, no_id, bad_json, f = run(main())
    for case, query, kind, expected in REFUSED_QUERIES:
        want = _message_text(kind, expected)
        if callable(want):
            assert want(got[case]), (case, got[case])
        else:
            assert got[case] == want, (case, got[case])
    assert no_id["error"] == 'missing "id": expected {"subscribe": "<query>", "id": "<your id>"}', no_id
    assert bad_json["error"].startswith("invalid JSON at offset 1:"), bad_json
    assert f["kind"] == "delete" and f["subscriptions"] == ["ok-key"] and oldkeys_of(f) == {"id": 1}, f


@pytest.mark.parametrize("target,expected", [
    ("/ws?since=0/1",
     'since needs a query: it applies to the subscription given by query= (on a bare /ws, give "since" in each '
     'subscribe message)'),
    (ws_target("insert:public.b_err") + "&since=xyz", "since is not a valid LSN (expected X/Y in hexadecimal, e.g. 0/16B3748)"),
    (ws_target("insert:public.b_err") + "&query=insert", "query given more than once in the query string"),
    ("/ws?query=", "query parameter without a value"),
], ids=["since without query", "since not an LSN", "query twice", "empty query"])
def test_refused_parameters_are_400(err_tables, target, expected):
    assert_http_error(err_tables, target, 400, expected)


# ------------------------------------------------- many subscriptions, one socket
def test_many_subscriptions_on_one_socket(bc):
    bc.sql("CREATE TABLE b_multi (id int PRIMARY KEY, v int)")
    bc.sql("ALTER TABLE b_multi REPLICA IDENTITY FULL")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        u = await open_subscribed(bc.ws_port, "insert:public.b_multi")
        try:
            await c.subscribe("insert,update:public.b_multi:v.lt.10", "a")
            await c.subscribe("insert,update:public.b_multi:v.gt.5", "b")
            dup = await c.subscribe_error("insert:public.b_multi", "a")
            bc.sql("INSERT INTO b_multi VALUES (1, 7)")     # a and b: one frame
            bc.sql("INSERT INTO b_multi VALUES (2, 3)")     # a
            bc.sql("INSERT INTO b_multi VALUES (3, 20)")    # b
            bc.sql("UPDATE b_multi SET v = 30 WHERE id = 1")  # a: moved out, b: stayed
            first = await c.changes(4)
            await c.unsubscribe("a")
            bc.sql("INSERT INTO b_multi VALUES (4, 7)")
            after_unsub = await c.change()
            await c.send_json({"unsubscribe": "a"})  # no longer exists
            again = await c.expect("error", id="a")
            await c.send_json({"unsubscribe": "nope"})
            unknown = await c.expect("error", id="nope")
            # the URL subscription ("query") and one more on the same socket
            u_frames = await u.changes(4)
            await u.subscribe("insert:public.b_multi:v.eq.7", "seven")
            # up to 100 subscriptions on a socket (b + 99 more); the 101st is refused
            for k in range(99):
                await c.subscribe("insert:public.b_multi", f"s{k}")
            over = await c.subscribe_error("insert:public.b_multi", "s99")
            bc.sql("INSERT INTO b_multi VALUES (5, 7)")
            hundred = await c.change()
            u_frames += await u.changes(1)
            await u.unsubscribe("query")
            bc.sql("INSERT INTO b_multi VALUES (6, 8)")  # matches no subscription left on u
            bc.sql("INSERT INTO b_multi VALUES (7, 7)")
            u_last = await u.change()
            return dup, first, after_unsub, again, unknown, over, hundred, u_frames, u_last
        finally:
            await c.close()
            await u.close()

    dup, first, after_unsub, again, unknown, over, hundred, u_frames, u_last = run(main())
    assert dup == 'subscription id "a" is already in use on this socket', dup
    assert [(ids([f])[0], sorted(f["subscriptions"])) for f in first] == [
        (1, ["a", "b"]), (2, ["a"]), (3, ["b"]), (1, ["a", "b"])], first
    assert matched_of(first[3]) == {"a": "old", "b": "both"}
    assert ids([after_unsub]) == [4] and after_unsub["subscriptions"] == ["b"]
    assert again["error"] == 'no subscription "a" on this socket', again
    assert unknown["error"] == 'no subscription "nope" on this socket', unknown
    assert over == "too many subscriptions: at most 100 per socket", over
    assert ids([hundred]) == [5] and sorted(hundred["subscriptions"]) == sorted(["b"] + [f"s{k}" for k in range(99)])
    assert [(ids([f])[0], sorted(f["subscriptions"])) for f in u_frames] == [
        (1, ["query"]), (2, ["query"]), (3, ["query"]), (4, ["query"]), (5, ["query", "seven"])], u_frames
    assert ids([u_last]) == [7] and u_last["subscriptions"] == ["seven"]


def test_no_frame_of_a_subscription_follows_its_unsubscribed_frame(bc):
    """While a writer runs, unsubscribe: frames of it may come before "unsubscribed", none
    after; the socket's other subscription goes on (its marker row ends the reading)."""
    bc.sql("CREATE TABLE b_churn (id int PRIMARY KEY)")
    bc.sql("CREATE TABLE b_churn_mark (id int PRIMARY KEY)")
    writer = XidWriter(bc, "b_churn")

    async def main():
        c = await BroadcastClient.open(bc.ws_port)
        try:
            await c.subscribe("insert:public.b_churn", "w")
            await c.subscribe("insert:public.b_churn_mark", "m")
            writer.start()
            await apoll_written(writer, 100)
            await c.send_json({"unsubscribe": "w"})
            before = await c.collect_until(lambda got: bool(got) and got[-1]["type"] == "unsubscribed", 60,
                                           what="the unsubscribed frame")
            await apoll_written(writer, writer.written + 100)
            writer.stop()
            bc.sql("INSERT INTO b_churn_mark VALUES (1)")
            after = await c.collect_until(lambda got: bool(got) and got[-1].get("subscriptions") == ["m"], 60,
                                          what="the marker row")
            return before, after
        finally:
            writer.stop()
            await c.close()

    before, after = run(main())
    assert writer.error is None, repr(writer.error)
    assert before[-1] == {"type": "unsubscribed", "id": "w"}
    got = ids(before[:-1])
    assert got == list(range(1, len(got) + 1)), got[:10]
    assert after == [after[-1]] and row_of(after[-1]) == {"id": 1}, [f for f in after if f["type"] != "change"
                                                                   or f["subscriptions"] != ["m"]][:3]


# ---------------------------------------------------------------- since, gap
def test_since_replays_what_a_reconnecting_client_missed(bc):
    """A client that reconnects with since = the last lsn it saw gets the matching changes it
    missed (from the replay window), in commit order and nothing at or before since, then the
    live ones. No other subscriber is there while it is away."""
    bc.sql("CREATE TABLE b_replay (id int PRIMARY KEY, v text)")
    bc.sql("CREATE TABLE b_replay_other (id int PRIMARY KEY)")
    start = wal_position(bc)

    async def main():
        c1 = await open_subscribed(bc.ws_port, "insert:public.b_replay:v.neq.skip")
        try:
            for i in (1, 2, 3):
                bc.sql("INSERT INTO b_replay VALUES (%s, 'x')", (i,))
            seen = await c1.changes(3)
        finally:
            await c1.close()
        since = seen[-1]["lsn"]
        missed_xids = []
        for i in (4, 5, 6, 7, 8):
            missed_xids.append(bc.exec_txn(("INSERT INTO b_replay VALUES (%s, 'x')", (i,))))
            bc.sql("INSERT INTO b_replay VALUES (%s, 'skip')", (100 + i,))
            bc.sql("INSERT INTO b_replay_other VALUES (%s)", (i,))
        c2 = await BroadcastClient.open(bc.ws_port, query="insert:public.b_replay:v.neq.skip", since=since)
        try:
            sub = await c2.subscribed()
            replay = await c2.changes(5)
            bc.sql("INSERT INTO b_replay VALUES (9, 'x')")
            live = await c2.change()
        finally:
            await c2.close()
        # since in a subscribe message, on a bare socket: 4..9 again
        c3 = await BroadcastClient.open(bc.ws_port)
        try:
            sub3 = await c3.subscribe("insert:public.b_replay:v.neq.skip", "again", since=since)
            replay3 = await c3.changes(6)
        finally:
            await c3.close()
        return seen, since, missed_xids, sub, replay, live, sub3, replay3

    seen, since, missed_xids, sub, replay, live, sub3, replay3 = run(main())
    ends = commit_end_lsns(bc, start)
    assert ids(seen) == [1, 2, 3]
    assert ids(replay) == [4, 5, 6, 7, 8], replay
    assert [(f["xid"], f["lsn"]) for f in replay] == [(x, ends[x]) for x in missed_xids]
    assert all(f["subscriptions"] == ["query"] for f in replay + [live])
    assert lsn_int(replay[0]["lsn"]) > lsn_int(since)
    assert ids([live]) == [9] and lsn_int(live["lsn"]) > lsn_int(replay[-1]["lsn"])
    assert ids(replay3) == [4, 5, 6, 7, 8, 9] and all(f["subscriptions"] == ["again"] for f in replay3)
    assert [f["lsn"] for f in replay3] == [f["lsn"] for f in replay + [live]]


def test_since_replay_while_another_subscriber_stayed(bc):
    """The same with a second socket subscribed to the table all along."""
    bc.sql("CREATE TABLE b_replay2 (id int PRIMARY KEY)")

    async def main():
        keeper = await open_subscribed(bc.ws_port, "insert:public.b_replay2")
        try:
            c1 = await open_subscribed(bc.ws_port, "insert:public.b_replay2:id.lt.1000")
            try:
                bc.sql("INSERT INTO b_replay2 VALUES (1)")
                since = (await c1.change())["lsn"]
            finally:
                await c1.close()
            bc.sql("INSERT INTO b_replay2 VALUES (2)")
            bc.sql("INSERT INTO b_replay2 VALUES (2000)")
            bc.sql("INSERT INTO b_replay2 VALUES (3)")
            kept = await keeper.changes(4)
            c2 = await BroadcastClient.open(bc.ws_port, query="insert:public.b_replay2:id.lt.1000", since=since)
            try:
                await c2.subscribed()
                replay = await c2.changes(2)
                bc.sql("INSERT INTO b_replay2 VALUES (4)")
                live = await c2.change()
            finally:
                await c2.close()
            return kept, replay, live
        finally:
            await keeper.close()

    kept, replay, live = run(main())
    assert ids(kept) == [1, 2, 2000, 3]
    assert ids(replay) == [2, 3] and [f["lsn"] for f in replay] == [kept[1]["lsn"], kept[3]["lsn"]]
    assert ids([live]) == [4]


def test_since_0_0_asks_for_all_the_window_holds(bc):
    """since=0/0: the window does not reach back to 0/0, so a gap frame (since 0/0) follows
    subscribed; then every matching change the window holds (all of this new table's: it was
    written while the engine ran, far less than the 64MB window), then live ones."""
    bc.sql("CREATE TABLE b_all (id int PRIMARY KEY)")

    async def main():
        keeper = await open_subscribed(bc.ws_port, "insert:public.b_all")  # the engine runs, decoding b_all
        try:
            for i in (1, 2, 3):
                bc.sql("INSERT INTO b_all VALUES (%s)", (i,))
            c = await BroadcastClient.open(bc.ws_port, query="insert:public.b_all:id.neq.2", since="0/0")
            try:
                await c.subscribed()
                gap = await c.expect("gap", id="query")
                replay = await c.changes(2)
                bc.sql("INSERT INTO b_all VALUES (4)")
                live = await c.change()
            finally:
                await c.close()
            return gap, replay, live
        finally:
            await keeper.close()

    gap, replay, live = run(main())
    assert gap["since"] == "0/0" and lsn_int(gap["oldest"]) > 0, gap
    assert ids(replay) == [1, 3] and ids([live]) == [4]
    assert lsn_int(replay[0]["lsn"]) > lsn_int(gap["oldest"])


@pytest.fixture
def small_window():
    c = started_cluster(BC_CONF + ["pgcdcws.broadcast_replay_size = '1MB'"])
    try:
        with logs_reported(c):
            yield c
    finally:
        c.destroy()


def test_gap_frame_when_since_is_older_than_the_window(small_window):
    """With a 1MB replay window, about 3MB of changes later a reconnect with the old since
    gets subscribed, then gap{since, oldest}, then the changes the window still holds (a
    gap-free run up to the newest, starting at oldest), then live ones."""
    gc = small_window
    gc.sql("CREATE TABLE b_gap (id int PRIMARY KEY, pad text)")
    rows = 1500  # about 2 kB a frame: ~3 MB, three windows

    async def drain(client, n):
        return await client.changes(n, timeout=300)

    async def main():
        keeper = await open_subscribed(gc.ws_port, "insert:public.b_gap")  # the engine decodes it all
        try:
            c1 = await open_subscribed(gc.ws_port, "insert:public.b_gap")
            try:
                gc.sql("INSERT INTO b_gap VALUES (1, 'first')")
                since = (await c1.change())["lsn"]
            finally:
                await c1.close()
            kept = asyncio.ensure_future(drain(keeper, rows + 1))
            await asyncio.get_running_loop().run_in_executor(None, lambda: gc.sql(
                "DO $$ BEGIN FOR i IN 2..%s LOOP INSERT INTO b_gap VALUES (i, repeat(md5(i::text), 60)); COMMIT; "
                "END LOOP; END $$" % (rows + 1)))
            kept = await kept
            c2 = await BroadcastClient.open(gc.ws_port, query="insert:public.b_gap", since=since)
            try:
                await c2.subscribed()
                gap = await c2.expect("gap", id="query")
                replay = await c2.collect_until(lambda got: bool(got) and ids(got[-1:]) == [rows + 1], 120,
                                                what=f"the replay to reach row {rows + 1}")
                replay_bytes = sum(len(r.encode()) for r in c2.raws[2:])
                gc.sql("INSERT INTO b_gap VALUES (%s, 'live')", (rows + 2,))
                live = await c2.change()
            finally:
                await c2.close()
            return since, kept, gap, replay, replay_bytes, live
        finally:
            await keeper.close()

    since, kept, gap, replay, replay_bytes, live = run(main())
    assert ids(kept)[:2] == [1, 2] and ids(kept)[-1] == rows + 1
    assert lsn_int(gap["since"]) == lsn_int(since), gap
    assert lsn_int(gap["oldest"]) > lsn_int(since), gap
    got = ids(replay)
    assert got == list(range(got[0], rows + 2)), f"replay not a gap-free run: {got[:10]}"
    assert got[0] > 2, "the whole range was replayed: no gap to report"
    oldest = lsn_int(gap["oldest"])
    after = [i for i, f in zip(ids(kept), kept) if lsn_int(f["lsn"]) > oldest]
    at = [i for i, f in zip(ids(kept), kept) if lsn_int(f["lsn"]) == oldest]
    assert got in (after, at + after), (got[:3], after[:3], at)
    # the window is 1MB of recent frames
    assert 200 * 1024 < replay_bytes < 1280 * 1024, replay_bytes
    assert [f["lsn"] for f in replay] == [f["lsn"] for f in kept[-len(replay):]]
    assert ids([live]) == [rows + 2]


# ------------------------------------------------- SELECT and row security
@pytest.fixture(scope="module")
def sec():
    c = started_cluster(BC_CONF + ["pgcdcws.auth = token"])
    try:
        for role in ("b_reader", "b_nosel", "b_cols", "b_r1", "b_r2"):
            c.sql(f"CREATE ROLE {role} LOGIN")
        c.sql("CREATE TABLE b_secret (id int PRIMARY KEY, s text)")
        c.sql("GRANT SELECT ON b_secret TO b_reader")
        c.sql("GRANT SELECT (id) ON b_secret TO b_cols")
        c.sql("CREATE TABLE b_rls (id int PRIMARY KEY, owner text)")
        c.sql("ALTER TABLE b_rls REPLICA IDENTITY FULL")
        c.sql("ALTER TABLE b_rls ENABLE ROW LEVEL SECURITY")
        c.sql("CREATE POLICY mine ON b_rls FOR SELECT USING (owner = current_user)")
        c.sql("GRANT SELECT ON b_rls TO b_r1, b_r2")
        c.sql("SELECT cdc_token()")
        with logs_reported(c):
            yield c
    finally:
        c.destroy()


def test_subscribing_needs_select_on_the_table(sec):
    target = ws_target("insert:public.b_secret")
    assert_http_error(sec, target, 401, "invalid or missing token")
    for role in ("b_nosel", "b_cols"):  # column privileges are not enough: the frame carries every column
        tok = token_for(sec, role)
        assert_http_error(sec, target, 403, "permission denied for table public.b_secret",
                          headers=[f"Authorization: Bearer {tok}"])

    async def main():
        c = await BroadcastClient.open(sec.ws_port, token=token_for(sec, "b_nosel"))
        r = await open_subscribed(sec.ws_port, "insert:public.b_secret", token=token_for(sec, "b_reader"))
        try:
            err = await c.subscribe_error("insert:public.b_secret", "s")
            sec.sql("INSERT INTO b_secret VALUES (1, 'x')")
            return err, await r.change()
        finally:
            await c.close()
            await r.close()

    err, f = run(main())
    assert err == "permission denied for table public.b_secret"
    assert row_of(f) == {"id": 1, "s": "x"}


def test_row_security_applies_to_each_subscriber(sec):
    async def main():
        r1 = await open_subscribed(sec.ws_port, "insert,delete:public.b_rls", token=token_for(sec, "b_r1"))
        r2 = await open_subscribed(sec.ws_port, "insert,delete:public.b_rls", token=token_for(sec, "b_r2"))
        try:
            await r1.subscribe("insert:public.b_rls:id.gt.10", "big")
            sec.sql("INSERT INTO b_rls VALUES (1, 'b_r2')")
            sec.sql("INSERT INTO b_rls VALUES (2, 'b_r1')")
            sec.exec_txn("INSERT INTO b_rls VALUES (3, 'b_r2'), (4, 'b_r1'), (11, 'b_r2'), (12, 'b_r1')")
            sec.sql("DELETE FROM b_rls WHERE id = 1")
            sec.sql("DELETE FROM b_rls WHERE id = 2")
            sec.sql("INSERT INTO b_rls VALUES (5, 'b_r1'), (6, 'b_r2')")
            return await r1.changes(5), await r2.changes(5)
        finally:
            await r1.close()
            await r2.close()

    f1, f2 = run(main())
    assert [(f["kind"], ids([f])[0], sorted(f["subscriptions"])) for f in f1] == [
        ("insert", 2, ["query"]), ("insert", 4, ["query"]), ("insert", 12, ["big", "query"]),
        ("delete", 2, ["query"]), ("insert", 5, ["query"])], f1
    assert [(f["kind"], ids([f])[0]) for f in f2] == [
        ("insert", 1), ("insert", 3), ("insert", 11), ("delete", 1), ("insert", 6)], f2
    assert oldkeys_of(f2[3]) == {"id": 1, "owner": "b_r2"}


def test_an_unqualified_table_is_looked_up_as_the_subscribing_role(sec):
    """"$user" comes first on the search path: each role finds its own b_sp."""
    sec.sql("CREATE SCHEMA b_r1 AUTHORIZATION b_r1")
    sec.sql("CREATE TABLE b_r1.b_sp (id int PRIMARY KEY)")
    sec.sql("GRANT SELECT ON b_r1.b_sp TO b_r1")
    sec.sql("CREATE TABLE public.b_sp (id int PRIMARY KEY)")
    sec.sql("GRANT SELECT ON public.b_sp TO b_r1, b_r2")

    async def main():
        r1 = await open_subscribed(sec.ws_port, "insert:b_sp", token=token_for(sec, "b_r1"))
        r2 = await open_subscribed(sec.ws_port, "insert:b_sp", token=token_for(sec, "b_r2"))
        try:
            sec.sql("INSERT INTO public.b_sp VALUES (1)")
            sec.sql("INSERT INTO b_r1.b_sp VALUES (2)")
            return await r1.change(), await r2.change()
        finally:
            await r1.close()
            await r2.close()

    f1, f2 = run(main())
    assert (f1["schema"], f1["table"], row_of(f1)) == ("b_r1", "b_sp", {"id": 2}), f1
    assert (f2["schema"], f2["table"], row_of(f2)) == ("public", "b_sp", {"id": 1}), f2


def test_a_subscription_whose_role_loses_select_ends_with_an_error_frame(sec):
    sec.sql("CREATE TABLE b_revoke (id int PRIMARY KEY)")
    sec.sql("GRANT SELECT ON b_revoke TO b_reader")

    async def main():
        c = await open_subscribed(sec.ws_port, "insert:public.b_revoke", token=token_for(sec, "b_reader"))
        try:
            await c.subscribe("insert:public.b_secret", "other")
            sec.sql("INSERT INTO b_revoke VALUES (1)")
            first = await c.change()
            sec.sql("REVOKE SELECT ON b_revoke FROM b_reader")
            sec.sql("INSERT INTO b_revoke VALUES (2)")
            ended = await c.expect("error", id="query")
            sec.sql("GRANT SELECT ON b_revoke TO b_reader")
            sec.sql("INSERT INTO b_revoke VALUES (3)")   # the subscription is gone: nothing
            sec.sql("INSERT INTO b_secret VALUES (100, 'after')")
            return first, ended, await c.change()
        finally:
            await c.close()

    first, ended, after = run(main())
    assert row_of(first) == {"id": 1} and first["subscriptions"] == ["query"]
    assert "b_revoke" in ended["error"], ended
    assert row_of(after) == {"id": 100, "s": "after"} and after["subscriptions"] == ["other"], after


def test_an_expired_token_closes_the_socket_4001(sec):
    async def main():
        # a bare socket: the close must not race the first subscription's decoder start
        c = await BroadcastClient.open(sec.ws_port, token=token_for(sec, "b_reader", "3 seconds"))
        try:
            return await c.closed(timeout=30)
        finally:
            await c.close()

    code, reason, frames = run(main())
    assert (code, reason) == (4001, "token expired"), (code, reason, frames)


def test_a_fresh_access_token_keeps_the_socket_open(sec):
    """{"access_token": ...} keeps its meaning on /ws: sent before the first token expires, the
    socket and its subscription outlive that token."""
    sec.sql("CREATE TABLE b_refresh (id int PRIMARY KEY)")
    sec.sql("GRANT SELECT ON b_refresh TO b_reader")

    async def main():
        short = token_for(sec, "b_reader", "4 seconds")
        expires = time.time() + 4
        c = await BroadcastClient.open(sec.ws_port, token=short)
        try:
            await c.subscribe("insert:public.b_refresh", "r")
            await c.send_json({"access_token": token_for(sec, "b_reader", "1 hour")})
            # past the first token's exp (plus the server's check period): still open and delivering
            await apoll(lambda: time.time() > expires + 3, 30, what="the first token to expire")
            sec.sql("INSERT INTO b_refresh VALUES (1)")
            return await c.change()
        finally:
            await c.close()

    f = run(main())
    assert row_of(f) == {"id": 1} and f["subscriptions"] == ["r"], f
