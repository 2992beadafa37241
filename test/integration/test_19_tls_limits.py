"""Transport and limits (security issue, "Transport and limits"): TLS on the pgcdcws port with a
certificate the client verifies, plain connections refused on a TLS port, TLS files that cannot
be used keep the listener down (never a plain fallback), inbound WebSocket messages capped
(close 1009), request headers capped (431 with a JSON body).

The TLS clusters are this module's own (pgcdcws.ssl is fixed at server start); the limits use
the session's plain cluster."""

import asyncio
import concurrent.futures
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
import warnings

import pytest
import websockets
import websockets.exceptions

from conftest import Cluster, _require_extension, tcp_accepts, wait_for
from cdcws import STREAM_PATH, StreamClient, loads, lsn_int, wait_confirmed

SNAP_PATH = "/v1/snapshot/data"
MAX_MESSAGE = 16384        # bytes of one client message, all fragments together
MAX_HEADERS = 16384        # bytes of a request's line and recognised headers (then 431)
TOO_BIG_REASON = f"message too big: at most {MAX_MESSAGE} bytes"


# ------------------------------------------------------------------------ certificates
def make_certificate(directory, name, cn="localhost"):
    """A self-signed certificate for localhost, 127.0.0.1 and ::1 and its key (mode 0600),
    made with the openssl command line tool; returns (cert path, key path)."""
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.chmod(key, 0o600)
    return cert, key


def verifying_context(cafile):
    """A client context that verifies the server's certificate against `cafile` and its name."""
    ctx = ssl.create_default_context(cafile=cafile)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def start_cluster(made, conf, wait_listening=True):
    c = Cluster(extension=True)
    made.append(c)
    _require_extension(c)
    c.init()
    os.makedirs(os.path.join(c.tmpdir, "tls"), exist_ok=True)
    c.tls_dir = os.path.join(c.tmpdir, "tls")
    c.cert, c.key = make_certificate(c.tls_dir, "server")
    lines = [line.format(cert=c.cert, key=c.key, dir=c.tls_dir) for line in conf]
    with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
        f.write("\n".join(lines) + "\n")
    if wait_listening:
        c.start()  # waits until the pgcdcws port accepts TCP
        c.sql("CREATE EXTENSION pgcdcws")
    else:
        c._cmd([c.bin("pg_ctl"), "-D", c.datadir, "-l", c.logfile, "-w", "-t", "120", "start"])
        c.running = True
    return c


@pytest.fixture(scope="module")
def tls_cluster():
    """pgcdcws.ssl = on with pgcdcws' certificate settings left empty: the server uses
    Postgres' own ssl_cert_file and ssl_key_file (Postgres itself keeps ssl = off)."""
    made = []
    try:
        yield start_cluster(made, ["pgcdcws.ssl = on", "ssl_cert_file = '{cert}'", "ssl_key_file = '{key}'"])
    finally:
        for c in made:
            c.destroy()


@pytest.fixture
def own_cluster():
    made = []
    yield lambda conf, wait_listening=True: start_cluster(made, conf, wait_listening)
    for c in made:
        c.destroy()


def wss_uri(port, slot, host="localhost"):
    return f"wss://{host}:{port}{STREAM_PATH}?slotName={slot}"


async def open_tls_stream(port, slot, ctx, host="localhost", server_hostname=None):
    ws = await websockets.connect(wss_uri(port, slot, host), ssl=ctx, server_hostname=server_hostname,
                                  max_size=None, ping_interval=None, open_timeout=15, close_timeout=2)
    return StreamClient(ws, slot)


def https_snapshot(port, ctx, body, host="localhost", timeout=30):
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        data = json.dumps(body).encode()
        conn.request("POST", SNAP_PATH, body=data,
                     headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def plain_exchange(port, data, timeout=10):
    """Send `data` in the clear; return (everything received until the server closed, seconds)."""
    t0 = time.monotonic()
    got = b""
    with socket.create_connection(("localhost", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    return got, time.monotonic() - t0


# ------------------------------------------------------------------------------- TLS
def test_tls_stream_ack_and_snapshot_with_a_verified_certificate(tls_cluster):
    c = tls_cluster
    ctx = verifying_context(c.cert)
    assert f"listening on port {c.ws_port} (TLS only, 1 address)" in c.log(), c.log_tail()
    c.sql("CREATE TABLE tls_t (id int PRIMARY KEY, v text)")
    c.sql("INSERT INTO tls_t VALUES (1, 'before')")
    slot = c.sql1("SELECT slot_name FROM cdc_init('tls_feed')")
    try:
        # the snapshot endpoint over HTTPS, verified
        status, body = https_snapshot(c.ws_port, ctx, {"slotName": slot, "table": "tls_t"})
        assert status == 200, body
        assert loads(body) == [{"id": 1, "v": "before"}]

        async def main():
            client = await open_tls_stream(c.ws_port, slot, ctx)
            try:
                tls = client.ws.transport.get_extra_info("ssl_object")
                assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3"), tls
                assert tls.selected_alpn_protocol() in (None, "http/1.1")
                c.sql("INSERT INTO tls_t VALUES (2, 'streamed')")
                txn = await client.recv_txn(15)
                assert txn.ids() == [2]
                assert txn.changes[0]["columnvalues"] == [2, "streamed"]
                await client.ack(txn.nextlsn)
                await wait_confirmed(c, slot, txn.nextlsn, timeout=5)
            finally:
                await client.close()

        asyncio.run(main())
        # 127.0.0.1 is in the certificate too
        status, _ = https_snapshot(c.ws_port, ctx, {"slotName": slot, "table": "tls_t"}, host="127.0.0.1")
        assert status == 200
    finally:
        c.drop_slot_quietly(slot)


def test_certificate_is_really_verified(tls_cluster):
    c = tls_cluster
    c.sql("SELECT cdc_init('tls_verify')")
    try:
        async def main():
            # the system's CAs do not know the self-signed certificate
            with pytest.raises(ssl.SSLCertVerificationError) as e:
                await open_tls_stream(c.ws_port, "tls_verify", ssl.create_default_context())
            assert e.value.verify_message == "self-signed certificate", e.value
            # the right CA, but a name the certificate does not carry
            with pytest.raises(ssl.SSLCertVerificationError) as e:
                await open_tls_stream(c.ws_port, "tls_verify", verifying_context(c.cert),
                                      server_hostname="db.example.com")
            assert "Hostname mismatch" in e.value.verify_message, e.value
            # another self-signed certificate with the same name is not the server's
            other_cert, _ = make_certificate(c.tls_dir, "other")
            with pytest.raises(ssl.SSLCertVerificationError):
                await open_tls_stream(c.ws_port, "tls_verify", verifying_context(other_cert))

        asyncio.run(main())
        with pytest.raises(ssl.SSLCertVerificationError):
            https_snapshot(c.ws_port, ssl.create_default_context(), {"slotName": "tls_verify", "table": "x"})
    finally:
        c.drop_slot_quietly("tls_verify")


def test_tls_1_1_is_refused(tls_cluster):
    c = tls_cluster
    old = verifying_context(c.cert)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client offers TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # what this test is about
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as e:
        https_snapshot(c.ws_port, old, {"slotName": "x", "table": "x"})
    assert e.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", e.value  # the server's alert
    # the same client allowed TLS 1.2 is served (the refusal above is the server's)
    ok = verifying_context(c.cert)
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    status, body = https_snapshot(c.ws_port, ok, {"slotName": "no_such_slot", "table": "x"})
    assert status == 404, body
    assert "no_such_slot" in loads(body)["error"]


def test_plain_connections_are_refused_promptly(tls_cluster):
    c = tls_cluster
    c.sql("SELECT cdc_init('tls_plain')")
    try:
        # a plain WebSocket upgrade and a plain HTTP request: the server closes at once and
        # answers nothing in the clear
        upgrade = (f"GET {STREAM_PATH}?slotName=tls_plain HTTP/1.1\r\nHost: localhost:{c.ws_port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        post = (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n{}").encode()
        for request in (upgrade, post):
            got, seconds = plain_exchange(c.ws_port, request)
            assert seconds < 5, seconds
            assert not got.startswith(b"HTTP/"), got[:200]
            assert b"tls_plain" not in got and b"{" not in got, got[:200]

        # the same through client libraries: refused within seconds
        async def plain_ws():
            t0 = time.monotonic()
            with pytest.raises((websockets.exceptions.InvalidMessage, websockets.exceptions.InvalidHandshake,
                                ConnectionError, EOFError)):
                await websockets.connect(f"ws://localhost:{c.ws_port}{STREAM_PATH}?slotName=tls_plain",
                                         open_timeout=10, ping_interval=None)
            return time.monotonic() - t0

        assert asyncio.run(plain_ws()) < 5
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("localhost", c.ws_port, timeout=10)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            conn.request("POST", SNAP_PATH, body=b"{}", headers={"Content-Type": "application/json"})
            conn.getresponse()
        conn.close()
        assert time.monotonic() - t0 < 5

        # and the server keeps serving TLS clients
        async def main():
            client = await open_tls_stream(c.ws_port, "tls_plain", verifying_context(c.cert))
            try:
                c.sql("CREATE TABLE tls_plain_t (id int)")
                c.sql("INSERT INTO tls_plain_t VALUES (7)")
                txn = await client.recv_txn(15)
                assert txn.ids() == [7]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        c.drop_slot_quietly("tls_plain")


def test_unusable_tls_files_keep_the_listener_down(own_cluster):
    """pgcdcws.ssl_cert_file / ssl_key_file set explicitly; a missing key, a key readable by
    others, a key that does not match the certificate and a file that is no certificate each
    keep the port closed with a log line that says why, and fixing the file brings it up."""
    c = own_cluster(["pgcdcws.ssl = on", "pgcdcws.ssl_cert_file = '{cert}'",
                     "pgcdcws.ssl_key_file = '{dir}/missing.key'"], wait_listening=False)
    missing = os.path.join(c.tls_dir, "missing.key")

    def refused(why):
        line = wait_for(lambda: next((ln for ln in c.log().splitlines()
                                      if "pgcdcws.ssl is on, but" in ln and why in ln), None),
                        60, what=f"the log line saying {why!r}")
        assert "does not listen (it never falls back to plain connections)" in line, line
        assert not tcp_accepts(c.ws_port), "the pgcdcws port accepts connections"
        return line

    line = refused(f'the private key file "{missing}" cannot be read: No such file or directory')
    assert "WARNING" in line, line

    def set_key(path):
        c.sql("ALTER SYSTEM SET pgcdcws.ssl_key_file = %s", (path,))
        c._cmd([c.bin("pg_ctl"), "-D", c.datadir, "-l", c.logfile, "-m", "fast", "-w", "-t", "120",
                "restart"])
        c.reset_connection()

    # a key with group/world access: Postgres' own rule, and its own message
    os.chmod(c.key, 0o644)
    set_key(c.key)
    refused(f'the private key file "{c.key}" is not private to the database user')
    assert f'private key file "{c.key}" has group or world access' in c.log()
    os.chmod(c.key, 0o600)

    # a key of another certificate
    _, other_key = make_certificate(c.tls_dir, "other")
    set_key(other_key)
    refused(f'the private key "{other_key}" does not match the certificate "{c.cert}"')

    # a certificate file that holds no certificate
    with open(missing, "w") as f:
        f.write("not a key\n")
    os.chmod(missing, 0o600)
    c.sql("ALTER SYSTEM SET pgcdcws.ssl_cert_file = %s", (missing,))
    set_key(c.key)
    refused(f'could not load the certificate file "{missing}"')

    # fixed: the port serves TLS
    c.sql("ALTER SYSTEM SET pgcdcws.ssl_cert_file = %s", (c.cert,))
    set_key(c.key)
    wait_for(lambda: tcp_accepts(c.ws_port), 60, what="the TLS listener after the fix")
    c.sql("CREATE EXTENSION pgcdcws")
    status, body = https_snapshot(c.ws_port, verifying_context(c.cert), {"slotName": "none", "table": "t"})
    assert status == 404, body


# ----------------------------------------------------------------------- message size
def _stream_setup(cluster, slot):
    cluster.sql(f"CREATE TABLE {slot}_t (id int PRIMARY KEY)")
    cluster.sql("SELECT cdc_init(%s)", (slot,))


def test_inbound_messages_above_the_limit_close_1009(cluster):
    slot = "lim_msg"
    _stream_setup(cluster, slot)
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                cluster.sql(f"INSERT INTO {slot}_t VALUES (1)")
                t1 = await client.recv_txn(10)
                before = cluster.confirmed_lsn(slot)
                assert lsn_int(before) < lsn_int(t1.nextlsn)

                # exactly at the limit: an ack padded with spaces, in one frame, is processed
                ack = json.dumps({"lsn": t1.nextlsn})
                await client.send(ack + " " * (MAX_MESSAGE - len(ack)))
                await wait_confirmed(cluster, slot, t1.nextlsn, timeout=5)

                # at the limit in three fragments: processed too
                cluster.sql(f"INSERT INTO {slot}_t VALUES (2)")
                t2 = await client.recv_txn(10)
                ack = json.dumps({"lsn": t2.nextlsn})
                padded = ack + " " * (MAX_MESSAGE - len(ack))
                await client.ws.send([padded[:1000], padded[1000:3000], padded[3000:]])
                await wait_confirmed(cluster, slot, t2.nextlsn, timeout=5)

                # one byte more, in one frame: close 1009 with a reason, the slot stays
                cluster.sql(f"INSERT INTO {slot}_t VALUES (3)")
                t3 = await client.recv_txn(10)
                ack = json.dumps({"lsn": t3.nextlsn})
                await client.send(ack + " " * (MAX_MESSAGE + 1 - len(ack)))
                code, reason, _ = await client.wait_closed_code(10)
                assert (code, reason) == (1009, TOO_BIG_REASON)
                assert lsn_int(cluster.confirmed_lsn(slot)) < lsn_int(t3.nextlsn)
            finally:
                await client.close()

            # one byte more, fragmented (each fragment well below the limit)
            client = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                t3 = await client.recv_txn(10)  # not acknowledged: sent again
                ack = json.dumps({"lsn": t3.nextlsn})
                padded = ack + " " * (MAX_MESSAGE + 1 - len(ack))
                await client.ws.send([padded[:2000], padded[2000:4000], padded[4000:]])
                code, reason, _ = await client.wait_closed_code(10)
                assert (code, reason) == (1009, TOO_BIG_REASON)
                assert lsn_int(cluster.confirmed_lsn(slot)) < lsn_int(t3.nextlsn)
            finally:
                await client.close()

            # a 1 MB frame: refused as soon as its header announces it
            client = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                await client.recv_txn(10)
                t0 = time.monotonic()
                await client.send("x" * (1 << 20))
                code, reason, _ = await client.wait_closed_code(10)
                assert (code, reason) == (1009, TOO_BIG_REASON)
                assert time.monotonic() - t0 < 5
            finally:
                await client.close()

            # the slot can be streamed again
            client = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                t3 = await client.recv_txn(10)
                await client.ack(t3.nextlsn)
                await wait_confirmed(cluster, slot, t3.nextlsn, timeout=5)
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


# ----------------------------------------------------------------------- request size
def _exchange(port, request, timeout=15):
    """Send `request` in the clear, tolerating the server closing before it has all been sent
    (it stops reading at its limit); return (everything received until it closed, seconds)."""
    t0 = time.monotonic()
    got = b""
    with socket.create_connection(("localhost", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    return got, time.monotonic() - t0


def _snapshot_request(port, cookie_bytes=0, padding_bytes=0):
    """POST /v1/snapshot/data for an unknown slot with a Cookie header of `cookie_bytes` (a
    header libwebsockets recognises) and `padding_bytes` of X-Padding headers (1000 bytes
    each, unrecognised); returns (bytes received until close, seconds)."""
    cookie = f"Cookie: c={'k' * (cookie_bytes - 10)}\r\n" if cookie_bytes else ""
    padding = "".join(f"X-Padding-{i}: {'p' * 980}\r\n" for i in range(padding_bytes // 1000))
    body = b'{"slotName": "no_such_slot", "table": "t"}'
    request = (f"POST {SNAP_PATH} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n{cookie}{padding}\r\n").encode() + body
    return _exchange(port, request)


def _assert_431(got):
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large", got[:300]
    assert "content-type: application/json" in lines and "connection: close" in lines, lines
    assert f"content-length: {len(body)}" in lines, (lines, body)
    error = loads(body)["error"]
    assert error.startswith("request line and headers too large: ") and error.endswith(
        f" bytes, at most {MAX_HEADERS}"), error
    return int(error.split(": ")[1].split(" ")[0])


def test_request_header_limit(cluster):
    port = cluster.ws_port
    pid = cluster.pids_by_backend_type("pgcdcws server", fresh=True)
    # 12 kB of headers (an 8 kB bearer token and ordinary headers fit): served
    for cookie, padding in ((12000, 0), (0, 12000), (6000, 6000)):
        got, _ = _snapshot_request(port, cookie, padding)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404 "), (cookie, padding, got[:300])
        assert "no_such_slot" in loads(body)["error"]

    # 20 kB of request line and recognised headers: a 431 with a JSON body, then the server
    # closes the connection (the read above ends), promptly
    got, seconds = _snapshot_request(port, 20000)
    measured = _assert_431(got)
    assert 20000 < measured < 20300, measured
    assert seconds < 5, seconds
    # the count grows byte for byte with the Cookie: one byte over the limit gets 431, a
    # request of exactly the limit is served
    over = MAX_HEADERS + 1 - (measured - 20000)
    assert _assert_431(_snapshot_request(port, over)[0]) == MAX_HEADERS + 1
    got, _ = _snapshot_request(port, over - 1)
    assert got.startswith(b"HTTP/1.1 404 "), got[:300]

    # the query string counts too (browsers put the token there)
    got, _ = _exchange(port, (f"GET {STREAM_PATH}?slotName=no_such_slot&pad={'q' * 20000} HTTP/1.1\r\n"
                              f"Host: localhost:{port}\r\n\r\n").encode())
    assert 20000 < _assert_431(got) < 20300

    # a WebSocket upgrade is refused the same way, before any upgrade
    upgrade = (f"GET {STREAM_PATH}?slotName=no_such_slot HTTP/1.1\r\nHost: localhost:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nCookie: c={'k' * 20000}\r\n\r\n").encode()
    got, seconds = _exchange(port, upgrade)
    _assert_431(got)
    assert seconds < 5, seconds

    async def upgrade_with_client():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(f"ws://localhost:{port}{STREAM_PATH}?slotName=no_such_slot",
                                     extra_headers={"Cookie": "c=" + "k" * 20000}, open_timeout=15,
                                     ping_interval=None)
        return e.value.status_code

    assert asyncio.run(upgrade_with_client()) == 431

    # Unrecognised headers (X-...) are not visible through libwebsockets 4.1's API: they
    # count only toward its own buffer of 2 x 16384 bytes (documented), so 20 kB of them
    # are served
    got, _ = _snapshot_request(port, 0, 20000)
    assert got.startswith(b"HTTP/1.1 404 "), got[:300]

    # Beyond libwebsockets' buffer (a 100 kB header, or 40 kB of unrecognised ones) its
    # parser drops the request: closed promptly without an answer, logged, the server goes on
    for cookie, padding in ((100000, 0), (0, 40000)):
        offset = cluster.log_size()
        got, seconds = _snapshot_request(port, cookie, padding)
        assert got == b"" and seconds < 5, (cookie, padding, got[:300], seconds)
        wait_for(lambda: "libwebsockets: Ran out of header data space" in cluster.log_since(offset), 15,
                 what="the log line of the dropped request")

    # a burst of oversized requests at once: each gets its 431, the server stays up
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: _snapshot_request(port, 25000)[0], range(64)))
    for got in results:
        _assert_431(got)
    got, _ = _snapshot_request(port)
    assert got.startswith(b"HTTP/1.1 404 "), got[:300]
    assert cluster.pids_by_backend_type("pgcdcws server", fresh=True) == pid


def test_request_header_limit_over_tls(tls_cluster):
    """With pgcdcws.ssl = on the 431 is an ordinary HTTPS response, inside TLS."""
    c = tls_cluster
    conn = http.client.HTTPSConnection("localhost", c.ws_port, context=verifying_context(c.cert), timeout=30)
    try:
        data = b'{"slotName": "no_such_slot", "table": "t"}'
        conn.request("POST", SNAP_PATH, body=data,
                     headers={"Content-Type": "application/json", "Cookie": "c=" + "k" * 20000})
        r = conn.getresponse()
        assert r.status == 431 and r.reason == "Request Header Fields Too Large"
        assert r.getheader("content-type") == "application/json"
        assert r.getheader("connection") == "close"
        error = loads(r.read())["error"]
        assert error.startswith("request line and headers too large: ") and error.endswith(
            f" bytes, at most {MAX_HEADERS}"), error
    finally:
        conn.close()
    status, body = https_snapshot(c.ws_port, verifying_context(c.cert), {"slotName": "no_such_slot", "table": "x"})
    assert status == 404, body
