"""Browsers (issue 7): Host and Origin checks, CORS, in-band refusals, and a headless Chromium.

1. Trust mode serves only requests that name a loopback Host (DNS rebinding); HTTP/1.0
   without Host is refused.
2. Origin: listed origins pass and get CORS headers on every reply (snapshot data, JSON
   errors); others get a plain 403 without them; "*" matches nothing in trust mode
   (and the server logs a WARNING); "null" is never allowed.
2b. Fetch Metadata: a request without Origin that carries Sec-Fetch-Site other than
   same-origin or none (another site's <img>, link, form GET) gets 403 on every endpoint;
   without Sec-Fetch-* headers (clients that are no browser) it is served.
3. CORS preflight: answered with 204 and the CORS headers, without credentials.
4. In-band refusals: an upgrade from an allowed Origin that is refused after authentication
   completes and closes at once with 4000 + status (4404, 4409, 4400, 4503 for the per-role
   cap); without Origin the same refusal is plain HTTP. The per-role cap applies in trust
   mode (stream: the slot's owner; other requests: pgcdcws.trust_role).
5. Headless Chromium: a page from the allowed origin reads a snapshot with fetch and
   streams with WebSocket; a page from another origin is refused, and its <img> pointed
   at GET /v1/init (no Origin, Sec-Fetch-Site: cross-site) creates no slot.
6. Headless Chromium with pgcdcws.auth = token (a cluster of its own): the page creates a
   slot with POST /v1/init, reads its snapshot (Authorization header), streams
   (access_token in the query) and acks; without a token or with a tampered one it reads
   the 401s and its WebSockets fail (1006). The token never reaches the server log.
"""

import asyncio
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest
import websockets
import websockets.exceptions

from cdcws import StreamClient, lsn_int, stream_uri
from conftest import Cluster, _require_extension, free_port, wait_for
from test_20_token_auth import b64url, token_as

SNAP_PATH = "/v1/snapshot/data"
PAGE_PORT = free_port()
ALLOWED = f"http://127.0.0.1:{PAGE_PORT}"
ORIGIN_REFUSED = "Origin not allowed (see pgcdcws.allowed_origins)"
PAGES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pages")


# ------------------------------------------------------------------------ helpers
class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"Reply({self.status}, {self.headers!r}, {self.body[:300]!r})"


def raw(port, request_head, body=b"", timeout=20):
    """Send request_head (lines without the final blank line) and body on a raw socket to
    127.0.0.1; read the response until EOF (pgcdcws closes after each reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_head.encode() + b"\r\n\r\n" + body)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Reply(int(lines[0].split(" ")[1]), headers, rest)


def post_snapshot(port, body, host=None, origin=None):
    body = json.dumps(body).encode()
    head = [f"POST {SNAP_PATH} HTTP/1.1", f"Host: {host or f'localhost:{port}'}",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if origin is not None:
        head.append(f"Origin: {origin}")
    return raw(port, "\r\n".join(head), body)


def upgrade(port, slot, host=None, origin=None):
    head = [f"GET /v1/lr/stream?slotName={slot} HTTP/1.1", f"Host: {host or f'localhost:{port}'}",
            "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13"]
    if origin is not None:
        head.append(f"Origin: {origin}")
    return raw(port, "\r\n".join(head), timeout=5)


def preflight(port, origin, path=SNAP_PATH):
    head = [f"OPTIONS {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Origin: {origin}",
            "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: authorization, content-type"]
    return raw(port, "\r\n".join(head))


def assert_cors(reply, origin):
    assert reply.headers.get("access-control-allow-origin") == origin, reply
    assert reply.headers.get("vary") == "Origin", reply


def assert_no_cors(reply):
    assert "access-control-allow-origin" not in reply.headers, reply


def assert_refused_origin(reply):
    assert reply.status == 403, reply
    assert reply.json() == {"error": ORIGIN_REFUSED}
    assert_no_cors(reply)


async def in_band_close(port, slot, origin):
    """Open a stream from `origin`; the upgrade must complete and the server close at
    once: return (code, reason)."""
    async with websockets.connect(stream_uri(port, slot), origin=origin, open_timeout=20,
                                  close_timeout=5, ping_interval=None) as ws:
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 20)
    rcvd = closed.value.rcvd
    assert rcvd is not None, "the server closed without a close frame"
    return rcvd.code, rcvd.reason


def set_origins(cluster, value):
    cluster.alter_system("pgcdcws.allowed_origins", value, expect_show=value if value is not None else "")


@pytest.fixture(scope="module")
def origins(cluster):
    """pgcdcws.allowed_origins = ALLOWED for this module; reset at its end. The server
    process reloads on its own schedule: wait until a preflight is answered."""
    set_origins(cluster, ALLOWED)
    wait_for(lambda: preflight(cluster.ws_port, ALLOWED).status == 204, 30, what="allowed_origins reloaded")
    yield cluster.ws_port
    set_origins(cluster, None)


@pytest.fixture
def snap_slot(cluster):
    """A slot with a held snapshot of public.browser_t (rows 1, 2); dropped at the end."""
    cluster.sql("DROP TABLE IF EXISTS browser_t")
    cluster.sql("CREATE TABLE browser_t (id int PRIMARY KEY, name text)")
    cluster.sql("INSERT INTO browser_t VALUES (1, 'one'), (2, 'two')")
    slot = "browser_slot"
    cluster.drop_slot_quietly(slot)
    row = cluster.sql("SELECT slot_name, snapshot_name FROM cdc_init(%s)", (slot,))[0]
    assert row[0] == slot and row[1]
    yield slot
    cluster.drop_slot_quietly(slot)
    cluster.sql("DROP TABLE IF EXISTS browser_t")


# ------------------------------------------------------------------------ 1. Host
def test_trust_mode_serves_only_loopback_hosts(cluster, origins):
    port = origins
    for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost", f"LOCALHOST:{port}",
                 f"127.0.0.2:{port}"]:
        r = post_snapshot(port, {"slotName": "no_such_slot", "table": "t"}, host=host)
        assert r.status == 404, (host, r)  # served: the slot does not exist
    for host in ["evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", f"localhost.evil.example:{port}",
                 f"2130706433:{port}", f"10.1.2.3:{port}", f"0x7f.0.0.1:{port}"]:
        for r in (post_snapshot(port, {"slotName": "no_such_slot", "table": "t"}, host=host),
                  upgrade(port, "no_such_slot", host=host),
                  upgrade(port, "no_such_slot", host=host, origin=ALLOWED)):
            assert r.status == 403, (host, r)
            assert r.json() == {"error": "Host not served: with pgcdcws.auth = trust only localhost, 127.x.x.x "
                                         "and [::1] are"}, r
            assert_no_cors(r)
    # HTTP/1.0 without Host: nothing would stop a rebinding page, so refused.
    r = raw(port, f"GET /v1/lr/stream?slotName=x HTTP/1.0")
    assert r.status == 403, r
    assert "Host header is required" in r.json()["error"]


# ------------------------------------------------------------------------ 2. Origin
def test_origin_refused_or_allowed_over_http(cluster, origins):
    port = origins
    for origin in [f"http://localhost:{PAGE_PORT}", f"http://127.0.0.1:{PAGE_PORT + 1}",
                   f"https://127.0.0.1:{PAGE_PORT}", "http://evil.example", "null"]:
        assert_refused_origin(post_snapshot(port, {"slotName": "no_such_slot", "table": "t"}, origin=origin))
        assert_refused_origin(upgrade(port, "no_such_slot", origin=origin))
        assert_refused_origin(preflight(port, origin))
    # Allowed: the error reply carries the CORS headers (a page can read it).
    r = post_snapshot(port, {"slotName": "no_such_slot", "table": "t"}, origin=ALLOWED)
    assert r.status == 404, r
    assert_cors(r, ALLOWED)
    assert "no_such_slot" in r.json()["error"]
    # Every JSON error, including the server's own (no such endpoint, bad body).
    r = raw(port, f"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {ALLOWED}")
    assert r.status == 404, r
    assert_cors(r, ALLOWED)
    r = raw(port, f"POST {SNAP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {ALLOWED}\r\n"
                  f"Content-Length: 3", b"{x}")
    assert r.status == 400, r
    assert_cors(r, ALLOWED)
    # Without Origin (not a page): not affected, and no CORS headers.
    r = post_snapshot(port, {"slotName": "no_such_slot", "table": "t"})
    assert r.status == 404, r
    assert_no_cors(r)


def test_star_is_ignored_in_trust_mode(cluster, origins):
    port = origins
    offset = cluster.log_size()
    set_origins(cluster, "*")
    try:
        wait_for(lambda: "pgcdcws.allowed_origins = '*' is ignored with pgcdcws.auth = trust"
                 in cluster.log_since(offset), 30, what="the WARNING about '*'")
        assert "WARNING:  pgcdcws: pgcdcws.allowed_origins = '*' is ignored" in cluster.log_since(offset)
        for origin in [ALLOWED, "http://evil.example"]:
            assert_refused_origin(post_snapshot(port, {"slotName": "no_such_slot", "table": "t"}, origin=origin))
            assert_refused_origin(upgrade(port, "no_such_slot", origin=origin))
        r = post_snapshot(port, {"slotName": "no_such_slot", "table": "t"})
        assert r.status == 404, r
    finally:
        set_origins(cluster, ALLOWED)
        wait_for(lambda: preflight(port, ALLOWED).status == 204, 30, what="allowed_origins reloaded")


# ------------------------------------------------------------------------ 2b. Fetch Metadata
# Another site's <img>, <script>, form GET or link sends no Origin, but current browsers
# send Sec-Fetch-Site (to https and loopback URLs). Without an allowed Origin it must say
# same-origin or none (typed by the user); otherwise 403 on every endpoint, so a page
# cannot make GET /v1/init create slots. Clients that send no Sec-Fetch-* are not touched.
FETCH_REFUSED = ("request from another site's page refused: it carries Sec-Fetch-Site but no allowed "
                 "Origin (see pgcdcws.allowed_origins)")


def pgcdcws_slots(cluster):
    return {r[0] for r in cluster.sql("SELECT slot_name FROM pg_replication_slots WHERE plugin = 'pgcdcws'")}


def get_init(port, *extra):
    return raw(port, "\r\n".join([f"GET /v1/init HTTP/1.1", f"Host: localhost:{port}", *extra]), timeout=60)


def test_fetch_metadata_without_allowed_origin_is_refused(cluster, origins):
    before = pgcdcws_slots(cluster)
    for extra in (["Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors", "Sec-Fetch-Dest: image"],
                  ["Sec-Fetch-Site: same-site", "Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: document",
                   "Sec-Fetch-User: ?1"],
                  ["Sec-Fetch-Mode: no-cors", "Sec-Fetch-Dest: script"]):  # no Site: counts as cross-site
        r = get_init(origins, *extra, "Referer: http://evil.example/", "Accept: image/avif,image/webp,*/*")
        assert r.status == 403, (extra, r)
        assert r.json() == {"error": FETCH_REFUSED}
        assert_no_cors(r)
    # The same on the other endpoints: a snapshot read and a stream upgrade.
    body = json.dumps({"slotName": "whatever", "table": "public.t"}).encode()
    r = raw(origins, "\r\n".join([f"POST {SNAP_PATH} HTTP/1.1", f"Host: localhost:{origins}",
                                   "Content-Type: text/plain", f"Content-Length: {len(body)}",
                                   "Sec-Fetch-Site: cross-site"]), body)
    assert r.status == 403 and r.json() == {"error": FETCH_REFUSED}, r
    r = raw(origins, "\r\n".join(["GET /v1/lr/stream?slotName=whatever HTTP/1.1", f"Host: localhost:{origins}",
                                   "Upgrade: websocket", "Connection: Upgrade",
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                                   "Sec-Fetch-Site: same-site", "Sec-Fetch-Mode: websocket"]), timeout=5)
    assert r.status == 403 and r.json() == {"error": FETCH_REFUSED}, r
    # An Origin that is not allowed is refused for that, whatever Sec-Fetch-Site claims.
    assert_refused_origin(get_init(origins, "Origin: http://evil.example", "Sec-Fetch-Site: same-origin"))
    assert pgcdcws_slots(cluster) == before

    # Served: the allowed page's own fetch (cross-site, with its Origin), a URL the user typed
    # (none), and a client that is no browser (pgdeltastream's plain GET).
    created = []
    try:
        for extra, cors in ((["Origin: " + ALLOWED, "Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: cors"], True),
                            (["Sec-Fetch-Site: none", "Sec-Fetch-Mode: navigate", "Sec-Fetch-User: ?1"], False),
                            (["Sec-Fetch-Site: same-origin"], False),
                            ([], False)):
            r = get_init(origins, *extra)
            assert r.status == 200, (extra, r)
            created.append(r.json()["slotName"])
            assert r.json()["slotName"].startswith("cdc_"), r
            if cors:
                assert_cors(r, ALLOWED)
            else:
                assert_no_cors(r)
        assert pgcdcws_slots(cluster) == before | set(created)
    finally:
        for slot in created:
            cluster.drop_slot_quietly(slot)


# ------------------------------------------------------------------------ 3. preflight
def test_preflight(cluster, origins):
    port = origins
    r = preflight(port, ALLOWED)
    assert r.status == 204, r
    assert r.headers == {
        "access-control-allow-origin": ALLOWED,
        "vary": "Origin",
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": "Authorization, Content-Type",
        "access-control-max-age": "600",
        "content-length": "0",
        "cache-control": "no-store",
        "connection": "close",
    }, r
    assert r.body == b""
    # The stream endpoint too (browsers do not preflight WebSockets, but a GET may be).
    assert preflight(port, ALLOWED, "/v1/lr/stream?slotName=x").status == 204
    # No such endpoint: 404, readable by the page.
    r = preflight(port, ALLOWED, "/nowhere")
    assert r.status == 404, r
    assert_cors(r, ALLOWED)
    # OPTIONS that is not a preflight: an ordinary request, which no endpoint accepts.
    r = raw(port, f"OPTIONS {SNAP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {ALLOWED}")
    assert r.status == 405, r
    assert_cors(r, ALLOWED)


# ------------------------------------------------------------------------ snapshot data
def test_snapshot_data_carries_cors_headers(cluster, origins, snap_slot):
    port = origins
    r = post_snapshot(port, {"slotName": snap_slot, "table": "public.browser_t",
                             "order_by": {"column": "id", "order": "asc"}}, origin=ALLOWED)
    assert r.status == 200, r
    assert_cors(r, ALLOWED)
    assert r.headers["content-type"] == "application/json"
    assert r.json() == [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]
    # An error written by the snapshot worker (no such table) carries them too.
    r = post_snapshot(port, {"slotName": snap_slot, "table": "public.no_such_table"}, origin=ALLOWED)
    assert r.status == 404, r
    assert_cors(r, ALLOWED)
    assert "no_such_table" in r.json()["error"]
    # The same reply without Origin: no CORS headers.
    r = post_snapshot(port, {"slotName": snap_slot, "table": "public.browser_t"})
    assert r.status == 200, r
    assert_no_cors(r)
    assert len(r.json()) == 2


# ------------------------------------------------------------------------ 4. in-band refusals
def test_in_band_refusals_with_origin(cluster, origins):
    port = origins

    async def main():
        code, reason = await in_band_close(port, "no_such_slot", ALLOWED)
        assert code == 4404, (code, reason)
        assert "no_such_slot" in reason
        code, reason = await in_band_close(port, "Bad-Name", ALLOWED)
        assert code == 4400, (code, reason)
        assert reason.startswith("invalid slotName"), reason

    asyncio.run(main())
    # Without Origin: plain HTTP refusals, as before.
    assert upgrade(port, "no_such_slot").status == 404
    assert upgrade(port, "Bad-Name").status == 400


def test_in_band_busy_slot(cluster, origins):
    port = origins
    slot = "browser_busy"
    cluster.drop_slot_quietly(slot)
    cluster.sql("SELECT cdc_init(%s)", (slot,))
    cluster.sql("SELECT cdc_snapshot_release(%s)", (slot,))

    async def main():
        client = await StreamClient.open_retry(port, slot)
        try:
            code, reason = await in_band_close(port, slot, ALLOWED)
            assert code == 4409, (code, reason)
            assert reason, "a close reason is given"
            r = upgrade(port, slot)
            assert r.status == 409, r
        finally:
            await client.ws.close()

    try:
        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_in_band_reason_is_cut_at_a_character(cluster, origins):
    """A close reason holds 123 bytes: a long message is cut without splitting UTF-8."""
    port = origins
    slot = "s" * 63  # the longest valid name: the 404 message quotes it and more

    async def main():
        code, reason = await in_band_close(port, slot, ALLOWED)
        assert code == 4404, (code, reason)
        assert 0 < len(reason.encode()) <= 123, reason

    asyncio.run(main())


def test_trust_mode_role_cap_and_in_band_503(cluster, origins):
    """pgcdcws.max_connections_per_role applies in trust mode too: a stream counts for the
    slot's owner, other requests for pgcdcws.trust_role (the bootstrap superuser here). An
    upgrade from an allowed Origin refused by the cap closes in-band with 4503."""
    port = origins
    slot, other_slot = "browser_cap", "browser_cap_other"
    full = ('too many connections for role "postgres" (pgcdcws.max_connections_per_role = 1); '
            'try again later')
    cluster.sql("DROP ROLE IF EXISTS browser_cap_owner")
    cluster.sql("CREATE ROLE browser_cap_owner LOGIN REPLICATION")
    for s in (slot, other_slot):
        cluster.drop_slot_quietly(s)
    cluster.sql("SELECT cdc_init(%s, snapshot => false)", (slot,))
    conn = cluster.connect(user="browser_cap_owner")
    conn.cursor().execute("SELECT cdc_init(%s, snapshot => false)", (other_slot,))
    conn.close()
    cluster.alter_system("pgcdcws.max_connections_per_role", "1", expect_show="1")
    try:
        async def main():
            client = await StreamClient.open_retry(port, slot)
            try:
                # The superuser-owned stream uses postgres' one connection: a snapshot read
                # (trust_role) is refused once the server has the new setting.
                r = wait_for(lambda: (lambda r: r if r.status == 503 else None)(
                    post_snapshot(port, {"slotName": slot, "table": "browser_t"})), 30,
                    what="a 503 beyond pgcdcws.max_connections_per_role")
                assert r.json() == {"error": full}, r
                # An upgrade of a page: in-band 4503; without Origin: the plain 503.
                assert await in_band_close(port, slot, ALLOWED) == (4503, full)
                r = upgrade(port, slot)
                assert r.status == 503 and r.json() == {"error": full}, r
                # Another owner's slot counts for that owner: served.
                other = await StreamClient.open_retry(port, other_slot)
                await other.close()
            finally:
                await client.ws.close()

        asyncio.run(main())
    finally:
        cluster.alter_system("pgcdcws.max_connections_per_role", None, expect_show="100")
        for s in (slot, other_slot):
            cluster.drop_slot_quietly(s)
        cluster.sql("DROP ROLE IF EXISTS browser_cap_owner")


# ------------------------------------------------------------------------ 5. Chromium
CHROMIUM = shutil.which("chromium")


class PageServer:
    """Serves pages/ on 127.0.0.1:port (http.server in a thread)."""

    def __init__(self, port):
        handler = lambda *a, **kw: _QuietHandler(*a, directory=PAGES_DIR, **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Chromium:
    """Headless Chromium showing one URL, inspected over the DevTools protocol."""

    def __init__(self, url):
        assert CHROMIUM, "chromium is not installed (scripts/install-deps.sh installs it)"
        self.tmp = tempfile.mkdtemp(prefix="pgcdcws-chromium-")
        self.debug_port = free_port()
        env = dict(os.environ, HOME=self.tmp, XDG_CONFIG_HOME=self.tmp, XDG_CACHE_HOME=self.tmp)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={os.path.join(self.tmp, 'profile')}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.debug_port}", url],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "stderr.log"), "wb"), env=env,
            start_new_session=True)
        self.url = url
        self.ws_url = wait_for(self._page_ws_url, 90, interval=0.2, what="Chromium's DevTools endpoint")

    def _page_ws_url(self):
        assert self.proc.poll() is None, f"chromium exited: {self.stderr()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.debug_port}/json/list", timeout=5) as r:
            targets = json.loads(r.read())
        for t in targets:
            if t.get("type") == "page" and t.get("url", "").startswith(self.url.split("?")[0]):
                return t["webSocketDebuggerUrl"]
        return None

    def stderr(self):
        with open(os.path.join(self.tmp, "stderr.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def state(self):
        """(document.title, the page's results) read with Runtime.evaluate."""
        async def evaluate():
            async with websockets.connect(self.ws_url, max_size=None, open_timeout=20, ping_interval=None) as ws:
                await ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {
                    "expression": "JSON.stringify([document.title, document.getElementById('out').textContent])",
                    "returnByValue": True}}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if msg.get("id") == 1:
                        return msg
        msg = asyncio.run(evaluate())
        title, out = json.loads(msg["result"]["result"]["value"])
        return title, (json.loads(out) if out else None)

    def wait_title(self, title, timeout=90):
        def reached():
            t, out = self.state()
            return (t, out) if t == title else None
        return wait_for(reached, timeout, interval=0.2, what=f"page title {title!r}")

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


class RecordingProxy:
    """Forwards every connection to 127.0.0.1:port on to pgcdcws and records (request head,
    status line of the reply): proof that a browser's request reached the server, and what
    it carried."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.exchanges = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        with client:
            client.settimeout(30)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        return  # a preconnect that sent nothing
                    head += chunk
                with socket.create_connection(("127.0.0.1", self.target_port), timeout=60) as upstream:
                    upstream.sendall(head)
                    reply = b""
                    while True:
                        chunk = upstream.recv(65536)
                        if not chunk:
                            break
                        reply += chunk
                self.exchanges.append((head.decode("iso-8859-1"), reply.split(b"\r\n", 1)[0].decode("iso-8859-1")))
                client.sendall(reply)
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def page_servers():
    other_port = free_port()
    while other_port == PAGE_PORT:
        other_port = free_port()
    servers = [PageServer(PAGE_PORT), PageServer(other_port)]
    yield other_port
    for s in servers:
        s.close()


def page_url(page_port, ws_port, slot, token=None):
    q = {"server": f"127.0.0.1:{ws_port}", "slot": slot, "table": "public.browser_t"}
    if token:
        q["access_token"] = token
    return f"http://127.0.0.1:{page_port}/browser_page.html?{urllib.parse.urlencode(q)}"


def test_chromium_page_from_allowed_origin(cluster, origins, snap_slot, page_servers):
    browser = Chromium(page_url(PAGE_PORT, origins, snap_slot))
    try:
        _, out = browser.wait_title("streaming")
        # What the page read before its stream opened: the snapshot, and an error it can read.
        assert out["snapshot"]["status"] == 200, out
        assert sorted(out["snapshot"]["body"], key=lambda r: r["id"]) == [
            {"id": 1, "name": "one"}, {"id": 2, "name": "two"}], out
        assert out["snapshot_error"]["status"] == 404, out
        assert "no_such_table" in out["snapshot_error"]["body"]["error"], out
        # The in-band refusal is what lets the page tell "no such slot" from other failures.
        assert out["missing"]["opened"] is True, out
        assert out["missing"]["code"] == 4404, out
        assert "no_such_slot" in out["missing"]["reason"], out
        cluster.sql("INSERT INTO browser_t VALUES (3, 'three')")
        _, out = browser.wait_title("done")
        stream = out["stream"]
        assert stream["opened"] is True and stream["code"] == 1000, out
        change = stream["message"]["change"]
        assert [(c["kind"], c["table"], c["columnvalues"]) for c in change] == [
            ("insert", "browser_t", [3, "three"])], out
    finally:
        browser.close()


def test_chromium_page_from_other_origin_is_refused(cluster, origins, snap_slot, page_servers):
    other_port = page_servers
    browser = Chromium(page_url(other_port, origins, snap_slot))
    try:
        _, out = browser.wait_title("done")
        # fetch: the preflight is refused (403 without CORS headers), so the request never goes out.
        assert out["snapshot"] == {"failed": "TypeError: Failed to fetch"}, out
        assert out["snapshot_error"] == {"failed": "TypeError: Failed to fetch"}, out
        # WebSocket: refused with a plain 403 before the upgrade; the page sees only 1006.
        for key in ("missing", "stream"):
            assert out[key] == {"opened": False, "code": 1006, "reason": ""}, out
    finally:
        browser.close()
    # Nothing was streamed to it: the slot was never taken.
    r = post_snapshot(origins, {"slotName": snap_slot, "table": "public.browser_t"})
    assert r.status == 200 and len(r.json()) == 2, r


def test_chromium_img_from_another_site_creates_no_slot(cluster, origins, page_servers):
    """Another site's page points an <img> at GET /v1/init: Chromium sends it without Origin
    but with Sec-Fetch-Site: cross-site (localhost is a trustworthy URL), and it is refused."""
    other_port = page_servers
    proxy = RecordingProxy(origins)
    before = pgcdcws_slots(cluster)
    target = f"http://localhost:{proxy.port}/v1/init"
    browser = Chromium(f"http://127.0.0.1:{other_port}/img_request.html?" + urllib.parse.urlencode({"target": target}))
    try:
        _, out = browser.wait_title("done")
        assert out == {"img": "error"}, out
        exchanges = wait_for(lambda: [e for e in proxy.exchanges if e[0].startswith("GET /v1/init ")], 30,
                             what="the <img> request through the proxy")
    finally:
        browser.close()
        proxy.close()
    assert len(exchanges) == 1, exchanges
    head, status_line = exchanges[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
               if k}
    assert headers.get("sec-fetch-site") == "cross-site", head
    assert headers.get("sec-fetch-dest") == "image", head
    assert "origin" not in headers, head
    assert status_line == "HTTP/1.1 403 Forbidden", status_line
    assert pgcdcws_slots(cluster) == before


# ------------------------------------------------------------------------ 6. Chromium, token mode
# The whole flow a page does against a server with pgcdcws.auth = token, in a cluster of
# its own (the session cluster stays in trust mode): POST /v1/init and the snapshot read
# with fetch (Authorization header, after a CORS preflight), the stream with WebSocket
# (access_token in the query string: a browser cannot set headers on a WebSocket), an ack.
WEB_ROLE = "web_user"
WEB_SLOT = "web_slot"


@pytest.fixture(scope="module")
def token_cluster():
    c = Cluster(extension=True)
    _require_extension(c)
    try:
        c.init()
        with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
            f.write(f"pgcdcws.auth = token\npgcdcws.allowed_origins = '{ALLOWED}'\n")
        c.start()
        c.sql("CREATE EXTENSION pgcdcws")
        c.sql(f"CREATE ROLE {WEB_ROLE} LOGIN REPLICATION")
        c.sql("CREATE TABLE browser_t (id int PRIMARY KEY, name text)")
        c.sql(f"GRANT SELECT ON browser_t TO {WEB_ROLE}")
        c.sql("INSERT INTO browser_t VALUES (1, 'one'), (2, 'two')")
    except BaseException:
        c.destroy()
        raise
    yield c
    c.destroy()


@pytest.fixture
def web_slot(token_cluster):
    """The name the page asks /v1/init for; whatever slot it made is dropped at the end."""
    yield WEB_SLOT
    token_cluster.drop_slot_quietly(WEB_SLOT)


def assert_token_not_logged(c, token):
    """Issue 7: an access_token is never logged, neither whole nor its signature; where the
    server logs a request target, the parameter's value is REDACTED."""
    log = c.log()
    assert token not in log
    assert token.split(".")[-1] not in log
    assert set(re.findall(r"access_token=([^&\s]*)", log)) <= {"REDACTED"}, log


def init_request(port, origin, token=None, body=b""):
    head = [f"POST /v1/init HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Origin: {origin}",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    return raw(port, "\r\n".join(head), body, timeout=60)


def test_token_mode_replies_to_a_page_carry_cors_headers(token_cluster, web_slot):
    """What the Chromium tests below rely on, on the wire: the 401, the /v1/init 200 (written
    later, from the server's housekeeping, once the snapshot worker has made the slot) and a
    /v1/init refusal carry the CORS headers for an allowed Origin."""
    c = token_cluster
    body = json.dumps({"slotName": web_slot, "snapshot": False}).encode()
    r = init_request(c.ws_port, ALLOWED, body=body)
    assert r.status == 401 and r.json() == {"error": "invalid or missing token"}, r
    assert r.headers.get("www-authenticate") == "Bearer", r
    assert_cors(r, ALLOWED)
    token = token_as(c, WEB_ROLE)
    r = init_request(c.ws_port, ALLOWED, token, body)
    assert r.status == 200 and r.json()["slotName"] == web_slot, r
    assert_cors(r, ALLOWED)
    r = init_request(c.ws_port, ALLOWED, token, body)
    assert r.status == 409 and r.json() == {"error": f'replication slot "{web_slot}" already exists'}, r
    assert_cors(r, ALLOWED)
    # Another origin: refused before authentication, and nothing a page could read.
    assert_refused_origin(init_request(c.ws_port, "http://evil.example", token, body))


def test_token_mode_star_never_allows_null_and_fetch_metadata_applies(token_cluster, web_slot):
    """allowed_origins = '*' (token mode): any origin passes, but "null" (sandboxed frames,
    file: and data: pages, which any site can make) is refused; and another site's request
    without Origin is refused before authentication, even with a valid token."""
    c = token_cluster
    token = token_as(c, WEB_ROLE)
    body = json.dumps({"slotName": web_slot, "snapshot": False}).encode()
    c.alter_system("pgcdcws.allowed_origins", "*")
    try:
        wait_for(lambda: init_request(c.ws_port, "https://anything.example", body=body).status == 401, 30,
                 what="allowed_origins = '*' reloaded")
        for null in ("null", "NULL"):
            assert_refused_origin(init_request(c.ws_port, null, token, body))
        r = raw(c.ws_port, "\r\n".join([f"GET /v1/init?access_token={token} HTTP/1.1", f"Host: 127.0.0.1:{c.ws_port}",
                                         "Sec-Fetch-Site: cross-site", "Sec-Fetch-Dest: image"]), timeout=60)
        assert r.status == 403 and r.json() == {"error": FETCH_REFUSED}, r
        assert_no_cors(r)
        assert c.sql1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (web_slot,)) == 0
    finally:
        c.alter_system("pgcdcws.allowed_origins", ALLOWED)
        wait_for(lambda: init_request(c.ws_port, "https://anything.example", body=body).status == 403, 30,
                 what="allowed_origins reloaded")


def test_chromium_token_mode_init_snapshot_stream_ack(token_cluster, web_slot, page_servers):
    c = token_cluster
    token = token_as(c, WEB_ROLE)
    browser = Chromium(page_url(PAGE_PORT, c.ws_port, web_slot, token=token) + "&init=1")
    try:
        _, out = browser.wait_title("streaming")
        # POST /v1/init as the token's role: the slot, its position and its snapshot, readable
        # by the page (CORS headers on the reply written once the slot is ready).
        assert out["init"].get("status") == 200, out
        init = out["init"]["body"]
        assert set(init) == {"slotName", "lsn", "snapshotName"} and init["slotName"] == web_slot, out
        assert init["snapshotName"], out
        conn = c.connect(user=WEB_ROLE)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT slot_name FROM cdc_slots()")
                assert [r[0] for r in cur.fetchall()] == [web_slot], "the slot is owned by the token's role"
        finally:
            conn.close()
        before = c.confirmed_lsn(web_slot)
        assert before == init["lsn"], (before, init)
        # The snapshot, read with Authorization: Bearer, as the token's role.
        assert out["snapshot"]["status"] == 200, out
        assert sorted(out["snapshot"]["body"], key=lambda r: r["id"]) == [
            {"id": 1, "name": "one"}, {"id": 2, "name": "two"}], out
        assert out["snapshot_error"] == {"status": 404, "body": {
            "error": 'table "public.no_such_table" does not exist'}}, out
        # A slot the role may not use (here: none at all) closes in-band with 4403.
        assert out["missing"]["opened"] is True and out["missing"]["code"] == 4403, out
        assert out["missing"]["reason"].startswith("permission denied for this replication slot"), out

        c.sql("INSERT INTO browser_t VALUES (3, 'three')")
        _, out = browser.wait_title("done")
        stream = out["stream"]
        assert stream["opened"] is True and stream["code"] == 1000, out
        assert [(ch["kind"], ch["table"], ch["columnnames"], ch["columnvalues"])
                for ch in stream["message"]["change"]] == [("insert", "browser_t", ["id", "name"], [3, "three"])], out
        acked = stream["acked"]
        assert acked == stream["message"]["nextlsn"], out
        assert lsn_int(acked) > lsn_int(before), (before, acked)
        # The page's ack moved the slot: confirmed_flush_lsn is the nextlsn it sent.
        wait_for(lambda: c.confirmed_lsn(web_slot) == acked, 30,
                 what=f"confirmed_flush_lsn of {web_slot} to reach the page's ack {acked}")
    finally:
        browser.close()
    assert_token_not_logged(c, token)


@pytest.mark.parametrize("credential", ["none", "tampered"])
def test_chromium_token_mode_refused_without_a_valid_token(token_cluster, web_slot, page_servers, credential):
    c = token_cluster
    token = None
    if credential == "tampered":
        # The role claim of a good token changed to a superuser's, the signature kept.
        head, _, signature = token_as(c, WEB_ROLE).split(".")
        claims = {"role": "postgres", "exp": int(time.time()) + 3600}
        token = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"
    failures_before = c.sql1("SELECT auth_failures FROM cdc_server_stats()")
    browser = Chromium(page_url(PAGE_PORT, c.ws_port, web_slot, token=token) + "&init=1")
    try:
        _, out = browser.wait_title("done")
    finally:
        browser.close()
    # fetch: the preflight passes (it carries no credentials), the request gets the 401 with
    # the CORS headers, so the page reads the status and the JSON error.
    unauthorized = {"status": 401, "body": {"error": "invalid or missing token"}}
    for key in ("init", "snapshot", "snapshot_error"):
        assert out[key] == unauthorized, (key, out)
    # WebSocket: the 401 comes before any upgrade (no in-band close without a valid token);
    # a browser reports a refused upgrade as 1006 and nothing more.
    for key in ("missing", "stream"):
        assert out[key] == {"opened": False, "code": 1006, "reason": ""}, (key, out)
    assert not c.slot_exists(web_slot)
    # Three fetches and two upgrades, each counted (at least: a preflight is not a failure).
    assert c.sql1("SELECT auth_failures FROM cdc_server_stats()") == failures_before + 5
    if token is not None:
        assert_token_not_logged(c, token)
