"""The broadcast decoder alone (issue 8), driven through its debug hooks
(src/broadcast/debug_hooks.cpp) in place of the server: the hooks write Subscribe
messages on the control ring and read the output ring back as text lines.

Temporary: the end-to-end /ws tests (test_8x) supersede it once the server side is merged.
"""
import json

from conftest import wait_for

HOOKS = [
    ("pgcdcws_debug_broadcast_start()", "int"),
    ("pgcdcws_debug_broadcast_stop()", "void"),
    ("pgcdcws_debug_broadcast_status()", "text"),
    ("pgcdcws_debug_broadcast_subscribe(int, int, oid, oid, int, pg_lsn, text, text, text[])", "pg_lsn"),
    ("pgcdcws_debug_broadcast_unsubscribe(int, int)", "void"),
    ("pgcdcws_debug_broadcast_read()", "text[]"),
    ("pgcdcws_debug_broadcast_stats()", "text"),
]

INSERT, UPDATE, DELETE, TRUNCATE = 1, 2, 4, 8


class Decoder:
    def __init__(self, cluster):
        self.c = cluster
        for sig, ret in HOOKS:
            name = sig.split("(")[0]
            cluster.sql(f"CREATE OR REPLACE FUNCTION {sig} RETURNS {ret} AS 'pgcdcws', '{name}' "
                        f"LANGUAGE C CALLED ON NULL INPUT")
        self.generation = cluster.sql1("SELECT pgcdcws_debug_broadcast_start()")
        wait_for(lambda: self.status() == "running", 60, what="broadcast decoder running")
        self.lines = []

    def status(self):
        s = self.c.sql1("SELECT pgcdcws_debug_broadcast_status()")
        assert not s.startswith("failed"), s
        return s

    def subscribe(self, slot, relid, kinds, column=None, op=None, values=None, since=None, role="postgres"):
        return self.c.sql1(
            "SELECT pgcdcws_debug_broadcast_subscribe(%s, %s, %s::regrole::oid, %s::regclass::oid, %s, %s::pg_lsn, "
            "%s, %s, %s::text[])",
            (slot, self.generation, role, relid, kinds, since, column, op, values))

    def unsubscribe(self, slot):
        self.c.sql("SELECT pgcdcws_debug_broadcast_unsubscribe(%s, %s)", (slot, self.generation))

    def read(self):
        self.lines += self.c.sql1("SELECT pgcdcws_debug_broadcast_read()")
        return self.lines

    def take(self, n, what):
        wait_for(lambda: len(self.read()) >= n, 30, what=f"{n} output messages ({what}); got {self.lines}")
        out, self.lines = self.lines[:n], self.lines[n:]
        return out

    def stop(self):
        self.c.sql("SELECT pgcdcws_debug_broadcast_stop()")
        wait_for(lambda: self.status() == "stopped", 30, what="broadcast decoder stopped")
        wait_for(lambda: self.c.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgcdcws_broadcast'")
                 == [], 30, what="temporary slot dropped")


def change(line):
    """('change', recipients, lsn, body-dict) from a rendered change line."""
    kind, recipients, lsn, body = line.split(" ", 3)
    assert kind == "change", line
    return recipients, lsn, json.loads(body)


def test_filtered_insert_update_delete_truncate(cluster):
    cluster.sql("DROP TABLE IF EXISTS bd_t")
    cluster.sql("CREATE TABLE bd_t (id int PRIMARY KEY, name text, score float8)")
    d = Decoder(cluster)
    try:
        req = d.subscribe(0, "bd_t", INSERT | UPDATE | DELETE | TRUNCATE, "id", "in", ["1", "2"])
        [line] = d.take(1, "subscribed")
        tag, handle, lsn = line.split(" ")
        assert (tag, handle) == ("subscribed", f"0/{d.generation}")
        # Another subscription: score > 4.5 (float8 comparison), inserts only.
        d.subscribe(1, "bd_t", INSERT, "score", "gt", ["4.5"])
        assert d.take(1, "subscribed")[0].startswith(f"subscribed 1/{d.generation} ")

        cluster.exec_txn("INSERT INTO bd_t VALUES (1, 'a', 1.0), (2, 'b', 10.0), (3, 'c', 4.6), (4, 'd', 4.5)")
        lines = d.take(3, "inserts")
        got = [change(l) for l in lines]
        assert [g[2]["columnvalues"] for g in got] == [[1, "a", 1.0], [2, "b", 10.0], [3, "c", 4.6]]
        g = d.generation
        assert [sorted(x[0].split(",")) for x in got] == [[f"0/{g}:0"], [f"0/{g}:0", f"1/{g}:0"], [f"1/{g}:0"]]
        body = got[0][2]
        assert body["type"] == "change" and body["kind"] == "insert" and body["schema"] == "public"
        assert body["table"] == "bd_t" and body["columnnames"] == ["id", "name", "score"]
        assert body["lsn"] == got[0][1] and isinstance(body["xid"], int)

        # Update of row 1 (key unchanged): the old key comes from the new row: both sides match.
        cluster.exec_txn("UPDATE bd_t SET name = 'a2' WHERE id = 1")
        recipients, _, body = change(d.take(1, "update")[0])
        assert recipients == f"0/{d.generation}:3"
        assert body["kind"] == "update" and body["columnvalues"] == [1, "a2", 1.0]
        assert body["oldkeys"] == {"keynames": ["id"], "keytypes": ["integer"], "keyvalues": [1]}
        # Key moves out of the filter: matched through the old key only.
        cluster.exec_txn("UPDATE bd_t SET id = 5 WHERE id = 2")
        recipients, _, body = change(d.take(1, "update out")[0])
        assert recipients == f"0/{d.generation}:2"
        assert body["oldkeys"]["keyvalues"] == [2]
        # ... and back in: new side only.
        cluster.exec_txn("UPDATE bd_t SET id = 2 WHERE id = 5")
        recipients, _, body = change(d.take(1, "update in")[0])
        assert recipients == f"0/{d.generation}:1"
        # Not matching: nothing. Then a delete that matches.
        cluster.exec_txn("UPDATE bd_t SET name = 'x' WHERE id = 3")
        cluster.exec_txn("DELETE FROM bd_t WHERE id = 1")
        recipients, _, body = change(d.take(1, "delete")[0])
        assert recipients == f"0/{d.generation}:0" and body["kind"] == "delete"
        assert body["oldkeys"]["keyvalues"] == [1]
        cluster.exec_txn("TRUNCATE bd_t")
        recipients, _, body = change(d.take(1, "truncate")[0])
        assert recipients == f"0/{d.generation}:0" and body["kind"] == "truncate"
        assert set(body) == {"type", "kind", "schema", "table", "xid", "lsn"}

        d.unsubscribe(0)
        d.unsubscribe(1)
        cluster.exec_txn("INSERT INTO bd_t VALUES (1, 'z', 100)")
        # A later subscription proves ordering: nothing for the unsubscribed ones came first.
        d.subscribe(2, "bd_t", INSERT)
        assert d.take(1, "subscribed")[0].startswith(f"subscribed 2/{d.generation} ")
        assert d.read() == []
    finally:
        d.stop()
    cluster.sql("DROP TABLE bd_t")


def test_since_replays_the_window_after_a_gap(cluster):
    cluster.sql("DROP TABLE IF EXISTS bd_w")
    cluster.sql("CREATE TABLE bd_w (id int PRIMARY KEY, v text)")
    d = Decoder(cluster)
    try:
        start = cluster.sql1("SELECT pg_current_wal_flush_lsn()")
        for i in range(1, 6):
            cluster.exec_txn(f"INSERT INTO bd_w VALUES ({i}, 'v{i}')")
        d.subscribe(3, "bd_w", INSERT)  # without since: sees none of them
        assert d.take(1, "subscribed")[0].startswith("subscribed 3/")
        d.subscribe(4, "bd_w", INSERT, "id", "gte", ["3"], since="0/0")
        lines = d.take(5, "subscribed, gap, 3 replayed")
        assert lines[0].startswith(f"subscribed 4/{d.generation} ")
        tag, handle, since, oldest = lines[1].split(" ")
        assert (tag, handle, since) == ("gap", f"4/{d.generation}", "0/0")
        assert [change(l)[2]["columnvalues"] for l in lines[2:]] == [[3, "v3"], [4, "v4"], [5, "v5"]]
        assert all(change(l)[0] == f"4/{d.generation}:0" for l in lines[2:])
        # since = the lsn of the 4th change: only the 5th is replayed, no gap.
        lsn4 = change(lines[3])[1]
        d.subscribe(5, "bd_w", INSERT, since=lsn4)
        lines = d.take(2, "subscribed and 1 replayed")
        assert lines[0].startswith(f"subscribed 5/{d.generation} ")
        assert change(lines[1])[2]["columnvalues"] == [5, "v5"]
        # Live changes reach all three.
        cluster.exec_txn("INSERT INTO bd_w VALUES (6, 'v6')")
        recipients, _, body = change(d.take(1, "live")[0])
        assert sorted(recipients.split(",")) == [f"{s}/{d.generation}:0" for s in (3, 4, 5)]
        assert start is not None
    finally:
        d.stop()
    cluster.sql("DROP TABLE bd_w")


def test_refusals_and_row_security(cluster):
    cluster.sql("DROP TABLE IF EXISTS bd_r")
    cluster.sql("DROP ROLE IF EXISTS bd_reader")
    cluster.sql("DROP ROLE IF EXISTS bd_nobody")
    cluster.sql("CREATE TABLE bd_r (id int PRIMARY KEY, owner text)")
    cluster.sql("ALTER TABLE bd_r REPLICA IDENTITY FULL")
    cluster.sql("CREATE ROLE bd_reader")
    cluster.sql("CREATE ROLE bd_nobody")
    cluster.sql("GRANT SELECT ON bd_r TO bd_reader")
    cluster.sql("ALTER TABLE bd_r ENABLE ROW LEVEL SECURITY")
    cluster.sql("CREATE POLICY mine ON bd_r FOR SELECT USING (owner = current_user)")
    d = Decoder(cluster)
    try:
        d.subscribe(6, "bd_r", INSERT, "id", "eq", ["x"])
        line = d.take(1, "ended: bad value")[0]
        assert line == f"ended 6/{d.generation} invalid input syntax for type integer: \"x\"", line
        d.subscribe(7, "bd_r", INSERT, role="bd_nobody")
        line = d.take(1, "ended: no select")[0]
        assert line == f"ended 7/{d.generation} role bd_nobody may no longer SELECT table public.bd_r", line

        d.subscribe(8, "bd_r", INSERT | UPDATE | DELETE, role="bd_reader")
        assert d.take(1, "subscribed")[0].startswith(f"subscribed 8/{d.generation} ")
        cluster.exec_txn("INSERT INTO bd_r VALUES (1, 'bd_reader'), (2, 'someone')")
        recipients, _, body = change(d.take(1, "visible insert")[0])
        assert body["columnvalues"] == [1, "bd_reader"]
        # Moving out of the role's view is not shown (conservative); a visible delete is.
        cluster.exec_txn("UPDATE bd_r SET owner = 'someone' WHERE id = 1")
        cluster.exec_txn("DELETE FROM bd_r WHERE id = 2")
        cluster.exec_txn("INSERT INTO bd_r VALUES (3, 'bd_reader')")
        cluster.exec_txn("DELETE FROM bd_r WHERE id = 3")
        lines = d.take(2, "insert and delete of row 3")
        assert [change(l)[2]["kind"] for l in lines] == ["insert", "delete"]
        assert change(lines[1])[2]["oldkeys"]["keyvalues"] == [3, "bd_reader"]
        # Revoked: the subscription ends at the next change.
        cluster.sql("REVOKE SELECT ON bd_r FROM bd_reader")
        cluster.exec_txn("INSERT INTO bd_r VALUES (4, 'bd_reader')")
        line = d.take(1, "ended: revoked")[0]
        assert line == f"ended 8/{d.generation} role bd_reader may no longer SELECT table public.bd_r", line
    finally:
        d.stop()
    cluster.sql("DROP TABLE bd_r")
    cluster.sql("DROP ROLE bd_reader")
    cluster.sql("DROP ROLE bd_nobody")


def test_dropped_table_ends_its_subscriptions(cluster):
    cluster.sql("DROP TABLE IF EXISTS bd_d")
    cluster.sql("CREATE TABLE bd_d (id int PRIMARY KEY)")
    d = Decoder(cluster)
    try:
        d.subscribe(9, "bd_d", INSERT | DELETE, "id", "lt", ["10"])
        assert d.take(1, "subscribed")[0].startswith(f"subscribed 9/{d.generation} ")
        cluster.sql("DROP TABLE bd_d")
        line = d.take(1, "ended: dropped")[0]
        assert line == f"ended 9/{d.generation} the subscription's table was dropped", line
    finally:
        d.stop()


def test_without_a_window_since_gets_a_gap_to_the_current_position(cluster):
    cluster.sql("DROP TABLE IF EXISTS bd_z")
    cluster.sql("CREATE TABLE bd_z (id int PRIMARY KEY)")
    cluster.sql("ALTER SYSTEM SET pgcdcws.broadcast_replay_size = 0")
    cluster.sql("SELECT pg_reload_conf()")
    d = Decoder(cluster)
    try:
        cluster.exec_txn("INSERT INTO bd_z VALUES (1)")
        after_insert = cluster.sql1("SELECT pg_current_wal_flush_lsn()")
        # Once the insert is decoded, a since before it must get a gap, not silence.
        d.subscribe(10, "bd_z", INSERT)
        assert d.take(1, "subscribed")[0].startswith(f"subscribed 10/{d.generation} ")
        wait_for(lambda: cluster.sql1(
            "SELECT split_part(split_part(pgcdcws_debug_broadcast_stats(), 'decoded_lsn=', 2), ' ', 1)::pg_lsn >= %s",
            (after_insert,)), 30, what="insert decoded")
        d.subscribe(11, "bd_z", INSERT, since="0/0")
        lines = d.take(2, "subscribed and gap")
        assert lines[0].startswith(f"subscribed 11/{d.generation} ")
        tag, handle, since, oldest = lines[1].split(" ")
        assert (tag, handle, since) == ("gap", f"11/{d.generation}", "0/0")
        assert cluster.sql1("SELECT %s::pg_lsn >= %s::pg_lsn", (oldest, after_insert))
        assert d.read() == []
    finally:
        d.stop()
        cluster.sql("ALTER SYSTEM RESET pgcdcws.broadcast_replay_size")
        cluster.sql("SELECT pg_reload_conf()")
    cluster.sql("DROP TABLE bd_z")
