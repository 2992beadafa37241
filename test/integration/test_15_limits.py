"""Limits that protect the port (issue items 4 and 6): a flood of idle or slow connections gets
bounded service (503 beyond pgcdcws.max_connections, a 10 s request deadline, a quiet log, the
server keeps running and serves legitimate clients again); every stream client gets close 1001
when the cluster restarts; bytes after a request and a long slotName get their proper answers.

Each test starts its own throw-away cluster (floods and restarts would disturb other tests)."""

import asyncio
import json
import os
import re
import resource
import select
import socket
import subprocess
import threading
import time

import pytest
import websockets.exceptions

from conftest import Cluster, _require_extension, wait_for
from cdcws import StreamClient, Writer, http_request

SNAP_PATH = "/v1/snapshot/data"
REQUEST_DEADLINE = 10  # seconds, in the server


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors():
    """The test process itself holds the flood's sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, 8192)
    assert want == resource.RLIM_INFINITY or want >= 2500, f"hard open-file limit {hard} too low for the flood"
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def own_cluster():
    made = []

    def make(extra_conf=(), nofile=None):
        c = Cluster(extension=True)
        made.append(c)
        _require_extension(c)
        c.init()
        if extra_conf:
            with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
                f.write("\n".join(extra_conf) + "\n")
        if nofile is None:
            c.start()
        else:
            # The postmaster (and so the pgcdcws server) starts with this open-file limit.
            c._cmd(["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--", c.bin("pg_ctl"), "-D", c.datadir,
                    "-l", c.logfile, "-w", "-t", "120", "start"])
            c.running = True
            c.wait_ready(timeout=60)
        c.sql("CREATE EXTENSION pgcdcws")
        return c

    yield make
    for c in made:
        c.destroy()


def server_pid(c):
    pids = c.pids_by_backend_type("pgcdcws server", fresh=True)
    assert len(pids) == 1, pids
    return pids[0]


# ----------------------------------------------------------------------- the flood
class SlowBody(threading.Thread):
    """POST /v1/snapshot/data announcing a 100-byte body, then one byte every 2 s."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("localhost", port), timeout=10)
        self.connected_at = time.monotonic()
        self.sent = 0
        self.halt = threading.Event()
        self.sock.sendall(self.head(port))

    def head(self, port):
        return (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 100\r\n\r\n").encode()

    def piece(self):
        return b" "

    def run(self):
        while not self.halt.is_set() and self.sent < 100:
            try:
                self.sock.send(self.piece())
            except OSError:
                return  # the server closed: what the test waits for
            self.sent += 1
            self.halt.wait(2)


class SlowHeaders(SlowBody):
    """A WebSocket upgrade request whose header lines come one every 2 s (never finished)."""

    def head(self, port):
        return f"GET /v1/lr/stream?slotName=x HTTP/1.1\r\nHost: localhost:{port}\r\n".encode()

    def piece(self):
        return f"X-Slow-{self.sent}: 1\r\n".encode()


def open_idle(port, n):
    """n TCP connections that send nothing: [(socket, connect time)]."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("localhost", port), timeout=10)
        s.setblocking(False)
        out.append((s, time.monotonic()))
    return out


def read_until_eof(sock, deadline):
    """Everything the server sends until it closes (None if still open at the deadline)."""
    sock.setblocking(False)
    buf = b""
    while True:
        # One look even past the deadline: sockets are checked one after another,
        # so a later one may be checked only after its deadline, with its EOF
        # long waiting in the buffer.
        left = max(deadline - time.monotonic(), 0)
        poller = select.poll()  # select() cannot watch descriptors above 1023
        poller.register(sock, select.POLLIN)
        if not poller.poll(min(left, 1.0) * 1000):
            if left <= 0:
                return None
            continue
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return buf
        if not chunk:
            return buf
        buf += chunk


def parse_response(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"incomplete HTTP response: {data!r}"
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


def check_refusal(data):
    status_line, headers, body = parse_response(data)
    assert status_line == "HTTP/1.1 503 Service Unavailable", data
    assert headers["content-type"] == "application/json", data
    assert int(headers["content-length"]) == len(body), data
    obj = json.loads(body)
    assert set(obj) == {"error"} and "pgcdcws.max_connections" in obj["error"], data


def split_refused(socks, expected):
    """Wait for `expected` refusals (a whole response, then EOF), at most until the request
    deadline of the first connection is near; return (refused: [(sock, data, delay)],
    still open and silent: [(sock, connect time)])."""
    refused, waiting = [], {s.fileno(): (s, t, b"") for s, t in socks}
    deadline = min(t for _, t in socks) + REQUEST_DEADLINE - 1.5
    poller = select.poll()
    for fd in waiting:
        poller.register(fd, select.POLLIN)
    while len(refused) < expected and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            s, t, buf = waiting[fd]
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                waiting[fd] = (s, t, buf + chunk)
            else:
                refused.append((s, buf, time.monotonic() - t))
                del waiting[fd]
                poller.unregister(fd)
    return refused, [(s, t) for s, t, buf in waiting.values() if not buf]


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def logged_count(c, offset, text):
    """How many events the rate-limited log lines containing `text` stand for; at most a few
    lines of one kind may be logged (one per 10 s)."""
    lines = [x for x in c.log_since(offset).splitlines() if text in x]
    assert len(lines) <= 6, lines
    total = 0
    for line in lines:
        m = re.search(r"\((\d+) more like it held back since the last one\)$", line)
        r = re.search(r"\(repeated (\d+) times since the last one; logged at most every 10 s\)$", line)
        total += int(r.group(1)) if r else 1 + (int(m.group(1)) if m else 0)
    return total


def stream_one(c, slot, table):
    """A legitimate client: cdc_init, open the stream (retrying), receive one transaction."""
    async def main():
        client = await StreamClient.open_retry(c.ws_port, slot, timeout=30)
        try:
            c.sql(f"INSERT INTO {table} VALUES (1)")
            txn = await client.recv_txn(20)
            assert txn.ids() == [1]
        finally:
            await client.close()

    asyncio.run(main())


def flood(c, idle_count, slow_count, cap, name="flood"):
    table, slot = f"{name}_t", f"{name}_slot"
    c.sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    c.sql("SELECT * FROM cdc_init(%s)", (slot,))
    pid = server_pid(c)
    log_before = c.log_size()
    # slow_count slow senders, bodies and headers alternating
    slow = [(SlowBody if i % 2 == 0 else SlowHeaders)(c.ws_port) for i in range(slow_count)]
    for t in slow:
        t.start()
    idle = open_idle(c.ws_port, idle_count)
    all_socks = [s for s, _ in idle] + [t.sock for t in slow]
    try:
        # Beyond the cap: a 503 with a JSON body, promptly, then EOF.
        refused, still_open = split_refused(idle, idle_count + slow_count - cap)
        assert len(refused) == idle_count + slow_count - cap, (len(refused), len(still_open))
        assert len(still_open) == cap - slow_count
        for _, data, delay in refused:
            check_refusal(data)
        slowest = max(d for _, _, d in refused)
        assert slowest < 8, f"a refusal took {slowest:.1f} s"

        # Accepted idle connections: a 408 and EOF about REQUEST_DEADLINE after connecting.
        for s, t in still_open:
            data = read_until_eof(s, t + REQUEST_DEADLINE + 20)
            assert data is not None, "an idle connection was still open 30 s after it connected"
            waited = time.monotonic() - t
            assert waited >= REQUEST_DEADLINE - 1, f"an idle connection was closed after {waited:.1f} s"
            status_line, _, body = parse_response(data)
            assert status_line == "HTTP/1.1 408 Request Timeout", data
            assert "within 10 s" in json.loads(body)["error"], data
        # Slow bodies and headers: closed though they keep sending.
        for t in slow:
            data = read_until_eof(t.sock, t.connected_at + REQUEST_DEADLINE + 20)
            assert data is not None, f"a {type(t).__name__} was still being read 30 s after it began"
            assert time.monotonic() - t.connected_at >= REQUEST_DEADLINE - 1
            assert t.sent < 10, t.sent
            if data:  # the reply may be lost to a reset caused by our own late bytes
                assert parse_response(data)[0] == "HTTP/1.1 408 Request Timeout", data

        # The server survived, its log stayed small, and it serves again.
        assert server_pid(c) == pid
        grown = c.log_size() - log_before
        assert grown < 64 * 1024, f"the log grew by {grown} bytes during the flood"
        # Refusals and timeouts are logged, rate limited, with counts that add up.
        wait_for(lambda: logged_count(c, log_before, "refused a connection") == len(refused), 25,
                 what=f"{len(refused)} refusals counted in the log")
        wait_for(lambda: logged_count(c, log_before, "request was not complete within 10 s") == cap, 25,
                 what=f"{cap} request timeouts counted in the log")
        stream_one(c, slot, table)
        assert server_pid(c) == pid
    finally:
        for t in slow:
            t.halt.set()
        close_all(all_socks)
        c.drop_slot_quietly(slot)


def test_flood_small_cap(own_cluster):
    c = own_cluster(["pgcdcws.max_connections = 100"])
    assert c.show_fresh("pgcdcws.max_connections") == "100"
    flood(c, idle_count=1100, slow_count=4, cap=100)
    # a second flood is handled the same way
    flood(c, idle_count=300, slow_count=2, cap=100, name="flood2")


def test_flood_default_cap(own_cluster):
    c = own_cluster()
    assert c.show_fresh("pgcdcws.max_connections") == "1000"
    flood(c, idle_count=1100, slow_count=3, cap=1000)


def test_cap_follows_open_file_limit(own_cluster):
    """The server raises its soft open-file limit to the hard one, and lowers
    max_connections to what the hard limit allows (logged once)."""
    c = own_cluster(nofile=(128, 400))
    pid = server_pid(c)
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    assert line.split()[3:5] == ["400", "400"], line
    warnings = [x for x in c.log().splitlines() if "pgcdcws.max_connections lowered from 1000 to" in x]
    assert len(warnings) == 1, warnings
    cap = int(warnings[0].split("lowered from 1000 to ")[1].split(":")[0])
    assert 100 < cap < 400 - 64, warnings
    socks = open_idle(c.ws_port, cap + 50)
    try:
        refused, still_open = split_refused(socks, 50)
        assert len(refused) == 50 and len(still_open) == cap
        for _, data, _ in refused:
            check_refusal(data)
        assert server_pid(c) == pid
    finally:
        close_all(s for s, _ in socks)


# ------------------------------------------------------------ close 1001 at restart
def test_restart_fast_sends_1001_to_every_client(own_cluster):
    """Streams busy with a writer's transactions: every client gets 1001, never 1006."""
    c = own_cluster()
    slots = [f"rs_{i}" for i in range(5)]
    rounds = int(os.environ.get("PGCDCWS_RESTART_ROUNDS", "5"))
    for s in slots:
        c.sql("SELECT * FROM cdc_init(%s)", (s,))
    try:
        for round_ in range(rounds):
            table = f"rs_t{round_}"
            c.sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
            writer = Writer(c, table, 10 ** 6, pace=0.002)

            async def main():
                clients = [await StreamClient.open_retry(c.ws_port, s, timeout=60) for s in slots]
                writer.start()
                for client in clients:
                    await client.recv_txn(20)
                loop = asyncio.get_running_loop()
                restart = loop.run_in_executor(None, c.restart, "fast")
                results = await asyncio.gather(*(cl.wait_closed_code(60) for cl in clients))
                await restart
                return [(code, reason) for code, reason, _ in results]

            try:
                codes = asyncio.run(main())
            finally:
                writer.stop()
                writer.join()
            # The reason is "server shutting down"; on a loaded machine a decoder's exit may be
            # seen well before the server's own signal (documented in PROTOCOL.md).
            assert all(code == 1001 and reason in ("server shutting down", "decoder terminated by an administrator")
                       for code, reason in codes), (round_, codes)
    finally:
        for s in slots:
            c.drop_slot_quietly(s)


# ------------------------------------------------- bytes after a request, long names
def exchange(port, data, timeout=15):
    with socket.create_connection(("localhost", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = read_until_eof(sock, time.monotonic() + timeout)
    assert got is not None, f"no EOF after {timeout} s"
    return got


def test_trailing_bytes_and_long_slot_name(own_cluster):
    c = own_cluster()
    c.sql("CREATE TABLE tb_t (id int PRIMARY KEY)")
    c.sql("INSERT INTO tb_t VALUES (7)")
    c.sql("SELECT * FROM cdc_init('tb_slot')")
    port = c.ws_port
    try:
        body = json.dumps({"slotName": "tb_slot", "table": "tb_t"}).encode()
        post = (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        bad = json.dumps({"slotName": "tb_no_such_slot", "table": "tb_t"}).encode()
        post_bad = (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(bad)}\r\n\r\n"
                    ).encode() + bad
        get = b"GET /v1/lr/stream?slotName=tb_slot HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for trailer in (b"", b"\r\n", b"\r\n\r\n", get, post):
            status_line, headers, rest = parse_response(exchange(port, post + trailer))
            assert status_line == "HTTP/1.1 200 OK", (trailer, status_line, rest)
            # one answer only (connection: close), the rows of the first request
            assert headers["connection"] == "close"
            assert json.loads(rest) == [{"id": 7}], (trailer, rest)

            status_line, headers, rest = parse_response(exchange(port, post_bad + trailer))
            assert status_line == "HTTP/1.1 404 Not Found", (trailer, status_line, rest)
            assert int(headers["content-length"]) == len(rest), (trailer, rest)
            assert "tb_no_such_slot" in json.loads(rest)["error"]

        # a request without a body, then more bytes: the first is answered
        for trailer in (b"\r\n", get):
            status_line, headers, rest = parse_response(exchange(port, get + trailer))
            assert status_line.startswith("HTTP/1.1 4"), (trailer, status_line)
            assert int(headers["content-length"]) == len(rest), (trailer, rest)
            assert json.loads(rest)["error"]

        # slotName too long, at and around the length that used to say "missing" (a 512-byte buffer)
        for n in (64, 200, 509, 510, 550, 600, 1500):
            r = http_request(port, f"/v1/lr/stream?slotName={'a' * n}")
            assert r.status == 400, (n, r)
            assert r.json()["error"] == "invalid slotName: slot name is longer than 63 characters", (n, r)
        r = http_request(port, f"/v1/lr/stream?x={'b' * 700}&slotName=tb_slot_missing")
        assert r.status == 404, r
        r = http_request(port, f"/v1/lr/stream?x={'b' * 700}")
        assert r.status == 400 and "missing" in r.json()["error"], r
    finally:
        c.drop_slot_quietly("tb_slot")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_trailing_bytes_while_queued_cost_no_cpu(own_cluster):
    """A request with a stray CRLF that waits its turn behind a long read does not make the
    server spin, and is answered once its turn comes."""
    c = own_cluster()
    c.sql("CREATE TABLE tq_t (id int PRIMARY KEY, w text)")
    c.sql("INSERT INTO tq_t SELECT g, repeat('x', 2000) FROM generate_series(1, 10000) g")  # a 20 MB reply
    c.sql("SELECT * FROM cdc_init('tq_slot')")
    port = c.ws_port
    pid = server_pid(c)
    try:
        def request(body, trailer=b""):
            body = json.dumps(body).encode()
            return (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
                    ).encode() + body + trailer

        # A big read whose client does not read: the slot's worker stays busy with it.
        hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        hog.connect(("127.0.0.1", port))
        hog.sendall(request({"slotName": "tq_slot", "table": "tq_t", "limit": 10000}))
        wait_for(lambda: c.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot' "
                               "AND query LIKE 'reading tq_t %%'")[0][0] == 1, 20, what="the big read to start")
        with socket.create_connection(("localhost", port), timeout=30) as sock:
            sock.sendall(request({"slotName": "tq_slot", "table": "tq_t", "limit": 2,
                                  "order_by": {"column": "id"}}, b"\r\n"))
            time.sleep(0.5)  # let the server see the trailing bytes
            before, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(3)  # the measurement window (not an assertion wait)
            used = cpu_seconds(pid) - before
            assert used < 0.5 * (time.monotonic() - t0), f"the server used {used:.2f} s of CPU while idle"
            hog.close()  # the big read is abandoned: the queued request's turn
            got = read_until_eof(sock, time.monotonic() + 30)
        assert got is not None
        status_line, _, rest = parse_response(got)
        assert status_line == "HTTP/1.1 200 OK", got[:300]
        assert [r["id"] for r in json.loads(rest)] == [1, 2]
    finally:
        c.drop_slot_quietly("tq_slot")
