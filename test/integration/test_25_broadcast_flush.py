"""Filtered broadcast (GET /ws): how queued frames leave a socket next to the frames lws writes
itself (its close frames, its answer to a client's close), on raw sockets so that every byte
the server sends is seen. In a cluster of this module's own:

- pgcdcws.client_queue_size = 64MB, so that a client that stops reading for a while is far from
  an overflow (and the 1013 close): what is tested is a socket whose kernel buffers are full;
- pgcdcws.ping_interval = 60: the raw clients answer no ping.
"""

import socket
import struct
import time

import pytest

from cdcws import StalledWsClient, Writer, loads, ws_target
from conftest import logs_reported, started_cluster, wait_for
from test_25_broadcast_attacks import masked

FLUSH_CONF = [
    "pgcdcws.ping_interval = 60",
    "pgcdcws.client_queue_size = '64MB'",
]


@pytest.fixture(scope="module")
def fc():
    c = started_cluster(FLUSH_CONF)
    try:
        with logs_reported(c):
            yield c
    finally:
        c.destroy()


def delivered(c):
    return c.sql1("SELECT broadcast_messages_delivered FROM cdc_server_stats()")


def test_client_close_while_the_server_is_behind_is_answered_after_the_queued_frames(fc):
    """A client stops reading while 12 MB of changes are sent to it (more than its TCP
    connection holds: the rest waits in the server), then sends a close frame (1000) and reads
    everything: RFC 6455 5.5.1, the server answers with a close frame. What it reads must be
    whole frames: a prefix of the changes, then the close frame 1000, then the end of the TCP
    connection."""
    rows, pad = 12000, 1000
    fc.sql("CREATE TABLE f_close (id int PRIMARY KEY, pad text)")
    client = StalledWsClient(fc.ws_port, ws_target("insert:public.f_close"), rcvbuf=8192)
    try:
        client.read_until_subscribed()
        before = delivered(fc)
        fc.sql(f"INSERT INTO f_close SELECT i, repeat('x', {pad}) FROM generate_series(1, {rows}) i")
        # every change is in the client's queue (and what the socket took of it, beyond)
        wait_for(lambda: delivered(fc) - before == rows, 120, what=f"{rows} changes queued for the client")
        client.sock.sendall(masked(8, struct.pack(">H", 1000) + b"bye"))
        client.start_drain(timeout=60)
        client.join_drain()
    finally:
        client.close()
    texts = client.texts()
    got = [t["columnvalues"][0] for t in texts[1:]]
    closing = client.close_frame()
    assert closing is not None, (f"no close frame: {len(got)} changes then {client.buf[:40]!r} "
                                 f"({len(client.buf)} bytes of an incomplete frame), eof={client.eof}")
    assert closing[0] == 1000, closing
    assert [op for op, _ in client.frames][-1] == 8, "frames after the close frame"
    assert client.buf == b"", f"{len(client.buf)} bytes of an incomplete frame before the TCP end"
    assert got == list(range(1, len(got) + 1)), f"not a prefix: {got[:3]}...{got[-3:]}"
    assert client.eof in (True, "reset")


def test_nothing_follows_the_close_frame_lws_sends_for_a_binary_message(fc):
    """While changes flow, a client sends a binary message: lws sends close 1003 and awaits
    the client's close frame. This client never answers (and reads on): after the close frame
    it must get nothing more, however many changes are committed meanwhile (RFC 6455 5.5.1:
    no data frame after a close frame)."""
    fc.sql("CREATE TABLE f_bin (id int PRIMARY KEY)")
    client = StalledWsClient(fc.ws_port, ws_target("insert:public.f_bin"), rcvbuf=1 << 20)
    writer = Writer(fc, "f_bin", 100000, pace=0.002)
    try:
        client.read_until_subscribed()
        writer.start()
        deadline = time.monotonic() + 60
        while sum(1 for op, _ in client.frames if op == 1) < 20:
            assert time.monotonic() < deadline, f"only {client.frames[-3:]!r}"
            client.sock.settimeout(max(0.05, deadline - time.monotonic()))
            client.buf += client.sock.recv(1 << 16)
            client._parse()
        client.sock.sendall(masked(2, b"\x00\x01binary"))
        # lws waits 5 s for the client's close frame, then ends the connection
        client.start_drain(timeout=30)
        client.join_drain()
        written = writer.done_upto
    finally:
        writer.stop()
        writer.join(30)
        client.close()
    assert writer.error is None, repr(writer.error)
    ops = [op for op, _ in client.frames]
    assert 8 in ops, f"no close frame: {len(ops)} frames, eof={client.eof}"
    closing = client.close_frame()
    assert closing[0] == 1003, closing
    after = ops[ops.index(8) + 1:]
    assert after == [], (f"{len(after)} frames after the close frame (opcodes {sorted(set(after))}); "
                         f"{written} rows written meanwhile")
    got = [loads(p.decode())["columnvalues"][0] for op, p in client.frames[1:] if op == 1]
    assert got == list(range(1, len(got) + 1)), f"not a prefix: {got[:3]}...{got[-3:]}"
    assert client.eof in (True, "reset")


# ------------------------------------------------------------------------------------ TLS
@pytest.fixture(scope="module")
def tls_fc():
    from test_19_tls_limits import start_cluster
    made = []
    try:
        c = start_cluster(made, ["pgcdcws.ssl = on", "ssl_cert_file = '{cert}'", "ssl_key_file = '{key}'"]
                          + FLUSH_CONF)
        with logs_reported(c):
            yield c
    finally:
        for c in made:
            c.destroy()


def test_tls_slow_reader_gets_every_frame_whole_small_and_big_interleaved(tls_fc):
    """Over TLS, a client with a small receive buffer reads slowly while one transaction sends
    it 600 changes of 200 bytes, 40 kB and 100 kB interleaved (~8.5 MB): the server's writes hit
    SSL_ERROR_WANT_WRITE again and again (frames framed together by the server and big frames
    framed by lws alike). Every frame must arrive whole and in order: a text frame per change,
    ids 1..600, each with its pad."""
    import ssl
    from cdcws import WS_ACCEPT, WS_KEY, _read_head, parse_ws_frames

    c = tls_fc
    rows = 600

    def pad_of(i):
        return 100000 if i % 10 == 0 else 40000 if i % 10 == 5 else 200

    c.sql("CREATE TABLE f_tls (id int PRIMARY KEY, pad text)")
    ctx = ssl.create_default_context(cafile=c.cert)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(60)
    raw.connect(("127.0.0.1", c.ws_port))
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        target = ws_target("insert:public.f_tls")
        req = [f"GET {target} HTTP/1.1", f"Host: localhost:{c.ws_port}", "Upgrade: websocket",
               "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}", "Sec-WebSocket-Version: 13"]
        sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        status, headers, buf = _read_head(sock, time.monotonic() + 60)
        assert status.split(" ")[1] == "101" and headers.get("sec-websocket-accept") == WS_ACCEPT, (status, headers)
        frames = []
        deadline = time.monotonic() + 120
        inserted = False
        while sum(1 for op, _ in frames if op == 1) < rows + 1:
            assert time.monotonic() < deadline, f"{len(frames)} frames after 120 s"
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(16384)
            except socket.timeout:
                continue
            assert chunk, f"connection closed after {len(frames)} frames"
            buf += chunk
            got, left = parse_ws_frames(buf)
            frames += got
            buf = buf[len(buf) - left:]
            if not inserted and frames:
                assert loads(frames[0][1].decode())["type"] == "subscribed", frames[0]
                c.sql(f"INSERT INTO f_tls SELECT i, repeat('p', CASE WHEN i % 10 = 0 THEN 100000 "
                      f"WHEN i % 10 = 5 THEN 40000 ELSE 200 END) FROM generate_series(1, {rows}) i")
                inserted = True
            time.sleep(0.002)  # a slow reader: the server's socket stays full
    finally:
        sock.close()
    assert [op for op, _ in frames] == [1] * (rows + 1), sorted(set(op for op, _ in frames))
    changes = [loads(p.decode()) for _, p in frames[1:]]
    assert [f["columnvalues"][0] for f in changes] == list(range(1, rows + 1))
    assert [len(f["columnvalues"][1]) for f in changes] == [pad_of(i) for i in range(1, rows + 1)]
