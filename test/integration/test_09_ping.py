"""Ping/pong: a peer that never answers is disconnected, one that answers is kept
(issue item 8; pgcdcws.ping_interval = 2 in the test cluster)."""

import asyncio
import socket
import time

from cdcws import WS_ACCEPT, StreamClient, apoll, parse_ws_frames, raw_ws_handshake
from conftest import wait_for


def test_dead_peer_is_disconnected(cluster):
    slot = "p_dead"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    sock = None
    try:
        sock, resp = raw_ws_handshake(cluster.ws_port, slot)
        assert resp.version == "HTTP/1.1" and resp.status == 101, resp
        assert resp.headers.get("sec-websocket-accept") == WS_ACCEPT, resp
        assert resp.headers.get("upgrade", "").lower() == "websocket", resp
        wait_for(lambda: cluster.slot_row(slot)[0] is True, 5, what="slot active with the raw client")
        t0 = time.monotonic()
        # never read, never answer: the server pings after 2 s and hangs up after 4 s more
        wait_for(lambda: cluster.slot_row(slot)[0] is False, 15, interval=0.2,
                 what="the server to drop the silent peer (slot inactive)")
        elapsed = time.monotonic() - t0
        assert elapsed >= 2, f"dropped after {elapsed:.1f}s, before any ping could go unanswered"
        assert cluster.sql("SELECT active, client_addr FROM cdc_slots() WHERE slot_name = %s", (slot,)) == \
            [(False, None)]

        # what the server sent: ping(s), maybe a close frame, then the end of the connection
        data = resp.rest
        sock.settimeout(5)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError("the slot was released but the server kept the TCP connection open") \
                    from None
            if not chunk:
                break
            data += chunk
        frames, _ = parse_ws_frames(data)
        opcodes = [op for op, _ in frames]
        assert 0x9 in opcodes, f"no ping frame received: {opcodes}"
        assert all(op in (0x8, 0x9) for op in opcodes), opcodes
    finally:
        if sock is not None:
            sock.close()
        cluster.drop_slot_quietly(slot)


def test_live_peer_answering_pings_is_kept(cluster):
    slot = "p_live"
    cluster.sql("CREATE TABLE p_live_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            # `websockets` answers pings by itself while the event loop runs
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                await apoll(lambda: cluster.slot_row(slot)[0] is True, 5, what="slot active")
                # stay idle for more than three ping intervals (and longer than the 4 s limit)
                deadline = time.monotonic() + 7
                while time.monotonic() < deadline:
                    assert cluster.slot_row(slot)[0] is True, "live client was disconnected"
                    await asyncio.sleep(0.25)
                assert client.ws.open
                cluster.sql("INSERT INTO p_live_t VALUES (1)")
                txn = await client.recv_txn(10)
                assert txn.ids() == [1]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)
