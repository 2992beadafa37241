"""GET /ws end to end with the broadcast decoder (issue 8, the server's own checks): the
subscribed frame comes before changes and changes committed before it are not delivered,
several subscriptions of one socket share a frame with "matched" for updates, unsubscribe,
a stalled client is closed with 1013 while a healthy one gets every change."""

import asyncio
import json
import socket
import time
import urllib.parse

import pytest
import websockets

from cdcws import WS_KEY, _read_head, lsn_int, parse_ws_frames
from conftest import wait_for


@pytest.fixture(autouse=True)
def _stop_broadcast_decoder(cluster):
    """The decoder idles 60 s before it stops: end it after each test, so that its temporary
    slot is gone when the suite checks for leftovers."""
    yield
    cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pgcdcws broadcast'")
    wait_for(lambda: cluster.sql1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgcdcws_broadcast'")
             == 0, 30, what="the broadcast decoder's slot dropped")


def ws_url(cluster, query=None, since=None):
    params = []
    if query is not None:
        params.append("query=" + urllib.parse.quote(query, safe=""))
    if since is not None:
        params.append("since=" + since)
    return f"ws://localhost:{cluster.ws_port}/ws" + ("?" + "&".join(params) if params else "")


async def recv_json(ws, timeout=30):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def next_change(ws, timeout=30):
    while True:
        f = await recv_json(ws, timeout)
        if f["type"] == "change":
            return f


def make_tables(cluster):
    cluster.sql("DROP SCHEMA IF EXISTS be CASCADE")
    cluster.sql("CREATE SCHEMA be")
    cluster.sql("CREATE TABLE be.t (id int PRIMARY KEY, status text, pad text)")
    cluster.sql("ALTER TABLE be.t REPLICA IDENTITY FULL")


def test_subscribed_then_changes_after_it(cluster):
    make_tables(cluster)

    async def run():
        cluster.sql("INSERT INTO be.t VALUES (10, 'before', '')")
        async with websockets.connect(ws_url(cluster, "insert:be.t:id.gt.1")) as ws:
            first = await recv_json(ws)
            assert first["type"] == "subscribed" and first["id"] == "query", first
            cluster.sql("INSERT INTO be.t VALUES (1, 'no', '')")
            cluster.sql("INSERT INTO be.t VALUES (2, 'yes', '')")
            f = await next_change(ws)
            assert f["kind"] == "insert" and f["table"] == "t" and f["schema"] == "be", f
            assert f["columnvalues"][:2] == [2, "yes"], f
            assert f["subscriptions"] == ["query"] and "matched" not in f, f
            assert lsn_int(f["lsn"]) > lsn_int(first["lsn"]), (f, first)
            assert isinstance(f["xid"], int)
        assert cluster.sql1("SELECT broadcast_messages_delivered FROM cdc_server_stats()") >= 1

    try:
        asyncio.run(run())
    finally:
        cluster.sql("DROP SCHEMA be CASCADE")


def test_many_subscriptions_one_frame_and_unsubscribe(cluster):
    make_tables(cluster)
    cluster.sql("INSERT INTO be.t VALUES (1, 'new', '')")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await ws.send(json.dumps({"subscribe": "update:be.t:status.eq.paid", "id": "paid"}))
            await ws.send(json.dumps({"subscribe": "update:be.t", "id": "all"}))
            got = {(await recv_json(ws))["id"], (await recv_json(ws))["id"]}
            assert got == {"paid", "all"}
            cluster.sql("UPDATE be.t SET status = 'paid' WHERE id = 1")
            f = await next_change(ws)
            assert f["subscriptions"] == ["all", "paid"] and f["matched"] == ["both", "new"], f
            cluster.sql("UPDATE be.t SET status = 'shipped' WHERE id = 1")
            f = await next_change(ws)
            assert f["subscriptions"] == ["all", "paid"] and f["matched"] == ["both", "old"], f
            await ws.send(json.dumps({"unsubscribe": "all"}))
            assert await recv_json(ws) == {"type": "unsubscribed", "id": "all"}
            cluster.sql("UPDATE be.t SET status = 'other' WHERE id = 1")  # matches nothing left
            cluster.sql("UPDATE be.t SET status = 'paid' WHERE id = 1")
            f = await next_change(ws)
            assert f["subscriptions"] == ["paid"] and f["matched"] == ["new"], f

    try:
        asyncio.run(run())
    finally:
        cluster.sql("DROP SCHEMA be CASCADE")


def test_stalled_client_closed_1013_healthy_gets_all(cluster):
    make_tables(cluster)
    rows = 20000
    closed_before = cluster.sql1("SELECT broadcast_slow_clients_closed FROM cdc_server_stats()")

    async def run():
        async with websockets.connect(ws_url(cluster, "insert:be.t"), max_size=None) as healthy:
            assert (await recv_json(healthy))["type"] == "subscribed"
            stalled = socket.create_connection(("localhost", cluster.ws_port))
            req = [f"GET /ws?query=insert:be.t HTTP/1.1", f"Host: localhost:{cluster.ws_port}",
                   "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}",
                   "Sec-WebSocket-Version: 13"]
            stalled.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
            status, _, rest = _read_head(stalled, time.monotonic() + 10)
            assert " 101 " in status, status
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # Wait for the stalled socket's subscribed frame (its subscription is live).
            data = rest
            while not parse_ws_frames(data)[0]:
                stalled.settimeout(10)
                data += stalled.recv(4096)
            sub = json.loads(parse_ws_frames(data)[0][0][1])
            assert sub["type"] == "subscribed", sub
            def write():
                # Changes flow at a pace a client that reads keeps up with (the server never
                # waits for clients: one that falls 1 MB behind is closed, healthy or not).
                for i in range(0, rows, 200):
                    cluster.sql(f"INSERT INTO be.t SELECT g, 'x', repeat('p', 200) "
                                f"FROM generate_series({i + 1}, {i + 200}) g")
                    time.sleep(0.05)

            writer = asyncio.get_event_loop().run_in_executor(None, write)
            ids = set()
            while len(ids) < rows:
                f = await next_change(healthy, 60)
                ids.add(f["columnvalues"][0])
            assert ids == set(range(1, rows + 1))
            await writer
            wait_for(lambda: cluster.sql1("SELECT broadcast_slow_clients_closed FROM cdc_server_stats()")
                     == closed_before + 1, 30, what="the stalled client closed with 1013")
            # The stalled socket was not read for seconds: the server cut its TCP connection at
            # most 10 s after the overflow (the 1013 close frame, queued behind what the socket
            # held, is seen only by a client that reads meanwhile). It reads what the kernel
            # kept, then EOF.
            stalled.settimeout(60)
            eof = False
            while not eof:
                try:
                    chunk = stalled.recv(1 << 20)
                except ConnectionResetError:
                    chunk = b""
                eof = not chunk
                data += chunk
            frames, _ = parse_ws_frames(data)
            for opcode, payload in frames:
                if opcode == 8:
                    assert int.from_bytes(payload[:2], "big") == 1013, payload
                    assert payload[2:].decode().startswith("send queue full (pgcdcws.client_queue_size)")
            stalled.close()

    try:
        asyncio.run(run())
    finally:
        cluster.sql("DROP SCHEMA be CASCADE")
