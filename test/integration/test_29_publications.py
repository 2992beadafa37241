"""Publications choose what a durable stream sends (issue 9, "Publications"):
GET /v1/lr/stream?slotName=S&publication=a,b and cdc_init(..., publication => 'p').

Each test creates its publications and tables, then a pgcdcws slot (or several) and a pgoutput
slot at the same position, runs a workload, and compares what the stream sends with what
Postgres' own pgoutput publishes for the same publications (read with
pg_logical_slot_peek_binary_changes and decoded by pgoutput.py), transaction by transaction and
row by row. Both sides are also compared with the values written out in the test, so that no
test passes on two empty lists.

The normal form of a unit (a transaction, or a non-transactional message) is a list of changes
(kind, "schema.table", new row, old row, converted_from) or ("message", transactional, prefix,
content bytes, None); rows are tuples of (column, Postgres text value) pairs in the order the
stream sends them. pgoutput does not say that an insert or delete came from an update that a row
filter converted: the comparison with pgoutput leaves converted_from out, the comparison with
the expected values keeps it.

Every workload ends with a transactional logical message (prefix END): both sides must end with
it, so "nothing more arrives" is never waited for.
"""

import asyncio
import base64
import contextlib
import decimal
import urllib.parse

import psycopg2
import pytest
import websockets.exceptions

import pgoutput
from cdcws import ProtocolError, StreamClient, commit_end_lsns, http_request, lsn_int, wait_confirmed
from test_03_http import check_refusal
from test_18_stream_privileges import _init_as
from test_26_messages_heartbeats import heartbeat_1s  # noqa: F401  (pgcdcws.heartbeat_interval = 1s)

END = "p29-end"


# ------------------------------------------------------------------ normal form
def text(v):
    """A JSON value of a stream as Postgres' text output (docs/PROTOCOL.md "Values")."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, (int, decimal.Decimal)):
        return str(v)
    raise AssertionError(f"unexpected JSON value {v!r}")


def qualified(table):
    return table if "." in table else "public." + table


def row(**cols):
    return tuple((name, text(v)) for name, v in cols.items())


def ins(table, new, converted=None):
    return ("insert", qualified(table), new, None, converted)


def upd(table, new, old):
    return ("update", qualified(table), new, old, None)


def dele(table, old, converted=None):
    return ("delete", qualified(table), None, old, converted)


def trunc(table):
    return ("truncate", qualified(table), None, None, None)


def msg(transactional, prefix, content):
    return ("message", transactional, prefix, content, None)


END_UNIT = [msg(True, END, b"end")]


def normal_change(c):
    """A change object of a stream in the normal form."""
    if c["kind"] == "message":
        content = base64.b64decode(c["content"]) if c.get("encoding") == "base64" else c["content"].encode()
        return msg(c["transactional"], c["prefix"], content)
    assert c["kind"] in ("insert", "update", "delete", "truncate"), c
    assert "unchangedtoast" not in c, f"these tests write no TOASTed values: {c}"
    new = old = None
    if "columnnames" in c:
        assert len(c["columnnames"]) == len(c["columnvalues"]) == len(c["columntypes"]), c
        new = tuple(zip(c["columnnames"], map(text, c["columnvalues"])))
    if "oldkeys" in c:
        ok = c["oldkeys"]
        assert len(ok["keynames"]) == len(ok["keyvalues"]) == len(ok["keytypes"]), c
        old = tuple(zip(ok["keynames"], map(text, ok["keyvalues"])))
    conv = c.get("converted_from")
    assert conv in (None, "update"), c
    assert conv is None or c["kind"] in ("insert", "delete"), c
    return (c["kind"], f"{c['schema']}.{c['table']}", new, old, conv)


def without_conversions(units):
    """Units with converted_from left out (what pgoutput can tell)."""
    return [[ch[:4] + (None,) for ch in u] for u in units]


def column_types_of(changes):
    """{"schema.table": [(column, type)]} of the rows in changes (stream change objects)."""
    out = {}
    for c in changes:
        if "columnnames" in c:
            out.setdefault(f"{c['schema']}.{c['table']}", set()).add(tuple(zip(c["columnnames"], c["columntypes"])))
    return out


# ------------------------------------------------------------------ the pgoutput side
def pgoutput_units(cluster, slot, publications):
    """What pgoutput publishes for `publications` (list) from `slot`, in normal form, up to
    the END message (which must end it), and its Normaliser."""
    units, normaliser = pgoutput.normal_units(cluster, slot, publications)
    units = [[ch + (None,) for ch in u] for u in units]
    assert units and units[-1] == END_UNIT, f"pgoutput's output does not end with the END message: {units}"
    return units[:-1], normaliser


def end_marker(cluster):
    cluster.exec_txn(("SELECT pg_logical_emit_message(true, %s, 'end')", (END,)))


# ------------------------------------------------------------------ the stream side
def publication_query(publications):
    """publication=<list>, URL-encoded; a name in the list may be "double quoted" as in
    pgoutput's publication_names."""
    return None if publications is None else "publication=" + urllib.parse.quote(",".join(publications), safe=",")


async def open_stream(cluster, slot, publications=None, extra_query=None):
    query = "&".join(q for q in (publication_query(publications), extra_query) if q)
    return await StreamClient.open_retry(cluster.ws_port, slot, query=query or None)


async def recv_unit(client, timeout=20):
    """The next unit but heartbeats: (normal form, its change objects, the lsn to ack: a
    transaction's nextlsn or a message frame's lsn)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    frames = []
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError(f"no complete unit after {timeout}s ({len(frames)} frames)")
        obj, raw = await client.recv_frame(left)
        if set(obj) == {"heartbeat", "lsn"} and not frames:
            continue
        if "error" in obj:
            raise ProtocolError(f"unexpected error frame: {raw}")
        if "xid" not in obj:
            assert set(obj) == {"change", "lsn"} and not frames, raw[:300]
            return [normal_change(c) for c in obj["change"]], obj["change"], obj["lsn"]
        assert not frames or obj["xid"] == frames[0]["xid"], raw[:300]
        frames.append(obj)
        if "nextlsn" in obj:
            changes = [c for f in frames for c in f["change"]]
            return [normal_change(c) for c in changes], changes, obj["nextlsn"]


async def recv_until_end(client, timeout=30):
    """Units up to the END message (left out): (normal units, change objects)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    units, objects = [], []
    while True:
        unit, changes, _ = await recv_unit(client, max(0.1, deadline - loop.time()))
        if unit == END_UNIT:
            return units, objects
        units.append(unit)
        objects += changes


def stream_units(cluster, slot, publications, extra_query=None):
    """What a stream of `slot` with `publications` sends up to the END message."""
    async def main():
        client = await open_stream(cluster, slot, publications, extra_query)
        try:
            return await recv_until_end(client)
        finally:
            await client.close()

    return asyncio.run(main())


def live_stream(cluster, slot, publications, body):
    """Runs `await body(client)` on a stream of `slot` with `publications` that is open
    while the body writes; afterwards the END message must be the next unit."""
    async def main():
        client = await open_stream(cluster, slot, publications)
        try:
            await body(client)
            end_marker(cluster)
            got, _, _ = await recv_unit(client)
            assert got == END_UNIT, got
        finally:
            await client.close()

    asyncio.run(main())


# ------------------------------------------------------------------ comparison
def compare(cluster, slot, po_slot, publications, expected):
    """Asserts that pgoutput publishes `expected` (converted_from left out) and that the stream
    sends exactly that, converted_from included. Returns (stream change objects, pgoutput
    Normaliser)."""
    theirs, normaliser = pgoutput_units(cluster, po_slot, publications)
    assert theirs == without_conversions(expected), f"pgoutput publishes something else for {publications}"
    ours, objects = stream_units(cluster, slot, publications)
    assert without_conversions(ours) == theirs, f"the stream for {publications} differs from pgoutput"
    assert ours == expected, f"the stream for {publications}: converted_from"
    return objects, normaliser


# ------------------------------------------------------------------ setup
@contextlib.contextmanager
def objects(cluster, create, drop):
    """Runs the `create` statements; runs the `drop` statements afterwards (also when a
    create failed)."""
    try:
        for st in create:
            cluster.sql(st)
        yield
    finally:
        for st in drop:
            cluster.sql(st)


@contextlib.contextmanager
def slots(cluster, name, n=1, role=None, publication=None):
    """n pgcdcws slots (name, name_2, ...; created by cdc_init() as `role`, with a default
    `publication` when given) and then one pgoutput slot (name_po): all before the workload.
    Yields (pgcdcws slots, pgoutput slot)."""
    ours = [name] + [f"{name}_{i}" for i in range(2, n + 1)]
    theirs = name + "_po"
    try:
        for s in ours:
            if role is not None:
                _init_as(cluster, role, s)
            elif publication is not None:
                cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false, publication => %s)", (s, publication))
            else:
                cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false)", (s,))
        cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (theirs,))
        yield ours, theirs
    finally:
        for s in ours:
            cluster.drop_slot_quietly(s)
        cluster.sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                    (theirs,))


# ------------------------------------------------------------------ tests
def test_without_a_publication_everything_is_streamed_as_for_all_tables(cluster):
    """No publication= and no default: every table, as pgoutput publishes FOR ALL TABLES
    (also a check of the two decoders of this file against each other)."""
    with objects(cluster, [
            "CREATE TABLE p29_e1 (id int PRIMARY KEY, t text, n numeric, big bigint, f double precision, "
            "ok boolean, j jsonb, ts timestamptz, arr int[])",
            "CREATE TABLE p29_e2 (id int, v text)",
            "ALTER TABLE p29_e2 REPLICA IDENTITY FULL",
            "CREATE PUBLICATION p29_everything FOR ALL TABLES",
    ], ["DROP PUBLICATION IF EXISTS p29_everything", "DROP TABLE IF EXISTS p29_e1, p29_e2"]), \
            slots(cluster, "p29_everything") as ((s1,), po):
        cluster.exec_txn("INSERT INTO p29_e1 VALUES (1, 'a \"q\" é', 12.340, 9007199254740993, 0.1, true, "
                         "'{\"k\": [1, null]}', '2026-01-02 03:04:05.5+02', '{1,NULL,3}'), "
                         "(2, NULL, 'NaN', -1, '-Infinity', false, NULL, NULL, '{}')",
                         "INSERT INTO p29_e2 VALUES (1, 'x'), (2, 'y')")
        cluster.exec_txn("UPDATE p29_e1 SET t = 'b', id = 3 WHERE id = 1", "UPDATE p29_e2 SET v = 'z' WHERE id = 2",
                         "SELECT pg_logical_emit_message(true, 'p', 'in')")
        cluster.exec_txn("DELETE FROM p29_e1 WHERE id = 2", "DELETE FROM p29_e2 WHERE id = 1")
        cluster.exec_txn("TRUNCATE p29_e1, p29_e2")
        end_marker(cluster)

        e1 = dict(t='a "q" é', n="12.340", big=9007199254740993, f="0.1", ok=True, j='{"k": [1, null]}',
                  ts="2026-01-02 01:04:05.5+00", arr="{1,NULL,3}")
        compare(cluster, s1, po, ["p29_everything"], [
            [ins("p29_e1", row(id=1, **e1)),
             ins("p29_e1", row(id=2, t=None, n="NaN", big=-1, f="-Infinity", ok=False, j=None, ts=None, arr="{}")),
             ins("p29_e2", row(id=1, v="x")), ins("p29_e2", row(id=2, v="y"))],
            [upd("p29_e1", row(id=3, **dict(e1, t="b")), row(id=1)),
             upd("p29_e2", row(id=2, v="z"), row(id=2, v="y")), msg(True, "p", b"in")],
            [dele("p29_e1", row(id=2)), dele("p29_e2", row(id=1, v="x"))],
            [trunc("p29_e1"), trunc("p29_e2")],
        ])
        ours, _ = stream_units(cluster, s1, None)
        assert ours == pgoutput_units(cluster, po, ["p29_everything"])[0]


def test_for_table_publish_actions_and_the_union_of_publications(cluster):
    with objects(cluster, [
            "CREATE TABLE p29_a (id int PRIMARY KEY, a text)",
            "CREATE TABLE p29_b (id int PRIMARY KEY, n int)",
            "CREATE TABLE p29_c (id int PRIMARY KEY)",
            "CREATE PUBLICATION p29_ins_del FOR TABLE p29_a WITH (publish = 'insert, delete')",
            "CREATE PUBLICATION p29_upd_trunc FOR TABLE p29_a, p29_b WITH (publish = 'update, truncate')",
    ], ["DROP PUBLICATION IF EXISTS p29_ins_del, p29_upd_trunc",
        "DROP TABLE IF EXISTS p29_a, p29_b, p29_c"]), \
            slots(cluster, "p29_actions", n=3) as ((s1, s2, s3), po):
        cluster.exec_txn("INSERT INTO p29_a VALUES (1, 'a'), (2, 'b')", "INSERT INTO p29_b VALUES (1, 10)",
                         "INSERT INTO p29_c VALUES (1)")
        cluster.exec_txn("UPDATE p29_a SET a = 'a2' WHERE id = 1", "UPDATE p29_b SET n = 11 WHERE id = 1",
                         "UPDATE p29_c SET id = 2 WHERE id = 1")
        cluster.exec_txn("DELETE FROM p29_a WHERE id = 2", "DELETE FROM p29_b WHERE id = 1")
        cluster.exec_txn("INSERT INTO p29_c VALUES (3)")   # a table in no publication: nothing
        cluster.exec_txn("TRUNCATE p29_a, p29_b, p29_c")
        end_marker(cluster)

        compare(cluster, s1, po, ["p29_ins_del"], [
            [ins("p29_a", row(id=1, a="a")), ins("p29_a", row(id=2, a="b"))],
            [dele("p29_a", row(id=2))],
        ])
        compare(cluster, s2, po, ["p29_upd_trunc"], [
            [upd("p29_a", row(id=1, a="a2"), row(id=1)), upd("p29_b", row(id=1, n=11), row(id=1))],
            [trunc("p29_a"), trunc("p29_b")],
        ])
        # Both: p29_a with every action, p29_b with updates and truncates.
        compare(cluster, s3, po, ["p29_ins_del", "p29_upd_trunc"], [
            [ins("p29_a", row(id=1, a="a")), ins("p29_a", row(id=2, a="b"))],
            [upd("p29_a", row(id=1, a="a2"), row(id=1)), upd("p29_b", row(id=1, n=11), row(id=1))],
            [dele("p29_a", row(id=2))],
            [trunc("p29_a"), trunc("p29_b")],
        ])


def test_for_all_tables_and_tables_in_schema(cluster):
    with objects(cluster, [
            "CREATE SCHEMA p29_s1",
            "CREATE SCHEMA p29_s2",
            "CREATE TABLE p29_s1.s (id int PRIMARY KEY, v text)",
            'CREATE TABLE p29_s1."Odd Name" (id int PRIMARY KEY)',
            "CREATE TABLE p29_s2.t (id int PRIMARY KEY)",
            "CREATE TABLE p29_plain (id int PRIMARY KEY)",
            "CREATE PUBLICATION p29_schema FOR TABLES IN SCHEMA p29_s1",
            "CREATE PUBLICATION p29_all FOR ALL TABLES",
            'CREATE PUBLICATION "P29 T" FOR TABLE p29_s2.t',  # a quoted name
    ], ['DROP PUBLICATION IF EXISTS p29_schema, p29_all, "P29 T"',
        "DROP SCHEMA IF EXISTS p29_s1, p29_s2 CASCADE", "DROP TABLE IF EXISTS p29_plain"]), \
            slots(cluster, "p29_schemas", n=3) as ((s1, s2, s3), po):
        cluster.exec_txn("INSERT INTO p29_s1.s VALUES (1, 'a')", 'INSERT INTO p29_s1."Odd Name" VALUES (1)',
                         "INSERT INTO p29_s2.t VALUES (1)", "INSERT INTO p29_plain VALUES (1)")
        # A table created later in the schema belongs to both publications from then on.
        cluster.sql("CREATE TABLE p29_s1.later (id int PRIMARY KEY)")
        cluster.exec_txn("INSERT INTO p29_s1.later VALUES (1)")
        cluster.exec_txn("UPDATE p29_s1.s SET v = 'b' WHERE id = 1", "DELETE FROM p29_s2.t WHERE id = 1",
                         "DELETE FROM p29_plain WHERE id = 1")
        end_marker(cluster)

        s_ins = ins("p29_s1.s", row(id=1, v="a"))
        odd_ins = ins("p29_s1.Odd Name", row(id=1))
        later_ins = [ins("p29_s1.later", row(id=1))]
        s_upd = upd("p29_s1.s", row(id=1, v="b"), row(id=1))
        compare(cluster, s1, po, ["p29_schema"], [[s_ins, odd_ins], later_ins, [s_upd]])
        compare(cluster, s2, po, ["p29_all"], [
            [s_ins, odd_ins, ins("p29_s2.t", row(id=1)), ins("p29_plain", row(id=1))],
            later_ins,
            [s_upd, dele("p29_s2.t", row(id=1)), dele("p29_plain", row(id=1))],
        ])
        compare(cluster, s3, po, ["p29_schema", '"P29 T"'], [
            [s_ins, odd_ins, ins("p29_s2.t", row(id=1))],
            later_ins,
            [s_upd, dele("p29_s2.t", row(id=1))],
        ])


def test_column_lists(cluster):
    # Postgres 15 refuses UPDATE and DELETE on a table whose replica identity (FULL: every
    # column) is not covered by the column list of a publication that publishes them, and it
    # refuses to decode a table with different column lists in two publications; so a FULL
    # table with a column list only publishes inserts (p29_clf).
    with objects(cluster, [
            "CREATE TABLE p29_cl (id int PRIMARY KEY, a text, secret text, b int)",
            "CREATE TABLE p29_cl2 (k1 int, k2 text, x int, hidden int, PRIMARY KEY (k1, k2))",
            "CREATE TABLE p29_clf (id int, a text, secret text)",
            "ALTER TABLE p29_clf REPLICA IDENTITY FULL",
            # listed out of table order: rows come in table order
            "CREATE PUBLICATION p29_cols FOR TABLE p29_cl (b, id, a), p29_cl2 (x, k2, k1)",
            "CREATE PUBLICATION p29_cols_full FOR TABLE p29_clf (id, a) WITH (publish = 'insert')",
    ], ["DROP PUBLICATION IF EXISTS p29_cols, p29_cols_full",
        "DROP TABLE IF EXISTS p29_cl, p29_cl2, p29_clf"]), \
            slots(cluster, "p29_columns") as ((s1,), po):
        cluster.exec_txn("INSERT INTO p29_cl VALUES (1, 'a', 's1', 10), (2, 'b', 's2', 20)",
                         "INSERT INTO p29_cl2 VALUES (1, 'x', 5, 99)",
                         "INSERT INTO p29_clf VALUES (1, 'f', 'sf')")
        cluster.exec_txn("UPDATE p29_cl SET secret = 's9' WHERE id = 1")   # only an unlisted column
        cluster.exec_txn("UPDATE p29_cl SET id = 3, b = 30 WHERE id = 2",
                         "UPDATE p29_cl2 SET k2 = 'y', hidden = 0",
                         "UPDATE p29_clf SET secret = 'sg'")
        cluster.exec_txn("DELETE FROM p29_cl WHERE id = 1", "TRUNCATE p29_cl2")
        end_marker(cluster)

        objs, normaliser = compare(cluster, s1, po, ["p29_cols", "p29_cols_full"], [
            [ins("p29_cl", row(id=1, a="a", b=10)), ins("p29_cl", row(id=2, a="b", b=20)),
             ins("p29_cl2", row(k1=1, k2="x", x=5)), ins("p29_clf", row(id=1, a="f"))],
            [upd("p29_cl", row(id=1, a="a", b=10), row(id=1))],
            [upd("p29_cl", row(id=3, a="b", b=30), row(id=2)),
             upd("p29_cl2", row(k1=1, k2="y", x=5), row(k1=1, k2="x"))],
            [dele("p29_cl", row(id=1)), trunc("p29_cl2")],
        ])
        # columntypes name the listed columns' types as format_type() does for pgoutput's
        # relation messages.
        theirs = {}
        for table, cols in normaliser.column_types().items():
            theirs[table] = {tuple((name, cluster.sql1("SELECT format_type(%s, %s)", (oid, typmod)))
                                   for name, oid, typmod in cols)}
        assert column_types_of(objs) == theirs
        assert theirs["public.p29_cl"] == {(("id", "integer"), ("a", "text"), ("b", "integer"))}


def test_different_column_lists_stop_the_stream_as_they_stop_pgoutput(cluster):
    with objects(cluster, [
            "CREATE TABLE p29_cc (id int PRIMARY KEY, a text, b text)",
            "CREATE PUBLICATION p29_cc_a FOR TABLE p29_cc (id, a)",
            "CREATE PUBLICATION p29_cc_b FOR TABLE p29_cc (id, b)",
    ], ["DROP PUBLICATION IF EXISTS p29_cc_a, p29_cc_b", "DROP TABLE IF EXISTS p29_cc"]), \
            slots(cluster, "p29_colclash") as ((s1,), po):
        cluster.exec_txn("INSERT INTO p29_cc VALUES (1, 'a', 'b')")
        end_marker(cluster)
        with pytest.raises(psycopg2.Error) as err:
            pgoutput.peek(cluster, po, ["p29_cc_a", "p29_cc_b"])
        assert 'cannot use different column lists for table "public.p29_cc" in different publications' \
            in str(err.value)
        # Each alone is fine.
        assert pgoutput_units(cluster, po, ["p29_cc_a"])[0] == [[ins("p29_cc", row(id=1, a="a"))]]

        async def main():
            """(close code, reason) or the first frame received instead."""
            client = await open_stream(cluster, s1, ["p29_cc_a", "p29_cc_b"])
            try:
                return await client.recv_raw(20)
            except websockets.exceptions.ConnectionClosed as e:
                return e.code, e.reason
            finally:
                await client.close()

        got = asyncio.run(main())
        assert isinstance(got, tuple), f"the stream sent {got[:300]} instead of closing"
        assert got[0] == 1011 and "different column lists" in got[1], got


def test_row_filters(cluster):
    with objects(cluster, [
            # REPLICA IDENTITY FULL: the filter may read any column, old rows are whole
            "CREATE TABLE p29_rf (id int PRIMARY KEY, status text, n numeric(6,2), ok boolean)",
            "ALTER TABLE p29_rf REPLICA IDENTITY FULL",
            # default identity: a filter of a publication of updates/deletes reads key columns
            "CREATE TABLE p29_rfk (id int PRIMARY KEY, v text)",
            "CREATE TABLE p29_rfi (id int PRIMARY KEY, v text)",
            "CREATE PUBLICATION p29_open FOR TABLE p29_rf WHERE (status = 'open')",
            "CREATE PUBLICATION p29_high FOR TABLE p29_rfk WHERE (id > 10)",
            "CREATE PUBLICATION p29_keep FOR TABLE p29_rfi WHERE (v LIKE 'keep%') WITH (publish = 'insert')",
            "CREATE PUBLICATION p29_low FOR TABLE p29_rfk WHERE (id < 3)",
            "CREATE PUBLICATION p29_rfk_ins FOR TABLE p29_rfk WITH (publish = 'insert')",
    ], ["DROP PUBLICATION IF EXISTS p29_open, p29_high, p29_keep, p29_low, p29_rfk_ins",
        "DROP TABLE IF EXISTS p29_rf, p29_rfk, p29_rfi"]), \
            slots(cluster, "p29_filters", n=3) as ((s1, s2, s3), po):
        cluster.exec_txn("INSERT INTO p29_rf VALUES (1, 'open', 1.5, true), (2, 'closed', 2, false), "
                         "(3, NULL, 3, NULL)")
        cluster.exec_txn("UPDATE p29_rf SET n = 10.25 WHERE id = 1")           # open -> open: update
        cluster.exec_txn("UPDATE p29_rf SET status = 'closed' WHERE id = 1")   # open -> closed: delete
        cluster.exec_txn("UPDATE p29_rf SET status = 'open' WHERE id = 2")     # closed -> open: insert
        cluster.exec_txn("UPDATE p29_rf SET n = 30 WHERE id = 3")              # NULL -> NULL: nothing
        cluster.exec_txn("DELETE FROM p29_rf WHERE id = 2", "DELETE FROM p29_rf WHERE id = 1")
        cluster.exec_txn("INSERT INTO p29_rfk VALUES (1, 'a'), (5, 'b'), (15, 'c'), (20, 'd')",
                         "INSERT INTO p29_rfi VALUES (1, 'keep me'), (2, 'drop me')")
        cluster.exec_txn("UPDATE p29_rfk SET id = 12 WHERE id = 5")    # 5 -> 12: insert
        cluster.exec_txn("UPDATE p29_rfk SET id = 7 WHERE id = 15")    # 15 -> 7: delete
        cluster.exec_txn("UPDATE p29_rfk SET v = 'd2' WHERE id = 20")  # key unchanged (no old key logged)
        cluster.exec_txn("UPDATE p29_rfk SET v = 'a2' WHERE id = 1")
        cluster.exec_txn("UPDATE p29_rfk SET id = 3 WHERE id = 7")
        cluster.exec_txn("UPDATE p29_rfk SET id = 2 WHERE id = 3",      # low: 3 -> 2 is an insert
                         "UPDATE p29_rfi SET v = 'keep too' WHERE id = 2")
        cluster.exec_txn("DELETE FROM p29_rfk WHERE id = 20", "DELETE FROM p29_rfk WHERE id = 12",
                         "DELETE FROM p29_rfk WHERE id = 2")
        end_marker(cluster)

        rf1 = row(id=1, status="open", n="1.50", ok=True)
        rf1b = row(id=1, status="open", n="10.25", ok=True)
        rf2 = row(id=2, status="open", n="2.00", ok=False)
        compare(cluster, s1, po, ["p29_open", "p29_high", "p29_keep"], [
            [ins("p29_rf", rf1)],
            [upd("p29_rf", rf1b, rf1)],
            [dele("p29_rf", rf1b, converted="update")],
            [ins("p29_rf", rf2, converted="update")],
            [dele("p29_rf", rf2)],
            [ins("p29_rfk", row(id=15, v="c")), ins("p29_rfk", row(id=20, v="d")),
             ins("p29_rfi", row(id=1, v="keep me"))],
            [ins("p29_rfk", row(id=12, v="b"), converted="update")],
            [dele("p29_rfk", row(id=15), converted="update")],
            [upd("p29_rfk", row(id=20, v="d2"), row(id=20))],
            [dele("p29_rfk", row(id=20)), dele("p29_rfk", row(id=12))],
        ])
        # Filters of several publications are ORed.
        compare(cluster, s2, po, ["p29_high", "p29_low"], [
            [ins("p29_rfk", row(id=1, v="a")), ins("p29_rfk", row(id=15, v="c")), ins("p29_rfk", row(id=20, v="d"))],
            [ins("p29_rfk", row(id=12, v="b"), converted="update")],
            [dele("p29_rfk", row(id=15), converted="update")],
            [upd("p29_rfk", row(id=20, v="d2"), row(id=20))],
            [upd("p29_rfk", row(id=1, v="a2"), row(id=1))],
            [ins("p29_rfk", row(id=2, v="c"), converted="update")],
            [dele("p29_rfk", row(id=20)), dele("p29_rfk", row(id=12)), dele("p29_rfk", row(id=2))],
        ])
        # Per action, as Postgres: inserts are published unfiltered by p29_rfk_ins, updates
        # and deletes only by p29_high, with its filter.
        compare(cluster, s3, po, ["p29_high", "p29_rfk_ins"], [
            [ins("p29_rfk", row(id=1, v="a")), ins("p29_rfk", row(id=5, v="b")), ins("p29_rfk", row(id=15, v="c")),
             ins("p29_rfk", row(id=20, v="d"))],
            [ins("p29_rfk", row(id=12, v="b"), converted="update")],
            [dele("p29_rfk", row(id=15), converted="update")],
            [upd("p29_rfk", row(id=20, v="d2"), row(id=20))],
            [dele("p29_rfk", row(id=20)), dele("p29_rfk", row(id=12))],
        ])


def test_partitions_as_leaves_or_as_the_root(cluster):
    # p29_pt_2 has its columns in another order than the root (attached, not created as a
    # partition): a leaf's changes come in its own order, the root's in the root's.
    with objects(cluster, [
            "CREATE TABLE p29_pt (id int PRIMARY KEY, a text, b int) PARTITION BY RANGE (id)",
            "CREATE TABLE p29_pt_1 PARTITION OF p29_pt FOR VALUES FROM (0) TO (100)",
            "CREATE TABLE p29_pt_2 (b int, a text, id int NOT NULL, PRIMARY KEY (id))",
            "ALTER TABLE p29_pt ATTACH PARTITION p29_pt_2 FOR VALUES FROM (100) TO (200)",
            "CREATE PUBLICATION p29_leaf FOR TABLE p29_pt",
            "CREATE PUBLICATION p29_root FOR TABLE p29_pt WITH (publish_via_partition_root = true)",
            "CREATE PUBLICATION p29_part2 FOR TABLE p29_pt_2",
    ], ["DROP PUBLICATION IF EXISTS p29_leaf, p29_root, p29_part2", "DROP TABLE IF EXISTS p29_pt"]), \
            slots(cluster, "p29_parts", n=3) as ((s1, s2, s3), po):
        cluster.exec_txn("INSERT INTO p29_pt VALUES (1, 'x', 10), (150, 'y', 20)")
        cluster.exec_txn("UPDATE p29_pt SET b = 11 WHERE id = 1", "UPDATE p29_pt SET a = 'y2' WHERE id = 150")
        cluster.exec_txn("UPDATE p29_pt SET id = 101 WHERE id = 1")   # moves to the other partition
        cluster.exec_txn("DELETE FROM p29_pt WHERE id = 150")
        cluster.exec_txn("TRUNCATE p29_pt_1")
        cluster.exec_txn("TRUNCATE p29_pt")
        end_marker(cluster)

        compare(cluster, s1, po, ["p29_leaf"], [
            [ins("p29_pt_1", row(id=1, a="x", b=10)), ins("p29_pt_2", row(b=20, a="y", id=150))],
            [upd("p29_pt_1", row(id=1, a="x", b=11), row(id=1)), upd("p29_pt_2", row(b=20, a="y2", id=150), row(id=150))],
            [dele("p29_pt_1", row(id=1)), ins("p29_pt_2", row(b=11, a="x", id=101))],
            [dele("p29_pt_2", row(id=150))],
            [trunc("p29_pt_1")],
            [trunc("p29_pt_1"), trunc("p29_pt_2")],
        ])
        # Via the root: the root's name and column order; truncating a partition alone is not
        # published, truncating the root is one truncate of the root.
        compare(cluster, s2, po, ["p29_root"], [
            [ins("p29_pt", row(id=1, a="x", b=10)), ins("p29_pt", row(id=150, a="y", b=20))],
            [upd("p29_pt", row(id=1, a="x", b=11), row(id=1)), upd("p29_pt", row(id=150, a="y2", b=20), row(id=150))],
            [dele("p29_pt", row(id=1)), ins("p29_pt", row(id=101, a="x", b=11))],
            [dele("p29_pt", row(id=150))],
            [trunc("p29_pt")],
        ])
        compare(cluster, s3, po, ["p29_part2"], [
            [ins("p29_pt_2", row(b=20, a="y", id=150))],
            [upd("p29_pt_2", row(b=20, a="y2", id=150), row(id=150))],
            [ins("p29_pt_2", row(b=11, a="x", id=101))],
            [dele("p29_pt_2", row(id=150))],
            [trunc("p29_pt_2")],
        ])


# (ALTER PUBLICATION or None, statements of one transaction, what the transaction publishes)
ALTER_STEPS = [
    (None,
     ["INSERT INTO p29_al1 VALUES (1)", "INSERT INTO p29_al2 VALUES (1, 'a')"],
     [ins("p29_al1", row(id=1))]),
    ("ALTER PUBLICATION p29_alt ADD TABLE p29_al2",
     ["INSERT INTO p29_al1 VALUES (2)", "INSERT INTO p29_al2 VALUES (2, 'b')"],
     [ins("p29_al1", row(id=2)), ins("p29_al2", row(id=2, v="b"))]),
    ("ALTER PUBLICATION p29_alt SET (publish = 'insert')",
     ["DELETE FROM p29_al1 WHERE id = 1", "INSERT INTO p29_al2 VALUES (3, 'c')"],
     [ins("p29_al2", row(id=3, v="c"))]),
    ("ALTER PUBLICATION p29_alt DROP TABLE p29_al1",
     ["INSERT INTO p29_al1 VALUES (3)"],
     []),
    ("ALTER PUBLICATION p29_alt SET TABLE p29_al1 WHERE (id > 10), p29_al2 (id)",
     ["INSERT INTO p29_al1 VALUES (5), (11)", "INSERT INTO p29_al2 VALUES (5, 'x')"],
     [ins("p29_al1", row(id=11)), ins("p29_al2", row(id=5))]),
    ("ALTER PUBLICATION p29_alt SET (publish = 'insert, update, delete, truncate')",
     ["UPDATE p29_al2 SET v = 'y' WHERE id = 5", "DELETE FROM p29_al1 WHERE id IN (5, 11)"],
     [upd("p29_al2", row(id=5), row(id=5)), dele("p29_al1", row(id=11))]),
]


@pytest.mark.parametrize("live", [True, False], ids=["stream_running", "stream_replaying"])
def test_alter_publication_applies_from_the_next_transaction(cluster, live):
    """live: the stream runs and has sent each transaction before the next ALTER. Otherwise
    the stream connects after all of it and decodes the older WAL: as Postgres, each
    transaction is judged by the publication as it was when the transaction committed."""
    with objects(cluster, [
            "CREATE TABLE p29_al1 (id int PRIMARY KEY)",
            "CREATE TABLE p29_al2 (id int PRIMARY KEY, v text)",
            "CREATE PUBLICATION p29_alt FOR TABLE p29_al1",
    ], ["DROP PUBLICATION IF EXISTS p29_alt", "DROP TABLE IF EXISTS p29_al1, p29_al2"]), \
            slots(cluster, "p29_alter") as ((s1,), po):
        expected = [unit for _, _, unit in ALTER_STEPS if unit]

        def step(alter, stmts):
            if alter is not None:
                cluster.sql(alter)
            cluster.exec_txn(*stmts)

        if live:
            async def body(client):
                for i, (alter, stmts, unit) in enumerate(ALTER_STEPS):
                    step(alter, stmts)
                    if unit:
                        got, _, _ = await recv_unit(client)
                        assert got == unit, f"step {i} ({alter})"

            live_stream(cluster, s1, ["p29_alt"], body)
            theirs, _ = pgoutput_units(cluster, po, ["p29_alt"])
            assert theirs == expected
        else:
            for alter, stmts, _ in ALTER_STEPS:
                step(alter, stmts)
            end_marker(cluster)
            compare(cluster, s1, po, ["p29_alt"], expected)


def test_filtered_out_transactions_send_nothing_and_the_slot_moves_past_them(cluster, heartbeat_1s):
    had_walinspect = cluster.sql("SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'")
    with objects(cluster, [
            "CREATE EXTENSION IF NOT EXISTS pg_walinspect",
            "CREATE TABLE p29_seen (id int PRIMARY KEY)",
            "CREATE TABLE p29_unseen (id int PRIMARY KEY)",
            "CREATE PUBLICATION p29_seen_only FOR TABLE p29_seen",
    ], ["DROP PUBLICATION IF EXISTS p29_seen_only", "DROP TABLE IF EXISTS p29_seen, p29_unseen"]
            + ([] if had_walinspect else ["DROP EXTENSION IF EXISTS pg_walinspect"])), \
            slots(cluster, "p29_moves") as ((s1,), po):
        async def body(client):
            cluster.sql("INSERT INTO p29_seen VALUES (1)")
            unit, _, first = await recv_unit(client)
            assert unit == [ins("p29_seen", row(id=1))]
            # Not acknowledged: the slot stays at it ...
            start = cluster.sql1("SELECT pg_current_wal_insert_lsn()::text")
            xids = [cluster.exec_txn(("INSERT INTO p29_unseen VALUES (%s)", (i,))) for i in range(20)]
            last_end = commit_end_lsns(cluster, start)[xids[-1]]
            # ... until the client acknowledges a heartbeat's lsn, which passes the
            # transactions that sent nothing.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                obj, raw = await client.recv_frame(max(0.1, deadline - loop.time()))
                assert set(obj) == {"heartbeat", "lsn"}, f"a filtered-out transaction sent {raw[:300]}"
                if lsn_int(obj["lsn"]) >= lsn_int(last_end):
                    break
                assert loop.time() < deadline, f"no heartbeat at or past {last_end} (last {obj})"
            assert lsn_int(cluster.confirmed_lsn(s1)) < lsn_int(first)
            await client.ack(obj["lsn"])
            await wait_confirmed(cluster, s1, obj["lsn"], timeout=5)

            # A transaction mixing both sends its published change only; 20 transactions
            # of the other table send nothing: the next frame is the next published row.
            xid = cluster.exec_txn("INSERT INTO p29_unseen VALUES (100)", "INSERT INTO p29_seen VALUES (2)",
                                   "INSERT INTO p29_unseen VALUES (101)")
            unit, _, lsn2 = await recv_unit(client)
            assert unit == [ins("p29_seen", row(id=2))]
            for i in range(200, 220):
                cluster.exec_txn(("INSERT INTO p29_unseen VALUES (%s)", (i,)))
            xid3 = cluster.exec_txn("INSERT INTO p29_seen VALUES (3)")
            unit, _, lsn3 = await recv_unit(client)
            assert unit == [ins("p29_seen", row(id=3))]
            await client.ack(lsn3)
            await wait_confirmed(cluster, s1, lsn3, timeout=5)
            assert lsn_int(lsn3) > lsn_int(lsn2) > lsn_int(last_end)
            ends = commit_end_lsns(cluster, start)
            assert (ends[xid], ends[xid3]) == (lsn2, lsn3)

        live_stream(cluster, s1, ["p29_seen_only"], body)
        theirs, _ = pgoutput_units(cluster, po, ["p29_seen_only"])
        assert theirs == [[ins("p29_seen", row(id=i))] for i in (1, 2, 3)]


def test_logical_messages_flow_with_a_publication(cluster):
    with objects(cluster, [
            "CREATE TABLE p29_mt (id int PRIMARY KEY)",
            "CREATE TABLE p29_other (id int PRIMARY KEY)",
            "CREATE PUBLICATION p29_msgs FOR TABLE p29_mt",
    ], ["DROP PUBLICATION IF EXISTS p29_msgs", "DROP TABLE IF EXISTS p29_mt, p29_other"]), \
            slots(cluster, "p29_messages", n=2) as ((s1, s2), po):
        cluster.sql("SELECT pg_logical_emit_message(false, 'wm', 'hello')")
        cluster.exec_txn("INSERT INTO p29_other VALUES (1)",
                         "SELECT pg_logical_emit_message(true, 'audit', 'one')",
                         "INSERT INTO p29_mt VALUES (1)")
        # A transaction whose only row is filtered out still sends its message.
        cluster.exec_txn("INSERT INTO p29_other VALUES (2)",
                         "SELECT pg_logical_emit_message(true, 'wm', 'two')")
        cluster.sql("SELECT pg_logical_emit_message(false, 'audit', '\\xff0001'::bytea)")
        end_marker(cluster)

        compare(cluster, s1, po, ["p29_msgs"], [
            [msg(False, "wm", b"hello")],
            [msg(True, "audit", b"one"), ins("p29_mt", row(id=1))],
            [msg(True, "wm", b"two")],
            [msg(False, "audit", b"\xff\x00\x01")],
        ])
        # messages= and publication= together: each filters its own kind.
        want = [
            [msg(True, "audit", b"one"), ins("p29_mt", row(id=1))],
            [msg(False, "audit", b"\xff\x00\x01")],
        ]
        ours, _ = stream_units(cluster, s2, ["p29_msgs"], extra_query=f"messages=audit,{END}")
        assert ours == want


def test_role_rules_apply_on_top_of_publications(cluster):
    """A stream whose role may not SELECT a published table gets nothing of it; row security
    and row filters both apply (a publication never widens what a role sees)."""
    role = "p29_reader"
    with objects(cluster, [
            f"CREATE ROLE {role} LOGIN REPLICATION",
            "CREATE TABLE p29_ro_open (id int PRIMARY KEY, v text)",
            "CREATE TABLE p29_ro_secret (id int PRIMARY KEY)",
            "CREATE TABLE p29_ro_rls (id int PRIMARY KEY, tenant int)",
            f"GRANT SELECT ON p29_ro_open, p29_ro_rls TO {role}",
            "ALTER TABLE p29_ro_rls ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY tenant1 ON p29_ro_rls FOR SELECT USING (tenant = 1)",
            "CREATE PUBLICATION p29_ro FOR TABLE p29_ro_open, p29_ro_secret, p29_ro_rls WHERE (id > 1)",
    ], ["DROP PUBLICATION IF EXISTS p29_ro", "DROP TABLE IF EXISTS p29_ro_open, p29_ro_secret, p29_ro_rls",
        f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}"]), \
            slots(cluster, "p29_roles", role=role) as ((s1,), po):
        cluster.exec_txn("INSERT INTO p29_ro_open VALUES (1, 'a')", "INSERT INTO p29_ro_secret VALUES (1)",
                         "INSERT INTO p29_ro_rls VALUES (1, 1), (2, 1), (3, 2)")
        cluster.exec_txn("INSERT INTO p29_ro_secret VALUES (2)")
        cluster.exec_txn("DELETE FROM p29_ro_open WHERE id = 1", "DELETE FROM p29_ro_secret WHERE id = 1")
        end_marker(cluster)

        expected_pgoutput = [
            [ins("p29_ro_open", row(id=1, v="a")), ins("p29_ro_secret", row(id=1)),
             ins("p29_ro_rls", row(id=2, tenant=1)), ins("p29_ro_rls", row(id=3, tenant=2))],
            [ins("p29_ro_secret", row(id=2))],
            [dele("p29_ro_open", row(id=1)), dele("p29_ro_secret", row(id=1))],
        ]

        def visible(ch):
            return ch[1] == "public.p29_ro_open" or ch[1] == "public.p29_ro_rls" and dict(ch[2])["tenant"] == "1"

        theirs, _ = pgoutput_units(cluster, po, ["p29_ro"])
        assert theirs == expected_pgoutput
        ours, _ = stream_units(cluster, s1, ["p29_ro"])
        assert ours == [
            [ins("p29_ro_open", row(id=1, v="a")), ins("p29_ro_rls", row(id=2, tenant=1))],
            [dele("p29_ro_open", row(id=1))],
        ]
        assert ours == [u for u in ([ch for ch in u if visible(ch)] for u in theirs) if u]


def test_default_publication_of_a_slot_and_unknown_publications(cluster):
    """cdc_init(..., publication => 'p') records the slot's default (cdc_slots().publication);
    publication= on the URL overrides it; an unknown publication is a 404 before the upgrade."""
    with objects(cluster, [
            "CREATE TABLE p29_d1 (id int PRIMARY KEY)",
            "CREATE TABLE p29_d2 (id int PRIMARY KEY)",
            "CREATE PUBLICATION p29_pd1 FOR TABLE p29_d1",
            "CREATE PUBLICATION p29_pd2 FOR TABLE p29_d2",
    ], ["DROP PUBLICATION IF EXISTS p29_pd1, p29_pd2", "DROP TABLE IF EXISTS p29_d1, p29_d2"]), \
            slots(cluster, "p29_default", n=2, publication="p29_pd1") as ((s1, s2), po):
        assert cluster.sql("SELECT slot_name, publication FROM cdc_slots() WHERE slot_name IN (%s, %s) "
                           "ORDER BY slot_name", (s1, s2)) == [(s1, "p29_pd1"), (s2, "p29_pd1")]
        for target in (f"/v1/lr/stream?slotName={s1}&publication=p29_nope",
                       f"/v1/lr/stream?slotName={s1}&publication=p29_pd1,p29_nope"):
            error = check_refusal(http_request(cluster.ws_port, target), 404)
            assert "p29_nope" in error, error
        cluster.exec_txn("INSERT INTO p29_d1 VALUES (1)", "INSERT INTO p29_d2 VALUES (1)")
        end_marker(cluster)

        theirs, _ = pgoutput_units(cluster, po, ["p29_pd1"])
        assert theirs == [[ins("p29_d1", row(id=1))]]
        ours, _ = stream_units(cluster, s1, None)   # the slot's default
        assert ours == theirs
        theirs, _ = pgoutput_units(cluster, po, ["p29_pd2"])
        assert theirs == [[ins("p29_d2", row(id=1))]]
        ours, _ = stream_units(cluster, s2, ["p29_pd2"])
        assert ours == theirs
