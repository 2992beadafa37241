"""GET /ws end to end with the broadcast decoder (issue 8, the server's own checks): the
subscribed frame comes before changes and changes committed before it are not delivered,
several subscriptions of one socket share a frame with "matched" for updates, unsubscribe;
flow control: in a 200,000-row burst a healthy (slower) reader gets every change while a
stalled client is closed with 1013, and memory stays bounded."""

import asyncio
import json
import socket
import threading
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


def proc_kb(pid, field):
    """A /proc/<pid>/status field in kB (VmRSS, RssAnon); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class MemorySampler:
    """Samples VmRSS and RssAnon of some processes every 100 ms in a thread; keeps the peaks."""

    def __init__(self, pids):
        self.pids = pids
        self.peak_rss = {pid: 0 for pid in pids}
        self.peak_anon = {pid: 0 for pid in pids}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak_rss[pid] = max(self.peak_rss[pid], proc_kb(pid, "VmRSS") or 0)
                self.peak_anon[pid] = max(self.peak_anon[pid], proc_kb(pid, "RssAnon") or 0)
            self.samples += 1
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def open_stalled_client(cluster, query):
    """A raw TCP client that completes the /ws upgrade, reads its subscribed frame, then
    never reads again: a 4 kB receive buffer (set before connect, so the TCP window is small
    from the start) fills at once, and the server's send buffer soon after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("localhost", cluster.ws_port))
    req = [f"GET /ws?query={urllib.parse.quote(query, safe='')} HTTP/1.1", f"Host: localhost:{cluster.ws_port}",
           "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}",
           "Sec-WebSocket-Version: 13"]
    sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
    status, _, data = _read_head(sock, time.monotonic() + 10)
    assert " 101 " in status, status
    while not parse_ws_frames(data)[0]:
        data += sock.recv(4096)
    sub = json.loads(parse_ws_frames(data)[0][0][1])
    assert sub["type"] == "subscribed", sub
    return sock, data  # what it read: its frames so far


def read_to_eof(sock, deadline_s):
    """Everything the socket still delivers until the server's end (EOF or reset)."""
    sock.settimeout(deadline_s)
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_big_insert_healthy_reader_gets_all_stalled_closed_memory_bounded(cluster):
    """One 200,000-row INSERT (about 80 MB of change frames) with a healthy client that reads
    steadily, slower than the decoder produces, and a stalled client: the healthy one gets
    every change once and in order (flow control waits for it instead of closing it), the
    stalled one is closed with 1013 about 1 s after its queue filled, and neither the server
    nor the broadcast decoder holds the burst in memory."""
    make_tables(cluster)
    rows = 200000
    cluster.alter_system("pgcdcws.client_queue_size", "256kB")
    closed_before = cluster.sql1("SELECT broadcast_slow_clients_closed FROM cdc_server_stats()")
    server_pid = cluster.pids_by_backend_type("pgcdcws server")[0]
    stalled = None

    async def run():
        nonlocal stalled
        async with websockets.connect(ws_url(cluster, "insert:be.t"), max_size=None) as healthy:
            assert (await recv_json(healthy))["type"] == "subscribed"
            stalled, stalled_data = open_stalled_client(cluster, "insert:be.t")
            decoder_pid = cluster.pids_by_backend_type("pgcdcws broadcast")[0]
            base_anon = {pid: proc_kb(pid, "RssAnon") for pid in (server_pid, decoder_pid)}
            with MemorySampler([server_pid, decoder_pid]) as mem:
                writer = asyncio.get_event_loop().run_in_executor(None, lambda: cluster.sql(
                    f"INSERT INTO be.t SELECT g, 'x', repeat('p', 200) FROM generate_series(1, {rows}) g"))
                ids = []
                while len(ids) < rows:
                    f = await next_change(healthy, 120)
                    assert f["subscriptions"] == ["query"], f
                    ids.append(f["columnvalues"][0])
                await writer
            assert ids == list(range(1, rows + 1))  # each once, in commit order
            # Nothing more of that transaction: the next change is the next statement's.
            cluster.sql(f"INSERT INTO be.t VALUES ({rows + 1}, 'after', '')")
            f = await next_change(healthy, 60)
            assert f["columnvalues"][:2] == [rows + 1, "after"], f

            # The stalled client was closed, once, and counted.
            wait_for(lambda: cluster.sql1("SELECT broadcast_slow_clients_closed FROM cdc_server_stats()")
                     == closed_before + 1, 30, what="the stalled client closed with 1013")
            # Its connection ends (the server cuts the TCP connection at most 10 s after the
            # close started; a client that does not read sees the close frame only if it fits
            # behind what the socket holds).
            data = stalled_data + read_to_eof(stalled, 60)
            frames, _ = parse_ws_frames(data)
            for opcode, payload in frames:
                if opcode == 8:
                    assert int.from_bytes(payload[:2], "big") == 1013, payload
                    assert payload[2:].decode().startswith("send queue full (pgcdcws.client_queue_size)")
            assert cluster.sql1("SELECT broadcast_slow_clients_closed FROM cdc_server_stats()") == closed_before + 1

            # Memory: shared memory counts in VmRSS (shared_buffers 128 MB as far as touched,
            # the 8 MB output ring); the decoder's own is at most logical_decoding_work_mem
            # (64 MB, then it spills) plus pgcdcws.broadcast_replay_size (64 MB). 400 MB is far
            # above both, and far below what holding the burst would take three times over.
            print(f"peak VmRSS kB {mem.peak_rss}, peak RssAnon kB {mem.peak_anon}, baseline RssAnon kB "
                  f"{base_anon}, samples {mem.samples}")
            assert mem.samples >= 10, mem.samples
            for pid in (server_pid, decoder_pid):
                assert 0 < mem.peak_rss[pid] < 400 * 1024, (pid, mem.peak_rss)
            # The server's private memory grows by its two queues (256 kB each), one held change
            # and allocator slack: not by the 80 MB of frames the burst makes.
            growth = mem.peak_anon[server_pid] - base_anon[server_pid]
            assert growth < 48 * 1024, (growth, mem.peak_anon, base_anon)

    try:
        asyncio.run(run())
    finally:
        if stalled is not None:
            stalled.close()
        cluster.alter_system("pgcdcws.client_queue_size", None, expect_show="1MB")
        cluster.sql("DROP SCHEMA be CASCADE")
