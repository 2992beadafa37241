"""What a durable stream shows a role (issue 7, "Authorization by Postgres itself").

In trust mode a stream runs as the slot's owner, the role that called cdc_init(). Changes of
tables it cannot SELECT are left out (the slot still advances past them); on tables with row
security the role's SELECT policies are evaluated against each decoded row; privilege and
policy changes apply to the changes written after them.

"Nothing arrives" is never waited for: after the changes that must stay hidden, a row is
written to a marker table the role may read, and the next transaction must be that marker.
"""

import asyncio
import contextlib
import os
import re
import time

import pytest

from cdcws import StreamClient, lsn_int, wait_confirmed
from conftest import Cluster, _require_extension, wait_for

MARK = "priv_mark"


def _row(names, values):
    return dict(zip(names, values))


def _change(c):
    """(kind, table, new row or None, old keys or None) of a change, rows as dicts."""
    new = _row(c["columnnames"], c["columnvalues"]) if "columnnames" in c else None
    old = _row(c["oldkeys"]["keynames"], c["oldkeys"]["keyvalues"]) if "oldkeys" in c else None
    return c["kind"], c["table"], new, old


def _init_as(cluster, role, slot):
    conn = cluster.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM cdc_init(%s, snapshot => false)", (slot,))
            assert cur.fetchone()[0] == slot
    finally:
        conn.close()


@contextlib.contextmanager
def _setup(cluster, roles, tables):
    """Creates LOGIN REPLICATION roles (name -> extra attributes) and tables (name -> DDL
    after the name), plus the marker table readable by everyone; drops them afterwards."""
    for name, attrs in roles.items():
        cluster.sql(f"CREATE ROLE {name} LOGIN REPLICATION {attrs}")
    cluster.sql(f"CREATE TABLE {MARK} (id int PRIMARY KEY)")
    cluster.sql(f"GRANT SELECT ON {MARK} TO PUBLIC")
    for name, ddl in tables.items():
        cluster.sql(f"CREATE TABLE {name} {ddl}")
    try:
        yield
    finally:
        cluster.sql(f"DROP TABLE IF EXISTS {MARK}, {', '.join(tables)}")
        for name in roles:
            cluster.sql(f"DROP OWNED BY {name}")
            cluster.sql(f"DROP ROLE {name}")


class Marker:
    def __init__(self, cluster):
        self.cluster = cluster
        self.n = 0

    async def expect_next(self, client, timeout=20):
        """Writes a marker row; the next transaction the client receives must be exactly it."""
        self.n += 1
        self.cluster.sql(f"INSERT INTO {MARK} VALUES (%s)", (self.n,))
        txn = await client.recv_txn(timeout)
        assert [_change(c) for c in txn.changes] == [("insert", MARK, {"id": self.n}, None)], txn.changes
        return txn


def _stream(cluster, slot, body, max_queue=32):
    async def main():
        client = await StreamClient.open_retry(cluster.ws_port, slot, max_queue=max_queue)
        try:
            await body(client, Marker(cluster))
        finally:
            await client.close()

    try:
        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_tables_without_select_are_left_out_and_the_slot_moves_past_them(cluster):
    slot = "priv_noselect"
    with _setup(cluster, {"priv_r1": ""},
                {"priv_open": "(id int PRIMARY KEY)", "priv_secret": "(id int PRIMARY KEY, s text)",
                 "priv_cols": "(id int PRIMARY KEY, s text)"}):
        cluster.sql("GRANT SELECT ON priv_open TO priv_r1")
        # Column grants alone do not make a table visible (a row with holes is not sent).
        cluster.sql("GRANT SELECT (id) ON priv_cols TO priv_r1")
        _init_as(cluster, "priv_r1", slot)

        async def body(client, marker):
            # A transaction of hidden changes only sends nothing.
            cluster.sql("INSERT INTO priv_secret VALUES (1, 'password')")
            cluster.sql("INSERT INTO priv_cols VALUES (1, 'x')")
            # A mixed transaction sends only the visible changes.
            cluster.exec_txn("INSERT INTO priv_secret VALUES (2, 'b')", "INSERT INTO priv_open VALUES (10)",
                             "UPDATE priv_secret SET s = 'c' WHERE id = 1", "INSERT INTO priv_open VALUES (11)",
                             "DELETE FROM priv_secret WHERE id = 2", "TRUNCATE priv_cols")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_open", {"id": 10}, None),
                                                         ("insert", "priv_open", {"id": 11}, None)]
            # More hidden changes, then a marker: the slot moves past all of them once the
            # marker is acknowledged.
            before = cluster.confirmed_lsn(slot)
            cluster.sql("INSERT INTO priv_secret SELECT g, 'x' FROM generate_series(100, 199) g")
            mark = await marker.expect_next(client)
            await client.ack(mark.nextlsn)
            confirmed = await wait_confirmed(cluster, slot, mark.nextlsn, timeout=10)
            assert lsn_int(confirmed) >= lsn_int(mark.nextlsn) > lsn_int(before)

        _stream(cluster, slot, body)


def test_grant_and_revoke_apply_to_a_running_stream(cluster):
    slot = "priv_grant"
    with _setup(cluster, {"priv_r2": ""}, {"priv_later": "(id int PRIMARY KEY)"}):
        _init_as(cluster, "priv_r2", slot)

        async def body(client, marker):
            cluster.sql("INSERT INTO priv_later VALUES (1)")
            await marker.expect_next(client)
            cluster.sql("GRANT SELECT ON priv_later TO priv_r2")
            cluster.sql("INSERT INTO priv_later VALUES (2)")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_later", {"id": 2}, None)]
            cluster.sql("REVOKE SELECT ON priv_later FROM priv_r2")
            cluster.sql("INSERT INTO priv_later VALUES (3)")
            await marker.expect_next(client)
            # Through a role it is a member of.
            cluster.sql("CREATE ROLE priv_readers NOLOGIN")
            try:
                cluster.sql("GRANT SELECT ON priv_later TO priv_readers")
                cluster.sql("INSERT INTO priv_later VALUES (4)")
                await marker.expect_next(client)
                cluster.sql("GRANT priv_readers TO priv_r2")
                cluster.sql("INSERT INTO priv_later VALUES (5)")
                txn = await client.recv_txn(20)
                assert [_change(c) for c in txn.changes] == [("insert", "priv_later", {"id": 5}, None)]
                cluster.sql("REVOKE priv_readers FROM priv_r2")
                cluster.sql("INSERT INTO priv_later VALUES (6)")
                await marker.expect_next(client)
            finally:
                cluster.sql("DROP OWNED BY priv_readers")
                cluster.sql("DROP ROLE priv_readers")

        _stream(cluster, slot, body)


def test_row_security_policy_filters_inserts_updates_and_deletes(cluster):
    slot = "priv_rls"
    with _setup(cluster, {"priv_r3": ""},
                {"priv_docs": "(id int PRIMARY KEY, tenant int, owner name, body text)",
                 "priv_keyed": "(id int PRIMARY KEY, tenant int)"}):
        for table in ("priv_docs", "priv_keyed"):
            cluster.sql(f"GRANT SELECT ON {table} TO priv_r3")
            cluster.sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        cluster.sql("ALTER TABLE priv_docs REPLICA IDENTITY FULL")
        cluster.sql("CREATE POLICY tenant3 ON priv_docs FOR SELECT USING (tenant = 3)")
        cluster.sql("CREATE POLICY mine ON priv_docs FOR SELECT USING (owner = current_user)")
        # Default replica identity: deletes carry the key only.
        cluster.sql("CREATE POLICY tenant3 ON priv_keyed USING (tenant = 3)")
        cluster.sql("CREATE POLICY low_ids ON priv_keyed FOR SELECT TO priv_r3 USING (id < 100)")
        _init_as(cluster, "priv_r3", slot)

        async def body(client, marker):
            cluster.exec_txn("INSERT INTO priv_docs VALUES (1, 3, 'x', 'a')",
                             "INSERT INTO priv_docs VALUES (2, 4, 'x', 'b')",
                             "INSERT INTO priv_docs VALUES (3, 4, 'priv_r3', 'c')",
                             "INSERT INTO priv_docs VALUES (4, NULL, NULL, 'd')")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("insert", "priv_docs", {"id": 1, "tenant": 3, "owner": "x", "body": "a"}, None),
                ("insert", "priv_docs", {"id": 3, "tenant": 4, "owner": "priv_r3", "body": "c"}, None)]

            # Visible before and after: an update with the old row.
            cluster.sql("UPDATE priv_docs SET body = 'a2' WHERE id = 1")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("update", "priv_docs", {"id": 1, "tenant": 3, "owner": "x", "body": "a2"},
                 {"id": 1, "tenant": 3, "owner": "x", "body": "a"})]
            # Moving out of view: a delete of the old row.
            cluster.sql("UPDATE priv_docs SET tenant = 5 WHERE id = 1")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("delete", "priv_docs", None, {"id": 1, "tenant": 3, "owner": "x", "body": "a2"})]
            # Moving into view: an insert, nothing of the old row.
            cluster.sql("UPDATE priv_docs SET tenant = 3 WHERE id = 2")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("insert", "priv_docs", {"id": 2, "tenant": 3, "owner": "x", "body": "b"}, None)]
            # Invisible before and after: nothing.
            cluster.sql("UPDATE priv_docs SET body = 'e' WHERE id = 4")
            cluster.sql("DELETE FROM priv_docs WHERE id IN (1, 4)")
            await marker.expect_next(client)
            cluster.sql("DELETE FROM priv_docs WHERE id = 3")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("delete", "priv_docs", None, {"id": 3, "tenant": 4, "owner": "priv_r3", "body": "c"})]

            # Default identity; the policies read a non-key column: the inserts and updates
            # are filtered on the new row, deletes (key only) cannot be judged and are left out.
            cluster.exec_txn("INSERT INTO priv_keyed VALUES (1, 3)", "INSERT INTO priv_keyed VALUES (2, 4)",
                             "INSERT INTO priv_keyed VALUES (200, 4)")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("insert", "priv_keyed", {"id": 1, "tenant": 3}, None),
                ("insert", "priv_keyed", {"id": 2, "tenant": 4}, None)]
            cluster.sql("UPDATE priv_keyed SET tenant = 3 WHERE id = 200")
            txn = await client.recv_txn(20)
            # The key did not change, so the old key (the same as the new one) may be sent.
            assert [_change(c) for c in txn.changes] == [
                ("update", "priv_keyed", {"id": 200, "tenant": 3}, {"id": 200})]
            cluster.sql("DELETE FROM priv_keyed WHERE id = 1")
            await marker.expect_next(client)

        _stream(cluster, slot, body)


def test_restrictive_policies_and_unevaluable_ones(cluster):
    slot = "priv_restrict"
    with _setup(cluster, {"priv_r4": ""},
                {"priv_mixed": "(id int PRIMARY KEY, tenant int, hidden bool)",
                 "priv_sub": "(id int PRIMARY KEY, tenant int)",
                 "priv_udf": "(id int PRIMARY KEY, tenant int)",
                 "priv_none": "(id int PRIMARY KEY)",
                 "priv_div": "(id int PRIMARY KEY, d int)",
                 "priv_toast": "(id int PRIMARY KEY, n int, big text)"}):
        for table in ("priv_mixed", "priv_sub", "priv_udf", "priv_none", "priv_div", "priv_toast"):
            cluster.sql(f"GRANT SELECT ON {table} TO priv_r4")
            cluster.sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY some_tenants ON priv_mixed FOR SELECT USING (tenant IN (1, 2))")
        cluster.sql("CREATE POLICY not_hidden ON priv_mixed AS RESTRICTIVE FOR SELECT USING (hidden IS NOT TRUE)")
        # A sub-query reads another table: not evaluated against the row, table left out.
        cluster.sql("CREATE POLICY sub ON priv_sub USING (tenant IN (SELECT id FROM priv_mixed))")
        # A user-defined function: left out too.
        cluster.sql("CREATE FUNCTION priv_is_three(int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 = 3'")
        cluster.sql("CREATE POLICY udf ON priv_udf USING (priv_is_three(tenant))")
        # RLS enabled, no policy at all: nothing is visible.
        # A policy that fails on some rows (division by zero): those rows are left out.
        cluster.sql("CREATE POLICY div ON priv_div USING (100 / d > 1)")
        # Reads a TOASTed column, which an update that leaves it alone does not log.
        cluster.sql("CREATE POLICY big ON priv_toast USING (length(big) > 1000)")
        _init_as(cluster, "priv_r4", slot)

        async def body(client, marker):
            cluster.exec_txn("INSERT INTO priv_mixed VALUES (1, 1, false)",
                             "INSERT INTO priv_mixed VALUES (2, 2, true)",
                             "INSERT INTO priv_mixed VALUES (3, 3, false)",
                             "INSERT INTO priv_mixed VALUES (4, 2, NULL)",
                             "INSERT INTO priv_sub VALUES (1, 1)", "INSERT INTO priv_udf VALUES (1, 3)",
                             "INSERT INTO priv_none VALUES (1)",
                             "INSERT INTO priv_div VALUES (1, 0)", "INSERT INTO priv_div VALUES (2, 10)")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [
                ("insert", "priv_mixed", {"id": 1, "tenant": 1, "hidden": False}, None),
                ("insert", "priv_mixed", {"id": 4, "tenant": 2, "hidden": None}, None),
                ("insert", "priv_div", {"id": 2, "d": 10}, None)]
            # The stream goes on after the failed evaluation.
            await marker.expect_next(client)

            big = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g"
            cluster.sql(f"INSERT INTO priv_toast VALUES (1, 0, ({big}))")
            txn = await client.recv_txn(20)
            [(kind, table, row, old)] = [_change(c) for c in txn.changes]
            assert (kind, table, row["id"], len(row["big"]), old) == ("insert", "priv_toast", 1, 64000, None)
            # The new row has the TOASTed value unchanged (not logged): it cannot be judged.
            cluster.sql("UPDATE priv_toast SET n = 1 WHERE id = 1")
            await marker.expect_next(client)
            cluster.sql("UPDATE priv_toast SET n = 2, big = 'short' WHERE id = 1")
            cluster.sql("UPDATE priv_toast SET n = 3, big = repeat('x', 2000) WHERE id = 1")
            txn = await client.recv_txn(20)
            [(kind, table, row, old)] = [_change(c) for c in txn.changes]
            # Default identity: the old row cannot be judged; its key is the new row's, so an update.
            assert (kind, table, row, old) == ("update", "priv_toast", {"id": 1, "n": 3, "big": "x" * 2000}, {"id": 1})

        log_offset = cluster.log_size()
        _stream(cluster, slot, body)
        log = cluster.log_since(log_offset)
        assert ('a change of table "priv_div" was left out: its row security policies failed for role '
                'priv_r4: division by zero') in log, log
    cluster.sql("DROP FUNCTION priv_is_three(int)")


def test_policy_changes_apply_to_a_running_stream(cluster):
    slot = "priv_alter"
    with _setup(cluster, {"priv_r5": ""}, {"priv_pol": "(id int PRIMARY KEY, tenant int)"}):
        cluster.sql("GRANT SELECT ON priv_pol TO priv_r5")
        cluster.sql("ALTER TABLE priv_pol ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY p ON priv_pol FOR SELECT USING (tenant = 3)")
        _init_as(cluster, "priv_r5", slot)

        async def body(client, marker):
            def insert_both(base):
                cluster.exec_txn(f"INSERT INTO priv_pol VALUES ({base}, 3)",
                                 f"INSERT INTO priv_pol VALUES ({base + 1}, 4)")

            async def expect_ids(ids):
                txn = await client.recv_txn(20)
                assert [_change(c)[2]["id"] for c in txn.changes] == ids, txn.changes

            insert_both(10)
            await expect_ids([10])
            cluster.sql("ALTER POLICY p ON priv_pol USING (tenant = 4)")
            insert_both(20)
            await expect_ids([21])
            cluster.sql("CREATE POLICY sub ON priv_pol FOR SELECT USING (tenant IN (SELECT 3))")
            insert_both(30)
            await marker.expect_next(client)
            cluster.sql("DROP POLICY sub ON priv_pol")
            cluster.sql("DROP POLICY p ON priv_pol")
            insert_both(40)  # RLS on and no policy: nothing
            await marker.expect_next(client)
            cluster.sql("ALTER TABLE priv_pol DISABLE ROW LEVEL SECURITY")
            insert_both(50)
            await expect_ids([50, 51])

        _stream(cluster, slot, body)


def test_superusers_bypassrls_and_table_owners(cluster):
    with _setup(cluster, {"priv_bypass": "BYPASSRLS", "priv_tabowner": "", "priv_su": "SUPERUSER"},
                {"priv_t": "(id int PRIMARY KEY, tenant int)", "priv_closed": "(id int PRIMARY KEY)"}):
        cluster.sql("ALTER TABLE priv_t OWNER TO priv_tabowner")
        cluster.sql("GRANT SELECT ON priv_t TO priv_bypass")
        cluster.sql("ALTER TABLE priv_t ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY p ON priv_t FOR SELECT USING (tenant = 3)")
        slots = {"priv_s_bypass": "priv_bypass", "priv_s_owner": "priv_tabowner", "priv_s_su": "priv_su"}
        for slot, role in slots.items():
            _init_as(cluster, role, slot)
        try:
            cluster.exec_txn("INSERT INTO priv_t VALUES (1, 3)", "INSERT INTO priv_t VALUES (2, 4)",
                             "INSERT INTO priv_closed VALUES (1)")
            cluster.sql("ALTER TABLE priv_t FORCE ROW LEVEL SECURITY")
            cluster.exec_txn("INSERT INTO priv_t VALUES (3, 3)", "INSERT INTO priv_t VALUES (4, 4)")

            async def main():
                seen = {}
                for slot in slots:
                    client = await StreamClient.open_retry(cluster.ws_port, slot)
                    try:
                        # The owner's first transaction is left out (see below).
                        txns = await client.recv_txns(1 if slot == "priv_s_owner" else 2, 30)
                        seen[slot] = tuple([_change(c)[1:3] for c in txn.changes] for txn in txns)
                    finally:
                        await client.close()
                return seen

            seen = asyncio.run(main())
            every = [("priv_t", {"id": 1, "tenant": 3}), ("priv_t", {"id": 2, "tenant": 4})]
            # Superuser: everything, tables without grants too.
            assert seen["priv_s_su"] == (every + [("priv_closed", {"id": 1})],
                                         [("priv_t", {"id": 3, "tenant": 3}), ("priv_t", {"id": 4, "tenant": 4})])
            # BYPASSRLS: every row of what it may SELECT, FORCE or not.
            assert seen["priv_s_bypass"] == (every, [("priv_t", {"id": 3, "tenant": 3}),
                                                     ("priv_t", {"id": 4, "tenant": 4})])
            # Table owner: not subject to its policies until FORCE ROW LEVEL SECURITY. The
            # stream starts after the FORCE, which the current catalogs show: the transaction
            # written before it (row security for the owner then: none) is left out whole.
            assert seen["priv_s_owner"] == ([("priv_t", {"id": 3, "tenant": 3})],)
        finally:
            for slot in slots:
                cluster.drop_slot_quietly(slot)


def test_revoke_applies_to_changes_written_before_it(cluster):
    """Decoding sees privileges as of each change; a stream that replays older WAL still
    leaves out a table the role may no longer SELECT (checked against the current catalogs
    when the stream starts and every 2 s)."""
    slot = "priv_lag"
    with _setup(cluster, {"priv_r6": ""}, {"priv_old": "(id int PRIMARY KEY)"}):
        cluster.sql("GRANT SELECT ON priv_old TO priv_r6")
        _init_as(cluster, "priv_r6", slot)
        cluster.sql("INSERT INTO priv_old VALUES (1)")
        cluster.sql("INSERT INTO priv_old VALUES (2)")
        cluster.sql("REVOKE SELECT ON priv_old FROM priv_r6")

        async def body(client, marker):
            await marker.expect_next(client)
            cluster.sql("GRANT SELECT ON priv_old TO priv_r6")
            cluster.sql("INSERT INTO priv_old VALUES (3)")
            txn = await client.recv_txn(20)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_old", {"id": 3}, None)]

        _stream(cluster, slot, body)


def test_policies_never_reach_user_code_through_types(cluster):
    """A built-in function reaches user code through its arguments' types (to_json calls a
    user's CAST (... AS json), a comparison the type's operator): a policy in which a value
    has a user-defined type, or that calls the json builder family, leaves the table out and
    runs nothing; built-in functions over built-in types are still evaluated."""
    slot = "priv_types"
    cluster.sql("CREATE SEQUENCE priv_cast_calls")
    cluster.sql("CREATE TYPE priv_mood AS ENUM ('sad', 'happy')")
    cluster.sql("""CREATE FUNCTION priv_mood_json(priv_mood) RETURNS json LANGUAGE plpgsql IMMUTABLE AS $$
                   BEGIN RAISE LOG 'priv cast ran'; PERFORM nextval('priv_cast_calls');
                   RETURN to_json($1::text); END $$""")
    cluster.sql("CREATE CAST (priv_mood AS json) WITH FUNCTION priv_mood_json(priv_mood)")
    try:
        with _setup(cluster, {"priv_r7": ""},
                    {"priv_cast": "(id int PRIMARY KEY, m priv_mood)",
                     "priv_enum_eq": "(id int PRIMARY KEY, m priv_mood)",
                     "priv_jsonb": "(id int PRIMARY KEY)",
                     "priv_builtin": "(id int PRIMARY KEY, name text)"}):
            for table in ("priv_cast", "priv_enum_eq", "priv_jsonb", "priv_builtin"):
                cluster.sql(f"GRANT SELECT ON {table} TO priv_r7")
                cluster.sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            # The reviewer's attack: to_json calls the user's cast, a plpgsql function.
            cluster.sql("CREATE POLICY j ON priv_cast USING (to_json(m)::text <> '')")
            # A built-in operator over a user type: refused too.
            cluster.sql("CREATE POLICY e ON priv_enum_eq USING (m = 'happy')")
            # The json builder family over a built-in type: refused.
            cluster.sql("CREATE POLICY b ON priv_jsonb USING (to_jsonb(id) IS NOT NULL)")
            # Built-in functions over built-in types: evaluated, folded constants included.
            cluster.sql("CREATE POLICY ok ON priv_builtin USING (upper(name) LIKE upper('a') || '%' "
                        "AND length(name) + abs(-1) > 3)")
            _init_as(cluster, "priv_r7", slot)

            async def body(client, marker):
                cluster.exec_txn("INSERT INTO priv_cast VALUES (1, 'happy')",
                                 "INSERT INTO priv_enum_eq VALUES (1, 'happy')",
                                 "INSERT INTO priv_jsonb VALUES (1)",
                                 "INSERT INTO priv_builtin VALUES (1, 'alice')",
                                 "INSERT INTO priv_builtin VALUES (2, 'bob')",
                                 "INSERT INTO priv_builtin VALUES (3, 'al')")
                txn = await client.recv_txn(20)
                assert [_change(c) for c in txn.changes] == [
                    ("insert", "priv_builtin", {"id": 1, "name": "alice"}, None)]
                await marker.expect_next(client)

            log_offset = cluster.log_size()
            _stream(cluster, slot, body)
            log = cluster.log_since(log_offset)
            assert "priv cast ran" not in log, log
            assert "outer snapshot" not in log, log
            assert cluster.sql("SELECT is_called FROM priv_cast_calls") == [(False,)]
    finally:
        cluster.sql("DROP TYPE priv_mood CASCADE")
        cluster.sql("DROP SEQUENCE priv_cast_calls")


def _active_pid(cluster, slot):
    """The pid of the decoder that holds the slot (waits until one does)."""
    def pid():
        rows = cluster.sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active", (slot,))
        return rows[0][0] if rows else None
    return wait_for(pid, 30, what=f"a decoder holding slot {slot}")


def test_policies_run_only_immutable_internal_builtins(cluster):
    """The decoder evaluates a policy only if every function it calls (calls, operators, casts,
    coercions) is compiled into the server, IMMUTABLE and from pg_proc.dat, and it names no
    session-dependent value. A built-in SQL-language function (obj_description: it runs a
    query, which needs an active snapshot the decoder does not have) and a C function that
    reads the active snapshot (pg_current_snapshot) crashed the decoder before; now their
    tables are left out, like STABLE built-ins (now()) and session_user (which would be the
    decoder's bootstrap superuser, not the role). current_user, current_role and user name the
    stream's role, as in psql."""
    slot = "priv_builtins"
    tables = {"priv_objdesc": "(id int PRIMARY KEY)", "priv_cursnap": "(id int PRIMARY KEY)",
              "priv_now": "(id int PRIMARY KEY)", "priv_session": "(id int PRIMARY KEY, who name)",
              "priv_current": "(id int PRIMARY KEY, who name)"}
    with _setup(cluster, {"priv_r9": ""}, tables):
        for table in tables:
            cluster.sql(f"GRANT SELECT ON {table} TO priv_r9")
            cluster.sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY p ON priv_objdesc FOR SELECT USING (obj_description(1259, 'pg_class') IS NULL)")
        cluster.sql("CREATE POLICY p ON priv_cursnap FOR SELECT USING (pg_current_snapshot() IS NOT NULL)")
        cluster.sql("CREATE POLICY p ON priv_now FOR SELECT USING (now() > '2000-01-01')")
        cluster.sql("CREATE POLICY p ON priv_session FOR SELECT USING (who = session_user)")
        cluster.sql("CREATE POLICY p ON priv_current FOR SELECT USING "
                    "(who = current_user AND who = current_role AND who = user)")
        # What psql shows the role: its own rows (session_user is the role there).
        conn = cluster.connect(user="priv_r9")
        try:
            with conn.cursor() as cur:
                cluster.exec_txn("INSERT INTO priv_session VALUES (1, 'postgres'), (2, 'priv_r9')")
                cur.execute("SELECT array_agg(id) FROM priv_session")
                assert cur.fetchone()[0] == [2]
        finally:
            conn.close()
        _init_as(cluster, "priv_r9", slot)

        async def body(client, marker):
            pid = _active_pid(cluster, slot)
            before = cluster.confirmed_lsn(slot)
            cluster.exec_txn("INSERT INTO priv_objdesc VALUES (1)", "INSERT INTO priv_cursnap VALUES (1)",
                             "INSERT INTO priv_now VALUES (1)",
                             "INSERT INTO priv_session VALUES (3, 'postgres'), (4, 'priv_r9')",
                             "INSERT INTO priv_current VALUES (1, 'postgres'), (2, 'priv_r9')")
            txn = await client.recv_txn(30)
            assert [_change(c) for c in txn.changes] == [
                ("insert", "priv_current", {"id": 2, "who": "priv_r9"}, None)]
            # The same decoder goes on: the next transaction is the marker, the slot moves.
            mark = await marker.expect_next(client)
            await client.ack(mark.nextlsn)
            confirmed = await wait_confirmed(cluster, slot, mark.nextlsn, timeout=20)
            assert lsn_int(confirmed) >= lsn_int(mark.nextlsn) > lsn_int(before)
            assert _active_pid(cluster, slot) == pid

        log_offset = cluster.log_size()
        _stream(cluster, slot, body)
        log = cluster.log_since(log_offset)
        assert "terminated by signal" not in log, log


def test_policy_that_fails_to_prepare_leaves_only_its_table_out(cluster):
    """A policy whose constants raise an error when folded (1/0), owned by an unprivileged
    table owner, used to stop the whole stream for good (the ERROR escaped the change
    callback, and every reconnect replayed it). Now its table is left out for the role, with
    a LOG line, and the same decoder goes on with the other tables."""
    slot = "priv_prepare"
    tables = {"priv_bad14": "(id int PRIMARY KEY)", "priv_good14": "(id int PRIMARY KEY)"}
    with _setup(cluster, {"priv_r14": "", "priv_owner14": ""}, tables):
        for table in tables:
            cluster.sql(f"ALTER TABLE {table} OWNER TO priv_owner14")
        owner = cluster.connect(user="priv_owner14")
        owner.autocommit = True
        try:
            with owner.cursor() as cur:
                cur.execute("ALTER TABLE priv_bad14 ENABLE ROW LEVEL SECURITY")
                cur.execute("CREATE POLICY p ON priv_bad14 FOR SELECT USING (id > 1/0)")
                cur.execute("GRANT SELECT ON priv_bad14, priv_good14 TO PUBLIC")
        finally:
            owner.close()
        _init_as(cluster, "priv_r14", slot)

        async def body(client, marker):
            pid = _active_pid(cluster, slot)
            cluster.sql("INSERT INTO priv_bad14 VALUES (1)")
            cluster.sql("INSERT INTO priv_good14 VALUES (2)")
            txn = await client.recv_txn(30)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_good14", {"id": 2}, None)]
            mark = await marker.expect_next(client)
            await client.ack(mark.nextlsn)
            await wait_confirmed(cluster, slot, mark.nextlsn, timeout=20)
            assert _active_pid(cluster, slot) == pid

        log_offset = cluster.log_size()
        _stream(cluster, slot, body)
        log = cluster.log_since(log_offset)
        assert ('every change of table "priv_bad14" was left out: its row security policies failed '
                'for role priv_r14: division by zero') in log, log


def test_policy_changes_apply_to_changes_written_before_them(cluster):
    """A stream that decodes changes written before a policy was tightened (DROP POLICY, a new
    RESTRICTIVE policy, ENABLE and FORCE ROW LEVEL SECURITY) does not send them, as it does not
    for a REVOKE: at its start and every 2 s the decoder compares each table's row security for
    the role with the current catalogs, and leaves out the changes written before that check of
    a table whose row security then differed. A table whose policies did not change is judged as
    before, and later changes by the policies in force."""
    slot = "priv_backlog"
    tables = {"priv_drop": "(id int PRIMARY KEY)", "priv_enable": "(id int PRIMARY KEY)",
              "priv_restr": "(id int PRIMARY KEY)", "priv_force": "(id int PRIMARY KEY)",
              "priv_same": "(id int PRIMARY KEY)"}
    with _setup(cluster, {"priv_r11": ""}, tables):
        for table in tables:
            cluster.sql(f"GRANT SELECT ON {table} TO priv_r11")
        for table in ("priv_drop", "priv_restr", "priv_force", "priv_same"):
            cluster.sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY open ON priv_drop FOR SELECT USING (true)")
        cluster.sql("CREATE POLICY open ON priv_restr FOR SELECT USING (true)")
        cluster.sql("CREATE POLICY low ON priv_force FOR SELECT USING (id < 100)")
        cluster.sql("ALTER TABLE priv_force OWNER TO priv_r11")
        cluster.sql("CREATE POLICY one ON priv_same FOR SELECT USING (id = 1)")
        _init_as(cluster, "priv_r11", slot)
        cluster.exec_txn("INSERT INTO priv_drop VALUES (1)", "INSERT INTO priv_enable VALUES (1)",
                         "INSERT INTO priv_restr VALUES (1)", "INSERT INTO priv_force VALUES (200)",
                         "INSERT INTO priv_same VALUES (1)", "INSERT INTO priv_same VALUES (2)")
        cluster.sql("DROP POLICY open ON priv_drop")
        cluster.sql("ALTER TABLE priv_enable ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY high ON priv_restr AS RESTRICTIVE FOR SELECT USING (id > 100)")
        cluster.sql("ALTER TABLE priv_force FORCE ROW LEVEL SECURITY")
        # Postgres hides those rows from the role now.
        conn = cluster.connect(user="priv_r11")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT (SELECT count(*) FROM priv_drop), (SELECT count(*) FROM priv_enable), "
                            "(SELECT count(*) FROM priv_restr), (SELECT count(*) FROM priv_force), "
                            "(SELECT array_agg(id) FROM priv_same)")
                assert cur.fetchone() == (0, 0, 0, 0, [1])
        finally:
            conn.close()

        async def body(client, marker):
            txn = await client.recv_txn(30)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_same", {"id": 1}, None)]
            await marker.expect_next(client)
            # Written after: judged by the policies in force.
            cluster.exec_txn("INSERT INTO priv_drop VALUES (2)", "INSERT INTO priv_restr VALUES (2)",
                             "INSERT INTO priv_restr VALUES (201)", "INSERT INTO priv_force VALUES (3)",
                             "INSERT INTO priv_same VALUES (3)")
            txn = await client.recv_txn(30)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_restr", {"id": 201}, None),
                                                         ("insert", "priv_force", {"id": 3}, None)]

        _stream(cluster, slot, body)


def test_nobypassrls_applies_to_changes_written_before_it(cluster):
    """ALTER ROLE ... NOBYPASSRLS: the changes written while the role bypassed row security, and
    decoded after, are left out; later ones are filtered by the table's policies."""
    slot = "priv_nobypass"
    with _setup(cluster, {"priv_r12": "BYPASSRLS"}, {"priv_byp": "(id int PRIMARY KEY)"}):
        cluster.sql("GRANT SELECT ON priv_byp TO priv_r12")
        cluster.sql("ALTER TABLE priv_byp ENABLE ROW LEVEL SECURITY")
        cluster.sql("CREATE POLICY low ON priv_byp FOR SELECT USING (id < 10)")
        _init_as(cluster, "priv_r12", slot)
        cluster.sql("INSERT INTO priv_byp VALUES (1), (20)")
        cluster.sql("ALTER ROLE priv_r12 NOBYPASSRLS")

        async def body(client, marker):
            await marker.expect_next(client)
            cluster.sql("INSERT INTO priv_byp VALUES (2), (30)")
            txn = await client.recv_txn(30)
            assert [_change(c) for c in txn.changes] == [("insert", "priv_byp", {"id": 2}, None)]

        _stream(cluster, slot, body)


# ------------------------------------------------------------------ the recheck follows what the stream met
MANY_TABLES = 20000


@pytest.fixture(scope="module")
def big_catalog():
    """A cluster of its own whose database holds 20,000 tables no stream touches. Clients are
    pinged rarely (a test leaves its client unread for seconds) and the stream buffer is small."""
    c = Cluster(extension=True)
    _require_extension(c)
    try:
        c.init()
        with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
            f.write("pgcdcws.ping_interval = 600\npgcdcws.stream_buffer_size = 128\n")
        c.start()
        c.sql("CREATE EXTENSION pgcdcws")
        # Committed in batches: one transaction would need a lock per table.
        c.sql(f"""DO $$ BEGIN FOR i IN 1..{MANY_TABLES} LOOP
                    EXECUTE format('CREATE TABLE many_%s (id int)', i);
                    IF i % 1000 = 0 THEN COMMIT; END IF;
                  END LOOP; END $$""")
        assert c.sql1("SELECT count(*) FROM pg_class WHERE relname LIKE 'many\\_%'") == MANY_TABLES
        # The decoders log how many relations each recheck checked (DEBUG1).
        c.alter_system("log_min_messages", "debug1")
    except BaseException:
        c.destroy()
        raise
    yield c
    c.destroy()


def _rechecked_counts(cluster, slot, log_offset):
    pattern = rf'pgcdcws: slot "{slot}": rechecked the role\'s privileges on (\d+) relations'
    return [int(n) for n in re.findall(pattern, cluster.log_since(log_offset))]


async def _held_up(cluster, client, bulk_table, change, later):
    """Commits `change`, then `later`, while the decoder is held up by a transaction larger
    than every buffer between decoder and client (about 45 MB into `bulk_table`, which the
    client does not read for 3 s; the client must be opened with max_queue=1, or websockets
    reads up to 32 messages of 1000 rows, about 35 MB, ahead on its own): the decoder decodes `change` after rechecking the tables
    it met (every 2 s), which happens after `later` committed. Reads the bulk transaction."""
    rows = 40000
    cluster.sql(f"INSERT INTO {bulk_table} SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, %s) g",
                (rows,))
    cluster.sql(change)
    cluster.sql(later)
    # Not an assertion: the decoder must stay held for longer than the recheck interval (2 s).
    await asyncio.sleep(3)
    bulk = await client.recv_txn(180)
    assert len(bulk.changes) == rows
    assert bulk.changes[-1]["columnvalues"][0] == rows


def test_recheck_covers_the_relations_the_stream_met_not_the_catalog(big_catalog):
    """With 20,000 other tables in the database, a stream's recheck checks the 3 tables it met.
    A table is checked against the current catalogs when the WAL first names it (before its
    first change is sent), and again every 2 s (a stream held up past a REVOKE leaves out the
    changes committed before it)."""
    c = big_catalog
    slot = "priv_scale"
    with _setup(c, {"priv_r8": ""}, {"priv_seen": "(id int PRIMARY KEY)",
                                     "priv_bulk": "(id int PRIMARY KEY, v text)"}):
        c.sql("GRANT SELECT ON priv_seen, priv_bulk TO priv_r8")
        _init_as(c, "priv_r8", slot)
        log_offset = c.log_size()
        # Written while the role could SELECT it, decoded after the REVOKE: left out by the
        # check made when the stream first meets the table (no 2 s tick needed).
        c.sql("INSERT INTO priv_seen VALUES (1)")
        c.sql("REVOKE SELECT ON priv_seen FROM priv_r8")

        async def body(client, marker):
            await marker.expect_next(client)
            c.sql("GRANT SELECT ON priv_seen TO priv_r8")
            c.sql("INSERT INTO priv_seen VALUES (2)")
            txn = await client.recv_txn(30)
            assert [_change(x) for x in txn.changes] == [("insert", "priv_seen", {"id": 2}, None)]

            # Committed before the REVOKE, decoded 2 s after it.
            await _held_up(c, client, "priv_bulk", "INSERT INTO priv_seen VALUES (3)",
                           "REVOKE SELECT ON priv_seen FROM priv_r8")
            await marker.expect_next(client)

            # Rechecks against the current catalogs: only the tables this stream met
            # (priv_mark, priv_seen, priv_bulk), never the 20,000 others.
            wait_for(lambda: _rechecked_counts(c, slot, log_offset)[-1:] == [3], 30,
                     what="a recheck of the 3 tables the stream met")
            counts = _rechecked_counts(c, slot, log_offset)
            assert max(counts) == 3, counts

        _stream(c, slot, body, max_queue=1)


def test_membership_revoke_applies_to_a_held_up_stream(big_catalog):
    """SELECT through a role the stream's role is a member of: revoking the membership leaves
    out the changes committed before it that the stream decodes after the next recheck."""
    c = big_catalog
    slot = "priv_member_lag"
    with _setup(c, {"priv_r10": ""}, {"priv_via": "(id int PRIMARY KEY)",
                                      "priv_bulk3": "(id int PRIMARY KEY, v text)"}):
        c.sql("CREATE ROLE priv_readers10 NOLOGIN")
        try:
            c.sql("GRANT SELECT ON priv_via TO priv_readers10")
            c.sql("GRANT SELECT ON priv_bulk3 TO priv_r10")
            c.sql("GRANT priv_readers10 TO priv_r10")
            _init_as(c, "priv_r10", slot)

            async def body(client, marker):
                c.sql("INSERT INTO priv_via VALUES (1)")
                txn = await client.recv_txn(30)
                assert [_change(x) for x in txn.changes] == [("insert", "priv_via", {"id": 1}, None)]
                await _held_up(c, client, "priv_bulk3", "INSERT INTO priv_via VALUES (2)",
                               "REVOKE priv_readers10 FROM priv_r10")
                await marker.expect_next(client)

            _stream(c, slot, body, max_queue=1)
        finally:
            c.sql("DROP OWNED BY priv_readers10")
            c.sql("DROP ROLE priv_readers10")


def test_policy_change_applies_to_a_held_up_stream(big_catalog):
    """A stream held up behind a large transaction across a DROP POLICY leaves out the changes
    committed before it, both of a table it met before (the 2 s recheck notes the new row
    security) and of a table it first meets after the DROP (the check made when the WAL first
    names the table notes it). Changes committed after a new policy are judged by it."""
    c = big_catalog
    slot = "priv_policy_lag"
    tables = {"priv_pol_met": "(id int PRIMARY KEY)", "priv_pol_new": "(id int PRIMARY KEY)",
              "priv_bulk4": "(id int PRIMARY KEY, v text)"}
    with _setup(c, {"priv_r13": ""}, tables):
        for table in tables:
            c.sql(f"GRANT SELECT ON {table} TO priv_r13")
        for table in ("priv_pol_met", "priv_pol_new"):
            c.sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            c.sql(f"CREATE POLICY open ON {table} FOR SELECT USING (true)")
        _init_as(c, "priv_r13", slot)

        async def body(client, marker):
            c.sql("INSERT INTO priv_pol_met VALUES (1)")
            txn = await client.recv_txn(30)
            assert [_change(x) for x in txn.changes] == [("insert", "priv_pol_met", {"id": 1}, None)]
            # Committed while both policies let every row through, decoded after they were dropped.
            await _held_up(c, client, "priv_bulk4",
                           "INSERT INTO priv_pol_met VALUES (2); INSERT INTO priv_pol_new VALUES (2)",
                           "DROP POLICY open ON priv_pol_met; DROP POLICY open ON priv_pol_new")
            await marker.expect_next(client)
            for table in ("priv_pol_met", "priv_pol_new"):
                c.sql(f"CREATE POLICY low ON {table} FOR SELECT USING (id < 10)")
            c.exec_txn("INSERT INTO priv_pol_met VALUES (3), (30)", "INSERT INTO priv_pol_new VALUES (3), (30)")
            txn = await client.recv_txn(30)
            assert [_change(x) for x in txn.changes] == [("insert", "priv_pol_met", {"id": 3}, None),
                                                         ("insert", "priv_pol_new", {"id": 3}, None)]

        _stream(c, slot, body, max_queue=1)
