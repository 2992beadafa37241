"""Acknowledgements: valid acks move the slot, invalid client messages get an error reply
and never move it (issue item 4)."""

import asyncio
import threading
import time

from cdcws import StreamClient, apoll, lsn_int, lsn_str, wait_confirmed


def _setup(cluster, slot, table):
    cluster.sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    lsn = cluster.sql1("SELECT lsn::text FROM cdc_init(%s)", (slot,))
    return lsn


def test_ack_moves_confirmed_flush_lsn(cluster):
    slot, table = "a_move", "a_move_t"
    lsn0 = _setup(cluster, slot, table)
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                for i in (1, 2, 3):
                    cluster.sql(f"INSERT INTO {table} VALUES (%s)", (i,))
                t1, t2, t3 = await client.recv_txns(3, 10)
                # nothing acknowledged yet
                assert lsn_int(lsn0) <= lsn_int(cluster.confirmed_lsn(slot)) < lsn_int(t1.nextlsn)

                await client.ack(t2.nextlsn)  # batched: t1 and t2 at once
                t0 = time.monotonic()
                await wait_confirmed(cluster, slot, t2.nextlsn, below=t3.nextlsn)
                assert time.monotonic() - t0 <= 1.5
                assert cluster.sql1("SELECT s.confirmed_flush_lsn = r.confirmed_flush_lsn FROM cdc_slots() s "
                                    "JOIN pg_replication_slots r ON r.slot_name = s.slot_name "
                                    "WHERE s.slot_name = %s", (slot,)) is True

                await client.ack(t3.nextlsn)
                c3 = await wait_confirmed(cluster, slot, t3.nextlsn)

                # an ack below the confirmed position changes nothing and is not an error
                await client.ack(t1.nextlsn)
                cluster.sql(f"INSERT INTO {table} VALUES (4)")
                t4 = await client.recv_txn(10)  # fails on an error frame
                assert t4.ids() == [4]
                assert lsn_int(c3) <= lsn_int(cluster.confirmed_lsn(slot)) < lsn_int(t4.nextlsn)
                await client.ack(t4.nextlsn)
                await wait_confirmed(cluster, slot, t4.nextlsn)
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


async def _expect_error_reply(client, timeout=5):
    """The next message must be an error reply; return its text."""
    obj, raw = await client.recv_frame(timeout)
    assert set(obj) == {"error"}, f"expected an error reply, got {raw[:300]}"
    assert isinstance(obj["error"], str) and obj["error"], raw
    return obj["error"]


def test_invalid_client_messages(cluster):
    slot, table = "a_bad", "a_bad_t"
    lsn0 = _setup(cluster, slot, table)
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                cluster.sql(f"INSERT INTO {table} VALUES (1)")
                t1 = await client.recv_txn(10)
                # t1 is sent and not acknowledged: from now on only a valid ack moves the slot
                c0 = cluster.confirmed_lsn(slot)
                assert lsn_int(lsn0) <= lsn_int(c0) < lsn_int(t1.nextlsn)
                beyond = lsn_str(lsn_int(t1.nextlsn) + 1)
                cases = [
                    ("not json at all", "invalid JSON"),
                    ('{"lsn": "0/1"} trailing', "invalid JSON"),
                    ('{"lsn": "0/1"', "invalid JSON"),
                    ("[1, 2]", None),
                    ('"just a string"', None),
                    ("{}", "lsn"),
                    ('{"lsn": 5}', "lsn"),
                    ('{"lsn": null}', "lsn"),
                    ('{"lsn": ["0/1"]}', "lsn"),
                    ('{"lsn": "' + t1.nextlsn + '", "extra": 1}', "extra"),
                    ('{"lsn": "zz"}', "not a valid LSN"),
                    ('{"lsn": "0/"}', "not a valid LSN"),
                    ('{"lsn": "12345"}', "not a valid LSN"),
                    ('{"lsn": "' + beyond + '"}', "beyond the last transaction sent"),
                    ('{"lsn": "FFFFFFFF/FFFFFFFF"}', "beyond the last transaction sent"),
                ]
                for msg, expected in cases:
                    await client.send(msg)
                    err = await _expect_error_reply(client)
                    if expected is not None:
                        assert expected in err, (msg[:80], err)
                    assert cluster.confirmed_lsn(slot) == c0, f"slot moved after {msg[:80]!r}"
                # the beyond-error names both positions
                await client.send('{"lsn": "' + beyond + '"}')
                err = await _expect_error_reply(client)
                assert beyond in err and t1.nextlsn in err, err

                # the connection is still usable: a valid ack works, and changes keep coming
                await client.ack(t1.nextlsn)
                await wait_confirmed(cluster, slot, t1.nextlsn)
                cluster.sql(f"INSERT INTO {table} VALUES (2)")
                t2 = await client.recv_txn(10)
                assert t2.ids() == [2]
                c1 = cluster.confirmed_lsn(slot)
                assert lsn_int(t1.nextlsn) <= lsn_int(c1) < lsn_int(t2.nextlsn)

                # a binary message closes the connection with 1003, without moving the slot
                await client.send(b'{"lsn": "' + t2.nextlsn.encode() + b'"}')
                code, reason, _ = await client.wait_closed_code(10)
                assert code == 1003, (code, reason)
                assert cluster.confirmed_lsn(slot) == c1
                await apoll(lambda: cluster.slot_row(slot)[0] is False, 10, what="slot released after 1003")
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_garbage_on_one_slot_does_not_disturb_others(cluster):
    cluster.sql("CREATE TABLE a_iso_t (id int PRIMARY KEY)")
    slots = ["a_iso_bad", "a_iso_good1", "a_iso_good2"]
    for s in slots:
        cluster.sql("SELECT * FROM cdc_init(%s)", (s,))
    n = 40
    try:
        async def main():
            bad, good1, good2 = [await StreamClient.open(cluster.ws_port, s) for s in slots]

            def writer():
                conn = cluster.connect()
                try:
                    with conn.cursor() as cur:
                        for i in range(1, n + 1):
                            cur.execute("INSERT INTO a_iso_t VALUES (%s)", (i,))
                            time.sleep(0.01)
                finally:
                    conn.close()

            wt = threading.Thread(target=writer)
            wt.start()

            async def spam():
                errors = 0
                for i in range(30):
                    await bad.send(["{oops", '{"lsn": 1}', '{"lsn": "nope"}'][i % 3])
                    # read until the error reply (transactions are interleaved with it)
                    while True:
                        obj, raw = await bad.recv_frame(10)
                        if "error" in obj:
                            assert "xid" not in obj
                            errors += 1
                            break
                    await asyncio.sleep(0.005)
                await bad.send(b"\x00\x01binary")
                code, _, _ = await bad.wait_closed_code(10)
                return errors, code

            async def consume(client):
                ids = []
                while len(ids) < n:
                    txn = await client.recv_txn(20)
                    ids += txn.ids()
                    await client.ack(txn.nextlsn)
                return ids, txn.nextlsn

            try:
                (errors, code), (ids1, last1), (ids2, last2) = await asyncio.gather(
                    spam(), consume(good1), consume(good2))
            finally:
                await asyncio.get_running_loop().run_in_executor(None, wt.join)
            assert errors == 30 and code == 1003
            assert ids1 == list(range(1, n + 1))
            assert ids2 == list(range(1, n + 1))
            await wait_confirmed(cluster, "a_iso_good1", last1)
            await wait_confirmed(cluster, "a_iso_good2", last2)
            # the good clients keep streaming after the bad one was closed
            cluster.sql("INSERT INTO a_iso_t VALUES (1000)")
            assert (await good1.recv_txn(10)).ids() == [1000]
            assert (await good2.recv_txn(10)).ids() == [1000]
            for c in (good1, good2):
                await c.close()

        asyncio.run(main())
    finally:
        for s in slots:
            cluster.drop_slot_quietly(s)
