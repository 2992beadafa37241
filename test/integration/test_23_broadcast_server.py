"""GET /ws, the server's side (issue 8): refusals before the upgrade (the query and since
parameters, the subscription checks of docs/PROTOCOL.md "Subscribing: what the server checks"),
a bare /ws socket and the answers to its subscribe/unsubscribe messages."""

import asyncio
import json
import urllib.parse

import pytest
import websockets

from cdcws import apoll, http_request
from conftest import wait_for


@pytest.fixture(autouse=True)
def _stop_broadcast_decoder(cluster):
    """Subscriptions launch the broadcast decoder, which idles 60 s before it stops: end it
    after each test, so that its temporary slot is gone when the suite checks for leftovers."""
    yield
    cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pgcdcws broadcast'")
    wait_for(lambda: cluster.sql1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgcdcws_broadcast'")
             == 0, 30, what="the broadcast decoder's slot dropped")


def check_refusal(resp, status):
    """A complete HTTP/1.1 JSON error response with `status`; returns its message."""
    assert resp.version == "HTTP/1.1", resp
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").split(";")[0].strip() == "application/json", resp
    body = resp.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    return body["error"]


def ws_target(query=None, since=None):
    params = []
    if query is not None:
        params.append("query=" + urllib.parse.quote(query, safe=""))
    if since is not None:
        params.append("since=" + urllib.parse.quote(since, safe=""))
    return "/ws" + ("?" + "&".join(params) if params else "")


def refusal(cluster, query, status, since=None):
    return check_refusal(http_request(cluster.ws_port, ws_target(query, since)), status)


def setup_tables(cluster):
    cluster.sql("DROP SCHEMA IF EXISTS bs CASCADE")
    cluster.sql("CREATE SCHEMA bs")
    cluster.sql("CREATE TABLE bs.orders (id int PRIMARY KEY, status text, total numeric, score float8, "
                "spot point, doc json, tags text[], during int4range)")
    cluster.sql("CREATE TABLE bs.nokey (id int, status text)")
    cluster.sql("CREATE TABLE bs.full_identity (id int PRIMARY KEY, status text)")
    cluster.sql("ALTER TABLE bs.full_identity REPLICA IDENTITY FULL")
    cluster.sql('CREATE TABLE bs."Mixed Case" (id int PRIMARY KEY)')
    cluster.sql("CREATE VIEW bs.orders_view AS SELECT * FROM bs.orders")


def test_plain_http_and_methods(cluster):
    err = check_refusal(http_request(cluster.ws_port, "/ws", upgrade=False), 400)
    assert err == "GET /ws needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"
    err = check_refusal(http_request(cluster.ws_port, "/ws", method="POST", upgrade=False), 405)
    assert err == "the /ws endpoint accepts only GET with a WebSocket upgrade"


def test_bad_query_and_since_parameters(cluster):
    err = refusal(cluster, "inserts:bs.orders", 400)
    assert err.startswith("invalid query: unknown type \"inserts\""), err
    err = refusal(cluster, "insert:bs.orders:id.like.1", 400)
    assert "unknown operator \"like\"" in err, err
    err = refusal(cluster, "insert:bs.orders", 400, since="nope")
    assert "since" in err, err
    err = check_refusal(http_request(cluster.ws_port, "/ws?since=0/0"), 400)
    assert "since" in err and "query" in err, err
    err = check_refusal(http_request(cluster.ws_port, "/ws?query=insert:a&query=insert:b"), 400)
    assert "query" in err, err


def test_subscription_checks_before_the_upgrade(cluster):
    setup_tables(cluster)
    log_start = cluster.log_size()
    try:
        assert refusal(cluster, "insert:bs.nosuch", 400) == 'unknown table "bs.nosuch"'
        assert refusal(cluster, "insert:nosuch.orders", 400) == 'unknown table "nosuch.orders"'
        err = refusal(cluster, "insert:orders", 400)  # bs is not on the search_path
        assert err.startswith('unknown table "orders"'), err
        assert refusal(cluster, "insert:bs.mixed_case", 400) == 'unknown table "bs.mixed_case"'
        err = refusal(cluster, "insert:bs.orders_view", 400)
        assert err.startswith("bs.orders_view is not a table"), err
        assert (refusal(cluster, "insert:bs.orders:nope.eq.1", 400)
                == 'filter "nope.eq.1": unknown column "nope" of table bs.orders')
        assert (refusal(cluster, "insert:bs.orders:ctid.eq.1", 400)
                == 'filter "ctid.eq.1": unknown column "ctid" of table bs.orders')
        assert (refusal(cluster, "insert:bs.orders:id.eq.x", 400)
                == 'filter "id.eq.x": invalid input syntax for type integer: "x"')
        assert (refusal(cluster, "insert:bs.orders:id.in.1,2,y", 400)
                == 'filter "id.in.1,2,y": invalid input syntax for type integer: "y"')
        assert (refusal(cluster, "insert:bs.orders:score.gt.abc", 400)
                == 'filter "score.gt.abc": invalid input syntax for type double precision: "abc"')
        assert (refusal(cluster, "insert:bs.orders:spot.eq.(1%2C2)", 400)
                == 'filter "spot.eq.(1,2)": type point has no default btree operator class: it cannot be '
                   'compared')
        assert (refusal(cluster, "insert:bs.orders:doc.eq.{}", 400)
                == 'filter "doc.eq.{}": type json has no default btree operator class: it cannot be compared')
        err = refusal(cluster, "insert:bs.orders:tags.eq.{a}", 400)
        assert err == 'filter "tags.eq.{a}": column "tags" has type text[]: filters on array columns are not ' \
                      'supported', err
        err = refusal(cluster, "insert:bs.orders:during.eq.[1%2C2)", 400)
        assert "filters on range columns are not supported" in err, err
        # Delete filters: only what the old row carries.
        assert (refusal(cluster, "delete:bs.orders:status.eq.paid", 400)
                == 'filter "status.eq.paid": a DELETE carries only the replica identity key (id) of table '
                   'bs.orders; filter delete on those columns, or ALTER TABLE bs.orders REPLICA IDENTITY FULL')
        err = refusal(cluster, "*:bs.nokey:id.eq.1", 400)
        assert err.startswith('filter "id.eq.1": a DELETE of table bs.nokey carries no replica identity key'), err
        assert "REPLICA IDENTITY FULL" in err, err
        # The same filters pass the checks where they are allowed.
        for ok in ("insert,update:bs.orders:status.eq.paid", "delete:bs.orders:id.eq.1",
                   "delete:bs.full_identity:status.eq.x", "insert,update,truncate:bs.orders:total.gt.4.5:score.lte.1e3",
                   "insert:bs.nokey", 'insert:bs."Mixed Case":id.in.1,2', "truncate:bs.orders"):
            resp = http_request(cluster.ws_port, ws_target(ok))
            assert resp.status == 101, (ok, resp)
        # The checks leave nothing behind (relcache references, snapshots, locks).
        log = cluster.log_since(log_start)
        assert "WARNING" not in log and "leak" not in log, log
        assert cluster.sql1("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                            "WHERE a.backend_type = 'pgcdcws server'") == 0
    finally:
        cluster.sql("DROP SCHEMA bs CASCADE")


def test_403_without_select(cluster):
    setup_tables(cluster)
    cluster.sql("DROP ROLE IF EXISTS bs_reader")
    cluster.sql("CREATE ROLE bs_reader LOGIN")
    cluster.sql("GRANT USAGE ON SCHEMA bs TO bs_reader")
    cluster.sql("GRANT SELECT ON bs.full_identity TO bs_reader")
    try:
        cluster.alter_system("pgcdcws.trust_role", "bs_reader")

        def forbidden():
            resp = http_request(cluster.ws_port, ws_target("insert:bs.orders"))
            return resp.status == 403 and resp

        resp = wait_for(forbidden, 10, what="403 once the server runs as bs_reader")
        assert check_refusal(resp, 403) == "permission denied for table bs.orders"
        # Before the column or the value: no probing of a table the role cannot read.
        assert refusal(cluster, "insert:bs.orders:nope.eq.x", 403) == "permission denied for table bs.orders"
        # A readable table is accepted for that role.
        assert http_request(cluster.ws_port, ws_target("insert:bs.full_identity:id.eq.1")).status == 101
        # The name is looked up as the role: a schema it may not use is refused.
        cluster.sql("REVOKE USAGE ON SCHEMA bs FROM bs_reader")
        err = refusal(cluster, "insert:bs.full_identity", 403)
        assert err == "permission denied for schema bs", err
    finally:
        cluster.alter_system("pgcdcws.trust_role", None, expect_show="")
        cluster.sql("DROP SCHEMA bs CASCADE")
        cluster.sql("DROP ROLE bs_reader")


async def _recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_bare_socket_messages(cluster):
    setup_tables(cluster)

    async def run():
        async with websockets.connect(f"ws://localhost:{cluster.ws_port}/ws") as ws:
            await ws.send("not json")
            reply = await _recv_json(ws)
            assert reply["type"] == "error" and reply["id"] is None, reply
            await ws.send(json.dumps({"subscribe": "inserts:bs.orders", "id": "a"}))
            reply = await _recv_json(ws)
            assert reply == {"type": "error", "id": "a",
                             "error": reply["error"]}, reply
            assert reply["error"].startswith("invalid subscription query: unknown type \"inserts\""), reply
            await ws.send(json.dumps({"subscribe": "insert:bs.nosuch", "id": "b"}))
            assert await _recv_json(ws) == {"type": "error", "id": "b", "error": 'unknown table "bs.nosuch"'}
            await ws.send(json.dumps({"subscribe": "insert:bs.orders:id.eq.x", "id": "c"}))
            assert await _recv_json(ws) == {
                "type": "error", "id": "c",
                "error": 'filter "id.eq.x": invalid input syntax for type integer: "x"'}
            await ws.send(json.dumps({"subscribe": "delete:bs.orders:status.eq.x", "id": "d"}))
            reply = await _recv_json(ws)
            assert reply["id"] == "d" and "REPLICA IDENTITY" in reply["error"], reply
            await ws.send(json.dumps({"unsubscribe": "never"}))
            assert await _recv_json(ws) == {"type": "error", "id": "never",
                                            "error": 'no subscription "never" on this socket'}
            await ws.send(json.dumps({"lsn": "0/1"}))
            reply = await _recv_json(ws)
            assert reply["type"] == "error" and reply["id"] is None and "acknowledge" in reply["error"], reply
            # The socket is still open and answers in order.
            await ws.send(json.dumps({"unsubscribe": "x"}))
            assert (await _recv_json(ws))["id"] == "x"

    try:
        asyncio.run(run())
    finally:
        cluster.sql("DROP SCHEMA bs CASCADE")


def test_binary_message_closes_1003(cluster):
    async def run():
        async with websockets.connect(f"ws://localhost:{cluster.ws_port}/ws") as ws:
            await ws.send(b"\x00")
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed:
                pass
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1003, ws.close_code

    asyncio.run(run())


def _token_as(cluster, role, ttl="1 hour"):
    conn = cluster.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT cdc_token(%s::interval)", (ttl,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_token_mode(cluster):
    """The token's role subscribes; 401 without a token; a role set NOLOGIN or a token that
    expires closes the socket with 4001."""
    setup_tables(cluster)
    cluster.sql("DROP ROLE IF EXISTS bs_tok")
    cluster.sql("CREATE ROLE bs_tok LOGIN")
    cluster.sql("GRANT USAGE ON SCHEMA bs TO bs_tok")
    cluster.sql("GRANT SELECT ON bs.full_identity TO bs_tok")
    try:
        cluster.alter_system("pgcdcws.auth", "token")
        wait_for(lambda: http_request(cluster.ws_port, "/ws").status == 401, 10, what="token mode in the server")
        token = _token_as(cluster, "bs_tok")
        tq = "access_token=" + urllib.parse.quote(token, safe="")
        resp = http_request(cluster.ws_port, f"/ws?{tq}&query=" + urllib.parse.quote("insert:bs.orders", safe=""))
        assert check_refusal(resp, 403) == "permission denied for table bs.orders"
        assert http_request(cluster.ws_port,
                            f"/ws?{tq}&query=" + urllib.parse.quote("insert:bs.full_identity", safe="")).status == 101

        async def closed_with(ws, timeout):
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), timeout)
            except websockets.ConnectionClosed as e:
                return e.code, e.reason

        async def run():
            async with websockets.connect(f"ws://localhost:{cluster.ws_port}/ws?{tq}") as ws:
                await ws.send(json.dumps({"subscribe": "insert:bs.orders", "id": "o"}))
                assert await _recv_json(ws) == {"type": "error", "id": "o",
                                                "error": "permission denied for table bs.orders"}
                cluster.sql("ALTER ROLE bs_tok NOLOGIN")
                assert await closed_with(ws, 20) == (4001, "the token's role may no longer log in")
            cluster.sql("ALTER ROLE bs_tok LOGIN")
            short = _token_as(cluster, "bs_tok", "2 seconds")
            sq = "access_token=" + urllib.parse.quote(short, safe="")
            async with websockets.connect(f"ws://localhost:{cluster.ws_port}/ws?{sq}") as ws:
                assert await closed_with(ws, 20) == (4001, "token expired")

        asyncio.run(run())
    finally:
        cluster.alter_system("pgcdcws.auth", "trust")
        cluster.sql("DROP SCHEMA bs CASCADE")
        cluster.sql("DROP ROLE bs_tok")
