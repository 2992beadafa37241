"""Crash safety (issue item 7): a writer inserts sequential ids, one per transaction, while a
client streams and acknowledges; then something fails and a new client resumes.

Checked in every case:
  * nothing is lost: every id in the table was received (row by row);
  * the only duplicates are transactions that were sent but not acknowledged before the
    failure (acks are confirmed in pg_replication_slots before the failure is injected);
  * the new stream starts with the first unacknowledged transaction, and every
    unacknowledged transaction is delivered again, identical (xid, nextlsn, rows).
"""

import asyncio
import collections
import time

import pytest
import websockets.exceptions

from cdcws import StreamClient, Writer, lsn_int, wait_confirmed

N_ROWS = 400
ACKED_TXNS = 80      # received and acknowledged before the failure
UNACKED_TXNS = 10    # received, not acknowledged, before the failure


async def _drain(client, sink, timeout=90):
    """Receive transactions until the connection ends; return the close code."""
    try:
        while True:
            sink.append(await client.recv_txn(timeout))
    except websockets.exceptions.ConnectionClosed as e:
        return e.code


async def _fail_kill9(cluster, client, sink, backend_type):
    pids = cluster.pids_by_backend_type(backend_type)
    assert len(pids) == 1, f"{backend_type}: {pids}"
    loop = asyncio.get_running_loop()
    kill = loop.run_in_executor(None, cluster.kill9, pids[0])
    code = await _drain(client, sink)
    await kill
    return code


async def _fail_restart(cluster, client, sink):
    loop = asyncio.get_running_loop()
    restart = loop.run_in_executor(None, cluster.restart, "fast")
    code = await _drain(client, sink)
    await restart
    return code


async def _fail_client_abort(cluster, client, sink):
    client.abort()
    return None


def _ids(txn):
    return txn.ids()


@pytest.mark.parametrize("failure", ["kill9_decoder", "kill9_server", "restart_fast", "client_abort"])
def test_no_loss_across_failure(cluster, failure):
    table, slot = f"k_{failure}_t", f"k_{failure}"
    cluster.sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    writer = Writer(cluster, table, N_ROWS, pace=0.01)
    try:
        async def main():
            first, second = [], []
            client = await StreamClient.open(cluster.ws_port, slot)
            writer.start()
            # phase 1: receive and acknowledge as we go
            while len(first) < ACKED_TXNS:
                txn = await client.recv_txn(30)
                first.append(txn)
                await client.ack(txn.nextlsn)
            last_ack = first[-1].nextlsn
            await wait_confirmed(cluster, slot, last_ack)
            # phase 2: keep receiving, stop acknowledging
            while len(first) < ACKED_TXNS + UNACKED_TXNS:
                first.append(await client.recv_txn(30))
            assert writer.is_alive(), "the writer finished before the failure; make it slower"
            # Unacknowledged transactions were sent, so the slot cannot move any more.  (It may
            # stand a little beyond last_ack: the server passes empty transactions, such as an
            # autoanalyze's catalog updates, by itself while everything sent is acknowledged.)
            confirmed = cluster.confirmed_lsn(slot)
            assert lsn_int(last_ack) <= lsn_int(confirmed) < lsn_int(first[ACKED_TXNS].nextlsn)

            # the failure, while the writer is still writing
            if failure == "kill9_decoder":
                code = await _fail_kill9(cluster, client, first, "pgcdcws decoder")
            elif failure == "kill9_server":
                code = await _fail_kill9(cluster, client, first, "pgcdcws server")
            elif failure == "restart_fast":
                code = await _fail_restart(cluster, client, first)
            else:
                code = await _fail_client_abort(cluster, client, first)

            # the acknowledged position survived
            assert cluster.confirmed_lsn(slot) == confirmed

            # a new client resumes
            client2 = await StreamClient.open_retry(cluster.ws_port, slot, timeout=60)
            try:
                expected = None
                seen = set(i for t in first for i in _ids(t))
                deadline = time.monotonic() + 120
                while True:
                    if expected is None and not writer.is_alive():
                        writer.join()
                        expected = set(r[0] for r in cluster.sql(f"SELECT id FROM {table}"))
                    if expected is not None and expected <= seen:
                        break
                    assert time.monotonic() < deadline, \
                        f"resumed stream incomplete: missing {sorted((expected or set()) - seen)[:20]}"
                    try:
                        txn = await client2.recv_txn(1)
                    except asyncio.TimeoutError:
                        continue
                    second.append(txn)
                    seen.update(_ids(txn))
                    await client2.ack(txn.nextlsn)
                await wait_confirmed(cluster, slot, second[-1].nextlsn, timeout=2)
            finally:
                await client2.close()
            return first, second, last_ack, expected, code

        first, second, last_ack, expected, close_code = asyncio.run(main())
    finally:
        writer.stop()
        writer.join(30)
        cluster.drop_slot_quietly(slot)

    assert writer.error is None, f"writer failed: {writer.error!r}"
    assert expected == set(range(1, N_ROWS + 1)), sorted(set(range(1, N_ROWS + 1)) - expected)[:20]

    # nothing lost, row by row
    received = collections.Counter(i for t in first + second for i in _ids(t))
    missing = [i for i in range(1, N_ROWS + 1) if received[i] == 0]
    assert missing == [], f"ids never received: {missing[:50]}"
    assert set(received) == expected, f"unexpected ids: {sorted(set(received) - expected)[:20]}"

    # one id per transaction; which transaction carried each id first
    for t in first + second:
        assert len(_ids(t)) == 1, t
    acked = {t.nextlsn for t in first if lsn_int(t.nextlsn) <= lsn_int(last_ack)}
    assert len(acked) == ACKED_TXNS
    first_by_id = {_ids(t)[0]: t for t in first}

    # only unacknowledged transactions came twice, and at most twice
    dups = sorted(i for i, n in received.items() if n > 1)
    assert all(received[i] == 2 for i in dups), {i: received[i] for i in dups if received[i] > 2}
    for i in dups:
        t = first_by_id[i]
        assert t.nextlsn not in acked and lsn_int(t.nextlsn) > lsn_int(last_ack), \
            f"id {i} (xid {t.xid}, nextlsn {t.nextlsn}) was acknowledged before the failure but came again"
    for t in second:
        assert lsn_int(t.nextlsn) > lsn_int(last_ack), f"acknowledged transaction {t} delivered again"

    # the resumed stream starts right after the last acknowledged transaction, and every
    # transaction that was sent but not acknowledged is delivered again, identical
    unacked = [t for t in first if lsn_int(t.nextlsn) > lsn_int(last_ack)]
    assert len(unacked) >= UNACKED_TXNS
    assert [(t.xid, t.nextlsn, t.changes) for t in second[:len(unacked)]] == \
        [(t.xid, t.nextlsn, t.changes) for t in unacked]
    assert dups == sorted(_ids(t)[0] for t in unacked)

    if failure == "restart_fast":
        # a clean shutdown says goodbye: close 1001 ("server shutting down")
        assert close_code == 1001, f"close code on pg_ctl restart -m fast: {close_code}"
