"""Client-side helpers for the pgcdcws integration tests.

The WebSocket client is the `websockets` library (asyncio), an independent, widely used
implementation of RFC 6455.  Plain HTTP refusals are read with a raw socket so that the
exact status line, headers and body can be checked.
"""

import asyncio
import base64
import decimal
import hashlib
import json
import re
import socket
import struct
import threading
import time
import urllib.parse

import psycopg2
import websockets
import websockets.exceptions

STREAM_PATH = "/v1/lr/stream"


# --------------------------------------------------------------------------- LSNs
def lsn_int(lsn):
    """'16/B374D848' -> integer."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_str(value):
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# --------------------------------------------------------------------------- JSON
def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name} in frame")


def loads(raw):
    """Parse a frame strictly: numbers keep their exact digits (Decimal / int), and the
    non-standard NaN/Infinity literals that Python would otherwise accept are errors."""
    return json.loads(raw, parse_float=decimal.Decimal, parse_int=int, parse_constant=_reject_constant)


# ------------------------------------------------------------------------ frames
class Txn:
    """One transaction reassembled from consecutive frames with the same xid."""

    def __init__(self, frames, raws):
        self.frames = frames
        self.raws = raws
        self.xid = frames[0]["xid"]
        self.timestamp = frames[0].get("timestamp")
        self.nextlsn = frames[-1]["nextlsn"]
        self.changes = [c for f in frames for c in f["change"]]

    def ids(self, column="id"):
        """Values of `column` of the insert changes."""
        out = []
        for c in self.changes:
            if c["kind"] == "insert":
                out.append(c["columnvalues"][c["columnnames"].index(column)])
        return out

    def __repr__(self):
        return f"Txn(xid={self.xid}, nextlsn={self.nextlsn}, frames={len(self.frames)}, changes={len(self.changes)})"


class ProtocolError(AssertionError):
    pass


def stream_uri(port, slot, query=None):
    """The stream URL of `slot`; `query` (already URL-encoded, e.g. "publication=a,b") is
    appended to the query string."""
    uri = f"ws://localhost:{port}{STREAM_PATH}?slotName={urllib.parse.quote(slot, safe='')}"
    return uri + "&" + query if query else uri


class StreamClient:
    """A pgcdcws stream consumer over `websockets`."""

    def __init__(self, ws, slot):
        self.ws = ws
        self.slot = slot
        self.errors = []          # {"error": ...} frames seen by recv_txn
        self.last_nextlsn = None  # to check that nextlsn strictly increases

    @classmethod
    async def open(cls, port, slot, timeout=10, max_queue=32, query=None):
        """max_queue: messages the library reads ahead into its queue (websockets' default 32);
        query: more URL parameters (see stream_uri)."""
        ws = await websockets.connect(stream_uri(port, slot, query), max_size=None, ping_interval=None,
                                      open_timeout=timeout, close_timeout=2, max_queue=max_queue)
        return cls(ws, slot)

    @classmethod
    async def open_retry(cls, port, slot, timeout=30, max_queue=32, query=None):
        """Connect, retrying while the server is not up yet or the slot is still held by a
        previous consumer (409) / no worker is free yet (503)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await cls.open(port, slot, timeout=max(1.0, deadline - time.monotonic()),
                                      max_queue=max_queue, query=query)
            except websockets.exceptions.InvalidStatusCode as e:
                if e.status_code not in (409, 503) or time.monotonic() > deadline:
                    raise
            except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                    websockets.exceptions.ConnectionClosed):
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def recv_raw(self, timeout=10):
        msg = await asyncio.wait_for(self.ws.recv(), timeout)
        if not isinstance(msg, str):
            raise ProtocolError(f"expected a text message, got binary {msg[:60]!r}")
        return msg

    async def recv_frame(self, timeout=10):
        """(parsed, raw) of the next message."""
        raw = await self.recv_raw(timeout)
        return loads(raw), raw

    async def recv_txn(self, timeout=10):
        """The next complete transaction.  `timeout` bounds the whole transaction.
        Error frames are collected in self.errors (and are a test failure unless expected).
        Heartbeats (an idle stream's {"heartbeat": true, "lsn": ...}) are skipped."""
        deadline = time.monotonic() + timeout
        frames, raws = [], []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(f"transaction incomplete after {timeout}s: {len(frames)} frames")
            obj, raw = await self.recv_frame(left)
            if set(obj) == {"heartbeat", "lsn"} and not frames:
                continue
            if "error" in obj and "xid" not in obj:
                self.errors.append(obj)
                raise ProtocolError(f"unexpected error frame: {raw}")
            for key in ("xid", "timestamp", "change"):
                if key not in obj:
                    raise ProtocolError(f"frame without {key!r}: {raw[:300]}")
            if frames and obj["xid"] != frames[0]["xid"]:
                raise ProtocolError(f"frame of xid {obj['xid']} interleaved into transaction "
                                    f"{frames[0]['xid']} (previous frame had no nextlsn)")
            frames.append(obj)
            raws.append(raw)
            if "nextlsn" in obj:
                txn = Txn(frames, raws)
                if self.last_nextlsn is not None and lsn_int(txn.nextlsn) <= lsn_int(self.last_nextlsn):
                    raise ProtocolError(f"nextlsn {txn.nextlsn} does not increase (previous "
                                        f"{self.last_nextlsn})")
                self.last_nextlsn = txn.nextlsn
                return txn

    async def recv_txns(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(n):
            out.append(await self.recv_txn(max(0.1, deadline - time.monotonic())))
        return out

    async def ack(self, lsn):
        await self.ws.send(json.dumps({"lsn": lsn}))

    async def send(self, data):
        await self.ws.send(data)

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:  # noqa: BLE001
            pass

    def abort(self):
        """Kill the TCP connection without a WebSocket close (RST)."""
        transport = self.ws.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def wait_closed_code(self, timeout=10):
        """Read until the server closes; return (close code, reason, frames received)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout}s")
            try:
                got.append(await asyncio.wait_for(self.ws.recv(), left))
            except websockets.exceptions.ConnectionClosed as e:
                return e.code, e.reason, got


async def expect_http_refusal(port, slot):
    """Try to open a stream; return the HTTP status of the refusal."""
    try:
        ws = await websockets.connect(stream_uri(port, slot), max_size=None, ping_interval=None,
                                      open_timeout=10)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    raise AssertionError(f"stream for {slot!r} was accepted, expected an HTTP refusal")


async def apoll(cond, timeout, interval=0.05, what="condition"):
    """Async version of conftest.wait_for: poll a (quick, synchronous) cond() while
    letting the event loop run (so WebSocket pings keep being answered)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise AssertionError(msg)
        await asyncio.sleep(interval)


# --------------------------------------------------------------------- raw HTTP
class HttpResponse:
    def __init__(self, status_line, headers, body, rest=b""):
        self.status_line = status_line
        self.headers = headers
        self.body = body
        self.rest = rest
        parts = status_line.split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1])

    def json(self):
        return loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"HttpResponse({self.status_line!r}, {self.headers!r}, {self.body[:200]!r})"


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = base64.b64encode(hashlib.sha1((WS_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                             .digest()).decode()


def _read_head(sock, deadline):
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if time.monotonic() > deadline:
            break
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"incomplete HTTP response head: {buf!r}")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


def http_request(port, target, method="GET", upgrade=True, timeout=10, extra_headers=()):
    """Send one HTTP/1.1 request (with WebSocket upgrade headers unless upgrade=False) on a
    raw socket and read the complete response (until content-length, or EOF)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("localhost", port), timeout=timeout) as sock:
        req = [f"{method} {target} HTTP/1.1", f"Host: localhost:{port}"]
        if upgrade:
            req += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}",
                    "Sec-WebSocket-Version: 13"]
        req += list(extra_headers)
        sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        status_line, headers, body = _read_head(sock, deadline)
        if int(status_line.split(" ")[1]) == 101:
            return HttpResponse(status_line, headers, b"", body)
        if "content-length" in headers:
            want = int(headers["content-length"])
            while len(body) < want and time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        else:
            while time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        return HttpResponse(status_line, headers, body)


def raw_ws_handshake(port, slot, timeout=10):
    """Open a WebSocket by hand on a raw socket; return (socket, response)."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection(("localhost", port), timeout=timeout)
    req = [f"GET {STREAM_PATH}?slotName={slot} HTTP/1.1", f"Host: localhost:{port}",
           "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}",
           "Sec-WebSocket-Version: 13"]
    sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
    status_line, headers, rest = _read_head(sock, deadline)
    return sock, HttpResponse(status_line, headers, b"", rest)


def parse_ws_frames(data):
    """Parse server->client (unmasked) WebSocket frames; return [(opcode, payload)] and
    the number of trailing bytes that did not form a complete frame."""
    out = []
    i = 0
    while i + 2 <= len(data):
        b0, b1 = data[i], data[i + 1]
        opcode = b0 & 0x0F
        ln = b1 & 0x7F
        j = i + 2
        if ln == 126:
            if j + 2 > len(data):
                break
            ln = struct.unpack(">H", data[j:j + 2])[0]
            j += 2
        elif ln == 127:
            if j + 8 > len(data):
                break
            ln = struct.unpack(">Q", data[j:j + 8])[0]
            j += 8
        if b1 & 0x80:
            j += 4
        if j + ln > len(data):
            break
        out.append((opcode, data[j:j + ln]))
        i = j + ln
    return out, len(data) - i


# ----------------------------------------------------------------------- writer
class Writer(threading.Thread):
    """Inserts ids 1..n into `table`, each in its own transaction, surviving cluster
    restarts (it reconnects and continues; ON CONFLICT makes a retry of a commit whose
    outcome was unknown harmless).  The ids actually written are read from the table."""

    def __init__(self, cluster, table, n, pace=0.005):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.table = table
        self.n = n
        self.pace = pace
        self.done_upto = 0
        self.error = None
        self.reconnects = 0
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()

    def run(self):
        conn = None
        i = 1
        deadline_reconnect = None
        try:
            while i <= self.n and not self._halt.is_set():
                try:
                    if conn is None:
                        conn = self.cluster.connect()
                    with conn.cursor() as cur:
                        cur.execute(f"INSERT INTO {self.table}(id) VALUES (%s) ON CONFLICT DO NOTHING", (i,))
                    self.done_upto = i
                    i += 1
                    deadline_reconnect = None
                    if self.pace:
                        time.sleep(self.pace)
                except psycopg2.Error:
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001
                            pass
                        conn = None
                    self.reconnects += 1
                    if deadline_reconnect is None:
                        deadline_reconnect = time.monotonic() + 120
                    if time.monotonic() > deadline_reconnect:
                        raise
                    time.sleep(0.1)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            if conn is not None:
                conn.close()


# ------------------------------------------------------------------ RSS sampler
def rss_anon_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class RssSampler(threading.Thread):
    """Every `interval` seconds, sample RssAnon of every process whose backend_type starts
    with 'pgcdcws' (the pid list is refreshed from pg_stat_activity every second)."""

    def __init__(self, cluster, interval=0.1):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.first = {}   # pid -> first RssAnon sample (kB)
        self.peak = {}    # pid -> highest RssAnon sample (kB)
        self.types = {}   # pid -> backend_type
        self.samples = 0
        self.error = None
        self._halt = threading.Event()

    def _refresh(self, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'pgcdcws%%'")
            for pid, bt in cur.fetchall():
                self.types.setdefault(pid, bt)

    def run(self):
        try:
            conn = self.cluster.connect()
            try:
                last_refresh = 0.0
                while not self._halt.is_set():
                    now = time.monotonic()
                    if now - last_refresh >= 1.0:
                        self._refresh(conn)
                        last_refresh = now
                    for pid in list(self.types):
                        v = rss_anon_kb(pid)
                        if v is None:
                            continue
                        self.first.setdefault(pid, v)
                        self.peak[pid] = max(self.peak.get(pid, 0), v)
                    self.samples += 1
                    self._halt.wait(self.interval)
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            self.error = e

    def prime(self):
        """Take one sample now (baseline) for the currently known processes."""
        conn = self.cluster.connect()
        try:
            self._refresh(conn)
        finally:
            conn.close()
        for pid in list(self.types):
            v = rss_anon_kb(pid)
            if v is not None:
                self.first.setdefault(pid, v)
                self.peak[pid] = max(self.peak.get(pid, 0), v)

    def stop(self):
        self._halt.set()
        self.join(10)

    def growth_kb(self):
        return {pid: self.peak[pid] - self.first[pid] for pid in self.peak}


async def wait_confirmed(cluster, slot, lsn, timeout=1.5, below=None):
    """Poll until the slot's confirmed_flush_lsn reaches `lsn` (an ack is confirmed "within a
    second").  It may lie beyond `lsn`: the server moves a fully acknowledged slot past empty
    transactions by itself (e.g. an autovacuum's catalog updates), but never up to a
    transaction that was sent and not acknowledged: pass that one's nextlsn as `below`."""
    await apoll(lambda: lsn_int(cluster.confirmed_lsn(slot)) >= lsn_int(lsn), timeout,
                what=f"confirmed_flush_lsn of {slot} to reach {lsn} (now {cluster.confirmed_lsn(slot)})")
    c = cluster.confirmed_lsn(slot)
    if below is not None:
        assert lsn_int(c) < lsn_int(below), \
            f"{slot}: confirmed_flush_lsn {c} reached unacknowledged transaction ending at {below}"
    return c


# ------------------------------------------------------------- broadcast (/ws)
WS_PATH = "/ws"
LSN_PATTERN = r"[0-9A-F]{1,8}/[0-9A-F]{1,8}"


def ws_target(query=None, since=None):
    """The request target of GET /ws: `query` URL-encoded as a whole, as encodeURIComponent
    does (so a %3A inside a value travels as %253A), and `since` an LSN 'X/Y'."""
    params = []
    if query is not None:
        params.append("query=" + urllib.parse.quote(query, safe=""))
    if since is not None:
        params.append("since=" + urllib.parse.quote(since, safe="/"))
    return WS_PATH + ("?" + "&".join(params) if params else "")


def row_of(frame):
    """The new row of a change frame as {column: value}."""
    return dict(zip(frame["columnnames"], frame["columnvalues"]))


def oldkeys_of(frame):
    """The old key (or old row under REPLICA IDENTITY FULL) of a change frame as a dict."""
    ok = frame["oldkeys"]
    return dict(zip(ok["keynames"], ok["keyvalues"]))


def matched_of(frame):
    """{subscription id: "new"|"old"|"both"} of an update frame ("matched" is parallel to
    "subscriptions")."""
    assert len(frame["matched"]) == len(frame["subscriptions"]), frame
    return dict(zip(frame["subscriptions"], frame["matched"]))


def check_frame(frame):
    """The invariants every /ws frame keeps (docs/PROTOCOL.md "Frames on a /ws socket")."""
    assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
    t = frame["type"]
    if t == "change":
        assert frame["kind"] in ("insert", "update", "delete", "truncate"), frame
        assert isinstance(frame["xid"], int) and frame["xid"] > 0, frame
        assert re.fullmatch(LSN_PATTERN, frame["lsn"]), frame
        subs = frame["subscriptions"]
        assert isinstance(subs, list) and subs and len(set(subs)) == len(subs), frame
        if frame["kind"] == "update":
            assert all(m in ("new", "old", "both") for m in frame["matched"]), frame
            assert len(frame["matched"]) == len(subs), frame
        else:
            assert "matched" not in frame, frame
    elif t in ("subscribed",):
        assert re.fullmatch(LSN_PATTERN, frame["lsn"]), frame
    elif t == "gap":
        assert re.fullmatch(LSN_PATTERN, frame["since"]) and re.fullmatch(LSN_PATTERN, frame["oldest"]), frame
    elif t == "error":
        assert "id" in frame and isinstance(frame["error"], str) and frame["error"], frame
    elif t == "unsubscribed":
        assert isinstance(frame["id"], str), frame
    else:
        raise ProtocolError(f"unknown frame type: {frame!r}")
    return frame


class BroadcastClient:
    """A /ws client over `websockets`. Every frame received is kept (parsed: `frames`,
    text: `raws`), in arrival order, unless `keep` is set to False (long runs); the last
    one's text is `last_raw`."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = []
        self.raws = []
        self.keep = True
        self.last_raw = None

    @classmethod
    async def open(cls, port, query=None, since=None, token=None, timeout=60, max_queue=None,
                   read_limit=1 << 20, host="localhost"):
        """max_queue=None and a large read_limit: the library reads what the server sends as
        soon as it arrives (a reader that keeps up, as far as this process can)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        ws = await websockets.connect(f"ws://{host}:{port}{ws_target(query, since)}", max_size=None,
                                      max_queue=max_queue, read_limit=read_limit, ping_interval=None,
                                      open_timeout=timeout,
                                      close_timeout=2, extra_headers=headers)
        return cls(ws)

    async def recv(self, timeout=60):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if not isinstance(raw, str):
            raise ProtocolError(f"expected a text message, got binary {raw[:60]!r}")
        frame = check_frame(loads(raw))
        self.last_raw = raw
        if self.keep:
            self.frames.append(frame)
            self.raws.append(raw)
        return frame

    async def expect(self, type_, timeout=60, **fields):
        """The next frame, which must be of `type_` and carry `fields` with these values."""
        f = await self.recv(timeout)
        assert f["type"] == type_ and all(f.get(k) == v for k, v in fields.items()), \
            f"expected a {type_!r} frame with {fields}, got {f!r}"
        return f

    async def subscribed(self, id="query", timeout=90):
        """The next frame must be the `subscribed` frame of `id`. The first subscription of
        a cluster waits for the broadcast decoder to start and create its slot: generous."""
        return await self.expect("subscribed", timeout, id=id)

    async def send_json(self, obj):
        await self.ws.send(json.dumps(obj))

    async def subscribe(self, query, id, since=None, timeout=90):
        """Sends a subscribe message and returns the `subscribed` frame that answers it."""
        msg = {"subscribe": query, "id": id}
        if since is not None:
            msg["since"] = since
        await self.send_json(msg)
        return await self.subscribed(id, timeout)

    async def subscribe_error(self, query, id, timeout=60):
        """Sends a subscribe message that must be refused; returns the error text."""
        await self.send_json({"subscribe": query, "id": id})
        f = await self.expect("error", timeout, id=id)
        return f["error"]

    async def unsubscribe(self, id, timeout=60):
        await self.send_json({"unsubscribe": id})
        return await self.expect("unsubscribed", timeout, id=id)

    async def changes(self, n, timeout=60):
        """The next n frames, which must all be change frames."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {len(out)} of {n} changes after {timeout}s: last {out[-3:]!r}")
            try:
                f = await self.recv(left)
            except asyncio.TimeoutError:
                raise AssertionError(f"only {len(out)} of {n} changes after {timeout}s: last {out[-3:]!r}") \
                    from None
            assert f["type"] == "change", f"expected change {len(out) + 1} of {n}, got {f!r}"
            out.append(f)
        return out

    async def change(self, timeout=60):
        return (await self.changes(1, timeout))[0]

    async def collect_until(self, done, timeout=60, what="frames"):
        """Frames until done(frames received by this call) is true."""
        deadline = time.monotonic() + timeout
        got = []
        while not done(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {len(got)} frames, "
                                     f"last {got[-3:]!r}")
            try:
                got.append(await self.recv(left))
            except asyncio.TimeoutError:
                continue
        return got

    async def closed(self, timeout=60):
        """Reads until the server closes; (close code, reason, frames read meanwhile)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout}s ({len(got)} frames read)")
            try:
                got.append(await self.recv(left))
            except websockets.exceptions.ConnectionClosed as e:
                return e.code, e.reason, got
            except asyncio.TimeoutError:
                continue

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:  # noqa: BLE001
            pass


async def open_subscribed(port, query, since=None, token=None, timeout=90):
    """A /ws client with its URL subscription live (its `subscribed` frame read)."""
    c = await BroadcastClient.open(port, query=query, since=since, token=token, timeout=timeout)
    try:
        await c.subscribed(timeout=timeout)
    except BaseException:
        await c.close()
        raise
    return c


class StalledWsClient:
    """A /ws client on a raw socket that does the WebSocket handshake by hand, reads up to
    its `subscribed` frame and then reads nothing until drain() is called.

    Its receive buffer is set small before connecting (SO_RCVBUF), so what the kernel holds
    for it is small and known: the server's socket send buffer (at most tcp_wmem[2]) and
    its own queue (pgcdcws.client_queue_size) then fill up. No client library is involved:
    nothing reads ahead behind the test's back."""

    def __init__(self, port, target, rcvbuf=8192, timeout=60, extra_headers=()):
        self.buf = b""
        self.frames = []         # (opcode, payload) of complete frames read so far
        self.eof = False          # True: the server closed the TCP connection; "reset": it reset it
        self.eof_at = None        # time.monotonic() when it did
        self.drain_error = None
        self._thread = None
        deadline = time.monotonic() + timeout
        last = None
        for family, kind, proto, _, addr in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM):
            s = socket.socket(family, kind, proto)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(timeout)
            try:
                s.connect(addr)
            except OSError as e:
                s.close()
                last = e
                continue
            self.sock = s
            break
        else:
            raise last
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        req = [f"GET {target} HTTP/1.1", f"Host: localhost:{port}", "Upgrade: websocket", "Connection: Upgrade",
               f"Sec-WebSocket-Key: {WS_KEY}", "Sec-WebSocket-Version: 13"] + list(extra_headers)
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        status_line, headers, rest = _read_head(self.sock, deadline)
        assert status_line.split(" ")[1] == "101", (status_line, headers, rest)
        assert headers.get("sec-websocket-accept") == WS_ACCEPT, headers
        self.buf = rest

    def _parse(self):
        frames, left = parse_ws_frames(self.buf)
        self.frames += frames
        self.buf = self.buf[len(self.buf) - left:]

    def read_until_subscribed(self, timeout=90):
        """Reads (a little at a time) until the `subscribed` frame; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            self._parse()
            for op, payload in self.frames:
                if op == 1:
                    f = loads(payload.decode())
                    assert f["type"] == "subscribed", f
                    return f
            left = deadline - time.monotonic()
            assert left > 0, f"no subscribed frame after {timeout}s: {self.frames!r} {self.buf[:200]!r}"
            self.sock.settimeout(left)
            chunk = self.sock.recv(512)
            assert chunk, f"connection closed before subscribed: {self.frames!r}"
            self.buf += chunk

    def _drain(self, timeout):
        try:
            deadline = time.monotonic() + timeout
            chunks = [self.buf]
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = self.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    self.eof, self.eof_at = "reset", time.monotonic()
                    break
                if not chunk:
                    self.eof, self.eof_at = True, time.monotonic()
                    break
                chunks.append(chunk)
            self.buf = b"".join(chunks)
            self._parse()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.drain_error = e

    def start_drain(self, timeout=60):
        """Starts reading everything, in a thread, until the server closes the TCP connection
        (or `timeout`)."""
        self._thread = threading.Thread(target=self._drain, args=(timeout,), daemon=True)
        self._thread.start()

    def join_drain(self, timeout=180):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stalled client's reader did not finish"
        assert self.drain_error is None, repr(self.drain_error)

    def texts(self):
        """The text frames received, parsed, in order (the subscribed frame included)."""
        return [loads(p.decode()) for op, p in self.frames if op == 1]

    def close_frame(self):
        """(code, reason) of the close frame received, or None."""
        for op, p in self.frames:
            if op == 8:
                code = struct.unpack(">H", p[:2])[0] if len(p) >= 2 else None
                return code, p[2:].decode("utf-8", "replace")
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def token_for(cluster, role, ttl="1 hour"):
    """A pgcdcws token for `role`, minted by cdc_token() in a session of that role."""
    conn = cluster.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT cdc_token(%s::interval)", (ttl,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def commit_end_lsns(cluster, start_lsn):
    """{xid: end LSN of its commit record} for the commits in the WAL from start_lsn, read
    with pg_walinspect (CREATE EXTENSION pg_walinspect first). The end LSN is what a change
    frame's "lsn" and a stream's "nextlsn" carry."""
    rows = cluster.sql("SELECT xid::text::bigint, end_lsn::text FROM pg_get_wal_records_info_till_end_of_wal(%s) "
                       "WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'", (start_lsn,))
    return dict(rows)
