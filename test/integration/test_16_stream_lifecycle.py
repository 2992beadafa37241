"""Stream and decoder lifecycle: one client's churn does not starve other slots, an ack
that reached the server survives the client dropping its connection, a decoder that never
starts closes its client with 1011, a temporary slot goes with a decoder that fails or is
terminated, and decoding keeps going while CREATE INDEX CONCURRENTLY runs."""

import asyncio
import collections
import os
import resource
import signal
import threading
import time

import psycopg2
import websockets
import websockets.exceptions

from cdcws import StreamClient, apoll, lsn_int, stream_uri
from conftest import wait_for

DECODERS = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcdcws decoder'"


def _decoder_of(cluster, slot):
    """PID of the process holding `slot` (its decoder once it streams), or None."""
    rows = cluster.sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active",
                       (slot,))
    return rows[0][0] if rows else None


class DecoderCounter(threading.Thread):
    """Samples the number of live decoders on its own connection until stopped."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.samples = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = self.cluster.connect()
            try:
                with conn.cursor() as cur:
                    while not self.stop.is_set():
                        cur.execute(DECODERS)
                        self.samples.append(cur.fetchone()[0])
                        time.sleep(0.01)
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_churn_on_one_slot_does_not_starve_other_slots(cluster):
    """300+ rapid connect/disconnect cycles on slot A: streams on slot B opened during and
    right after the churn are accepted and get their change, and the number of decoders
    stays bounded (one per slot at a time)."""
    slot_a, slot_b = "l_churn_a", "l_churn_b"
    cluster.sql("DROP TABLE IF EXISTS l_churn_t")
    cluster.sql("CREATE TABLE l_churn_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot_a,))
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot_b,))
    counter = DecoderCounter(cluster)
    counter.start()
    try:
        async def main():
            churn_statuses = collections.Counter()
            b_checks = {"during": 0, "after": 0}
            next_id = [0]

            async def stream_b_once():
                # No retry: B must be accepted at once, whatever A's client does.
                client = await StreamClient.open(cluster.ws_port, slot_b)
                try:
                    next_id[0] += 1
                    cluster.sql("INSERT INTO l_churn_t VALUES (%s)", (next_id[0],))
                    txn = await client.recv_txn(30)
                    assert txn.ids() == [next_id[0]]
                    await client.ack(txn.nextlsn)
                finally:
                    await client.close()

            async def churn():
                cycle = 0
                # At least 300 cycles, and long enough for B to be opened several times.
                while cycle < 300 or (b_checks["during"] < 3 and cycle < 3000):
                    cycle += 1
                    try:
                        ws = await websockets.connect(stream_uri(cluster.ws_port, slot_a), max_size=None,
                                                      ping_interval=None, open_timeout=10, close_timeout=1)
                    except websockets.exceptions.InvalidStatusCode as e:
                        churn_statuses[e.status_code] += 1
                        continue
                    churn_statuses[101] += 1
                    if cycle % 2:
                        StreamClient(ws, slot_a).abort()  # RST
                    else:
                        ws.transport.close()  # FIN, no close handshake
                return cycle

            churn_task = asyncio.create_task(churn())
            while not churn_task.done():
                await stream_b_once()
                if not churn_task.done():
                    b_checks["during"] += 1
                await asyncio.sleep(0.05)
            cycles = await churn_task
            for _ in range(3):
                await stream_b_once()
                b_checks["after"] += 1
            return cycles, churn_statuses, b_checks

        cycles, statuses, b_checks = asyncio.run(main())
    finally:
        counter.stop.set()
        counter.join(10)
        cluster.drop_slot_quietly(slot_a)
        cluster.drop_slot_quietly(slot_b)
    assert counter.error is None, counter.error
    assert cycles >= 300
    assert b_checks["during"] >= 3 and b_checks["after"] == 3, b_checks
    # The churner itself is served too: accepted, or 409 while its previous connection's
    # close is still on its way; never 503 (that would mean streams ran out).
    assert set(statuses) <= {101, 409}, statuses
    assert statuses[101] >= cycles // 10, statuses
    # One decoder per slot at a time: A's and B's (a sample may catch one more between a
    # decoder's exit and the postmaster's report of it).
    assert counter.samples and max(counter.samples) <= 3, max(counter.samples)


def test_ack_then_drop_is_confirmed(cluster):
    """A client acknowledges a transaction and drops its TCP connection at once (no close
    handshake): the ack is confirmed anyway, 10 times out of 10."""
    slot = "l_ackdrop"
    cluster.sql("DROP TABLE IF EXISTS l_ackdrop_t")
    cluster.sql("CREATE TABLE l_ackdrop_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        for i in range(1, 11):
            async def once():
                # The previous try's decoder may still be stopping: the stream is accepted
                # and starts when it has gone.
                client = await StreamClient.open(cluster.ws_port, slot)
                cluster.sql("INSERT INTO l_ackdrop_t VALUES (%s)", (i,))
                txn = await client.recv_txn(30)
                assert txn.ids() == [i], f"try {i}: got {txn.ids()} (an earlier ack was lost)"
                await client.ack(txn.nextlsn)
                if i % 2:
                    client.abort()  # RST right after the ack
                else:
                    client.ws.transport.close()  # FIN right after the ack
                return txn.nextlsn

            lsn = asyncio.run(once())
            wait_for(lambda: lsn_int(cluster.confirmed_lsn(slot)) >= lsn_int(lsn), 15,
                     what=f"try {i}: confirmed_flush_lsn of {slot} to reach the acked {lsn}")
    finally:
        cluster.drop_slot_quietly(slot)


def test_decoder_that_cannot_start_closes_1011(cluster):
    """The postmaster cannot fork the decoder (the process limit is reached): the accepted
    client is closed with 1011 and a reason instead of waiting for a decoder that never
    comes, and the slot streams again once processes can be started."""
    slot = "l_nofork"
    cluster.sql("CREATE TABLE l_nofork_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    with open(os.path.join(cluster.datadir, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    soft, hard = resource.prlimit(postmaster, resource.RLIMIT_NPROC)
    offset = cluster.log_size()
    try:
        async def main():
            # Every fork of the postmaster fails while its process limit is 1.
            resource.prlimit(postmaster, resource.RLIMIT_NPROC, (1, hard))
            try:
                client = await StreamClient.open(cluster.ws_port, slot)
                code, reason, got = await client.wait_closed_code(30)
            finally:
                resource.prlimit(postmaster, resource.RLIMIT_NPROC, (soft, hard))
            assert (code, reason) == (1011, "decoder stopped before it started streaming (see the server log)"), \
                (code, reason, got)
            assert got == []
            assert "could not fork worker process" in cluster.log_since(offset)

            client = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                cluster.sql("INSERT INTO l_nofork_t VALUES (1)")
                txn = await client.recv_txn(30)
                assert txn.ids() == [1]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        resource.prlimit(postmaster, resource.RLIMIT_NPROC, (soft, hard))
        cluster.drop_slot_quietly(slot)


async def _streaming(cluster, slot, table, value):
    """Open a stream of `slot` and wait until it delivers a change (its decoder runs)."""
    client = await StreamClient.open(cluster.ws_port, slot)
    cluster.sql(f"INSERT INTO {table} VALUES (%s)", (value,))
    txn = await client.recv_txn(30)
    assert txn.ids() == [value]
    pid = _decoder_of(cluster, slot)
    assert pid is not None
    return client, pid


def test_temporary_slot_dropped_when_decoder_terminated(cluster):
    slot = "l_tmp_term"
    cluster.sql("CREATE TABLE l_tmp_term_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s, temporary => true)", (slot,))
    offset = cluster.log_size()
    try:
        async def main():
            client, pid = await _streaming(cluster, slot, "l_tmp_term_t", 1)
            assert cluster.sql1("SELECT pg_terminate_backend(%s)", (pid,)) is True
            code, reason, _ = await client.wait_closed_code(30)
            assert (code, reason) == (1001, "decoder terminated by an administrator")
            await apoll(lambda: not cluster.slot_exists(slot), 15, what=f"{slot} dropped")

        asyncio.run(main())
        assert f'dropped replication slot "{slot}" after its decoder stopped' in cluster.log_since(offset)
    finally:
        cluster.drop_slot_quietly(slot)


def test_temporary_slot_dropped_when_decoder_fails(cluster):
    """pg_cancel_backend on a decoder makes it fail with an ERROR: its client gets 1011 with
    the reason; a temporary slot is dropped then, a persistent one is kept (and released)."""
    cluster.sql("CREATE TABLE l_tmp_fail_t (id int PRIMARY KEY)")
    temporary, persistent = "l_tmp_fail", "l_keep_fail"
    try:
        async def main():
            for slot, value in ((temporary, 1), (persistent, 2)):
                cluster.sql("SELECT * FROM cdc_init(%s, temporary => %s)", (slot, slot == temporary))
                client, pid = await _streaming(cluster, slot, "l_tmp_fail_t", value)
                assert cluster.sql1("SELECT pg_cancel_backend(%s)", (pid,)) is True
                code, reason, _ = await client.wait_closed_code(30)
                assert (code, reason) == (1011, "decoder failed: canceling statement due to user request")
            await apoll(lambda: not cluster.slot_exists(temporary), 15, what=f"{temporary} dropped")
            await apoll(lambda: cluster.slot_row(persistent)[0] is False, 15, what=f"{persistent} released")

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(temporary)
        cluster.drop_slot_quietly(persistent)


def test_decoding_during_create_index_concurrently(cluster):
    """A table with several indexes is decoded while CREATE INDEX CONCURRENTLY builds one
    more: the index build finishes (within its statement_timeout) and every change arrives."""
    slot = "l_cic"
    cluster.sql("CREATE TABLE l_cic_t (id int PRIMARY KEY, a int, b text, c int)")
    cluster.sql("CREATE INDEX l_cic_a ON l_cic_t (a)")
    cluster.sql("CREATE UNIQUE INDEX l_cic_b ON l_cic_t (b)")
    cluster.sql("INSERT INTO l_cic_t SELECT g, g, 'b' || g, g FROM generate_series(1, 20000) g")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    # A held snapshot would block the index build's last phase by itself.
    cluster.sql("SELECT cdc_snapshot_release(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                # A writer whose transaction stays open makes the index build wait in its
                # first phase, while other transactions on the table are decoded.
                blocker = cluster.connect(autocommit=False)
                with blocker.cursor() as cur:
                    cur.execute("INSERT INTO l_cic_t VALUES (100001, 1, 'blocker', 1)")
                cic = {"error": None, "done": False}

                def build():
                    try:
                        conn = cluster.connect()
                        try:
                            with conn.cursor() as cur:
                                cur.execute("SET statement_timeout = '90s'")
                                cur.execute("CREATE INDEX CONCURRENTLY l_cic_c ON l_cic_t (c)")
                        finally:
                            conn.close()
                    except psycopg2.Error as e:
                        cic["error"] = e
                    cic["done"] = True

                builder = threading.Thread(target=build)
                builder.start()
                await apoll(lambda: cluster.sql1("SELECT count(*) FROM pg_stat_progress_create_index "
                                                 "WHERE relid = 'l_cic_t'::regclass") == 1,
                            30, what="CREATE INDEX CONCURRENTLY to start")
                expected = []
                for i in range(1, 6):
                    cluster.sql("INSERT INTO l_cic_t VALUES (%s, %s, %s, %s)", (200000 + i, i, f"x{i}", i))
                    expected.append(200000 + i)
                got = []
                for _ in expected:
                    txn = await client.recv_txn(30)
                    got += txn.ids()
                    await client.ack(txn.nextlsn)
                assert got == expected
                blocker.commit()
                blocker.close()
                txn = await client.recv_txn(30)
                assert txn.ids() == [100001]
                # The build goes on while changes keep being decoded.
                i = 10
                while not cic["done"]:
                    i += 1
                    cluster.sql("INSERT INTO l_cic_t VALUES (%s, %s, %s, %s)", (200000 + i, i, f"x{i}", i))
                    txn = await client.recv_txn(30)
                    assert txn.ids() == [200000 + i]
                    await client.ack(txn.nextlsn)
                    await asyncio.sleep(0.05)
                    if i > 3000:
                        break
                builder.join(120)
                assert cic["done"] and cic["error"] is None, cic
                assert cluster.sql1("SELECT indisvalid FROM pg_index WHERE indexrelid = 'l_cic_c'::regclass") is True
                cluster.sql("UPDATE l_cic_t SET c = -1 WHERE id = 1")
                txn = await client.recv_txn(30)
                assert [c["kind"] for c in txn.changes] == ["update"]
                assert txn.changes[0]["oldkeys"]["keynames"] == ["id"]
                assert txn.changes[0]["oldkeys"]["keyvalues"] == [1]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_server_restart_keeps_old_decoders_off_new_streams(cluster):
    """The pgcdcws server restarts (pg_terminate_backend) with a stream open: its client gets
    1001, the old decoder releases the slot, and streams opened by the new server (the same
    slot, which waits for the old decoder, and another slot) run undisturbed afterwards."""
    slot_x, slot_y = "l_gen_x", "l_gen_y"
    cluster.sql("CREATE TABLE l_gen_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot_x,))
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot_y,))
    try:
        async def main():
            x, old_decoder = await _streaming(cluster, slot_x, "l_gen_t", 1)
            await x.ack(x.last_nextlsn)
            await apoll(lambda: lsn_int(cluster.confirmed_lsn(slot_x)) >= lsn_int(x.last_nextlsn), 15,
                        what="ack of 1 confirmed")
            old_servers = cluster.pids_by_backend_type("pgcdcws server", fresh=True)
            assert cluster.sql1("SELECT pg_terminate_backend(%s)", (old_servers[0],)) is True
            code, reason, _ = await x.wait_closed_code(30)
            assert (code, reason) == (1001, "server shutting down")
            cluster.wait_ready(old_server_pids=old_servers, timeout=60)

            x = await StreamClient.open_retry(cluster.ws_port, slot_x)
            y = await StreamClient.open_retry(cluster.ws_port, slot_y)
            try:
                await apoll(lambda: old_decoder not in cluster.pids_by_backend_type("pgcdcws decoder", fresh=True),
                            30, what="the old decoder to exit")
                for value in (2, 3):
                    cluster.sql("INSERT INTO l_gen_t VALUES (%s)", (value,))
                    tx = await x.recv_txn(30)
                    assert tx.ids() == [value]
                # Nothing acknowledged on Y: it gets 1, 2 and 3.
                ty = await y.recv_txns(3, 30)
                assert [t.ids() for t in ty] == [[1], [2], [3]]
                assert _decoder_of(cluster, slot_x) not in (None, old_decoder)
            finally:
                await x.close()
                await y.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot_x)
        cluster.drop_slot_quietly(slot_y)


def test_reconnect_waits_for_previous_decoder_at_most_10s(cluster):
    """A client reconnects while the previous decoder of its slot cannot stop (it is
    SIGSTOPped): the new connection is accepted, then closed with 1011 and a reason after
    10 s; once the old decoder has gone, the slot streams again."""
    slot = "l_stuck"
    cluster.sql("CREATE TABLE l_stuck_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    old = None
    try:
        async def main():
            nonlocal old
            client, old = await _streaming(cluster, slot, "l_stuck_t", 1)
            os.kill(old, signal.SIGSTOP)
            try:
                await client.close()
                started = time.monotonic()
                waiting = await StreamClient.open(cluster.ws_port, slot)  # accepted, parked
                code, reason, got = await waiting.wait_closed_code(60)
                waited = time.monotonic() - started
            finally:
                os.kill(old, signal.SIGCONT)
            assert (code, reason) == (1011, "decoder failed: the previous decoder of this slot did not stop "
                                            "within 10 s; try again"), (code, reason)
            assert got == [] and 9 <= waited <= 40, (got, waited)
            await apoll(lambda: old not in cluster.pids_by_backend_type("pgcdcws decoder", fresh=True), 30,
                        what="the old decoder to exit after SIGCONT")
            again = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                cluster.sql("INSERT INTO l_stuck_t VALUES (2)")
                txn = await again.recv_txn(30)
                assert txn.ids() in ([1], [2])  # 1 was never acknowledged
            finally:
                await again.close()

        asyncio.run(main())
    finally:
        if old is not None:
            try:
                os.kill(old, signal.SIGCONT)
            except ProcessLookupError:
                pass
        cluster.drop_slot_quietly(slot)
