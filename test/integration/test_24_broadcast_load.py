"""Filtered broadcast under load (issue 8, "Tests"): 200 clients each receiving all 500 changes
of one statement; a stalled client while 200,000 changes flow (the healthy client gets all of
them, the stalled one is closed with 1013, the pgcdcws processes stay under a fixed memory
ceiling). In a cluster of this module's own:

- pgcdcws.client_queue_size = 256kB, so that a stalled client overflows its queue early;
- pgcdcws.broadcast_replay_size = 16MB, so that the decoder's memory has a known bound well
  below what flows through it (about 95 MB of frames);
- pgcdcws.ping_interval = 60: the stalled client answers no ping; the test is about its send
  queue, not about the ping timeout;
- no per-role connection cap (every trust-mode /ws counts for the bootstrap superuser).
"""

import asyncio
import re
import threading
import time

import pytest

from cdcws import (LSN_PATTERN, BroadcastClient, RssSampler, apoll, StalledWsClient, lsn_int, open_subscribed, row_of,
                   ws_target)
from conftest import logs_reported, started_cluster

QUEUE_BYTES = 256 * 1024

LOAD_CONF = [
    "pgcdcws.ping_interval = 60",
    "pgcdcws.max_connections = 1000",
    "pgcdcws.max_connections_per_role = 0",
    "pgcdcws.client_queue_size = '256kB'",
    "pgcdcws.broadcast_replay_size = '16MB'",
]


@pytest.fixture(scope="module")
def lc():
    c = started_cluster(LOAD_CONF)
    try:
        with logs_reported(c):
            yield c
    finally:
        c.destroy()


def run(coro):
    return asyncio.run(coro)


def broadcast_stats(c):
    """(change frames handed to /ws clients' send queues, clients closed with 1013) so far
    (cdc_server_stats(), docs/PROTOCOL.md)."""
    return c.sql("SELECT broadcast_messages_delivered, broadcast_slow_clients_closed FROM cdc_server_stats()")[0]


# ------------------------------------------------------------------ 200 clients
CLIENTS = 200
FAN_ROWS = 500


def test_200_clients_each_receive_all_500_changes_of_one_statement(lc):
    """Every client gets the 500 changes of one INSERT, in order, each as its own frame with
    the statement's xid and commit LSN; the bytes of change j are the same for every client
    (one frame, shared)."""
    lc.sql("CREATE TABLE b_fan (id int PRIMARY KEY, label text)")

    async def main():
        opening = asyncio.Semaphore(20)

        async def one():
            async with opening:
                return await open_subscribed(lc.ws_port, "insert:public.b_fan", timeout=180)

        opened = await asyncio.gather(*(one() for _ in range(CLIENTS)), return_exceptions=True)
        clients = [c for c in opened if isinstance(c, BroadcastClient)]
        try:
            failed = [c for c in opened if not isinstance(c, BroadcastClient)]
            assert not failed, f"{len(failed)} of {CLIENTS} clients could not subscribe: {failed[:3]!r}"
            before = broadcast_stats(lc)
            xid = await asyncio.get_running_loop().run_in_executor(None, lambda: lc.exec_txn(
                f"INSERT INTO b_fan SELECT g, 'row ' || g FROM generate_series(1, {FAN_ROWS}) g"))
            changes = await asyncio.gather(*(c.changes(FAN_ROWS, timeout=300) for c in clients))
            after = broadcast_stats(lc)
            assert (after[0] - before[0], after[1] - before[1]) == (CLIENTS * FAN_ROWS, 0), (before, after)
            return xid, [c.frames[0] for c in clients], changes, [c.raws[1:] for c in clients]
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    xid, subscribed, changes, raws = run(main())
    assert len(changes) == CLIENTS
    lsn = changes[0][0]["lsn"]
    for sub, frames in zip(subscribed, changes):
        assert [row_of(f) for f in frames] == [{"id": i, "label": f"row {i}"} for i in range(1, FAN_ROWS + 1)]
        assert {(f["kind"], f["table"], f["xid"], f["lsn"]) for f in frames} == {("insert", "b_fan", xid, lsn)}
        assert all(f["subscriptions"] == ["query"] for f in frames)
        assert lsn_int(sub["lsn"]) < lsn_int(lsn), (sub, lsn)
    for j in range(FAN_ROWS):
        assert len({r[j] for r in raws}) == 1, f"change {j + 1} differs between clients"


# ------------------------------------------------------------- stalled client
TXNS = 2000
PER_TXN = 100
TOTAL = TXNS * PER_TXN  # 200,000 changes
PAD = 300               # bytes of text per row: a frame is about 470 bytes, ~95 MB in all
AHEAD = 1               # transactions the producer may commit beyond what the healthy client read

# Memory ceilings (RssAnon), from what each process must hold, not from a run:
# - the server holds at most client_queue_size of frames per client (2 clients: 0.5 MB), the
#   frame being written, lws and libuv buffers, its subscription table: a few MB over its
#   start. Holding the stalled client's backlog instead would be ~90 MB (all frames it did not
#   read, ~95 MB, less the ~4-8 MB the kernel buffers). Growth ceiling 32 MB, peak 128 MB.
# - the broadcast decoder holds its replay window (16 MB of frames, twice that with per-entry
#   overhead and the column values kept beside the bodies), one 100-row transaction in the
#   reorder buffer (~50 kB), catalog caches and a backend's base (~20-30 MB): ~70 MB. An
#   unbounded window would hold the whole flow (~95 MB of bodies, more with values). Peak
#   ceiling 160 MB.
SERVER_GROWTH_LIMIT_KB = 32 * 1024
SERVER_PEAK_LIMIT_KB = 128 * 1024
DECODER_PEAK_LIMIT_KB = 160 * 1024


class PacedProducer(threading.Thread):
    """Commits TXNS transactions of PER_TXN rows (ids in order), each only once the healthy
    client has read every transaction but the last AHEAD: the healthy reader is a Python
    process that must not fall client_queue_size behind (its queue would overflow too), so
    the flow is paced by what it reads, never by the stalled client."""

    def __init__(self, cluster, progress):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.progress = progress
        self.xids = []
        self.error = None
        self.halt = threading.Event()

    def run(self):
        try:
            conn = self.cluster.connect()
            try:
                with conn.cursor() as cur:
                    for k in range(TXNS):
                        need = (k - AHEAD) * PER_TXN
                        deadline = time.monotonic() + 120
                        while self.progress["received"] < need:
                            if self.halt.is_set():
                                return
                            if time.monotonic() > deadline:
                                raise AssertionError(f"the healthy client read {self.progress['received']} "
                                                     f"changes, none for 120 s; waiting for {need}")
                            time.sleep(0.001)
                        cur.execute("WITH ins AS (INSERT INTO b_flood SELECT g, repeat('x', %s) "
                                    "FROM generate_series(%s, %s) g RETURNING 1) "
                                    "SELECT pg_current_xact_id()::text::bigint, count(*) FROM ins",
                                    (PAD, k * PER_TXN + 1, (k + 1) * PER_TXN))
                        xid, n = cur.fetchone()
                        assert n == PER_TXN
                        self.xids.append(xid)
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_stalled_client_is_closed_1013_while_a_healthy_one_gets_all_200k(lc):
    """The stalled client is a raw socket (StalledWsClient: handshake by hand, SO_RCVBUF 8 kB,
    reads nothing after its subscribed frame). Once the healthy client has read more than the
    stalled one can possibly hold (the server's socket send buffer, at most tcp_wmem's maximum,
    its own receive buffer, its queue, a 1 MB margin for lws' partial write and the kernel's
    accounting), the stalled one has overflowed, about a second earlier (well within the 10 s
    before the server drops its TCP connection): it then reads everything it was sent, which
    must be a prefix of the changes followed by a close frame 1013 whose reason names an LSN up
    to which it has every change (so that since= catches up without loss), and the TCP
    connection must end."""
    lc.sql("CREATE TABLE b_flood (id int PRIMARY KEY, pad text)")
    log_start = lc.log_size()
    # the most a socket's send buffer grows to by itself (the server sets no SO_SNDBUF)
    tcp_wmem_max = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    progress = {"received": 0}
    producer = PacedProducer(lc, progress)
    sampler = RssSampler(lc, interval=0.1)
    out = {"drain_started": None}

    async def main():
        healthy = await open_subscribed(lc.ws_port, "insert:public.b_flood")
        healthy.keep = False
        stalled = StalledWsClient(lc.ws_port, ws_target("insert:public.b_flood"), rcvbuf=8192)
        out["stalled"] = stalled
        try:
            stalled.read_until_subscribed()
            capacity = tcp_wmem_max + 2 * stalled.rcvbuf + QUEUE_BYTES + (1 << 20)
            out["capacity"] = capacity
            await asyncio.get_running_loop().run_in_executor(None, sampler.prime)
            kinds = set(sampler.types.values())
            assert {"pgcdcws server", "pgcdcws broadcast"} <= kinds, kinds
            out["stats_before"] = broadcast_stats(lc)
            sampler.start()
            producer.start()
            txn_lsns, txn_xids = [], []
            received_bytes = 0
            deadline = time.monotonic() + 900
            for i in range(1, TOTAL + 1):
                left = deadline - time.monotonic()
                assert left > 0 and producer.error is None, \
                    f"healthy client: {i - 1} of {TOTAL} changes; producer: {producer.error!r}"
                try:
                    f = await healthy.recv(timeout=min(left, 120))
                except asyncio.TimeoutError:
                    raise AssertionError(f"healthy client: nothing for 120 s after {i - 1} of {TOTAL} changes; "
                                         f"producer: {producer.error!r}") from None
                assert f["type"] == "change" and f["kind"] == "insert", f
                values = f["columnvalues"]
                assert values[0] == i and len(values[1]) == PAD, (i, f)
                k = (i - 1) // PER_TXN
                if k == len(txn_lsns):
                    txn_lsns.append(f["lsn"])
                    txn_xids.append(f["xid"])
                assert (f["lsn"], f["xid"]) == (txn_lsns[k], txn_xids[k]), (i, f)
                progress["received"] = i
                received_bytes += len(healthy.last_raw)
                if out["drain_started"] is None and received_bytes > capacity:
                    out["drain_started"] = time.monotonic()
                    stalled.start_drain(timeout=120)
            out["txn_lsns"], out["txn_xids"] = txn_lsns, txn_xids
            out["received_bytes"] = received_bytes
        finally:
            producer.halt.set()
            await healthy.close()
        if out["drain_started"] is not None:
            await asyncio.get_running_loop().run_in_executor(None, stalled.join_drain)

    try:
        run(main())
    finally:
        producer.halt.set()
        producer.join(60)
        sampler.stop()
        if "stalled" in out:
            out["stalled"].close()

    assert producer.error is None, repr(producer.error)
    txn_lsns, txn_xids = out["txn_lsns"], out["txn_xids"]
    # the healthy client: every change, in commit order (checked while reading), every
    # transaction's lsn above the previous one, the producer's xids
    assert txn_xids == producer.xids
    assert all(lsn_int(a) < lsn_int(b) for a, b in zip(txn_lsns, txn_lsns[1:]))

    # the stalled client: a prefix of the changes, then a close frame 1013, then the TCP end
    stalled = out["stalled"]
    assert out["drain_started"] is not None, f"only {out['received_bytes']} bytes flowed, < {out['capacity']}"
    texts = stalled.texts()
    assert texts[0]["type"] == "subscribed"
    got = [t["columnvalues"][0] for t in texts[1:]]
    closing = stalled.close_frame()
    assert closing is not None, (f"the stalled client was never closed: it read {len(got)} of {TOTAL} changes "
                                 f"(eof={stalled.eof})")
    code, reason = closing
    print(f"stalled client: {len(got)} changes ({sum(len(p) for op, p in stalled.frames if op == 1)} bytes) "
          f"then close {code} {reason!r}; estimated capacity {out['capacity']} bytes")
    assert code == 1013, closing
    assert [op for op, _ in stalled.frames][-1] == 8, "frames after the close frame"
    assert stalled.buf == b"", f"{len(stalled.buf)} bytes of an incomplete frame before the TCP end"
    assert all(t["type"] == "change" for t in texts[1:]), [t for t in texts[1:] if t["type"] != "change"][:3]
    assert got == list(range(1, len(got) + 1)), f"not a prefix: {got[:5]}...{got[-5:]}"
    assert 0 < len(got) < TOTAL
    assert stalled.eof in (True, "reset"), "the server did not end the stalled client's TCP connection"
    assert stalled.eof_at - out["drain_started"] < 30, "TCP connection ended more than 30 s after reading resumed"
    sent_bytes = sum(len(p) for op, p in stalled.frames if op == 1)
    assert sent_bytes <= out["capacity"], (sent_bytes, out["capacity"])
    # "The reason names the last LSN delivered; reconnect with since to catch up": every
    # change at or below that LSN was received (no transaction cut in two below it), and it is
    # the last transaction received whole
    m = re.search(LSN_PATTERN, reason)
    assert m, f"close reason names no LSN: {reason!r}"
    named = lsn_int(m.group(0))
    whole = len(got) // PER_TXN  # transactions received whole
    assert whole >= 1, len(got)
    if len(got) % PER_TXN:
        cut = txn_lsns[whole]
        assert named < lsn_int(cut), (
            f"reason {reason!r} names {m.group(0)}, at or beyond transaction {cut} of which the client has only "
            f"{len(got) % PER_TXN} of {PER_TXN} changes: since= that LSN would skip the rest")
    if len(got) % PER_TXN:
        assert named == lsn_int(txn_lsns[whole - 1]), (reason, txn_lsns[whole - 1])
    else:
        # cut at a transaction's end: the server may not know yet that it ended (its next frame
        # never came), and name the one before (one transaction comes again: safe)
        assert named in [lsn_int(x) for x in txn_lsns[max(0, whole - 2):whole]], (reason, txn_lsns[whole - 2:whole])

    # counted: one slow client; every change handed to the healthy client's queue, and to the
    # stalled one's until it overflowed
    before, after = out["stats_before"], broadcast_stats(lc)
    assert after[1] - before[1] == 1, (before, after)
    # and logged, once
    logged = [line for line in lc.log_since(log_start).splitlines() if "1013" in line]
    assert len(logged) == 1, logged
    assert TOTAL + len(got) <= after[0] - before[0] < 2 * TOTAL, (before, after, len(got))

    # memory
    assert sampler.error is None, repr(sampler.error)
    assert sampler.samples > 10
    report = {f"{sampler.types[p]} {p}": f"{sampler.first[p] // 1024} MB -> {sampler.peak[p] // 1024} MB"
              for p in sampler.peak}
    print(f"RssAnon of pgcdcws processes (first -> peak): {report}")
    for pid, peak in sampler.peak.items():
        kind = sampler.types[pid]
        if kind == "pgcdcws server":
            assert peak - sampler.first[pid] < SERVER_GROWTH_LIMIT_KB, report
            assert peak < SERVER_PEAK_LIMIT_KB, report
        elif kind == "pgcdcws broadcast":
            assert peak < DECODER_PEAK_LIMIT_KB, report


# --------------------------------------------------------------- close codes
def test_engine_failure_closes_1011_and_since_then_reports_the_gap(lc):
    """The broadcast decoder is terminated: every subscriber is closed with 1011 and a reason.
    What committed while no engine ran was never decoded, so a reconnect with since gets
    subscribed, then gap (since, oldest > since), then live changes. A server shutdown closes
    with 1001."""
    lc.sql("CREATE TABLE b_fail (id int PRIMARY KEY)")

    async def main():
        c = await open_subscribed(lc.ws_port, "insert:public.b_fail")
        try:
            lc.sql("INSERT INTO b_fail VALUES (1)")
            since = (await c.change())["lsn"]
            pids = lc.pids_by_backend_type("pgcdcws broadcast")
            assert len(pids) == 1, pids
            assert lc.sql1("SELECT pg_terminate_backend(%s)", (pids[0],)) is True
            failed = await c.closed(timeout=60)
        finally:
            await c.close()
        lc.sql("INSERT INTO b_fail VALUES (2)")
        c2 = await BroadcastClient.open(lc.ws_port, query="insert:public.b_fail", since=since)
        try:
            await c2.subscribed()
            gap = await c2.expect("gap", id="query")
            lc.sql("INSERT INTO b_fail VALUES (3)")
            live = await c2.change()
            restart = asyncio.get_running_loop().run_in_executor(None, lambda: lc.restart("fast"))
            shutdown = await c2.closed(timeout=120)
            await restart
        finally:
            await c2.close()
        return since, failed, gap, live, shutdown

    since, (code, reason, frames), gap, live, (code2, reason2, frames2) = run(main())
    assert code == 1011 and reason, (code, reason)
    assert frames == [], frames
    assert lsn_int(gap["since"]) == lsn_int(since) and lsn_int(gap["oldest"]) > lsn_int(since), gap
    assert row_of(live) == {"id": 3}, live
    assert code2 == 1001 and frames2 == [], (code2, reason2, frames2)


# ------------------------------------------------------------------ the engine
def engine_slots(c):
    """(slot_name, temporary, confirmed_flush_lsn) of the pgcdcws slots: in this cluster only
    the broadcast engine makes any."""
    return c.sql("SELECT slot_name, temporary, confirmed_flush_lsn::text FROM pg_replication_slots "
                 "WHERE plugin = 'pgcdcws'")


def test_the_engine_slot_advances_and_goes_with_the_last_subscriber(lc):
    """One slot for all subscribers, confirmed as the engine decodes (it does not pin WAL behind
    it), gone with its decoder some time (60 s) after the last subscriber left; the next
    subscriber starts a new one."""
    lc.sql("CREATE TABLE b_engine (id int PRIMARY KEY)")

    async def main():
        c1 = await open_subscribed(lc.ws_port, "insert:public.b_engine")
        c2 = await open_subscribed(lc.ws_port, "insert:b_engine:id.gt.500")
        try:
            lc.sql("DO $$ BEGIN FOR i IN 1..1000 LOOP INSERT INTO b_engine VALUES (i); COMMIT; END LOOP; END $$")
            last = (await c1.changes(1000, timeout=120))[-1]
            assert (await c2.changes(500, timeout=120))[-1]["lsn"] == last["lsn"]
            slots = engine_slots(lc)
            assert len(slots) == 1, slots
            await apoll(lambda: lsn_int(engine_slots(lc)[0][2]) >= lsn_int(last["lsn"]), 60,
                        what=f"the engine's slot to be confirmed up to {last['lsn']} ({engine_slots(lc)})")
        finally:
            await c1.close()
            await c2.close()
        await apoll(lambda: not engine_slots(lc) and not lc.pids_by_backend_type("pgcdcws broadcast"), 180,
                    interval=1, what="the broadcast decoder and its slot to go after the last subscriber left")
        c3 = await open_subscribed(lc.ws_port, "insert:public.b_engine")
        try:
            lc.sql("INSERT INTO b_engine VALUES (1001)")
            f = await c3.change()
            assert row_of(f) == {"id": 1001} and len(engine_slots(lc)) == 1
        finally:
            await c3.close()

    run(main())
