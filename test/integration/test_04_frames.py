"""Transaction frames: shape, old keys, TOAST, splitting, empty transactions
(issue item 3, second part)."""

import asyncio
import decimal
import re

import pytest

from cdcws import StreamClient, apoll, lsn_int, wait_confirmed

D = decimal.Decimal
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00")
LSN_RE = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")


def _check_frame_meta(txn, xid):
    assert txn.xid == xid, (txn.xid, xid)
    assert isinstance(txn.xid, int)
    for f in txn.frames:
        assert isinstance(f["timestamp"], str) and TS_RE.fullmatch(f["timestamp"]), f["timestamp"]
        assert isinstance(f["change"], list) and f["change"]
    for f in txn.frames[:-1]:
        assert "nextlsn" not in f
    assert isinstance(txn.nextlsn, str) and LSN_RE.fullmatch(txn.nextlsn), txn.nextlsn


@pytest.fixture
def slot_for(cluster):
    """slot_for(name): cdc_init(name) now, cdc_drop(name) at the end of the test."""
    made = []

    def make(name):
        cluster.sql("SELECT * FROM cdc_init(%s)", (name,))
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.drop_slot_quietly(name)


def test_insert_update_delete_truncate_shape(cluster, slot_for):
    cluster.sql("""CREATE TABLE f_shape (id integer PRIMARY KEY, t text, vc varchar(5), n numeric(10,2),
                   b boolean, j jsonb, ts timestamptz, by bytea, arr text[])""")
    cluster.sql("CREATE TABLE f_shape2 (id integer PRIMARY KEY)")
    slot = slot_for("f_shape")
    names = ["id", "t", "vc", "n", "b", "j", "ts", "by", "arr"]
    types = ["integer", "text", "character varying(5)", "numeric(10,2)", "boolean", "jsonb",
             "timestamp with time zone", "bytea", "text[]"]
    row1 = [1, "hello", "abcde", D("12.50"), True, '{"a": [1, 2]}', "2024-01-02 03:04:05.123456+00",
            "\\xdeadbeef", '{a,"b c"}']

    lsn_before = lsn_int(cluster.sql1("SELECT pg_current_wal_lsn()::text"))
    x_ins = cluster.exec_txn(
        "INSERT INTO f_shape VALUES (1, 'hello', 'abcde', 12.5, true, '{\"a\": [1, 2]}', "
        "'2024-01-02 03:04:05.123456+00', '\\xdeadbeef'::bytea, '{a,\"b c\"}')")
    lsn_after_ins = lsn_int(cluster.sql1("SELECT pg_current_wal_lsn()::text"))
    x_upd = cluster.exec_txn("UPDATE f_shape SET t = 'world', b = false WHERE id = 1")
    x_key = cluster.exec_txn("UPDATE f_shape SET id = 2 WHERE id = 1")
    x_del = cluster.exec_txn("DELETE FROM f_shape WHERE id = 2")
    cluster.exec_txn("INSERT INTO f_shape (id) VALUES (5)", "INSERT INTO f_shape2 VALUES (6)")
    x_tru = cluster.exec_txn("TRUNCATE f_shape, f_shape2")

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txns(6, 20)
        finally:
            await client.close()

    t_ins, t_upd, t_key, t_del, t_two, t_tru = asyncio.run(main())

    # insert
    _check_frame_meta(t_ins, x_ins)
    assert len(t_ins.frames) == 1
    assert lsn_before < lsn_int(t_ins.nextlsn) <= lsn_after_ins
    assert set(t_ins.frames[0]) == {"xid", "timestamp", "change", "nextlsn"}
    assert t_ins.changes == [{"kind": "insert", "schema": "public", "table": "f_shape",
                              "columnnames": names, "columntypes": types, "columnvalues": row1}]
    # numeric keeps its digits
    assert str(t_ins.changes[0]["columnvalues"][3]) == "12.50"
    assert '"hello","abcde",12.50,true,' in t_ins.raws[0].replace(", ", ",")

    # update, key unchanged: the old key comes from the new row
    _check_frame_meta(t_upd, x_upd)
    row2 = list(row1)
    row2[1], row2[4] = "world", False
    assert t_upd.changes == [{"kind": "update", "schema": "public", "table": "f_shape",
                              "columnnames": names, "columntypes": types, "columnvalues": row2,
                              "oldkeys": {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [1]}}]

    # update of the key: old key value
    _check_frame_meta(t_key, x_key)
    row3 = list(row2)
    row3[0] = 2
    assert t_key.changes == [{"kind": "update", "schema": "public", "table": "f_shape",
                              "columnnames": names, "columntypes": types, "columnvalues": row3,
                              "oldkeys": {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [1]}}]

    # delete
    _check_frame_meta(t_del, x_del)
    assert t_del.changes == [{"kind": "delete", "schema": "public", "table": "f_shape",
                              "oldkeys": {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [2]}}]

    # two tables in one transaction, in commit order
    assert [(c["kind"], c["table"], c["columnvalues"][0]) for c in t_two.changes] == \
        [("insert", "f_shape", 5), ("insert", "f_shape2", 6)]
    assert t_two.changes[0]["columnvalues"] == [5] + [None] * 8

    # truncate: one change per table
    _check_frame_meta(t_tru, x_tru)
    assert sorted(t_tru.changes, key=lambda c: c["table"]) == [
        {"kind": "truncate", "schema": "public", "table": "f_shape"},
        {"kind": "truncate", "schema": "public", "table": "f_shape2"}]

    # nextlsn strictly increases (also checked by the client) and xids are the committed ones
    lsns = [lsn_int(t.nextlsn) for t in (t_ins, t_upd, t_key, t_del, t_two, t_tru)]
    assert lsns == sorted(set(lsns))


def test_schema_qualified_and_quoted_names(cluster, slot_for):
    cluster.sql('CREATE SCHEMA "f Sch"')
    cluster.sql('CREATE TABLE "f Sch"."Mixed""Tab" ("Id" int PRIMARY KEY, "va lue" text)')
    slot = slot_for("f_names")
    cluster.sql('INSERT INTO "f Sch"."Mixed""Tab" VALUES (1, \'v\')')

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txn(10)
        finally:
            await client.close()

    txn = asyncio.run(main())
    assert txn.changes == [{"kind": "insert", "schema": "f Sch", "table": 'Mixed"Tab',
                            "columnnames": ["Id", "va lue"], "columntypes": ["integer", "text"],
                            "columnvalues": [1, "v"]}]


def test_dropped_and_generated_columns_left_out(cluster, slot_for):
    cluster.sql("CREATE TABLE f_cols (id int PRIMARY KEY, gone text, a int, "
                "g int GENERATED ALWAYS AS (a * 2) STORED)")
    cluster.sql("ALTER TABLE f_cols DROP COLUMN gone")
    slot = slot_for("f_cols")
    cluster.sql("INSERT INTO f_cols (id, a) VALUES (1, 21)")

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txn(10)
        finally:
            await client.close()

    txn = asyncio.run(main())
    assert txn.changes == [{"kind": "insert", "schema": "public", "table": "f_cols",
                            "columnnames": ["id", "a"], "columntypes": ["integer", "integer"],
                            "columnvalues": [1, 21]}]


def test_replica_identity_full_and_using_index(cluster, slot_for):
    cluster.sql("CREATE TABLE f_full (id int PRIMARY KEY, v text, n int)")
    cluster.sql("ALTER TABLE f_full REPLICA IDENTITY FULL")
    cluster.sql("CREATE TABLE f_uidx (id int PRIMARY KEY, code text NOT NULL, v text)")
    cluster.sql("CREATE UNIQUE INDEX f_uidx_code ON f_uidx (code)")
    cluster.sql("ALTER TABLE f_uidx REPLICA IDENTITY USING INDEX f_uidx_code")
    slot = slot_for("f_full")
    cluster.sql("INSERT INTO f_full VALUES (1, 'a', 10)")
    cluster.sql("UPDATE f_full SET v = 'b' WHERE id = 1")
    cluster.sql("DELETE FROM f_full WHERE id = 1")
    cluster.sql("INSERT INTO f_uidx VALUES (1, 'k1', 'x')")
    cluster.sql("UPDATE f_uidx SET v = 'y' WHERE id = 1")
    cluster.sql("UPDATE f_uidx SET code = 'k2' WHERE id = 1")
    cluster.sql("DELETE FROM f_uidx WHERE id = 1")

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txns(7, 20)
        finally:
            await client.close()

    txns = asyncio.run(main())
    full_old = lambda vals: {"keynames": ["id", "v", "n"], "keytypes": ["integer", "text", "integer"],
                             "keyvalues": vals}
    assert txns[1].changes == [{"kind": "update", "schema": "public", "table": "f_full",
                                "columnnames": ["id", "v", "n"], "columntypes": ["integer", "text", "integer"],
                                "columnvalues": [1, "b", 10], "oldkeys": full_old([1, "a", 10])}]
    assert txns[2].changes == [{"kind": "delete", "schema": "public", "table": "f_full",
                                "oldkeys": full_old([1, "b", 10])}]
    code_key = lambda v: {"keynames": ["code"], "keytypes": ["text"], "keyvalues": [v]}
    assert txns[4].changes[0]["oldkeys"] == code_key("k1")
    assert txns[4].changes[0]["columnvalues"] == [1, "k1", "y"]
    assert txns[5].changes[0]["oldkeys"] == code_key("k1")
    assert txns[5].changes[0]["columnvalues"] == [1, "k2", "y"]
    assert txns[6].changes == [{"kind": "delete", "schema": "public", "table": "f_uidx",
                                "oldkeys": code_key("k2")}]


def test_no_replica_identity_has_no_oldkeys(cluster, slot_for):
    cluster.sql("CREATE TABLE f_nopk (a int, b text)")
    cluster.sql("CREATE TABLE f_nothing (id int PRIMARY KEY, b text)")
    cluster.sql("ALTER TABLE f_nothing REPLICA IDENTITY NOTHING")
    slot = slot_for("f_nopk")
    cluster.sql("INSERT INTO f_nopk VALUES (1, 'x')")
    cluster.sql("UPDATE f_nopk SET b = 'y'")
    cluster.sql("DELETE FROM f_nopk")
    cluster.sql("INSERT INTO f_nothing VALUES (1, 'x')")
    cluster.sql("UPDATE f_nothing SET b = 'y'")
    cluster.sql("DELETE FROM f_nothing")

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txns(6, 20)
        finally:
            await client.close()

    txns = asyncio.run(main())
    assert txns[0].changes == [{"kind": "insert", "schema": "public", "table": "f_nopk",
                                "columnnames": ["a", "b"], "columntypes": ["integer", "text"],
                                "columnvalues": [1, "x"]}]
    assert txns[1].changes == [{"kind": "update", "schema": "public", "table": "f_nopk",
                                "columnnames": ["a", "b"], "columntypes": ["integer", "text"],
                                "columnvalues": [1, "y"]}]
    assert txns[2].changes == [{"kind": "delete", "schema": "public", "table": "f_nopk"}]
    assert txns[4].changes == [{"kind": "update", "schema": "public", "table": "f_nothing",
                                "columnnames": ["id", "b"], "columntypes": ["integer", "text"],
                                "columnvalues": [1, "y"]}]
    assert txns[5].changes == [{"kind": "delete", "schema": "public", "table": "f_nothing"}]


def test_unchanged_toast(cluster, slot_for):
    cluster.sql("CREATE TABLE f_toast (id int PRIMARY KEY, big text, n int)")
    slot = slot_for("f_toast")
    # ~100 kB of hex digits from md5: compresses badly, so it is stored out of line
    cluster.sql("INSERT INTO f_toast SELECT 1, string_agg(md5(random()::text || g), ''), 1 "
                "FROM generate_series(1, 3200) g")
    big = cluster.sql1("SELECT big FROM f_toast WHERE id = 1")
    assert len(big) == 102400
    assert cluster.sql1("SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE relname = 'f_toast'")
    cluster.sql("UPDATE f_toast SET n = 2 WHERE id = 1")
    cluster.sql("UPDATE f_toast SET big = 'small', n = 3 WHERE id = 1")

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            return await client.recv_txns(3, 20)
        finally:
            await client.close()

    t_ins, t_upd, t_upd2 = asyncio.run(main())
    assert t_ins.changes == [{"kind": "insert", "schema": "public", "table": "f_toast",
                              "columnnames": ["id", "big", "n"], "columntypes": ["integer", "text", "integer"],
                              "columnvalues": [1, big, 1]}]
    assert t_upd.changes == [{"kind": "update", "schema": "public", "table": "f_toast",
                              "columnnames": ["id", "n"], "columntypes": ["integer", "integer"],
                              "columnvalues": [1, 2], "unchangedtoast": ["big"],
                              "oldkeys": {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [1]}}]
    assert t_upd2.changes == [{"kind": "update", "schema": "public", "table": "f_toast",
                               "columnnames": ["id", "big", "n"], "columntypes": ["integer", "text", "integer"],
                               "columnvalues": [1, "small", 3],
                               "oldkeys": {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [1]}}]


def test_split_by_max_changes_per_message(cluster, slot_for):
    cluster.sql("CREATE TABLE f_split (id int PRIMARY KEY)")
    slot = slot_for("f_split")
    try:
        cluster.alter_system("pgcdcws.max_changes_per_message", 10)
        x25 = cluster.exec_txn("INSERT INTO f_split SELECT generate_series(1, 25)")
        x10 = cluster.exec_txn("INSERT INTO f_split SELECT generate_series(101, 110)")
        x11 = cluster.exec_txn("INSERT INTO f_split SELECT generate_series(201, 211)")

        async def main():
            # the decoder starts now, after the reload
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                return await client.recv_txns(3, 20)
            finally:
                await client.close()

        t25, t10, t11 = asyncio.run(main())
    finally:
        cluster.alter_system("pgcdcws.max_changes_per_message", None, expect_show="1000")

    assert [len(f["change"]) for f in t25.frames] == [10, 10, 5]
    assert [f["xid"] for f in t25.frames] == [x25] * 3
    assert ["nextlsn" in f for f in t25.frames] == [False, False, True]
    assert t25.ids() == list(range(1, 26))
    assert [len(f["change"]) for f in t10.frames] == [10]
    assert t10.xid == x10 and t10.ids() == list(range(101, 111))
    assert [len(f["change"]) for f in t11.frames] == [10, 1]
    assert [f["xid"] for f in t11.frames] == [x11] * 2
    assert ["nextlsn" in f for f in t11.frames] == [False, True]
    assert t11.ids() == list(range(201, 212))


def test_stream_starts_at_confirmed_flush_lsn(cluster, slot_for):
    cluster.sql("CREATE TABLE f_start (id int PRIMARY KEY)")
    slot = slot_for("f_start")
    cluster.sql("INSERT INTO f_start VALUES (1)")
    cluster.sql("INSERT INTO f_start VALUES (2)")
    mid = cluster.sql1("SELECT pg_current_wal_lsn()::text")
    cluster.sql("INSERT INTO f_start VALUES (3)")
    cluster.sql1("SELECT cdc_ack(%s, %s)", (slot, mid))
    assert cluster.confirmed_lsn(slot) == mid

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            txn = await client.recv_txn(10)
            assert txn.ids() == [3]
            assert lsn_int(txn.nextlsn) > lsn_int(mid)
        finally:
            await client.close()

    asyncio.run(main())


def test_empty_transactions_produce_no_frame_and_slot_advances(cluster, slot_for):
    cluster.sql("CREATE TABLE f_empty (id int PRIMARY KEY)")
    # (the database is left behind: DROP DATABASE is tested on its own in test_01_workers)
    cluster.sql("CREATE DATABASE f_otherdb")
    slot = slot_for("f_empty")

    async def main():
        client = await StreamClient.open(cluster.ws_port, slot)
        try:
            cluster.sql("INSERT INTO f_empty VALUES (1)")
            t1 = await client.recv_txn(10)
            assert t1.ids() == [1]
            await client.ack(t1.nextlsn)
            await wait_confirmed(cluster, slot, t1.nextlsn)

            # DDL only, an xid without changes, a rollback, changes in another database
            cluster.sql("CREATE TABLE f_empty_ddl (id int)")
            cluster.sql("ALTER TABLE f_empty_ddl ADD COLUMN v text")
            cluster.sql("CREATE INDEX ON f_empty_ddl (v)")
            cluster.exec_txn("SELECT pg_current_xact_id()")
            conn = cluster.connect(autocommit=False)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO f_empty VALUES (99)")
            conn.rollback()
            conn.close()
            other = cluster.connect(dbname="f_otherdb")
            with other.cursor() as cur:
                cur.execute("CREATE TABLE o (id int)")
                cur.execute("INSERT INTO o VALUES (1)")
            other.close()
            target = cluster.sql1("SELECT pg_current_wal_lsn()::text")
            assert lsn_int(target) > lsn_int(t1.nextlsn)

            # everything sent is acknowledged, so the slot moves past all of it by itself
            await apoll(lambda: lsn_int(cluster.confirmed_lsn(slot)) >= lsn_int(target), 5,
                        what=f"confirmed_flush_lsn to pass {target} without new acks")

            # and none of it produced a message: the next one is the next insert
            x2 = cluster.exec_txn("INSERT INTO f_empty VALUES (2)")
            t2 = await client.recv_txn(10)
            assert (t2.xid, t2.ids()) == (x2, [2])
        finally:
            await client.close()

    asyncio.run(main())
