"""The wal2json-v2 stream format (issue 9, "wal2json format-version 2"):
GET /v1/lr/stream?slotName=S&format=wal2json-v2 sends one frame per wal2json record.

For the same transactions, the frames must equal (parsed as JSON, record by record) what
wal2json 2.5 itself writes on a second slot with format-version 2, include-xids,
include-timestamp and include-lsn. The one difference allowed: wal2json writes a B/C pair
for a transaction with nothing to send (e.g. DDL), pgcdcws sends nothing for it; those pairs
are dropped from wal2json's output before comparing.
"""

import asyncio
import contextlib
import os

import psycopg2
import pytest
import websockets

from cdcws import STREAM_PATH, StreamClient, http_request, loads, lsn_int, wait_confirmed
from conftest import wait_for
from test_03_http import check_refusal
from test_26_messages_heartbeats import slot  # noqa: F401  (a pgcdcws slot named after the test)

FORMAT = "wal2json-v2"
# The wal2json options whose output the format reproduces.
WAL2JSON_OPTIONS = ("format-version", "2", "include-xids", "1", "include-timestamp", "1", "include-lsn", "1")


@pytest.fixture(scope="module")
def wal2json_allowed(cluster):
    """wal2json may be used for decoding (PostgreSQL 15.19+ output_plugin_libraries)."""
    items = "pgoutput, test_decoding, pgcdcws, wal2json"
    # A list setting: the items unquoted (a quoted string would be one item).
    cluster.sql(f"ALTER SYSTEM SET output_plugin_libraries = {items}")
    assert cluster.sql1("SELECT pg_reload_conf()") is True
    wait_for(lambda: cluster.show_fresh("output_plugin_libraries") == items, 10,
             what="output_plugin_libraries with wal2json after reload")
    yield
    cluster.sql("ALTER SYSTEM RESET output_plugin_libraries")
    assert cluster.sql1("SELECT pg_reload_conf()") is True


@contextlib.contextmanager
def slot_pair(cluster, name):
    """A pgcdcws slot and a wal2json slot at the same position: (pgcdcws slot, wal2json slot)."""
    theirs = name + "_w2j"
    cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false)", (name,))
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (theirs,))
    try:
        yield name, theirs
    finally:
        cluster.drop_slot_quietly(name)
        cluster.sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                    (theirs,))


def drop_empty_transactions(records):
    """wal2json's records without the B/C pairs of transactions with no record in between."""
    out = []
    for r in records:
        if r["action"] == "C" and out and out[-1]["action"] == "B":
            out.pop()
            continue
        out.append(r)
    return out


def wal2json_records(cluster, slot):
    rows = cluster.sql("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL" +
                       ", %s" * len(WAL2JSON_OPTIONS) + ")", (slot, *WAL2JSON_OPTIONS))
    return drop_empty_transactions([loads(r[0]) for r in rows])


async def open_w2j(cluster, slot, query=f"format={FORMAT}", timeout=30):
    """A StreamClient whose URL carries `query` (by default the wal2json-v2 format), retrying
    while the slot's previous decoder still holds it (409)."""
    uri = f"ws://localhost:{cluster.ws_port}{STREAM_PATH}?slotName={slot}&{query}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            ws = await websockets.connect(uri, max_size=None, ping_interval=None, open_timeout=10,
                                          close_timeout=2)
            return StreamClient(ws, slot)
        except websockets.exceptions.InvalidStatusCode as e:
            if e.status_code != 409 or loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)


async def recv_records(client, n, timeout=20):
    """The next n frames but heartbeats, parsed."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < n:
        obj, raw = await client.recv_frame(max(0.1, deadline - loop.time()))
        if set(obj) == {"heartbeat", "lsn"}:
            continue
        assert "error" not in obj, raw
        out.append(obj)
    return out


def compare(ours, theirs):
    assert len(ours) == len(theirs), (ours, theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"record {i}:\n pgcdcws  {a}\n wal2json {b}"


def run(coro):
    return asyncio.run(coro)


def with_client(cluster, slot, body, query=f"format={FORMAT}"):
    """Runs `await body(client)` on a stream of `slot` opened with `query`; its result."""
    async def main():
        client = await open_w2j(cluster, slot, query)
        try:
            return await body(client)
        finally:
            await client.close()

    return run(main())


# ---------------------------------------------------------------------------- tables
VALUE_COLUMNS = """(
    id int PRIMARY KEY, i2 smallint, i8 bigint, f4 real, f8 double precision, num numeric(10,2),
    anynum numeric, b boolean, t text, vc varchar(5), bp char(3), j json, jb jsonb, ia int[],
    ta text[], by bytea, ts timestamp, tstz timestamptz, d date, u uuid, o oid, mood "W2jMood",
    dom w2j_posint, nothing text)"""

VALUE_ROWS = [
    "(1, 1, 9007199254740993, 1.5, 0.1, 12345.67, 1e-20, true, 'plain', 'abcde', 'ab', "
    "'{\"a\": [1, 2.50, null]}', '{\"b\": {\"c\": true}}', '{1,2,NULL}', '{\"x y\",\"q\\\"\"}', "
    "'\\xdeadbeef00', '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05+02', '2026-01-02', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 4242, 'happy', 7, NULL)",
    "(2, -32768, -9223372036854775808, 'NaN', '-Infinity', 'NaN', 'Infinity', false, "
    "E'quote \" backslash \\\\ newline \\n tab \\t ctl \\x01 é 😀', '', '   ', 'null', '[]', '{}', '{}', "
    "'\\x', 'infinity', '-infinity', 'epoch', '00000000-0000-0000-0000-000000000000', 0, 'Sad', 1, NULL)",
    "(3, NULL, NULL, 'Infinity', 1e300, -0.5, -1.0e10, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]


@pytest.fixture
def tables(cluster):
    cluster.sql("""CREATE TYPE "W2jMood" AS ENUM ('happy', 'Sad')""")
    cluster.sql("CREATE DOMAIN w2j_posint AS int CHECK (VALUE > 0)")
    cluster.sql(f"CREATE TABLE w2j_vals {VALUE_COLUMNS}")
    cluster.sql("CREATE TABLE w2j_full (id int PRIMARY KEY, a text, n numeric, "
                "g int GENERATED ALWAYS AS (id * 10) STORED)")
    cluster.sql("ALTER TABLE w2j_full REPLICA IDENTITY FULL")
    cluster.sql("CREATE TABLE w2j_nothing (id int PRIMARY KEY, a text)")
    cluster.sql("ALTER TABLE w2j_nothing REPLICA IDENTITY NOTHING")
    cluster.sql("CREATE TABLE w2j_nopk (a int, b text)")
    cluster.sql("CREATE TABLE w2j_index (id int NOT NULL, k text NOT NULL, v text)")
    cluster.sql("CREATE UNIQUE INDEX w2j_index_k ON w2j_index (k, id)")
    cluster.sql("ALTER TABLE w2j_index REPLICA IDENTITY USING INDEX w2j_index_k")
    cluster.sql("CREATE TABLE w2j_toast (id int PRIMARY KEY, big text, small int)")
    cluster.sql("ALTER TABLE w2j_toast ALTER big SET STORAGE EXTERNAL")
    yield
    cluster.sql("DROP TABLE IF EXISTS w2j_vals, w2j_full, w2j_nothing, w2j_nopk, w2j_index, w2j_toast")
    cluster.sql("DROP DOMAIN IF EXISTS w2j_posint")
    cluster.sql("""DROP TYPE IF EXISTS "W2jMood" """)


def write_everything(cluster):
    """Transactions covering every record kind; returns the big TOASTed value."""
    big = os.urandom(40000).hex()
    cluster.exec_txn(*[f"INSERT INTO w2j_vals VALUES {r}" for r in VALUE_ROWS])
    # REPLICA IDENTITY DEFAULT: key unchanged (identity from the new row), key changed, delete.
    cluster.exec_txn("UPDATE w2j_vals SET t = 'changed', num = 1 WHERE id = 1",
                     "UPDATE w2j_vals SET id = 10 WHERE id = 2",
                     "DELETE FROM w2j_vals WHERE id = 3")
    cluster.exec_txn("INSERT INTO w2j_full VALUES (1, 'a', 1.10), (2, NULL, 'NaN')",
                     "UPDATE w2j_full SET a = 'b' WHERE id = 1",
                     "DELETE FROM w2j_full WHERE id = 2")
    cluster.exec_txn("INSERT INTO w2j_nothing VALUES (1, 'a')",
                     "UPDATE w2j_nothing SET a = 'b'",
                     "DELETE FROM w2j_nothing")
    cluster.exec_txn("INSERT INTO w2j_nopk VALUES (1, 'a')",
                     "UPDATE w2j_nopk SET b = 'b'",
                     "DELETE FROM w2j_nopk")
    cluster.exec_txn("INSERT INTO w2j_index VALUES (1, 'k1', 'v')",
                     "UPDATE w2j_index SET v = 'w'",
                     "UPDATE w2j_index SET k = 'k2'",
                     "DELETE FROM w2j_index")
    # An unchanged TOASTed value is left out of columns (and of identity).
    cluster.exec_txn(("INSERT INTO w2j_toast VALUES (1, %s, 1)", (big,)),
                     "UPDATE w2j_toast SET small = 2",
                     "UPDATE w2j_toast SET id = 2")
    # Messages: transactional among rows, a NUL byte ends wal2json's content, and a
    # non-transactional one (flushed by the next commit).
    cluster.exec_txn("INSERT INTO w2j_full VALUES (3, 'm', 3)",
                     "SELECT pg_logical_emit_message(true, 'audit', 'approved \"7\"\n')",
                     ("SELECT pg_logical_emit_message(true, 'nul', %s::bytea)", (b"ab\x00cd",)))
    cluster.sql("SELECT pg_logical_emit_message(false, 'wm', 'watermark é')")
    cluster.exec_txn("TRUNCATE w2j_full, w2j_nopk")
    return big


def test_records_equal_wal2json(cluster, wal2json_allowed, tables):
    with slot_pair(cluster, "w2j_equal") as (ours_slot, theirs_slot):
        big = write_everything(cluster)
        theirs = wal2json_records(cluster, theirs_slot)

        async def body(client):
            return await recv_records(client, len(theirs))

        ours = with_client(cluster, ours_slot, body)
        compare(ours, theirs)

        # Spot checks of the shape, so that a wal2json change cannot make both sides wrong.
        actions = "".join(r["action"] for r in ours)
        # Updates and deletes of tables without replica identity are not sent (as by wal2json).
        assert actions == ("BIIIC" "BUUDC" "BIIUDC" "BIC" "BIC" "BIUUDC" "BIUUC" "BIMMC" "M" "BTTC"), actions
        b, row1 = ours[0], ours[1]
        assert set(b) == {"action", "xid", "timestamp", "lsn", "nextlsn"}
        assert ours[4]["lsn"] == b["lsn"] and ours[4]["nextlsn"] == b["nextlsn"]
        assert lsn_int(b["lsn"]) < lsn_int(b["nextlsn"])
        cols = {c["name"]: c for c in row1["columns"]}
        assert row1["schema"] == "public" and row1["table"] == "w2j_vals" and "identity" not in row1
        assert cols["num"] == {"name": "num", "type": "numeric(10,2)", "value": loads("12345.67")}
        assert cols["vc"]["type"] == "character varying(5)" and cols["bp"]["type"] == "character(3)"
        assert cols["mood"] == {"name": "mood", "type": "W2jMood", "value": "happy"}
        assert cols["dom"] == {"name": "dom", "type": "w2j_posint", "value": "7"}
        assert cols["by"]["value"] == "deadbeef00" and cols["ia"]["value"] == "{1,2,NULL}"
        assert cols["j"]["value"] == '{"a": [1, 2.50, null]}' and cols["b"]["value"] is True
        assert cols["nothing"]["value"] is None and cols["i8"]["value"] == 9007199254740993
        row2 = {c["name"]: c["value"] for c in ours[2]["columns"]}
        assert [row2[k] for k in ("f4", "f8", "num", "anynum")] == [None, None, None, None]
        # Key unchanged: identity from the new row, key columns only.
        assert ours[6]["identity"] == [{"name": "id", "type": "integer", "value": 1}]
        # REPLICA IDENTITY FULL: the whole old row, a stored generated column too.
        assert ours[13]["identity"] == [{"name": "id", "type": "integer", "value": 1},
                                        {"name": "a", "type": "text", "value": "a"},
                                        {"name": "n", "type": "numeric", "value": loads("1.10")},
                                        {"name": "g", "type": "integer", "value": 10}]
        assert [(r["action"], r["table"]) for r in (ours[17], ours[20])] == [("I", "w2j_nothing"), ("I", "w2j_nopk")]
        toast = [r for r in ours if r.get("table") == "w2j_toast"]
        assert [c["value"] for c in toast[0]["columns"]] == [1, big, 1]
        assert [c["name"] for c in toast[1]["columns"]] == ["id", "small"]
        messages = [r for r in ours if r["action"] == "M"]
        assert [(m["transactional"], m["prefix"], m["content"]) for m in messages] == [
            (True, "audit", 'approved "7"\n'), (True, "nul", "ab"), (False, "wm", "watermark é")]
        assert messages[2]["xid"] is None and messages[2]["timestamp"] is None


def test_acks_and_reconnect(cluster, slot):
    cluster.sql("CREATE TABLE w2j_ack (id int PRIMARY KEY)")
    try:
        x1 = cluster.exec_txn("INSERT INTO w2j_ack VALUES (1)")
        x2 = cluster.exec_txn("INSERT INTO w2j_ack VALUES (2)", "INSERT INTO w2j_ack VALUES (3)")

        async def first(client):
            recs = await recv_records(client, 7)
            assert [(r["action"], r["xid"]) for r in recs] == [
                ("B", x1), ("I", x1), ("C", x1), ("B", x2), ("I", x2), ("I", x2), ("C", x2)]
            await client.ack(recs[2]["nextlsn"])
            await wait_confirmed(cluster, slot, recs[2]["nextlsn"], timeout=5, below=recs[6]["nextlsn"])
            await client.ack(recs[6]["nextlsn"])
            await wait_confirmed(cluster, slot, recs[6]["nextlsn"], timeout=5)
            return recs[6]["nextlsn"]

        acked = with_client(cluster, slot, first)
        x3 = cluster.exec_txn("INSERT INTO w2j_ack VALUES (4)")

        async def second(client):
            recs = await recv_records(client, 3)
            assert [(r["action"], r["xid"]) for r in recs] == [("B", x3), ("I", x3), ("C", x3)]
            assert recs[1]["columns"] == [{"name": "id", "type": "integer", "value": 4}]
            assert lsn_int(recs[0]["lsn"]) > lsn_int(acked)
            # An lsn beyond the last C sent is refused like any too-far ack.
            await client.ack("FFFFFFFF/0")
            obj, raw = await client.recv_frame(10)
            assert set(obj) == {"error"} and "beyond the last transaction sent" in obj["error"], raw

        with_client(cluster, slot, second)
    finally:
        cluster.sql("DROP TABLE w2j_ack")


def test_heartbeats_keep_their_shape(cluster, slot):
    cluster.alter_system("pgcdcws.heartbeat_interval", 1, expect_show="1s")
    try:
        async def body(client):
            obj, raw = await client.recv_frame(10)
            assert set(obj) == {"heartbeat", "lsn"} and obj["heartbeat"] is True, raw
            await client.ack(obj["lsn"])
            await wait_confirmed(cluster, slot, obj["lsn"], timeout=5)

        with_client(cluster, slot, body)
    finally:
        cluster.alter_system("pgcdcws.heartbeat_interval", None, expect_show="10s")


def test_privileges_and_row_security_apply(cluster, wal2json_allowed):
    slot = "w2j_priv"
    cluster.sql("CREATE ROLE w2j_r1 LOGIN REPLICATION")
    cluster.sql("CREATE TABLE w2j_open (id int PRIMARY KEY)")
    cluster.sql("CREATE TABLE w2j_secret (id int PRIMARY KEY)")
    cluster.sql("CREATE TABLE w2j_rls (id int PRIMARY KEY, owner text)")
    cluster.sql("ALTER TABLE w2j_rls ENABLE ROW LEVEL SECURITY")
    cluster.sql("CREATE POLICY mine ON w2j_rls FOR SELECT USING (owner = current_user)")
    cluster.sql("GRANT SELECT ON w2j_open, w2j_rls TO w2j_r1")
    try:
        conn = cluster.connect(user="w2j_r1")
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM cdc_init(%s, snapshot => false)", (slot,))
        conn.close()
        cluster.sql("INSERT INTO w2j_secret VALUES (1)")  # nothing: no B/C either
        xid = cluster.exec_txn("INSERT INTO w2j_secret VALUES (2)", "INSERT INTO w2j_open VALUES (1)",
                               "INSERT INTO w2j_rls VALUES (1, 'w2j_r1'), (2, 'other')",
                               "TRUNCATE w2j_secret")

        async def body(client):
            recs = await recv_records(client, 4)
            assert [(r["action"], r["xid"], r.get("table"), r.get("columns")) for r in recs] == [
                ("B", xid, None, None),
                ("I", xid, "w2j_open", [{"name": "id", "type": "integer", "value": 1}]),
                ("I", xid, "w2j_rls", [{"name": "id", "type": "integer", "value": 1},
                                       {"name": "owner", "type": "text", "value": "w2j_r1"}]),
                ("C", xid, None, None)]

        with_client(cluster, slot, body)
    finally:
        cluster.drop_slot_quietly(slot)
        cluster.sql("DROP TABLE w2j_open, w2j_secret, w2j_rls")
        cluster.sql("DROP OWNED BY w2j_r1")
        cluster.sql("DROP ROLE w2j_r1")


def test_messages_filter_applies(cluster, slot):
    """messages= with format=wal2json-v2: a transaction left with nothing sends no B/C."""
    cluster.exec_txn("SELECT pg_logical_emit_message(true, 'drop', 'x')")
    xid = cluster.exec_txn("SELECT pg_logical_emit_message(true, 'drop', 'y')",
                           "SELECT pg_logical_emit_message(true, 'keep', 'z')")

    async def body(client):
        recs = await recv_records(client, 3)
        assert [(r["action"], r["xid"]) for r in recs] == [("B", xid), ("M", xid), ("C", xid)]
        assert (recs[1]["prefix"], recs[1]["content"]) == ("keep", "z")

    with_client(cluster, slot, body, f"messages=keep&format={FORMAT}")


def test_unknown_format_is_400(cluster, slot):
    for query, error in [
            ("format=wal2json", "unknown format (the formats are default and wal2json-v2)"),
            ("format=WAL2JSON-V2", "unknown format (the formats are default and wal2json-v2)"),
            ("format=", "format parameter without a value (omit it for the default format)"),
            ("format=default&format=wal2json-v2", "format given more than once in the query string")]:
        resp = http_request(cluster.ws_port, f"{STREAM_PATH}?slotName={slot}&{query}")
        assert check_refusal(resp, 400) == error, query
    # format=default is the default format.
    xid = cluster.exec_txn("SELECT pg_logical_emit_message(true, 'p', 'c')")

    async def body(client):
        txn = await client.recv_txn(10)
        assert txn.xid == xid and txn.changes == [
            {"kind": "message", "transactional": True, "prefix": "p", "content": "c"}]

    with_client(cluster, slot, body, "format=default")


def test_plugin_option_format_version(cluster):
    """The output plugin's format-version option, as pg_recvlogical -o format-version=2 uses it."""
    slot = "w2j_sql"
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'pgcdcws')", (slot,))
    try:
        cluster.sql("CREATE TABLE w2j_sql (id int PRIMARY KEY)")
        xid = cluster.exec_txn("INSERT INTO w2j_sql VALUES (5)")
        rows = cluster.sql("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'format-version', '2')",
                           (slot,))
        recs = [loads(r[0]) for r in rows]
        recs = [r for r in recs if r["xid"] == xid]
        assert [r["action"] for r in recs] == ["B", "I", "C"]
        assert recs[1]["columns"] == [{"name": "id", "type": "integer", "value": 5}]
        with pytest.raises(psycopg2.Error) as exc:
            cluster.sql("SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, NULL, 'format-version', '3')",
                        (slot,))
        assert exc.value.diag.message_primary == 'could not parse value "3" for parameter "format-version"'
    finally:
        cluster.sql("SELECT pg_drop_replication_slot(%s)", (slot,))
        cluster.sql("DROP TABLE IF EXISTS w2j_sql")
