"""SQL API: cdc_init, cdc_ack, cdc_slots, cdc_drop (issue item 2)."""

import asyncio
import decimal
import re
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

from cdcws import StreamClient, apoll, lsn_int
from conftest import wait_for


def _error(cluster, query, params=None, conn=None):
    """Run a query that must fail; return the error message (primary + detail + hint)."""
    if conn is None:
        with pytest.raises(psycopg2.Error) as ei:
            cluster.sql(query, params)
    else:
        with pytest.raises(psycopg2.Error) as ei, conn.cursor() as cur:
            cur.execute(query, params)
    e = ei.value
    diag = e.diag
    return " | ".join(x for x in (diag.message_primary, diag.message_detail, diag.message_hint) if x)


def test_cdc_init_generated_name(cluster):
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM cdc_init()")
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
    finally:
        conn.close()
    assert names == ["slot_name", "lsn", "snapshot_name"]
    assert len(rows) == 1
    slot, lsn, snap = rows[0]
    try:
        assert re.fullmatch(r"cdc_[a-z]+[0-9]+", slot), slot
        assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", lsn), lsn
        assert isinstance(snap, str) and re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", snap), snap
        row = cluster.sql("SELECT plugin, slot_type, database, temporary, confirmed_flush_lsn::text "
                          "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert row == [("pgcdcws", "logical", "postgres", False, lsn)]
    finally:
        cluster.drop_slot_quietly(slot)
    assert not cluster.slot_exists(slot)


def test_cdc_init_two_generated_names_differ(cluster):
    a = cluster.sql1("SELECT slot_name FROM cdc_init()")
    try:
        b = cluster.sql1("SELECT slot_name FROM cdc_init()")
        try:
            assert a != b
            assert re.fullmatch(r"cdc_[a-z]+[0-9]+", b)
        finally:
            cluster.drop_slot_quietly(b)
    finally:
        cluster.drop_slot_quietly(a)


def test_cdc_init_snapshot_is_importable_and_consistent(cluster):
    slot = "s_snap"
    cluster.sql("CREATE TABLE s_snap_t (id int PRIMARY KEY)")
    cluster.sql("INSERT INTO s_snap_t SELECT generate_series(1, 3)")
    name, lsn, snap = cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))[0]
    try:
        assert name == slot
        cluster.sql("INSERT INTO s_snap_t VALUES (4)")
        cluster.sql("INSERT INTO s_snap_t VALUES (5)")

        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snap,))
                cur.execute("SELECT id FROM s_snap_t ORDER BY id")
                assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
                cur.execute("COMMIT")
        finally:
            conn.close()
        assert [r[0] for r in cluster.sql("SELECT id FROM s_snap_t ORDER BY id")] == [1, 2, 3, 4, 5]

        # the stream delivers exactly what the snapshot does not see
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                t1 = await client.recv_txn(10)
                t2 = await client.recv_txn(10)
                assert (t1.ids(), t2.ids()) == ([4], [5])
                assert lsn_int(t1.nextlsn) > lsn_int(lsn)
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_cdc_init_errors(cluster):
    # invalid names
    msg = _error(cluster, "SELECT * FROM cdc_init('Bad-Name!')")
    assert "invalid" in msg.lower(), msg
    msg = _error(cluster, "SELECT * FROM cdc_init(%s)", ("a" * 64,))
    assert msg, msg
    assert cluster.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('Bad-Name!', %s)",
                       ("a" * 64,)) == [(0,)]

    # existing slot
    slot = "s_dup"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        msg = _error(cluster, "SELECT * FROM cdc_init(%s)", (slot,))
        assert "already exists" in msg, msg
        assert cluster.sql1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == 1
    finally:
        cluster.drop_slot_quietly(slot)


def test_cdc_init_requires_replication_privilege(cluster):
    cluster.sql("CREATE ROLE cdc_noprivs LOGIN")
    cluster.sql("CREATE ROLE cdc_repl LOGIN REPLICATION")
    try:
        conn = cluster.connect(user="cdc_noprivs")
        try:
            msg = _error(cluster, "SELECT * FROM cdc_init('s_noprivs')", conn=conn)
        finally:
            conn.close()
        assert ("permission denied" in msg or "must be superuser or replication role" in msg), msg
        assert not cluster.slot_exists("s_noprivs")

        # SET ROLE inside a superuser session is refused as well
        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET ROLE cdc_noprivs")
            msg = _error(cluster, "SELECT * FROM cdc_init('s_noprivs2')", conn=conn)
        finally:
            conn.close()
        assert ("permission denied" in msg or "must be superuser or replication role" in msg), msg
        assert not cluster.slot_exists("s_noprivs2")

        # a REPLICATION role (not superuser) may create one
        conn = cluster.connect(user="cdc_repl")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT slot_name FROM cdc_init('s_repl')")
                assert cur.fetchone()[0] == "s_repl"
        finally:
            conn.close()
        assert cluster.slot_row("s_repl")[3] == "pgcdcws"
    finally:
        cluster.drop_slot_quietly("s_repl")
        cluster.sql("DROP ROLE cdc_noprivs")
        cluster.sql("DROP ROLE cdc_repl")


def test_cdc_init_waits_for_open_transaction_and_is_cancellable(cluster):
    slot = "s_blocked"
    blocker = cluster.connect()
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            blocker_pid = cur.fetchone()[0]
            cur.execute("BEGIN")
            cur.execute("SELECT pg_current_xact_id()")  # now it holds an xid

        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '2s'")
                t0 = time.monotonic()
                with pytest.raises(psycopg2.errors.QueryCanceled) as ei:
                    cur.execute("SELECT * FROM cdc_init(%s)", (slot,))
                elapsed = time.monotonic() - t0
            notices = list(conn.notices)
        finally:
            conn.close()
        assert "statement timeout" in str(ei.value), str(ei.value)
        assert 1.5 <= elapsed < 15, elapsed
        assert any(re.search(rf"\b{blocker_pid}\b", n) for n in notices), \
            f"no NOTICE naming the blocking pid {blocker_pid}: {notices}"
        assert all(n.startswith("NOTICE") for n in notices if str(blocker_pid) in n), notices
        wait_for(lambda: not cluster.slot_exists(slot), 5,
                 what=f"no slot {slot} after the cancelled cdc_init")
        assert cluster.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == [(0,)]

        with blocker.cursor() as cur:
            cur.execute("ROLLBACK")
    finally:
        blocker.close()

    # the name is free again and cdc_init works without the blocker
    t0 = time.monotonic()
    assert cluster.sql1("SELECT slot_name FROM cdc_init(%s)", (slot,)) == slot
    assert time.monotonic() - t0 < 10
    cluster.drop_slot_quietly(slot)


def test_cdc_init_cancel_with_pg_cancel_backend(cluster):
    slot = "s_blocked2"
    blocker = cluster.connect()
    conn = cluster.connect()
    try:
        with blocker.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT pg_current_xact_id()")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            result = {}

            def run():
                try:
                    with conn.cursor() as c2:
                        c2.execute("SELECT * FROM cdc_init(%s)", (slot,))
                except psycopg2.Error as e:
                    result["error"] = e

            th = threading.Thread(target=run)
            th.start()
            wait_for(lambda: cluster.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                                         "AND query LIKE '%%cdc_init%%'", (pid,)), 5,
                     what="cdc_init to be running")
            assert cluster.sql1("SELECT pg_cancel_backend(%s)", (pid,)) is True
            th.join(10)
            assert not th.is_alive()
        assert isinstance(result.get("error"), psycopg2.errors.QueryCanceled), result
        wait_for(lambda: not cluster.slot_exists(slot), 5, what=f"no slot {slot} after cancel")
    finally:
        conn.close()
        blocker.close()
        cluster.drop_slot_quietly(slot)


def test_temporary_slot_dropped_when_client_disconnects(cluster):
    slot = "s_temp"
    cluster.sql("CREATE TABLE s_temp_t (id int PRIMARY KEY)")
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM cdc_init(%s, true)", (slot,))
            assert cur.fetchone()[0] == slot
    finally:
        conn.close()
    try:
        # survives the end of the creating session
        assert cluster.slot_exists(slot)
        assert cluster.sql("SELECT temporary FROM cdc_slots() WHERE slot_name = %s", (slot,)) == [(True,)]
        assert cluster.slot_row(slot)[3] == "pgcdcws"

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                cluster.sql("INSERT INTO s_temp_t VALUES (1)")
                txn = await client.recv_txn(10)
                assert txn.ids() == [1]
            finally:
                await client.close()
            await apoll(lambda: not cluster.slot_exists(slot), 10,
                        what="the temporary slot to be dropped after its client left")

        asyncio.run(main())
        assert cluster.sql("SELECT count(*) FROM cdc_slots() WHERE slot_name = %s", (slot,)) == [(0,)]
    finally:
        cluster.drop_slot_quietly(slot)


def test_cdc_ack_without_client(cluster):
    slot = "s_ack"
    cluster.sql("CREATE TABLE s_ack_t (id int PRIMARY KEY)")
    _, lsn0, _ = cluster.sql("SELECT slot_name, lsn::text, snapshot_name FROM cdc_init(%s)", (slot,))[0]
    try:
        assert cluster.confirmed_lsn(slot) == lsn0
        for i in range(1, 6):
            cluster.sql("INSERT INTO s_ack_t VALUES (%s)", (i,))
        target = cluster.sql1("SELECT pg_current_wal_lsn()::text")
        r = cluster.sql1("SELECT cdc_ack(%s, %s)::text", (slot, target))
        assert lsn_int(r) >= lsn_int(target), (r, target)
        assert cluster.confirmed_lsn(slot) == r
        assert lsn_int(r) > lsn_int(lsn0)

        # beyond the end of WAL: error, nothing moves
        msg = _error(cluster, "SELECT cdc_ack(%s, 'FFFFFFFF/0')", (slot,))
        assert msg
        assert cluster.confirmed_lsn(slot) == r

        # below the confirmed position: unchanged, returns the confirmed position
        assert cluster.sql1("SELECT cdc_ack(%s, %s)::text", (slot, lsn0)) == r
        assert cluster.confirmed_lsn(slot) == r

        # a client now starts after the acknowledged position
        cluster.sql("INSERT INTO s_ack_t VALUES (100)")

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                txn = await client.recv_txn(10)
                assert txn.ids() == [100]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_cdc_slots(cluster):
    slot = "s_slots"
    cluster.sql("CREATE TABLE s_slots_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    cluster.sql("SELECT pg_create_logical_replication_slot('s_slots_td', 'test_decoding')")
    q = ("SELECT slot_name, temporary, active, host(client_addr), confirmed_flush_lsn::text, "
         "restart_lsn::text, retained_wal_bytes FROM cdc_slots() WHERE slot_name = %s")
    try:
        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM cdc_slots()")
                names = [d.name for d in cur.description]
        finally:
            conn.close()
        assert names == ["slot_name", "temporary", "active", "client_addr", "confirmed_flush_lsn",
                         "restart_lsn", "retained_wal_bytes", "snapshot_name", "snapshot_held_since",
                         "publication"]
        # slots of other plugins are not listed
        assert cluster.sql("SELECT count(*) FROM cdc_slots() WHERE slot_name = 's_slots_td'") == [(0,)]

        before = lsn_int(cluster.sql1("SELECT pg_current_wal_lsn()::text"))
        rows = cluster.sql(q, (slot,))
        after = lsn_int(cluster.sql1("SELECT pg_current_wal_lsn()::text"))
        assert len(rows) == 1
        name, temp, active, addr, confirmed, restart, retained = rows[0]
        pg = cluster.slot_row(slot)
        assert (name, temp, active, addr) == (slot, False, False, None)
        assert (confirmed, restart) == (pg[1], pg[2])
        assert isinstance(retained, decimal.Decimal)
        assert before - lsn_int(restart) <= retained <= after - lsn_int(restart)
        assert retained >= 0

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                row = await apoll(lambda: [r for r in cluster.sql(q, (slot,)) if r[2]], 5,
                                  what="cdc_slots().active while a client is connected")
                assert row[0][3] in ("127.0.0.1", "::1"), row
                assert row[0][1] is False
                cluster.sql("INSERT INTO s_slots_t VALUES (1)")
                txn = await client.recv_txn(10)
                await client.ack(txn.nextlsn)
                await apoll(lambda: lsn_int(cluster.sql(q, (slot,))[0][4]) >= lsn_int(txn.nextlsn), 2,
                            what="cdc_slots().confirmed_flush_lsn to reach the ack")
            finally:
                await client.close()
            await apoll(lambda: cluster.sql(q, (slot,))[0][2] is False, 10,
                        what="cdc_slots().active = false after the client left")
            assert cluster.sql(q, (slot,))[0][3] is None

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)
        cluster.sql("SELECT pg_drop_replication_slot('s_slots_td')")


def test_cdc_drop_disconnects_client(cluster):
    slot = "s_drop"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            await apoll(lambda: cluster.slot_row(slot)[0] is True, 5, what="slot active")
            cluster.sql("SELECT cdc_drop(%s)", (slot,))
            assert not cluster.slot_exists(slot)
            code, reason, _ = await client.wait_closed_code(10)
            assert code == 1001, (code, reason)
            assert "dropped" in reason, reason

        asyncio.run(main())
        assert not cluster.slot_exists(slot)
        assert cluster.sql("SELECT count(*) FROM cdc_slots() WHERE slot_name = %s", (slot,)) == [(0,)]
    finally:
        cluster.drop_slot_quietly(slot)

    msg = _error(cluster, "SELECT cdc_drop('s_no_such_slot')")
    assert "s_no_such_slot" in msg, msg


def test_cdc_drop_releases_snapshot_capacity_at_once(cluster):
    """After cdc_drop() returns, the slot's snapshot no longer counts as held: as many new
    slots as pgcdcws.max_streams allows can be created right away."""
    n = int(cluster.sql1("SHOW pgcdcws.max_streams"))
    names = [f"s_cap_{i}" for i in range(n)]
    try:
        for name in names:
            cluster.sql("SELECT * FROM cdc_init(%s)", (name,))
        for name in names:
            cluster.sql("SELECT cdc_drop(%s)", (name,))
        assert cluster.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 's\\_cap\\_%%'") == [(0,)]
        for name in names:
            assert cluster.sql1("SELECT slot_name FROM cdc_init(%s)", (name,)) == name
    finally:
        for name in names:
            cluster.drop_slot_quietly(name)


def test_cdc_ack_with_client_connected(cluster):
    """With a stream open, the decoder holds the slot: cdc_ack hands the position to it and
    returns once the slot is confirmed; a reconnecting client starts after it."""
    slot = "s_ack_live"
    cluster.sql("CREATE TABLE s_ack_live_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                cluster.sql("INSERT INTO s_ack_live_t VALUES (1)")
                cluster.sql("INSERT INTO s_ack_live_t VALUES (2)")
                t1 = await client.recv_txn(10)
                t2 = await client.recv_txn(10)
                assert (t1.ids(), t2.ids()) == ([1], [2])
                row = cluster.sql("SELECT active, client_addr::text FROM cdc_slots() WHERE slot_name = %s",
                                  (slot,))
                assert row[0][0] is True and row[0][1] in ("127.0.0.1/32", "::1/128")

                r = cluster.sql1("SELECT cdc_ack(%s, %s)::text", (slot, t1.nextlsn))
                assert lsn_int(r) >= lsn_int(t1.nextlsn)
                assert lsn_int(cluster.confirmed_lsn(slot)) >= lsn_int(t1.nextlsn)
                # Only the first transaction is confirmed: the second was sent, not acked.
                assert lsn_int(cluster.confirmed_lsn(slot)) < lsn_int(t2.nextlsn)
            finally:
                await client.close()

            client = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                again = await client.recv_txn(10)
                assert again.ids() == [2]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_cdc_drop_in_the_middle_of_a_big_transaction(cluster):
    """The decoder may stop halfway through a fragmented message; the client still gets its
    close (1001) instead of waiting forever for the message's end."""
    slot = "s_drop_big"
    cluster.sql("CREATE TABLE s_drop_big_t (id int PRIMARY KEY, pad text)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        cluster.sql("INSERT INTO s_drop_big_t SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g")

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            first = await client.recv_raw(20)
            assert '"xid"' in first
            # The client stops reading: the ring fills and the decoder waits inside the transaction.
            cluster.sql("SELECT cdc_drop(%s)", (slot,))
            code, reason, _ = await client.wait_closed_code(60)
            assert (code, reason) == (1001, "replication slot dropped")

        asyncio.run(main())
        assert not cluster.slot_exists(slot)
    finally:
        cluster.drop_slot_quietly(slot)
