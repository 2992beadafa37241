"""Resume after reconnect: the stream continues right after the last acknowledged
transaction, unacknowledged ones are delivered again (issue item 5)."""

import asyncio

from cdcws import StreamClient, apoll, lsn_int, wait_confirmed


def test_resume_after_reconnect(cluster):
    slot, table = "r_resume", "r_resume_t"
    cluster.sql(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        xids = [cluster.exec_txn((f"INSERT INTO {table} VALUES (%s, %s)", (i, f"v{i}"))) for i in range(1, 6)]

        async def main():
            c1 = await StreamClient.open(cluster.ws_port, slot)
            try:
                first = await c1.recv_txns(5, 10)
                assert [t.xid for t in first] == xids
                assert [t.ids() for t in first] == [[1], [2], [3], [4], [5]]
                await c1.ack(first[1].nextlsn)
                await wait_confirmed(cluster, slot, first[1].nextlsn, below=first[2].nextlsn)
            finally:
                await c1.close()
            await apoll(lambda: cluster.slot_row(slot)[0] is False, 10, what="slot released")

            # second connection: transactions 3..5 again, identical
            c2 = await StreamClient.open_retry(cluster.ws_port, slot, timeout=10)
            try:
                again = await c2.recv_txns(3, 10)
                assert [t.xid for t in again] == xids[2:]
                assert [t.nextlsn for t in again] == [t.nextlsn for t in first[2:]]
                assert [t.changes for t in again] == [t.changes for t in first[2:]]
                assert [t.changes[0]["columnvalues"] for t in again] == [[3, "v3"], [4, "v4"], [5, "v5"]]
                # new transactions follow
                x6 = cluster.exec_txn(f"INSERT INTO {table} VALUES (6, 'v6')")
                t6 = await c2.recv_txn(10)
                assert (t6.xid, t6.ids()) == (x6, [6])
                await c2.ack(t6.nextlsn)
                await wait_confirmed(cluster, slot, t6.nextlsn)
            finally:
                await c2.close()
            await apoll(lambda: cluster.slot_row(slot)[0] is False, 10, what="slot released")

            # third connection: everything was acknowledged, the next message is a new transaction
            c3 = await StreamClient.open_retry(cluster.ws_port, slot, timeout=10)
            try:
                x7 = cluster.exec_txn(f"INSERT INTO {table} VALUES (7, 'v7')")
                t7 = await c3.recv_txn(10)
                assert (t7.xid, t7.ids()) == (x7, [7])
                assert lsn_int(t7.nextlsn) > lsn_int(t6.nextlsn)
            finally:
                await c3.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_unacked_split_transaction_is_redelivered_whole(cluster):
    slot, table = "r_split", "r_split_t"
    cluster.sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        x1 = cluster.exec_txn(f"INSERT INTO {table} VALUES (0)")
        x2 = cluster.exec_txn(f"INSERT INTO {table} SELECT generate_series(1, 2500)")

        async def main():
            c1 = await StreamClient.open(cluster.ws_port, slot)
            try:
                t1, t2 = await c1.recv_txns(2, 20)
                assert (t1.xid, t2.xid) == (x1, x2)
                assert [len(f["change"]) for f in t2.frames] == [1000, 1000, 500]
                await c1.ack(t1.nextlsn)
                await wait_confirmed(cluster, slot, t1.nextlsn, below=t2.nextlsn)
            finally:
                await c1.close()
            c2 = await StreamClient.open_retry(cluster.ws_port, slot, timeout=10)
            try:
                again = await c2.recv_txn(20)
                assert again.xid == x2
                assert [len(f["change"]) for f in again.frames] == [1000, 1000, 500]
                assert again.ids() == list(range(1, 2501))
                assert again.nextlsn == t2.nextlsn
            finally:
                await c2.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)
