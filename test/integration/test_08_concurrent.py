"""Many slots streaming at once, each to its own client (issue item 6)."""

import asyncio
import threading
import time

from cdcws import StreamClient, apoll, wait_confirmed

NSLOTS = 10


def test_ten_slots_stream_concurrently(cluster):
    cluster.sql("CREATE TABLE c_multi_a (id int PRIMARY KEY)")
    cluster.sql("CREATE TABLE c_multi_b (id int PRIMARY KEY, v text)")
    slots = [f"c_multi_{i}" for i in range(NSLOTS)]
    for s in slots:
        cluster.sql("SELECT * FROM cdc_init(%s)", (s,))

    # the expected transactions: 60 single-row ones, plus one with 300 rows over two tables
    n_single = 60
    try:
        async def main():
            clients = [await StreamClient.open(cluster.ws_port, s) for s in slots]
            try:
                decoders = await apoll(
                    lambda: len(cluster.pids_by_backend_type("pgcdcws decoder")) == NSLOTS, 10,
                    what=f"{NSLOTS} decoders")
                assert decoders
                active = cluster.sql("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name "
                                     "LIKE 'c\\_multi\\_%%'")
                assert active == [(NSLOTS,)]

                xids = []

                def writer():
                    conn = cluster.connect()
                    try:
                        with conn.cursor() as cur:
                            for i in range(1, n_single + 1):
                                if i == 30:
                                    cur.execute("BEGIN")
                                    cur.execute("INSERT INTO c_multi_b SELECT g, 'v' || g "
                                                "FROM generate_series(1, 300) g")
                                    cur.execute("INSERT INTO c_multi_a VALUES (1000)")
                                    cur.execute("SELECT pg_current_xact_id()::text::bigint")
                                    xids.append(cur.fetchone()[0])
                                    cur.execute("COMMIT")
                                cur.execute("BEGIN")
                                cur.execute("INSERT INTO c_multi_a VALUES (%s)", (i,))
                                cur.execute("SELECT pg_current_xact_id()::text::bigint")
                                xids.append(cur.fetchone()[0])
                                cur.execute("COMMIT")
                                time.sleep(0.005)
                    finally:
                        conn.close()

                wt = threading.Thread(target=writer)
                wt.start()

                async def consume(client):
                    txns = []
                    while len(txns) < n_single + 1:
                        txn = await client.recv_txn(30)
                        txns.append(txn)
                        await client.ack(txn.nextlsn)
                    return txns

                results = await asyncio.gather(*(consume(c) for c in clients))
                await asyncio.get_running_loop().run_in_executor(None, wt.join)

                expected_a = list(range(1, 30)) + [1000] + list(range(30, n_single + 1))
                for slot, txns in zip(slots, results):
                    assert [t.xid for t in txns] == xids, slot
                    got_a = [c["columnvalues"][0] for t in txns for c in t.changes if c["table"] == "c_multi_a"]
                    got_b = [c["columnvalues"] for t in txns for c in t.changes if c["table"] == "c_multi_b"]
                    assert got_a == expected_a, slot
                    assert got_b == [[g, f"v{g}"] for g in range(1, 301)], slot
                    assert all(c["kind"] == "insert" for t in txns for c in t.changes)
                # every client saw the same transactions at the same positions
                assert len({tuple(t.nextlsn for t in txns) for txns in results}) == 1
                last = results[0][-1].nextlsn
                for s in slots:
                    await wait_confirmed(cluster, s, last)
            finally:
                for c in clients:
                    await c.close()
            await apoll(lambda: cluster.pids_by_backend_type("pgcdcws decoder") == [], 15,
                        what="all decoders to exit")

        asyncio.run(main())
    finally:
        for s in slots:
            cluster.drop_slot_quietly(s)
