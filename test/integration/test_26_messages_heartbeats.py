"""Logical messages and heartbeats on durable streams (issue 9, "Logical messages" and
"Heartbeats"): pg_logical_emit_message() of both kinds, the messages= prefix filter, binary
content as base64, acks of a non-transactional message's lsn, a 50 MB message in bounded
memory, heartbeats on an idle stream and the WAL they let a client release."""

import asyncio
import base64
import json
import time
import urllib.parse

import pytest
import websockets

from cdcws import (STREAM_PATH, RssSampler, StreamClient, apoll, http_request, loads, lsn_int,
                   wait_confirmed)
from test_03_http import check_refusal

MB = 1024 * 1024


def stream_target(slot, messages=None):
    target = f"{STREAM_PATH}?slotName={slot}"
    if messages is not None:
        target += "&messages=" + messages
    return target


async def open_stream(cluster, slot, messages=None):
    """A StreamClient whose URL carries `messages` (raw, already URL-encoded) when given."""
    uri = f"ws://localhost:{cluster.ws_port}{stream_target(slot, messages)}"
    ws = await websockets.connect(uri, max_size=None, ping_interval=None, open_timeout=10, close_timeout=2)
    return StreamClient(ws, slot)


def emit(cluster, transactional, prefix, content):
    """pg_logical_emit_message() in its own statement; content str (text) or bytes (bytea).
    Returns the WAL insert position after it (a non-transactional message is not flushed
    by itself: Postgres 15's walwriter writes it shortly)."""
    cluster.sql("SELECT pg_logical_emit_message(%s, %s, %s)",
                (transactional, prefix, content if isinstance(content, str) else bytes(content)))
    return cluster.sql1("SELECT pg_current_wal_insert_lsn()::text")


def message(transactional, prefix, content):
    """The change object of a message, as the server must send it."""
    if isinstance(content, (bytes, bytearray)):
        return {"kind": "message", "transactional": transactional, "prefix": prefix, "encoding": "base64",
                "content": base64.b64encode(bytes(content)).decode()}
    return {"kind": "message", "transactional": transactional, "prefix": prefix, "content": content}


async def recv_message_frame(client, timeout=10):
    """The next frame but heartbeats, which must be a non-transactional message's frame:
    (change, lsn)."""
    while True:
        obj, raw = await client.recv_frame(timeout)
        if "heartbeat" not in obj:
            break
    assert set(obj) == {"change", "lsn"}, raw[:300]
    assert len(obj["change"]) == 1, raw[:300]
    return obj["change"][0], obj["lsn"]


@pytest.fixture
def slot(cluster, request):
    name = "m_" + request.node.name.removeprefix("test_")[:40]
    cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false)", (name,))
    yield name
    cluster.drop_slot_quietly(name)


@pytest.fixture
def heartbeat_1s(cluster):
    cluster.alter_system("pgcdcws.heartbeat_interval", 1, expect_show="1s")
    yield
    cluster.alter_system("pgcdcws.heartbeat_interval", None, expect_show="10s")


# ------------------------------------------------------------------------------- messages
def test_messages_both_kinds_in_wal_order(cluster, slot):
    cluster.sql("CREATE TABLE m_rows (id int PRIMARY KEY)")
    try:
        async def main():
            client = await open_stream(cluster, slot)
            try:
                start = lsn_int(cluster.confirmed_lsn(slot))
                # non-transactional: a frame of its own, at once
                after = emit(cluster, False, "wm", "hello")
                change, lsn = await recv_message_frame(client)
                assert change == message(False, "wm", "hello")
                assert start < lsn_int(lsn) <= lsn_int(after)

                # transactional: inside its transaction's frame, at its place among the rows
                xid = cluster.exec_txn("INSERT INTO m_rows VALUES (1)",
                                       "SELECT pg_logical_emit_message(true, 'audit', 'note é \"q\" \\ \n\t\x01')",
                                       "INSERT INTO m_rows VALUES (2)")
                txn = await client.recv_txn()
                assert txn.xid == xid
                assert [c["kind"] for c in txn.changes] == ["insert", "message", "insert"]
                assert txn.ids() == [1, 2]
                assert txn.changes[1] == message(True, "audit", 'note é "q" \\ \n\t\x01')
                assert '"content":"note é \\"q\\" \\\\ \\n\\t\\u0001"' in txn.raws[0]
                assert lsn_int(txn.nextlsn) > lsn_int(lsn)

                # a transaction with only a message is a frame with only the message
                xid = cluster.exec_txn("SELECT pg_logical_emit_message(true, 'only', '')")
                txn = await client.recv_txn()
                assert txn.xid == xid and txn.changes == [message(True, "only", "")]

                # a non-transactional message inside an open transaction comes at its place in
                # the WAL: before the transaction's commit, so before its frame
                conn = cluster.connect(autocommit=False)
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO m_rows VALUES (3)")
                        cur.execute("SELECT pg_logical_emit_message(false, 'wm', 'mid')")
                        cur.execute("INSERT INTO m_rows VALUES (4)")
                    conn.commit()
                finally:
                    conn.close()
                change, mid_lsn = await recv_message_frame(client)
                assert change == message(False, "wm", "mid")
                txn = await client.recv_txn()
                assert txn.ids() == [3, 4] and [c["kind"] for c in txn.changes] == ["insert", "insert"]
                assert lsn_int(mid_lsn) < lsn_int(txn.nextlsn)
                await client.ack(txn.nextlsn)
                await wait_confirmed(cluster, slot, txn.nextlsn)
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.sql("DROP TABLE m_rows")


def test_binary_and_unicode_content(cluster, slot):
    async def main():
        client = await open_stream(cluster, slot)
        try:
            cases = [
                (False, "bin", b"\xff\x00\xfe"),              # not UTF-8
                (True, "bin", b"a\x00b"),                     # NUL is not text in Postgres
                (False, "bin", b"\xed\xa0\x80"),              # an encoded surrogate
                (False, "txt", "plain ASCII".encode()),       # valid UTF-8 bytea: text
                (False, "txt", "ünï 🙂".encode()),
                (False, "pré fix 🙂", "x".encode()),
                (False, "empty", b""),
            ]
            for transactional, prefix, content in cases:
                emit(cluster, transactional, prefix, content)
                if transactional:
                    change = (await client.recv_txn()).changes[0]
                else:
                    change, _ = await recv_message_frame(client)
                try:
                    text = content.decode("utf-8")
                    valid = "\x00" not in text
                except UnicodeDecodeError:
                    valid = False
                want = message(transactional, prefix, text if valid else content)
                assert change == want, (content, change)
        finally:
            await client.close()

    asyncio.run(main())


def test_messages_prefix_filter(cluster, slot):
    cluster.sql("CREATE TABLE m_filter (id int PRIMARY KEY)")
    try:
        async def main():
            # "keep" and "a,b" (the comma escaped with a backslash, both URL-encoded)
            client = await open_stream(cluster, slot, messages="keep,a%5C%2Cb")
            try:
                emit(cluster, False, "drop", "1")
                emit(cluster, False, "keep", "2")
                emit(cluster, False, "a", "3")
                emit(cluster, False, "a,b", "4")
                emit(cluster, False, "kee", "5")
                emit(cluster, False, "keep ", "6")
                change, _ = await recv_message_frame(client)
                assert change == message(False, "keep", "2")
                change, _ = await recv_message_frame(client)
                assert change == message(False, "a,b", "4")

                # rows are not filtered by messages=; a filtered-out message leaves no trace
                xid = cluster.exec_txn("INSERT INTO m_filter VALUES (1)",
                                       "SELECT pg_logical_emit_message(true, 'drop', 'x')",
                                       "SELECT pg_logical_emit_message(true, 'keep', 'y')",
                                       "INSERT INTO m_filter VALUES (2)")
                txn = await client.recv_txn()
                assert txn.xid == xid
                assert [c["kind"] for c in txn.changes] == ["insert", "message", "insert"]
                assert txn.changes[1] == message(True, "keep", "y")
                await client.ack(txn.nextlsn)
                await wait_confirmed(cluster, slot, txn.nextlsn)

                # a transaction with only a filtered-out message sends nothing, and the slot
                # moves past it by itself (everything sent is acknowledged)
                cluster.exec_txn("SELECT pg_logical_emit_message(true, 'drop', 'z')")
                past = cluster.sql1("SELECT pg_current_wal_lsn()::text")
                await apoll(lambda: lsn_int(cluster.confirmed_lsn(slot)) >= lsn_int(past), 10,
                            what=f"the slot to move past the filtered transaction ({past})")
                after = emit(cluster, False, "keep", "end")
                change, lsn = await recv_message_frame(client)
                assert change == message(False, "keep", "end")
                assert lsn_int(past) < lsn_int(lsn) <= lsn_int(after)
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.sql("DROP TABLE m_filter")


def test_messages_parameter_refused_before_upgrade(cluster, slot):
    # (libwebsockets itself drops a request whose target holds %00 or a malformed escape:
    # those never reach the parameter; the unit tests cover them.)
    cases = [
        ("", "messages parameter without a value (omit it to receive every message)"),
        ("a,,b", "invalid messages parameter: a prefix is empty (two commas in a row, or one at an end)"),
        ("a%2C", "invalid messages parameter: a prefix is empty (two commas in a row, or one at an end)"),
        ("%FF", "invalid messages parameter: the prefix list is not valid UTF-8"),
        ("%C3%28", "invalid messages parameter: the prefix list is not valid UTF-8"),
        ("p" * 1025, "invalid messages parameter: the prefix list is longer than 1024 bytes"),
    ]
    for value, error in cases:
        assert check_refusal(http_request(cluster.ws_port, stream_target(slot, value)), 400) == error, value
    assert check_refusal(http_request(cluster.ws_port, stream_target(slot, "a") + "&messages=b"), 400) == \
        "messages given more than once in the query string"
    err = check_refusal(http_request(cluster.ws_port, stream_target(slot, "a%5Cb")), 400)
    assert err.startswith("invalid messages parameter: a backslash must be followed by"), err
    # the websockets client sees the status too; the slot was never taken
    async def refused():
        try:
            await open_stream(cluster, slot, messages="a,,b")
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
        raise AssertionError("upgrade accepted")
    assert asyncio.run(refused()) == 400
    assert cluster.slot_row(slot)[0] is False  # not active


def test_ack_nontransactional_message_then_resume(cluster, slot):
    async def main():
        client = await open_stream(cluster, slot)
        try:
            emit(cluster, False, "wm", "one")
            emit(cluster, False, "wm", "two")
            c1, lsn1 = await recv_message_frame(client)
            c2, lsn2 = await recv_message_frame(client)
            assert (c1["content"], c2["content"]) == ("one", "two")
            await client.ack(lsn1)
            assert await wait_confirmed(cluster, slot, lsn1, below=lsn2) == lsn1
        finally:
            await client.close()

        # resumed: "one" is not sent again, "two" (not acknowledged) is
        client = StreamClient(await _reopen(cluster, slot), slot)
        try:
            change, lsn = await recv_message_frame(client)
            assert change == message(False, "wm", "two") and lsn == lsn2
            await client.ack(lsn2)
            await wait_confirmed(cluster, slot, lsn2)
        finally:
            await client.close()

        client = StreamClient(await _reopen(cluster, slot), slot)
        try:
            emit(cluster, False, "wm", "three")
            change, _ = await recv_message_frame(client)
            assert change == message(False, "wm", "three")
        finally:
            await client.close()

    asyncio.run(main())


async def _reopen(cluster, slot):
    """Connect again, retrying while the previous decoder still releases the slot."""
    return (await StreamClient.open_retry(cluster.ws_port, slot)).ws


def test_50mb_message_in_bounded_memory(cluster, slot):
    size = 50 * MB
    cluster.sql("CREATE TABLE m_big (id int PRIMARY KEY)")
    sampler = RssSampler(cluster, interval=0.1)
    try:
        async def main():
            client = await open_stream(cluster, slot)
            try:
                await apoll(lambda: len(cluster.pids_by_backend_type("pgcdcws decoder")) == 1, 10,
                            what="the decoder to start")
                sampler.prime()
                sampler.start()
                loop = asyncio.get_running_loop()
                # 50 MB of text that needs escaping every 1000 bytes, between two rows
                insert = loop.run_in_executor(None, lambda: cluster.exec_txn(
                    "INSERT INTO m_big VALUES (1)",
                    f"SELECT pg_logical_emit_message(true, 'big', repeat(repeat('x', 999) || E'\\n', {size // 1000}))",
                    "INSERT INTO m_big VALUES (2)"))
                obj = {"heartbeat": True}
                while "heartbeat" in obj:  # the insert may take longer than an interval
                    raw = await client.recv_raw(120)
                    obj = loads(raw)
                await insert
                assert [c["kind"] for c in obj["change"]] == ["insert", "message", "insert"]
                content = obj["change"][1]["content"]
                assert len(content) == size // 1000 * 1000
                assert content == ("x" * 999 + "\n") * (size // 1000)
                await client.ack(obj["nextlsn"])
                await wait_confirmed(cluster, slot, obj["nextlsn"])
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        sampler.stop()
        cluster.sql("DROP TABLE m_big")
    growth = {sampler.types[pid]: kb for pid, kb in sampler.growth_kb().items()}
    # The server holds one ring record at a time. The decoder holds the WAL record and
    # the reorder buffer's copy of the message (Postgres), not a JSON copy of it.
    assert growth["pgcdcws server"] < 16 * 1024, growth
    # Measured: about 3 x 50 MB, all of it Postgres' (the WAL record, its decoded copy,
    # the reorder buffer's change); a JSON copy of the content would add 64 MB or more.
    assert growth["pgcdcws decoder"] < 3.25 * size // 1024, growth


# ----------------------------------------------------------------------------- heartbeats
async def recv_heartbeat(client, timeout=5):
    obj, raw = await client.recv_frame(timeout)
    assert set(obj) == {"heartbeat", "lsn"} and obj["heartbeat"] is True, raw[:300]
    return obj["lsn"]


def test_heartbeats_on_idle_stream(cluster, slot, heartbeat_1s):
    cluster.sql("CREATE TABLE m_hb (id int PRIMARY KEY)")
    try:
        async def main():
            client = await open_stream(cluster, slot)
            try:
                confirmed = lsn_int(cluster.confirmed_lsn(slot))
                t0 = time.monotonic()
                h1 = await recv_heartbeat(client, 5)
                h2 = await recv_heartbeat(client, 5)
                assert time.monotonic() - t0 >= 1.5  # two intervals of 1 s, not a burst
                assert confirmed <= lsn_int(h1) <= lsn_int(h2) <= lsn_int(cluster.sql1("SELECT pg_current_wal_lsn()::text"))
                await client.ack(h2)  # a heartbeat's lsn may be acknowledged: no error reply
                await wait_confirmed(cluster, slot, h2)

                cluster.sql("INSERT INTO m_hb VALUES (1)")
                # heartbeats may come before it; after it, the next one is at or past its end
                while True:
                    obj, raw = await client.recv_frame(5)
                    if "heartbeat" not in obj:
                        break
                txn = loads(raw)
                assert txn["change"][0]["columnvalues"] == [1]
                h3 = await recv_heartbeat(client, 5)
                assert lsn_int(h3) >= lsn_int(txn["nextlsn"])
                await client.ack(h3)
                await wait_confirmed(cluster, slot, h3)
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.sql("DROP TABLE m_hb")


def test_heartbeat_interval_zero_sends_none(cluster, slot):
    cluster.alter_system("pgcdcws.heartbeat_interval", 0, expect_show="0")
    try:
        async def main():
            client = await open_stream(cluster, slot)
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await client.recv_frame(3)
                emit(cluster, False, "wm", "after silence")
                change, _ = await recv_message_frame(client)
                assert change == message(False, "wm", "after silence")
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.alter_system("pgcdcws.heartbeat_interval", None, expect_show="10s")


def retained_wal(cluster, slot):
    return int(cluster.sql1("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) "
                            "FROM pg_replication_slots WHERE slot_name = %s", (slot,)))


def test_acked_heartbeat_releases_wal_of_another_database(cluster, slot, heartbeat_1s):
    """A stream on a quiet database while another database writes 256 MB of WAL: after the
    client acks a heartbeat, the slot keeps less than 64 MB, with no write to any table of
    the stream's database. An unacknowledged message pins the slot first, so the ack is
    what releases it."""
    cluster.sql("DROP DATABASE IF EXISTS m_other")
    cluster.sql("CREATE DATABASE m_other")
    other = cluster.connect(dbname="m_other")
    try:
        async def main():
            client = await open_stream(cluster, slot)
            try:
                emit(cluster, False, "pin", "not acknowledged yet")
                change, pin_lsn = await recv_message_frame(client)
                assert change["prefix"] == "pin"

                def fill():
                    with other.cursor() as cur:
                        cur.execute("SELECT pg_current_wal_lsn()::text")
                        start = cur.fetchone()[0]
                        cur.execute("CREATE TABLE filler (t text)")
                        while True:
                            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (start,))
                            if int(cur.fetchone()[0]) >= 256 * MB:
                                break
                            cur.execute("INSERT INTO filler SELECT repeat('x', 1900) FROM generate_series(1, 20000)")
                        cur.execute("SELECT pg_current_wal_lsn()::text")
                        return cur.fetchone()[0]

                # in a thread: the event loop keeps answering the server's pings meanwhile
                loop = asyncio.get_running_loop()
                written_to = await loop.run_in_executor(None, fill)
                assert retained_wal(cluster, slot) >= 256 * MB  # pinned by the message

                deadline = time.monotonic() + 120
                rounds = 0
                while True:
                    assert time.monotonic() < deadline, \
                        f"retained WAL still {retained_wal(cluster, slot)} after {rounds} acked heartbeats"
                    hb = await recv_heartbeat(client, 5)  # nothing else may come: the database is quiet
                    if lsn_int(hb) < lsn_int(written_to):
                        continue  # still decoding the other database's WAL
                    await client.ack(hb)
                    await wait_confirmed(cluster, slot, hb)
                    rounds += 1
                    if retained_wal(cluster, slot) < 64 * MB:
                        break
                    # The slot's restart_lsn moves at the next running-transactions record
                    # decoded after the ack (the bgwriter writes one every 15 s, a
                    # checkpoint at once); a CHECKPOINT writes to no table.
                    await loop.run_in_executor(None, lambda: cluster.sql("CHECKPOINT"))
                assert lsn_int(cluster.confirmed_lsn(slot)) >= lsn_int(written_to) > lsn_int(pin_lsn)
                assert retained_wal(cluster, slot) < 64 * MB
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        other.close()
        cluster.sql("DROP DATABASE m_other")
