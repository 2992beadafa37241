"""Review 8 probes (filtered broadcast, GET /ws): attacks on privileges, isolation and delivery.
Each test asserts the documented contract (docs/PROTOCOL.md "Broadcast subscriptions" .. "Close
codes on /ws"); a failing test is a finding of the review."""

import asyncio
import json
import socket
import threading
import time
import urllib.parse

import websockets

from cdcws import WS_KEY, _read_head, http_request, parse_ws_frames
from conftest import wait_for


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
        assert f["type"] in ("subscribed", "gap", "unsubscribed"), f


async def subscribe(ws, query, sid, since=None):
    msg = {"subscribe": query, "id": sid}
    if since is not None:
        msg["since"] = since
    await ws.send(json.dumps(msg))
    f = await recv_json(ws)
    assert f["type"] == "subscribed" and f["id"] == sid, f
    return f


def stop_decoder(cluster):
    cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pgcdcws broadcast'")
    wait_for(lambda: cluster.sql1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgcdcws_broadcast'")
             == 0, 30, what="the broadcast decoder's slot dropped")


def server_pid(cluster):
    return cluster.pids_by_backend_type("pgcdcws server", fresh=True)


def fresh_schema(cluster):
    cluster.sql("DROP SCHEMA IF EXISTS r8 CASCADE")
    cluster.sql("CREATE SCHEMA r8")


def set_trust_role(cluster, role):
    cluster.alter_system("pgcdcws.trust_role", role, expect_show="" if role is None else None)


# ---------------------------------------------------------------------------------------------
# Server loop blocked by code a client chooses (a domain CHECK run by the value's input function)

def test_r8_slow_domain_check_does_not_stall_other_clients(cluster):
    """A subscriber chooses which input function runs (its table's domain, its value): a CHECK that
    takes 10 s must not freeze the single-threaded server for every other client."""
    fresh_schema(cluster)
    cluster.sql("CREATE FUNCTION r8.slow_ok(int) RETURNS bool LANGUAGE plpgsql AS "
                "$$BEGIN PERFORM pg_sleep(10); RETURN true; END$$")
    cluster.sql("CREATE DOMAIN r8.slowint AS int CHECK (r8.slow_ok(VALUE))")
    cluster.sql("CREATE TABLE r8.slow (id int PRIMARY KEY, v r8.slowint)")
    cluster.sql("CREATE TABLE r8.plain (id int PRIMARY KEY)")
    pid_before = server_pid(cluster)
    try:
        t = threading.Thread(target=lambda: http_request(cluster.ws_port, "/ws?query=" + urllib.parse.quote(
            "insert:r8.slow:v.eq.1", safe=""), timeout=60))
        t.start()
        time.sleep(1.0)  # the slow subscription is being resolved (not an assertion)
        start = time.monotonic()
        resp = http_request(cluster.ws_port, "/ws?query=" + urllib.parse.quote("insert:r8.plain", safe=""),
                            timeout=60)
        elapsed = time.monotonic() - start
        t.join(60)
        assert resp.status == 101, resp
        assert server_pid(cluster) == pid_before
        assert elapsed < 3.0, f"another client's upgrade waited {elapsed:.1f} s behind the slow CHECK"

        # The slow subscription is refused before its CHECK runs (test_27), so the plain upgrade
        # may have launched the decoder just now: wait until one is live, so that stop_decoder
        # finds its slot instead of racing its start.
        async def live():
            async with websockets.connect(ws_url(cluster, "insert:r8.plain")) as ws:
                assert (await recv_json(ws, 60))["type"] == "subscribed"

        asyncio.run(live())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


# ---------------------------------------------------------------------------------------------
# Filter values: the server checks them without the column's typmod, the decoder parses with it

def test_r8_numeric_typmod_filter_matches_only_equal_values(cluster):
    """n.eq.1.005 on a numeric(5,2) column: as SQL's `n = 1.005`, no stored value (1.01) equals it."""
    fresh_schema(cluster)
    cluster.sql("CREATE TABLE r8.num (id int PRIMARY KEY, n numeric(5,2))")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await subscribe(ws, "insert:r8.num:n.eq.1.005", "exact")
            await subscribe(ws, "insert:r8.num", "all")
            cluster.sql("INSERT INTO r8.num VALUES (1, 1.01)")
            assert cluster.sql1("SELECT count(*) FROM r8.num WHERE n = 1.005") == 0
            f = await next_change(ws)
            assert f["columnvalues"] == [1, 1.01], f
            assert f["subscriptions"] == ["all"], f

    try:
        asyncio.run(run())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


def test_r8_varchar_too_long_value_refused_or_never_matching(cluster):
    """v.eq.abcd on a varchar(3) column: the server accepted it (subscribed); the decoder must not
    then end it with an error nobody asked for, nor match 'abc'."""
    fresh_schema(cluster)
    cluster.sql("CREATE TABLE r8.vc (id int PRIMARY KEY, v varchar(3))")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await ws.send(json.dumps({"subscribe": "insert:r8.vc:v.eq.abcd", "id": "long"}))
            first = await recv_json(ws)
            if first["type"] == "error":
                return  # refused up front: fine
            assert first["type"] == "subscribed", first
            await subscribe(ws, "insert:r8.vc", "all")
            cluster.sql("INSERT INTO r8.vc VALUES (1, 'abc')")
            f = await recv_json(ws)
            assert f["type"] == "change" and f["subscriptions"] == ["all"], f

    try:
        asyncio.run(run())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


# ---------------------------------------------------------------------------------------------
# since semantics

def test_r8_since_in_the_future_does_not_silently_drop_changes(cluster):
    """since beyond the WAL end: either refused, or changes committed after `subscribed` arrive
    (the subscribed promise); never a silent hole."""
    fresh_schema(cluster)
    cluster.sql("CREATE TABLE r8.fut (id int PRIMARY KEY)")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await ws.send(json.dumps({"subscribe": "insert:r8.fut", "id": "future", "since": "FF/0"}))
            first = await recv_json(ws)
            if first["type"] == "error":
                return
            assert first["type"] == "subscribed", first
            await subscribe(ws, "insert:r8.fut", "marker")
            cluster.sql("INSERT INTO r8.fut VALUES (1)")
            f = await next_change(ws)
            assert f["subscriptions"] == ["future", "marker"], (first, f)

    try:
        asyncio.run(run())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


# ---------------------------------------------------------------------------------------------
# Row security

def test_r8_row_security_tenant_isolation(cluster):
    """A role under a tenant policy sees inserts of its tenant only; updates moving a row between
    tenants and deletes of other tenants' rows never reach it."""
    fresh_schema(cluster)
    cluster.sql("DROP ROLE IF EXISTS r8_tenant")
    cluster.sql("CREATE ROLE r8_tenant LOGIN")
    cluster.sql("CREATE TABLE r8.rls (id int PRIMARY KEY, tenant text, secret text)")
    cluster.sql("ALTER TABLE r8.rls REPLICA IDENTITY FULL")
    cluster.sql("ALTER TABLE r8.rls ENABLE ROW LEVEL SECURITY")
    cluster.sql("CREATE POLICY only_a ON r8.rls FOR SELECT USING (tenant = 'a')")
    cluster.sql("GRANT USAGE ON SCHEMA r8 TO r8_tenant")
    cluster.sql("GRANT SELECT ON r8.rls TO r8_tenant")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await subscribe(ws, "insert,update,delete:r8.rls", "mine")
            cluster.sql("INSERT INTO r8.rls VALUES (1, 'b', 'b-secret')")
            cluster.sql("INSERT INTO r8.rls VALUES (2, 'a', 'a-visible')")
            cluster.sql("UPDATE r8.rls SET tenant = 'b', secret = 'moved-out' WHERE id = 2")
            cluster.sql("UPDATE r8.rls SET tenant = 'a', secret = 'moved-in' WHERE id = 1")
            cluster.sql("UPDATE r8.rls SET tenant = 'b', secret = 'b2' WHERE id = 1")
            cluster.sql("DELETE FROM r8.rls WHERE id = 2")
            cluster.sql("INSERT INTO r8.rls VALUES (3, 'a', 'end-marker')")
            got = []
            while True:
                f = await next_change(ws)
                got.append((f["kind"], f["columnvalues"]))
                if f["columnvalues"] == [3, "a", "end-marker"]:
                    break
            blob = json.dumps(got)
            assert "b-secret" not in blob and "b2" not in blob, got
            assert got[0] == ("insert", [2, "a", "a-visible"]), got

    try:
        set_trust_role(cluster, "r8_tenant")
        wait_for(lambda: http_request(cluster.ws_port, "/ws?query=insert:r8.rls").status == 101, 10,
                 what="the server running as r8_tenant")
        asyncio.run(run())
    finally:
        set_trust_role(cluster, None)
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")
        cluster.sql("DROP ROLE r8_tenant")


def test_r8_revoke_select_after_subscribing(cluster):
    """SELECT revoked after subscribing: no later change arrives; an error frame ends it."""
    fresh_schema(cluster)
    cluster.sql("DROP ROLE IF EXISTS r8_reader")
    cluster.sql("CREATE ROLE r8_reader LOGIN")
    cluster.sql("CREATE TABLE r8.rev (id int PRIMARY KEY, secret text)")
    cluster.sql("GRANT USAGE ON SCHEMA r8 TO r8_reader")
    cluster.sql("GRANT SELECT ON r8.rev TO r8_reader")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await subscribe(ws, "insert:r8.rev", "rev")
            cluster.sql("INSERT INTO r8.rev VALUES (1, 'ok')")
            f = await next_change(ws)
            assert f["columnvalues"] == [1, "ok"], f
            cluster.sql("REVOKE SELECT ON r8.rev FROM r8_reader")
            cluster.sql("INSERT INTO r8.rev VALUES (2, 'after-revoke')")
            f = await recv_json(ws)
            assert f["type"] == "error" and f["id"] == "rev", f
            cluster.sql("INSERT INTO r8.rev VALUES (3, 'after-revoke-2')")
            with __import__("pytest").raises(asyncio.TimeoutError):
                await recv_json(ws, timeout=3)

    try:
        set_trust_role(cluster, "r8_reader")
        wait_for(lambda: http_request(cluster.ws_port, "/ws?query=insert:r8.rev").status == 101, 10,
                 what="the server running as r8_reader")
        asyncio.run(run())
    finally:
        set_trust_role(cluster, None)
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")
        cluster.sql("DROP ROLE r8_reader")


# ---------------------------------------------------------------------------------------------
# Isolation: bad input on one socket

def raw_ws(cluster, target="/ws"):
    s = socket.create_connection(("localhost", cluster.ws_port))
    req = [f"GET {target} HTTP/1.1", f"Host: localhost:{cluster.ws_port}", "Upgrade: websocket",
           "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}", "Sec-WebSocket-Version: 13"]
    s.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
    status, _, rest = _read_head(s, time.monotonic() + 10)
    assert " 101 " in status, status
    return s


def masked(opcode, payload, fin=True):
    import os
    key = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_r8_bad_input_on_one_socket_leaves_others_and_pids(cluster):
    fresh_schema(cluster)
    cluster.sql("CREATE TABLE r8.iso (id int PRIMARY KEY)")
    pids_before = server_pid(cluster)

    async def run():
        async with websockets.connect(ws_url(cluster, "insert:r8.iso"), max_size=None) as healthy:
            assert (await recv_json(healthy))["type"] == "subscribed"
            decoder = cluster.pids_by_backend_type("pgcdcws broadcast", fresh=True)
            attacks = [
                masked(2, b"\x00\x01binary"),
                masked(1, b"\xff\xfe invalid utf8"),
                masked(1, b'{"subscribe": "insert:r8.iso", "id"', fin=False) + masked(0, b': "frag"}'),
                masked(1, json.dumps({"subscribe": "insert:r8.iso:id.in." + ",".join(str(i) for i in range(100)),
                                      "id": "x" * 64}).encode()),
                masked(1, b"{" + b"[" * 100000),
                masked(1, b'"' + b"a" * (4 << 20) + b'"'),
            ]
            for attack in attacks:
                s = raw_ws(cluster)
                try:
                    s.sendall(attack)
                    for i in range(120):
                        s.sendall(masked(1, json.dumps({"subscribe": f"insert:r8.iso:id.eq.{i}",
                                                        "id": f"s{i}"}).encode()))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                s.close()
            cluster.sql("INSERT INTO r8.iso VALUES (42)")
            f = await next_change(healthy, 60)
            assert f["columnvalues"] == [42] and f["subscriptions"] == ["query"], f
            assert server_pid(cluster) == pids_before
            assert cluster.pids_by_backend_type("pgcdcws broadcast", fresh=True) == decoder

    try:
        asyncio.run(run())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


# ---------------------------------------------------------------------------------------------
# Partitions under the parent's row security, with a partition whose column order differs

def test_r8_partition_rows_follow_parent_row_security(cluster):
    fresh_schema(cluster)
    cluster.sql("DROP ROLE IF EXISTS r8_part")
    cluster.sql("CREATE ROLE r8_part LOGIN")
    cluster.sql("CREATE TABLE r8.p (id int, tenant text, secret text, PRIMARY KEY (id, tenant)) "
                "PARTITION BY LIST (tenant)")
    # A partition with another column order and a dropped column.
    cluster.sql("CREATE TABLE r8.p_b (junk int, secret text, tenant text NOT NULL, id int NOT NULL)")
    cluster.sql("ALTER TABLE r8.p_b DROP COLUMN junk")
    cluster.sql("ALTER TABLE r8.p ATTACH PARTITION r8.p_b FOR VALUES IN ('b')")
    cluster.sql("CREATE TABLE r8.p_a PARTITION OF r8.p FOR VALUES IN ('a')")
    cluster.sql("ALTER TABLE r8.p ENABLE ROW LEVEL SECURITY")
    cluster.sql("CREATE POLICY only_a ON r8.p FOR SELECT USING (tenant = 'a')")
    cluster.sql("GRANT USAGE ON SCHEMA r8 TO r8_part")
    cluster.sql("GRANT SELECT ON r8.p TO r8_part")

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await subscribe(ws, "insert:r8.p:id.gt.0", "p")
            cluster.sql("INSERT INTO r8.p VALUES (1, 'b', 'b-secret')")
            cluster.sql("INSERT INTO r8.p VALUES (2, 'a', 'a-ok')")
            f = await next_change(ws)
            assert "b-secret" not in json.dumps(f), f
            assert f["columnvalues"] == [2, "a", "a-ok"], f

    try:
        set_trust_role(cluster, "r8_part")
        wait_for(lambda: http_request(cluster.ws_port, "/ws?query=insert:r8.p").status == 101, 10,
                 what="the server running as r8_part")
        asyncio.run(run())
    finally:
        set_trust_role(cluster, None)
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")
        cluster.sql("DROP ROLE r8_part")


# ---------------------------------------------------------------------------------------------
# Schema changes and the decoder's death

def test_r8_alter_type_of_filtered_column_and_decoder_kill(cluster):
    fresh_schema(cluster)
    cluster.sql("CREATE TABLE r8.alt (id int PRIMARY KEY, n int)")
    pid_before = server_pid(cluster)

    async def run():
        async with websockets.connect(ws_url(cluster)) as ws:
            await subscribe(ws, "insert:r8.alt:n.eq.5", "n5")
            await subscribe(ws, "insert:r8.alt", "all")
            decoder = cluster.pids_by_backend_type("pgcdcws broadcast", fresh=True)
            cluster.sql("ALTER TABLE r8.alt ALTER COLUMN n TYPE text")
            cluster.sql("INSERT INTO r8.alt VALUES (1, '5')")
            frames = []
            while True:
                f = await recv_json(ws)
                frames.append(f)
                if f["type"] == "change":
                    break
            assert any(x["type"] == "error" and x["id"] == "n5" for x in frames), frames
            assert frames[-1]["subscriptions"] == ["all"], frames
            assert cluster.pids_by_backend_type("pgcdcws broadcast", fresh=True) == decoder
            # The decoder killed: 1011, and a new socket works with a new decoder.
            cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE backend_type = 'pgcdcws broadcast'")
            try:
                while True:
                    await recv_json(ws, 60)
            except websockets.ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1011, e
        async with websockets.connect(ws_url(cluster, "insert:r8.alt")) as ws2:
            assert (await recv_json(ws2, 60))["type"] == "subscribed"
            cluster.sql("INSERT INTO r8.alt VALUES (2, 'x')")
            f = await next_change(ws2)
            assert f["columnvalues"] == [2, "x"], f
        assert server_pid(cluster) == pid_before

    try:
        asyncio.run(run())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


# ---------------------------------------------------------------------------------------------
# Replay: since within the window, no duplicates, commit order

def test_r8_since_replay_no_duplicates(cluster):
    fresh_schema(cluster)
    cluster.sql("CREATE TABLE r8.rep (id int PRIMARY KEY)")

    async def run():
        async with websockets.connect(ws_url(cluster, "insert:r8.rep")) as ws:
            first = await recv_json(ws)
            assert first["type"] == "subscribed", first
            for i in range(1, 6):
                cluster.sql(f"INSERT INTO r8.rep VALUES ({i})")
            seen = [(await next_change(ws))["columnvalues"][0] for _ in range(5)]
            assert seen == [1, 2, 3, 4, 5]
        since = first["lsn"]
        async with websockets.connect(ws_url(cluster)) as ws:
            await ws.send(json.dumps({"subscribe": "insert:r8.rep", "id": "r", "since": since}))
            frames = [await recv_json(ws)]
            cluster.sql("INSERT INTO r8.rep VALUES (6)")
            ids = []
            while 6 not in ids:
                f = await recv_json(ws)
                frames.append(f)
                if f["type"] == "change":
                    ids.append(f["columnvalues"][0])
            assert frames[0]["type"] == "subscribed", frames
            assert ids == [1, 2, 3, 4, 5, 6], frames

    try:
        asyncio.run(run())
    finally:
        stop_decoder(cluster)
        cluster.sql("DROP SCHEMA r8 CASCADE")


def test_r8_slow_domain_check_does_not_block_fast_shutdown(cluster):
    """A subscribe whose values run a 20 s CHECK each (3 values: 60 s): a fast shutdown
    (SIGTERM to the server) must not wait for it."""
    fresh_schema(cluster)
    cluster.sql("CREATE FUNCTION r8.slow_ok(int) RETURNS bool LANGUAGE plpgsql AS "
                "$$BEGIN PERFORM pg_sleep(20); RETURN true; END$$")
    cluster.sql("CREATE DOMAIN r8.slowint AS int CHECK (r8.slow_ok(VALUE))")
    cluster.sql("CREATE TABLE r8.slow (id int PRIMARY KEY, v r8.slowint)")
    t = threading.Thread(target=lambda: http_request(cluster.ws_port, "/ws?query=" + urllib.parse.quote(
        "insert:r8.slow:v.in.1,2,3", safe=""), timeout=90))
    t.daemon = True
    t.start()
    time.sleep(2.0)  # the subscription is being resolved (not an assertion)
    start = time.monotonic()
    cluster.restart("fast")
    elapsed = time.monotonic() - start
    t.join(90)
    cluster.sql("DROP SCHEMA r8 CASCADE")
    assert elapsed < 15, f"pg_ctl restart -m fast took {elapsed:.1f} s behind the subscriber's CHECK"
