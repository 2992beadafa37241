"""Snapshots exported by cdc_init() and POST /v1/snapshot/data (issue: snapshot feature).

1. Lifetime: importable while a stream runs, cdc_snapshot()/cdc_slots(), release, timeout,
   several at once, cdc_drop, server restart.
2. POST /v1/snapshot/data: value encoding, visibility (exactly the rows before cdc_init()),
   offset and keyset paging, table name forms.
3. Injection attempts: all 400, nothing runs.
4. Error statuses: 400 / 404 / 405 / 410 / 411 / 413.
5. A large snapshot read does not hold up streaming on another slot.
6. The exact cut: snapshot + stream rebuild tables written at full speed during cdc_init().
"""

import asyncio
import decimal
import http.client
import json
import random
import socket
import threading
import time

import psycopg2
import pytest

from cdcws import StreamClient, http_request, loads, lsn_int
from conftest import wait_for

D = decimal.Decimal
SNAP_PATH = "/v1/snapshot/data"


# ------------------------------------------------------------------------ helpers
class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"Reply({self.status}, {self.headers!r}, {self.body[:300]!r})"


def snap_post(port, body, timeout=30):
    """POST body (a dict, str or bytes) to /v1/snapshot/data with http.client."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http.client.HTTPConnection("localhost", port, timeout=timeout)
    try:
        conn.request("POST", SNAP_PATH, body=body,
                     headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        r = conn.getresponse()
        data = r.read()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def snap_rows(port, req, timeout=30):
    """A 200 reply's rows (strict JSON: exact numbers)."""
    r = snap_post(port, req, timeout)
    assert r.status == 200, f"{req!r} -> {r!r}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    rows = r.json()
    assert isinstance(rows, list), r
    return rows


def snap_error(port, req, status):
    """The message of an error reply with the expected status and a {"error": str} body."""
    r = snap_post(port, req)
    assert r.status == status, f"{req!r}: expected {status}, got {r!r}"
    assert r.headers.get("content-type", "").startswith("application/json"), r
    obj = r.json()
    assert isinstance(obj, dict) and set(obj) == {"error"}, r
    assert isinstance(obj["error"], str) and obj["error"], r
    return obj["error"]


def keyset_read(port, slot, table, column="id", order="asc", limit=100):
    """Walk a table with keyset paging; return (rows, page sizes)."""
    rows, sizes, after = [], [], None
    for _ in range(100000):
        req = {"slotName": slot, "table": table, "limit": limit,
               "order_by": {"column": column, "order": order}}
        if after is not None:
            req["after"] = after
        page = snap_rows(port, req)
        sizes.append(len(page))
        rows += page
        if len(page) < limit:
            return rows, sizes
        after = page[-1][column]
    raise AssertionError("keyset paging did not end")


def raw_exchange(port, data, timeout=10, send_errors_ok=False):
    """Send raw bytes; read until the server closes; return (status, headers, body)."""
    with socket.create_connection(("localhost", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            if not send_errors_ok:
                raise
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    head, sep, body = buf.partition(b"\r\n\r\n")
    assert sep, f"incomplete HTTP response: {buf!r}"
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ")[1]), headers, body


def sql_error(cluster, query, params=None):
    """The primary message of the error a statement raises."""
    with pytest.raises(psycopg2.Error) as ei:
        cluster.sql(query, params)
    return ei.value.diag.message_primary or str(ei.value)


def read_in_snapshot(cluster, snap, query):
    """Import `snap` in a new session and run query there."""
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snap,))
            cur.execute(query)
            rows = cur.fetchall()
            cur.execute("COMMIT")
            return rows
    finally:
        conn.close()


def import_error(cluster, snap):
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            with pytest.raises(psycopg2.Error) as ei:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snap,))
            return ei.value.diag.message_primary
    finally:
        conn.close()


def snapshot_cols(cluster, slot):
    rows = cluster.sql("SELECT snapshot_name, snapshot_held_since, snapshot_held_since <= now() "
                       "FROM cdc_slots() WHERE slot_name = %s", (slot,))
    assert len(rows) == 1, rows
    return rows[0]


def snapshot_workers(cluster):
    return len(cluster.pids_by_backend_type("pgcdcws snapshot", fresh=True))


@pytest.fixture
def slot_for(cluster):
    """slot_for(name) -> (slot, lsn, snapshot_name) from cdc_init(name); cdc_drop at the end."""
    made = []

    def make(name):
        row = cluster.sql("SELECT slot_name, lsn::text, snapshot_name FROM cdc_init(%s)", (name,))[0]
        made.append(name)
        assert row[0] == name and row[2]
        return row

    yield make
    for name in made:
        cluster.drop_slot_quietly(name)


def ids_of(rows, col="id"):
    return [r[col] for r in rows]


# ----------------------------------------------------------------- 1. lifetime
def test_snapshot_lives_while_streaming_and_release_ends_it(cluster, slot_for):
    cluster.sql("CREATE TABLE snap_life (id int PRIMARY KEY, v text)")
    cluster.sql("INSERT INTO snap_life SELECT g, 'v' || g FROM generate_series(1, 3) g")
    base_workers = snapshot_workers(cluster)
    slot, _, snap = slot_for("snap_life")
    assert snapshot_workers(cluster) == base_workers + 1

    assert cluster.sql1("SELECT cdc_snapshot(%s)", (slot,)) == snap
    name, held_since, not_future = snapshot_cols(cluster, slot)
    assert name == snap
    assert held_since is not None and not_future is True

    before = [(1, "v1"), (2, "v2"), (3, "v3")]

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            for i in (4, 5, 6):
                cluster.sql("INSERT INTO snap_life VALUES (%s, %s)", (i, f"v{i}"))
                txn = await client.recv_txn(10)
                assert txn.ids() == [i]
                # still importable, still the state as of cdc_init()
                assert read_in_snapshot(cluster, snap, "SELECT id, v FROM snap_life ORDER BY id") == before
                assert snap_rows(cluster.ws_port, {"slotName": slot, "table": "snap_life",
                                                   "order_by": {"column": "id"}}) == \
                    [{"id": i, "v": v} for i, v in before]
                assert cluster.sql1("SELECT cdc_snapshot(%s)", (slot,)) == snap
            assert cluster.sql1("SELECT active FROM cdc_slots() WHERE slot_name = %s", (slot,)) is True
            assert snapshot_cols(cluster, slot)[0] == snap

            # release: returns once the snapshot is gone
            cluster.sql("SELECT cdc_snapshot_release(%s)", (slot,))
            msg = sql_error(cluster, "SELECT cdc_snapshot(%s)", (slot,))
            assert "was released" in msg and slot in msg, msg
            assert "invalid snapshot identifier" in import_error(cluster, snap)
            assert snapshot_cols(cluster, slot) == (None, None, None)
            msg = snap_error(cluster.ws_port, {"slotName": slot, "table": "snap_life"}, 410)
            assert "released" in msg, msg
            msg = sql_error(cluster, "SELECT cdc_snapshot_release(%s)", (slot,))
            assert "was released" in msg, msg
            wait_for(lambda: snapshot_workers(cluster) == base_workers, 5,
                     what="the snapshot worker to exit after cdc_snapshot_release")

            # the stream is unaffected
            cluster.sql("INSERT INTO snap_life VALUES (7, 'v7')")
            txn = await client.recv_txn(10)
            assert txn.ids() == [7]
            assert txn.changes[0]["columnvalues"] == [7, "v7"]
            assert cluster.sql1("SELECT active FROM cdc_slots() WHERE slot_name = %s", (slot,)) is True
        finally:
            await client.close()

    asyncio.run(main())
    cluster.sql("SELECT cdc_drop(%s)", (slot,))


def test_snapshot_timeout(cluster, slot_for):
    cluster.sql("CREATE TABLE snap_tmo (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO snap_tmo VALUES (1)")
    try:
        cluster.alter_system("pgcdcws.snapshot_timeout", 1, expect_show="1s")
        slot, _, snap = slot_for("snap_tmo")
        t0 = time.monotonic()

        def gone():
            try:
                cluster.sql("SELECT cdc_snapshot(%s)", (slot,))
                return None
            except psycopg2.Error as e:
                return e

        err = wait_for(gone, 15, interval=0.1, what="cdc_snapshot() to fail after the timeout")
        waited = time.monotonic() - t0
        assert "timed out" in err.diag.message_primary and slot in err.diag.message_primary, err
        assert "pgcdcws.snapshot_timeout (1 s)" in (err.diag.message_detail or ""), err.diag.message_detail
        assert waited < 10, waited
        assert snapshot_cols(cluster, slot) == (None, None, None)
        assert "invalid snapshot identifier" in import_error(cluster, snap)
        msg = snap_error(cluster.ws_port, {"slotName": slot, "table": "snap_tmo"}, 410)
        assert "timed out" in msg, msg
        # the slot itself stays
        assert cluster.slot_exists(slot)
    finally:
        cluster.alter_system("pgcdcws.snapshot_timeout", None, expect_show="1h")
    cluster.sql("SELECT cdc_drop(%s)", (slot,))


def test_three_snapshots_at_once_and_drop_ends_one(cluster, slot_for):
    cluster.sql("CREATE TABLE snap_multi (id int PRIMARY KEY)")
    base_workers = snapshot_workers(cluster)
    made = []
    for k in (1, 2, 3):
        cluster.sql("INSERT INTO snap_multi VALUES (%s)", (k,))
        made.append(slot_for(f"snap_multi_{k}"))
    cluster.sql("INSERT INTO snap_multi VALUES (4)")
    assert snapshot_workers(cluster) == base_workers + 3
    names = [m[2] for m in made]
    assert len(set(names)) == 3

    for k, (slot, _, snap) in enumerate(made, start=1):
        want = list(range(1, k + 1))
        assert [r[0] for r in read_in_snapshot(cluster, snap, "SELECT id FROM snap_multi ORDER BY id")] == want
        assert ids_of(snap_rows(cluster.ws_port, {"slotName": slot, "table": "snap_multi",
                                                  "order_by": {"column": "id"}})) == want
        assert cluster.sql1("SELECT cdc_snapshot(%s)", (slot,)) == snap
        assert snapshot_cols(cluster, slot)[0] == snap

    # dropping a slot ends its snapshot, and only its snapshot
    slot2, _, snap2 = made[1]
    cluster.sql("SELECT cdc_drop(%s)", (slot2,))
    assert "invalid snapshot identifier" in import_error(cluster, snap2)
    msg = snap_error(cluster.ws_port, {"slotName": slot2, "table": "snap_multi"}, 404)
    assert slot2 in msg, msg
    msg = sql_error(cluster, "SELECT cdc_snapshot(%s)", (slot2,))
    assert slot2 in msg, msg
    wait_for(lambda: snapshot_workers(cluster) == base_workers + 2, 5,
             what="the dropped slot's snapshot worker to exit")
    for k in (1, 3):
        slot, _, snap = made[k - 1]
        assert [r[0] for r in read_in_snapshot(cluster, snap, "SELECT id FROM snap_multi ORDER BY id")] == \
            list(range(1, k + 1))
        assert ids_of(snap_rows(cluster.ws_port, {"slotName": slot, "table": "snap_multi"})) == \
            list(range(1, k + 1))
    for k in (1, 3):
        cluster.sql("SELECT cdc_drop(%s)", (made[k - 1][0],))
    wait_for(lambda: snapshot_workers(cluster) == base_workers, 5, what="snapshot workers to exit")


def test_snapshot_lost_in_restart(cluster, slot_for):
    cluster.sql("CREATE TABLE snap_rst (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO snap_rst VALUES (1)")
    slot, lsn, snap = slot_for("snap_rst")
    assert cluster.sql1("SELECT cdc_snapshot(%s)", (slot,)) == snap
    cluster.restart()

    msg = sql_error(cluster, "SELECT cdc_snapshot(%s)", (slot,))
    assert "lost in a server restart" in msg and slot in msg, msg
    msg = sql_error(cluster, "SELECT cdc_snapshot_release(%s)", (slot,))
    assert "lost in a server restart" in msg, msg
    assert snapshot_cols(cluster, slot) == (None, None, None)
    assert "invalid snapshot identifier" in import_error(cluster, snap)
    msg = snap_error(cluster.ws_port, {"slotName": slot, "table": "snap_rst"}, 410)
    assert "lost in a server restart" in msg, msg

    # the slot survived and streams from its start
    cluster.sql("INSERT INTO snap_rst VALUES (2)")

    async def main():
        client = await StreamClient.open_retry(cluster.ws_port, slot)
        try:
            txn = await client.recv_txn(15)
            assert txn.ids() == [2] and lsn_int(txn.nextlsn) > lsn_int(lsn)
        finally:
            await client.close()

    asyncio.run(main())
    cluster.sql("SELECT cdc_drop(%s)", (slot,))


# ------------------------------------------------------- 2. POST /v1/snapshot/data
SNAP_T_COLS = ["id", "n", "s", "b", "x", "j", "f", "big"]


def test_snapshot_data_values_visibility_and_names(cluster, slot_for):
    cluster.sql("""CREATE TABLE snap_t (id int PRIMARY KEY, n numeric(30,10), s text, b boolean, x int,
                   j jsonb, f float8, big bigint)""")
    row1_sql = ("12345678901234567890.0123456789, 'hello \"q\" \\ é 😀', true, NULL, "
                "'{\"a\": [1, 2.50], \"b\": null}', 'NaN', 9007199254740993")
    cluster.sql(f"INSERT INTO snap_t VALUES (1, {row1_sql})")
    cluster.sql("INSERT INTO snap_t VALUES (2, -0.5, '', false, 42, '[]', 1.5, -1)")
    cluster.sql("INSERT INTO snap_t VALUES (3, NULL, NULL, NULL, NULL, NULL, '-Infinity', NULL)")
    cluster.sql('CREATE SCHEMA "My Schema"')
    cluster.sql('CREATE TABLE "My Schema"."Mixed Case" ("Id" int PRIMARY KEY, "Val ue" text)')
    cluster.sql('INSERT INTO "My Schema"."Mixed Case" VALUES (1, \'a\'), (2, \'b\'), (3, \'c\')')
    slot, _, _ = slot_for("snap_data")

    # after cdc_init(): must never show up in the snapshot
    cluster.sql(f"INSERT INTO snap_t VALUES (4, {row1_sql})")
    cluster.sql("UPDATE snap_t SET s = 'changed', x = 7 WHERE id = 1")
    cluster.sql("DELETE FROM snap_t WHERE id = 2")
    cluster.sql('INSERT INTO "My Schema"."Mixed Case" VALUES (4, \'d\')')
    cluster.sql('DELETE FROM "My Schema"."Mixed Case" WHERE "Id" = 1')

    row1 = {"id": 1, "n": D("12345678901234567890.0123456789"), "s": 'hello "q" \\ é 😀', "b": True,
            "x": None, "j": '{"a": [1, 2.50], "b": null}', "f": "NaN", "big": 9007199254740993}
    want = [row1,
            {"id": 2, "n": D("-0.5000000000"), "s": "", "b": False, "x": 42, "j": "[]", "f": D("1.5"), "big": -1},
            {"id": 3, "n": None, "s": None, "b": None, "x": None, "j": None, "f": "-Infinity", "big": None}]

    r = snap_post(cluster.ws_port, {"slotName": slot, "table": "snap_t", "order_by": {"column": "id"}})
    assert r.status == 200, r
    assert r.headers["content-type"].split(";")[0].strip() == "application/json", r.headers
    text = r.body.decode("utf-8")
    # exact digits on the wire, not through a double
    assert '"n":12345678901234567890.0123456789' in text.replace(" ", ""), text
    assert '"big":9007199254740993' in text.replace(" ", ""), text
    rows = r.json()
    assert rows == want
    assert [list(x.keys()) for x in rows] == [SNAP_T_COLS] * 3
    assert type(rows[0]["id"]) is int and type(rows[0]["b"]) is bool

    # same encoding as the stream: row 4 (inserted after cdc_init) carries row 1's original values
    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txn(10)
        finally:
            await client.close()

    txn = asyncio.run(main())
    assert txn.changes[0]["kind"] == "insert" and txn.changes[0]["columnnames"] == SNAP_T_COLS
    assert txn.changes[0]["columnvalues"] == [4] + [row1[c] for c in SNAP_T_COLS[1:]]

    # the same table under other spellings
    for name in ("public.snap_t", "SNAP_T", "Public.Snap_T", '"snap_t"', '"public"."snap_t"', " snap_t "):
        assert snap_rows(cluster.ws_port, {"slotName": slot, "table": name,
                                           "order_by": {"column": "id"}}) == want, name
    # without order_by: physical order, every row once
    assert sorted(snap_rows(cluster.ws_port, {"slotName": slot, "table": "snap_t"}),
                  key=lambda x: x["id"]) == want
    # quoted names are case-sensitive
    msg = snap_error(cluster.ws_port, {"slotName": slot, "table": '"SNAP_T"'}, 404)
    assert "does not exist" in msg, msg

    mixed = [{"Id": 1, "Val ue": "a"}, {"Id": 2, "Val ue": "b"}, {"Id": 3, "Val ue": "c"}]
    assert snap_rows(cluster.ws_port, {"slotName": slot, "table": '"My Schema"."Mixed Case"',
                                       "order_by": {"column": "Id"}}) == mixed
    assert snap_rows(cluster.ws_port, {"slotName": slot, "table": '"My Schema"."Mixed Case"',
                                       "order_by": {"column": "Id", "order": "DESC"}, "after": 3}) == \
        mixed[1::-1]
    # order_by.column is the stored name, case-sensitive
    msg = snap_error(cluster.ws_port, {"slotName": slot, "table": '"My Schema"."Mixed Case"',
                                       "order_by": {"column": "id"}}, 400)
    assert "id" in msg, msg
    msg = snap_error(cluster.ws_port, {"slotName": slot, "table": "My Schema.Mixed Case"}, 400)
    assert msg
    cluster.sql("SELECT cdc_drop(%s)", (slot,))


def test_snapshot_data_offset_and_keyset_paging(cluster, slot_for):
    cluster.sql("CREATE TABLE snap_page (id int PRIMARY KEY, v text)")
    cluster.sql("INSERT INTO snap_page SELECT g, 'v' || g FROM generate_series(1, 250) g")
    slot, _, _ = slot_for("snap_page")
    cluster.sql("INSERT INTO snap_page SELECT g, 'v' || g FROM generate_series(251, 300) g")
    cluster.sql("DELETE FROM snap_page WHERE id <= 5")
    cluster.sql("UPDATE snap_page SET v = 'new' WHERE id BETWEEN 100 AND 110")
    full = [{"id": i, "v": f"v{i}"} for i in range(1, 251)]
    port = cluster.ws_port

    # offset paging with order_by: 100 / 100 / 50, exact ids
    pages = [snap_rows(port, {"slotName": slot, "table": "snap_page", "offset": off, "limit": 100,
                              "order_by": {"column": "id", "order": "asc"}}) for off in (0, 100, 200, 250)]
    assert [len(p) for p in pages] == [100, 100, 50, 0]
    assert pages[0] + pages[1] + pages[2] == full
    assert ids_of(pages[1])[0] == 101 and ids_of(pages[2])[-1] == 250

    # offset paging without order_by (physical order, stable within the snapshot)
    phys = [snap_rows(port, {"slotName": slot, "table": "snap_page", "offset": off, "limit": 100})
            for off in (0, 100, 200)]
    assert [len(p) for p in phys] == [100, 100, 50]
    assert sorted(phys[0] + phys[1] + phys[2], key=lambda x: x["id"]) == full
    # default limit is 100
    assert len(snap_rows(port, {"slotName": slot, "table": "snap_page"})) == 100
    assert snap_rows(port, {"slotName": slot, "table": "snap_page", "limit": 0}) == []

    # keyset ascending
    rows, sizes = keyset_read(port, slot, "snap_page", order="asc", limit=100)
    assert sizes == [100, 100, 50]
    assert rows == full
    # keyset descending, "order" in mixed case
    rows, sizes = keyset_read(port, slot, "snap_page", order="DeSc", limit=100)
    assert sizes == [100, 100, 50]
    assert rows == full[::-1]
    # after as a string (input function of the column type), and both directions
    assert ids_of(snap_rows(port, {"slotName": slot, "table": "snap_page", "limit": 3,
                                   "order_by": {"column": "id"}, "after": "100"})) == [101, 102, 103]
    assert ids_of(snap_rows(port, {"slotName": slot, "table": "snap_page", "limit": 3,
                                   "order_by": {"column": "id", "order": "Desc"}, "after": 100})) == [99, 98, 97]
    # keyset on a text column
    rows, _ = keyset_read(port, slot, "snap_page", column="v", limit=70)
    assert [r["v"] for r in rows] == sorted(f"v{i}" for i in range(1, 251))
    # offset + after together
    assert ids_of(snap_rows(port, {"slotName": slot, "table": "snap_page", "limit": 2, "offset": 3,
                                   "order_by": {"column": "id"}, "after": 10})) == [14, 15]
    cluster.sql("SELECT cdc_drop(%s)", (slot,))


# -------------------------------------------------------------------- 3. injection
def test_snapshot_data_injection_refused(cluster, slot_for):
    cluster.sql("CREATE TABLE victim (id int PRIMARY KEY, v text)")
    cluster.sql("INSERT INTO victim VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    slot, _, snap = slot_for("snap_inj")
    port = cluster.ws_port
    max_rows = int(cluster.sql1("SHOW pgcdcws.snapshot_max_rows"))
    assert max_rows == 10000

    def req(**kw):
        d = {"slotName": slot, "table": "victim"}
        d.update(kw)
        return d

    bad_tables = ["t; drop table victim", "victim; drop table victim", "victim union select 1",
                  "victim union select 1, 'x'", "(select 1)", "victim where 1=1", "pg_sleep(5)",
                  "victim -- comment", "victim, victim", "victim v", "a.b.c.d", '"victim',
                  "victim\"; drop table victim; --",
                  # no whitespace: not names in SQL either
                  "pg_catalog.pg_sleep(5)", "victim;", "victim)", "victim,victim", "victim--", "victim/**/"]
    cases = [req(table=t) for t in bad_tables]
    cases += [
        req(order_by={"column": "id; drop table victim"}),
        req(order_by={"column": "id desc, (select 1)"}),
        req(order_by={"column": "id", "order": "asc; drop table victim"}),
        req(order_by={"column": "id"}, after="1; drop table victim"),
        req(order_by={"column": "id"}, after="1) OR (1=1"),
        req(order_by={"column": "id"}, after=1.5),
        req(offset="1"),
        req(offset=-1),
        req(offset=1.5),
        req(limit=-5),
        req(limit="10"),
        req(limit=max_rows + 1),
        req(limit=1 << 40),
        req(after=1),
    ]
    raw_cases = [
        json.dumps(req())[:-1] + ', "limit": 1e9}',
        json.dumps(req())[:-1] + ', "limit": 1000000000.0}',
        json.dumps(req())[:-1] + ', "limit": 10.0}',
        json.dumps(req())[:-1] + ', "offset": 1e2}',
        json.dumps(req())[:-1] + ', "limit": 99999999999999999999999}',
    ]
    wrong = []
    for i, body in enumerate(cases + raw_cases):
        t0 = time.monotonic()
        r = snap_post(port, body)
        elapsed = time.monotonic() - t0
        assert elapsed < 3, f"{body!r} took {elapsed:.1f}s"  # pg_sleep never ran
        assert r.headers.get("content-type", "").startswith("application/json"), r
        obj = r.json()
        assert isinstance(obj, dict) and set(obj) == {"error"} and obj["error"], r
        if r.status != 400 or (i < len(bad_tables) and not obj["error"].startswith("invalid table name")):
            wrong.append((body["table"] if i < len(bad_tables) else body, r.status, obj["error"]))

    msg = snap_error(port, req(limit=max_rows + 1), 400)
    assert "snapshot_max_rows" in msg, msg
    msg = snap_error(port, req(after=1), 400)
    assert "order_by" in msg, msg

    # nothing ran: victim is intact, the snapshot still serves
    assert cluster.sql("SELECT id, v FROM victim ORDER BY id") == [(1, "a"), (2, "b"), (3, "c")]
    assert snap_rows(port, req(limit=max_rows, order_by={"column": "id"})) == \
        [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]
    assert cluster.sql1("SELECT cdc_snapshot(%s)", (slot,)) == snap
    cluster.sql("SELECT cdc_drop(%s)", (slot,))
    assert cluster.sql1("SELECT count(*) FROM victim") == 3
    assert wrong == [], "expected 400 (invalid name syntax) for:\n" + \
        "\n".join(f"  {b!r} -> {st} {m}" for b, st, m in wrong)


# ------------------------------------------------------------------------ 4. errors
def test_snapshot_data_errors(cluster, slot_for):
    cluster.sql("CREATE TABLE snap_err (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO snap_err VALUES (1)")
    slot, _, _ = slot_for("snap_err")
    port = cluster.ws_port
    ok = {"slotName": slot, "table": "snap_err"}
    assert snap_rows(port, ok) == [{"id": 1}]

    # 400
    assert "invalid JSON" in snap_error(port, '{"slotName": "snap_err", "table": ', 400)
    assert "invalid JSON" in snap_error(port, "not json", 400)
    assert "invalid JSON" in snap_error(port, json.dumps(ok) + " x", 400)
    assert "invalid JSON" in snap_error(port, b'{"slotName": "snap_err", "table": "\xff"}', 400)
    assert "invalid JSON" in snap_error(port, "", 400)
    assert snap_error(port, "[]", 400)
    assert "slotName" in snap_error(port, {"table": "snap_err"}, 400)
    assert "table" in snap_error(port, {"slotName": slot}, 400)
    assert "unknown field" in snap_error(port, dict(ok, extra=1), 400)
    assert "unknown field" in snap_error(port, dict(ok, order_by={"column": "id", "dir": "asc"}), 400)
    assert "slotName" in snap_error(port, dict(ok, slotName=5), 400)
    assert "slotName" in snap_error(port, dict(ok, slotName="Bad-Name"), 400)
    assert "table" in snap_error(port, dict(ok, table=""), 400)
    assert "order" in snap_error(port, dict(ok, order_by={"column": "id", "order": "sideways"}), 400)
    assert "column" in snap_error(port, dict(ok, order_by={"order": "asc"}), 400)
    assert "nope" in snap_error(port, dict(ok, order_by={"column": "nope"}), 400)
    assert "after" in snap_error(port, dict(ok, order_by={"column": "id"}, after="abc"), 400)

    # 404
    msg = snap_error(port, dict(ok, slotName="snap_no_such_slot"), 404)
    assert "snap_no_such_slot" in msg, msg
    msg = snap_error(port, dict(ok, table="snap_no_such_table"), 404)
    assert "snap_no_such_table" in msg and "does not exist" in msg, msg
    msg = snap_error(port, dict(ok, table="no_such_schema.snap_err"), 404)
    assert "does not exist" in msg, msg
    # a slot of another plugin is unknown
    cluster.sql("SELECT pg_create_logical_replication_slot('snap_err_td', 'test_decoding')")
    try:
        msg = snap_error(port, dict(ok, slotName="snap_err_td"), 404)
        assert "snap_err_td" in msg, msg
    finally:
        cluster.sql("SELECT pg_drop_replication_slot('snap_err_td')")

    # 405: GET (and others) on the endpoint
    for method in ("GET", "PUT", "DELETE"):
        r = http_request(port, SNAP_PATH, method=method, upgrade=False)
        assert r.status == 405, (method, r)
        assert r.headers.get("content-type", "").startswith("application/json"), r
        assert r.json()["error"], r
    # a WebSocket upgrade is not what this endpoint serves
    r = http_request(port, SNAP_PATH, method="GET", upgrade=True)
    assert r.status == 405 and "POST" in r.json()["error"], r
    r = http_request(port, SNAP_PATH, method="POST", upgrade=True, extra_headers=["Content-Length: 2"])
    assert r.status == 400 and "WebSocket" in r.json()["error"], r

    # 411: no Content-Length
    body = json.dumps(ok).encode()
    status, headers, rbody = raw_exchange(
        port, f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Connection: close\r\n\r\n".encode() + body)
    assert status == 411, (status, rbody)
    assert loads(rbody.decode())["error"]

    # 413: a body over 64 kB (refused from the Content-Length, whether or not the body is sent)
    big = json.dumps(dict(ok, table="x" * 70000)).encode()
    head = (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(big)}\r\n\r\n").encode()
    status, _, rbody = raw_exchange(port, head)
    assert status == 413, (status, rbody)
    assert "65536" in loads(rbody.decode())["error"]
    status, _, rbody = raw_exchange(port, head + big, send_errors_ok=True)
    assert status == 413, (status, rbody)
    # just at the limit: a body of exactly 65536 bytes is parsed (and then refused for its content)
    prefix = json.dumps(dict(ok, table="x" * 10))[:-1] + ', "after": "'
    at_limit = prefix + "y" * (65536 - len(prefix) - 2) + '"}'
    assert len(at_limit.encode()) == 65536
    r = snap_post(port, at_limit)
    assert r.status == 400, r

    # still serving after all that
    assert snap_rows(port, ok) == [{"id": 1}]

    # 410 after release; the slot still exists (not 404)
    cluster.sql("SELECT cdc_snapshot_release(%s)", (slot,))
    msg = snap_error(port, ok, 410)
    assert "released" in msg and slot in msg, msg
    cluster.sql("SELECT cdc_drop(%s)", (slot,))
    msg = snap_error(port, ok, 404)
    assert slot in msg, msg


# ------------------------------------------- 5. big reads do not block streaming
class PausingReader(threading.Thread):
    """POSTs a request on a raw socket with a small receive buffer, reads `pause_after`
    bytes, then stops reading (so the server side stays in the middle of the reply) until
    resume is set, then reads to the end."""

    def __init__(self, port, body, pause_after=1 << 20):
        super().__init__(daemon=True)
        self.port = port
        self.body = json.dumps(body).encode()
        self.pause_after = pause_after
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.data = b""
        self.bytes_at_pause = 0
        self.error = None

    def run(self):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.settimeout(60)
            sock.connect(("127.0.0.1", self.port))
            try:
                sock.sendall((f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\n"
                              f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n")
                             .encode() + self.body)
                buf = bytearray()
                while len(buf) < self.pause_after:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                self.bytes_at_pause = len(buf)
                self.paused.set()
                self.resume.wait(60)
                while True:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    buf += chunk
                self.data = bytes(buf)
            finally:
                sock.close()
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            self.paused.set()


def test_big_snapshot_read_does_not_block_streaming(cluster, slot_for):
    n = 200000
    width = 150
    cluster.sql("CREATE TABLE snap_big (id int PRIMARY KEY, w text)")
    cluster.sql(f"INSERT INTO snap_big SELECT g, lpad(g::text, {width}, 'x') FROM generate_series(1, {n}) g")
    cluster.sql("CREATE TABLE snap_big_ev (id int PRIMARY KEY)")
    slot_a, _, _ = slot_for("snap_big_a")
    slot_b, _, _ = slot_for("snap_big_b")
    port = cluster.ws_port
    try:
        cluster.alter_system("pgcdcws.snapshot_max_rows", n)
        # the pgcdcws server has the new limit too
        wait_for(lambda: snap_post(port, {"slotName": slot_b, "table": "snap_big_ev", "limit": n}).status == 200,
                 10, what="the server to accept limit 200000")

        reader = PausingReader(port, {"slotName": slot_a, "table": "snap_big", "limit": n,
                                      "order_by": {"column": "id"}})

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot_b)
            try:
                reader.start()
                await asyncio.get_running_loop().run_in_executor(None, reader.paused.wait, 60)
                assert reader.error is None, reader.error
                assert reader.data == b"" and reader.bytes_at_pause >= 1 << 20
                # the worker of slot A is in the middle of the read
                rows = cluster.sql("SELECT query FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                                   "AND query LIKE 'reading snap_big %%'")
                assert len(rows) == 1, rows

                # a change committed now reaches the client of slot B
                t0 = time.monotonic()
                cluster.sql("INSERT INTO snap_big_ev VALUES (1)")
                txn = await client.recv_txn(5)
                latency = time.monotonic() - t0
                assert txn.ids() == [1] and txn.changes[0]["table"] == "snap_big_ev"
                # another slot's snapshot serves at the same time
                assert ids_of(snap_rows(port, {"slotName": slot_b, "table": "snap_big", "limit": 3,
                                               "order_by": {"column": "id", "order": "desc"}})) == [n, n - 1, n - 2]
                # slot A's read is still under way
                assert reader.is_alive() and reader.data == b""
                # (slot B's worker may still be ending its read after its reply went out)
                wait_for(lambda: len(cluster.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = "
                                                 "'pgcdcws snapshot' AND query LIKE 'reading snap_big %%'")) == 1,
                         10, what="only slot A's worker reading snap_big")
                cluster.sql("INSERT INTO snap_big_ev VALUES (2)")
                assert (await client.recv_txn(5)).ids() == [2]
                reader.resume.set()
                await asyncio.get_running_loop().run_in_executor(None, reader.join, 60)
                return latency
            finally:
                reader.resume.set()
                await client.close()

        latency = asyncio.run(main())
        assert latency < 5
        assert not reader.is_alive() and reader.error is None, reader.error
        head, sep, body = reader.data.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 200"), head[:200]
        assert b"application/json" in head.lower()
        rows = loads(body.decode("utf-8"))
        assert len(rows) == n
        assert rows[0] == {"id": 1, "w": "1".rjust(width, "x")}
        assert rows[-1] == {"id": n, "w": str(n).rjust(width, "x")}
        assert all(r["id"] == i and r["w"] == str(i).rjust(width, "x") for i, r in enumerate(rows, start=1))
    finally:
        cluster.alter_system("pgcdcws.snapshot_max_rows", None, expect_show="10000")
    cluster.sql("SELECT cdc_drop(%s)", (slot_a,))
    cluster.sql("SELECT cdc_drop(%s)", (slot_b,))


# ------------------------------------------------------------------- 6. exact cut
CUT_TABLES = {
    "cut_a": ["id", "v", "s"],
    "cut_b": ["id", "n", "b", "j"],
    "cut_c": ["id", "s", "big"],
}
MARKER_ID = 99999999


class MixedWriter(threading.Thread):
    """Writes at full speed on one connection: inserts of new ids, updates and deletes of
    random existing rows in three tables, each statement its own transaction or small
    multi-table transactions; key updates on cut_b; updates of cut_c that leave its TOASTed
    column alone.  On request, truncates cut_c (with inserts in the same transaction)."""

    def __init__(self, cluster, initial, seed=13):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.live = {t: list(range(1, initial + 1)) for t in CUT_TABLES}
        self.next_id = {t: initial + 1 for t in CUT_TABLES}
        self.txns = 0
        self.truncate_requested = threading.Event()
        self.truncated = threading.Event()
        self.error = None
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()

    def _text(self):
        return self.rng.choice(["plain", "with 'quote'", 'dq "x"', "back\\slash", "é ü", "😀", "tab\tnl\n", ""]) + \
            str(self.rng.randint(0, 10 ** 6))

    def _values(self, t, key):
        r = self.rng
        if t == "cut_a":
            return (key, r.choice([None, r.randint(-2 ** 31, 2 ** 31 - 1)]), self._text())
        if t == "cut_b":
            return (key, f"{r.randint(-99999999, 99999999) / 1000:.3f}", r.choice([True, False, None]),
                    json.dumps({"k": r.randint(0, 9), "arr": [1, "x"]}))
        return (key, self._text(), f"{r.getrandbits(12000):03000x}")

    def _insert(self, cur, t):
        key = self.next_id[t]
        self.next_id[t] += 1
        vals = self._values(t, key)
        cur.execute(f"INSERT INTO {t} VALUES ({', '.join(['%s'] * len(vals))})", vals)
        self.live[t].append(key)

    def _update(self, cur, t):
        if not self.live[t]:
            return self._insert(cur, t)
        key = self.rng.choice(self.live[t])
        r = self.rng.random()
        if t == "cut_a":
            v = None if r < 0.3 else self.rng.randint(0, 999)
            cur.execute("UPDATE cut_a SET v = %s, s = %s WHERE id = %s", (v, self._text(), key))
        elif t == "cut_b":
            if r < 0.2:  # a key update
                new = self.next_id[t]
                self.next_id[t] += 1
                cur.execute("UPDATE cut_b SET id = %s, b = NOT coalesce(b, false) WHERE id = %s", (new, key))
                self.live[t].remove(key)
                self.live[t].append(new)
            else:
                cur.execute("UPDATE cut_b SET n = n + 1.001, j = %s WHERE id = %s",
                            (json.dumps({"u": self.rng.randint(0, 99)}), key))
        else:
            if r < 0.7:  # the TOASTed column stays as it is
                cur.execute("UPDATE cut_c SET s = %s WHERE id = %s", (self._text(), key))
            else:
                cur.execute("UPDATE cut_c SET big = %s WHERE id = %s", (f"{self.rng.getrandbits(12000):03000x}", key))

    def _remove(self, cur, t):
        if not self.live[t]:
            return self._insert(cur, t)  # every writer transaction changes something
        key = self.rng.choice(self.live[t])
        cur.execute(f"DELETE FROM {t} WHERE id = %s", (key,))
        self.live[t].remove(key)

    def _one(self, cur):
        t = self.rng.choice(list(CUT_TABLES))
        r = self.rng.random()
        if r < 0.45:
            self._insert(cur, t)
        elif r < 0.8:
            self._update(cur, t)
        else:
            self._remove(cur, t)

    def run(self):
        try:
            conn = self.cluster.connect(autocommit=False)
            try:
                with conn.cursor() as cur:
                    while not self._halt.is_set():
                        if self.truncate_requested.is_set() and not self.truncated.is_set():
                            cur.execute("TRUNCATE cut_c")
                            self.live["cut_c"] = []
                            self._insert(cur, "cut_c")
                            self._insert(cur, "cut_c")
                            self._update(cur, "cut_a")
                            conn.commit()
                            self.txns += 1
                            self.truncated.set()
                            continue
                        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
                            self._one(cur)
                        conn.commit()
                        self.txns += 1
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            self.error = e


def _norm(v):
    """A JSON value as the text Postgres prints for it."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, D)):
        return str(v)
    return v


def _table_now(cluster, t):
    cols = CUT_TABLES[t]
    rows = cluster.sql(f"SELECT {', '.join(c + '::text' for c in cols)} FROM {t} ORDER BY id")
    return {int(r[0]): dict(zip(cols, r)) for r in rows}


def test_exact_cut_snapshot_plus_stream_rebuilds_tables(cluster, slot_for):
    initial = 150
    cluster.sql("CREATE TABLE cut_a (id int PRIMARY KEY, v int, s text)")
    cluster.sql("CREATE TABLE cut_b (id bigint PRIMARY KEY, n numeric(12,3), b boolean, j jsonb)")
    cluster.sql("CREATE TABLE cut_c (id int PRIMARY KEY, s text, big text)")
    cluster.sql("ALTER TABLE cut_c ALTER big SET STORAGE EXTERNAL")
    cluster.sql(f"INSERT INTO cut_a SELECT g, g, 's' || g FROM generate_series(1, {initial}) g")
    cluster.sql(f"INSERT INTO cut_b SELECT g, g / 8.0, g % 2 = 0, '{{}}' FROM generate_series(1, {initial}) g")
    cluster.sql(f"INSERT INTO cut_c SELECT g, 's' || g, repeat(md5(g::text), 100) FROM generate_series(1, {initial}) g")
    port = cluster.ws_port

    writer = MixedWriter(cluster, initial)
    writer.start()
    try:
        wait_for(lambda: writer.txns >= 100 or writer.error, 20, what="the writer to get going")
        assert writer.error is None, writer.error
        txns_at_init = writer.txns
        slot, lsn, snap = slot_for("snap_cut")
        t_init = time.monotonic()
        txns_at_return = writer.txns

        # read the snapshot while the writer keeps going
        state, snap_counts = {}, {}
        for t in CUT_TABLES:
            rows, sizes = keyset_read(port, slot, t, limit=97)
            assert [list(r.keys()) for r in rows] == [CUT_TABLES[t]] * len(rows)
            assert sizes[-1] < 97
            state[t] = {}
            for r in rows:
                assert r["id"] not in state[t], f"{t}: id {r['id']} twice in the snapshot"
                state[t][r["id"]] = r
            snap_counts[t] = len(rows)
        cluster.sql("SELECT cdc_snapshot_release(%s)", (slot,))
        writer.truncate_requested.set()
        wait_for(lambda: writer.truncated.is_set() or writer.error, 20, what="the writer's TRUNCATE")
        wait_for(lambda: time.monotonic() - t_init >= 2.0 or writer.error, 10, interval=0.05,
                 what="2 s of writing after cdc_init()")
        assert writer.error is None, writer.error
    finally:
        writer.stop()
        writer.join(30)
    assert not writer.is_alive() and writer.error is None, writer.error
    txns_after = writer.txns - txns_at_return
    assert txns_after >= 50, f"only {txns_after} writer transactions after cdc_init()"
    # the cut fell inside the writer's work: the snapshot holds rows the writer inserted
    assert any(k > initial for t in CUT_TABLES for k in state[t]), "snapshot has no writer rows"

    end_lsn = cluster.sql1("SELECT pg_current_wal_lsn()::text")
    cluster.sql("INSERT INTO cut_a VALUES (%s, 0, 'marker')", (MARKER_ID,))

    dups, missing, stats = [], [], {"insert": 0, "update": 0, "delete": 0, "truncate": 0, "toast": 0}

    def apply(txn):
        for c in txn.changes:
            t = c["table"]
            if c["schema"] != "public" or t not in state:
                continue
            st = state[t]
            kind = c["kind"]
            stats[kind] += 1
            if kind == "truncate":
                st.clear()
                continue
            if kind in ("update", "delete"):
                ok = c["oldkeys"]
                assert ok["keynames"] == ["id"], ok
                old = ok["keyvalues"][0]
                if old not in st:
                    missing.append((txn.xid, kind, t, old))
                    prev = {}
                else:
                    prev = st.pop(old)
                if kind == "delete":
                    continue
            row = dict(zip(c["columnnames"], c["columnvalues"]))
            if kind == "insert":
                if row["id"] in st:
                    dups.append((txn.xid, t, row["id"]))
                st[row["id"]] = row
                continue
            new = dict(prev)
            for col in c.get("unchangedtoast", []):
                stats["toast"] += 1
                assert col in prev, (t, old, col)
            new.update(row)
            if row["id"] != old and row["id"] in st:
                dups.append((txn.xid, t, row["id"]))
            st[row["id"]] = new

    async def main():
        client = await StreamClient.open(port, slot)
        txns = []
        try:
            while True:
                txn = await client.recv_txn(20)
                txns.append(txn)
                apply(txn)
                # every writer transaction ended at or before end_lsn; the marker after it
                if lsn_int(txn.nextlsn) > lsn_int(end_lsn):
                    return txns
        finally:
            await client.close()

    txns = asyncio.run(main())
    last = txns[-1]
    assert [(c["kind"], c["table"], c["columnvalues"][0]) for c in last.changes] == \
        [("insert", "cut_a", MARKER_ID)]
    assert lsn_int(txns[0].nextlsn) > lsn_int(lsn)
    # every writer transaction changes a row: those that committed after cdc_init() returned
    # are all in the stream, and none that committed before cdc_init() began
    n_stream = len(txns) - 1
    assert writer.txns - txns_at_return - 1 <= n_stream <= writer.txns - txns_at_init, \
        (n_stream, txns_at_init, txns_at_return, writer.txns)

    assert dups == [], f"inserted twice (snapshot and stream overlap): {dups[:20]}"
    assert missing == [], f"update/delete of rows the rebuilt state lacks (gap): {missing[:20]}"
    print(f"exact cut: {writer.txns} writer txns ({txns_at_init} before cdc_init), {n_stream} streamed, "
          f"snapshot rows {snap_counts}, applied {stats}")
    assert stats["truncate"] == 1 and stats["toast"] > 0 and stats["insert"] > 0 and stats["delete"] > 0, stats

    for t, cols in CUT_TABLES.items():
        want = _table_now(cluster, t)
        got = {k: {c: _norm(r[c]) for c in cols} for k, r in state[t].items()}
        assert sorted(got) == sorted(want), \
            f"{t}: ids differ: only rebuilt {sorted(set(got) - set(want))[:20]}, " \
            f"only in table {sorted(set(want) - set(got))[:20]}"
        for k in sorted(want):
            assert got[k] == want[k], f"{t} id {k}: rebuilt {got[k]!r} != table {want[k]!r}"
    cluster.sql("SELECT cdc_drop(%s)", (slot,))


def test_crafted_numbers_do_not_crash_the_server(cluster, slot_for):
    """RapidJSON 1.1.0's full-precision number parsing can crash on crafted numbers; the
    snapshot body parser never uses it, so the server answers and stays the same process,
    and a number "after" keeps every digit."""
    cluster.sql("CREATE TABLE snap_num_t (k numeric PRIMARY KEY)")
    cluster.sql("INSERT INTO snap_num_t VALUES (12345678901234567890123), (12345678901234567890124)")
    slot = slot_for("snap_num")[0]
    server = cluster.pids_by_backend_type("pgcdcws server")
    crafted = "128.74836467836484838364836483643636483648e-336"
    for body in ('{"x": %s}' % crafted,
                 '{"slotName": "%s", "table": "snap_num_t", "after": %s}' % (slot, crafted),
                 '{"slotName": "%s", "table": "snap_num_t", "offset": 0e100}' % slot):
        r = snap_post(cluster.ws_port, body)
        assert r.status == 400, (body, r)
        assert isinstance(r.json()["error"], str)
    # The exact key as a JSON number: only the row after it comes back.
    body = ('{"slotName": "%s", "table": "snap_num_t", "order_by": {"column": "k"}, '
            '"after": 12345678901234567890123}' % slot)
    rows = snap_rows(cluster.ws_port, body)
    assert [str(r["k"]) for r in rows] == ["12345678901234567890124"]
    assert cluster.pids_by_backend_type("pgcdcws server") == server


def test_snapshot_reads_run_as_the_role_that_called_cdc_init(cluster):
    """The snapshot worker is a superuser; reads run as the cdc_init() caller instead, with
    its SELECT privilege checked (403) and row security applied."""
    cluster.sql("CREATE TABLE snap_priv_open (id int PRIMARY KEY)")
    cluster.sql("CREATE TABLE snap_priv_closed (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO snap_priv_open VALUES (1), (2)")
    cluster.sql("INSERT INTO snap_priv_closed VALUES (1)")
    cluster.sql("CREATE ROLE snap_reader LOGIN REPLICATION")
    cluster.sql("GRANT SELECT ON snap_priv_open TO snap_reader")
    slot = "snap_priv"
    try:
        conn = cluster.connect(user="snap_reader")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT slot_name FROM cdc_init(%s)", (slot,))
                assert cur.fetchone()[0] == slot
        finally:
            conn.close()
        rows = snap_rows(cluster.ws_port, {"slotName": slot, "table": "snap_priv_open", "order_by": {"column": "id"}})
        assert [r["id"] for r in rows] == [1, 2]
        message = snap_error(cluster.ws_port, {"slotName": slot, "table": "snap_priv_closed"}, 403)
        assert "permission denied for table public.snap_priv_closed" in message
        assert "snap_reader" in message
        message = snap_error(cluster.ws_port, {"slotName": slot, "table": "pg_catalog.pg_authid"}, 403)
        assert "permission denied" in message
    finally:
        cluster.drop_slot_quietly(slot)
        cluster.sql("DROP TABLE snap_priv_open, snap_priv_closed")
        cluster.sql("DROP ROLE snap_reader")
