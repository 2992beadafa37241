"""HTTP refusals before a WebSocket upgrade (issue item 3, first part)."""

import asyncio
import http.client
import os
import subprocess
import urllib.parse

from cdcws import StreamClient, apoll, expect_http_refusal, http_request

STREAM = "/v1/lr/stream"


def check_refusal(resp, status):
    """A complete HTTP/1.1 JSON error response with the given status."""
    assert resp.version == "HTTP/1.1", resp
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").split(";")[0].strip() == "application/json", resp
    assert resp.headers.get("connection", "").lower() == "close", resp
    if "content-length" in resp.headers:
        assert int(resp.headers["content-length"]) == len(resp.body), resp
    body = resp.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def refuse(cluster, target, status, **kw):
    """The status seen by `websockets`, and the raw response to the same request."""
    return check_refusal(http_request(cluster.ws_port, target, **kw), status)


def ws_status(cluster, slot):
    return asyncio.run(expect_http_refusal(cluster.ws_port, slot))


def test_400_missing_or_invalid_slot_name(cluster):
    # websockets sees the status ...
    for slot in ("", "Bad-Name!", "UPPER", "a" * 64, "with space", "x-y"):
        assert ws_status(cluster, slot) == 400, slot
    # ... and the full response is JSON
    err = refuse(cluster, STREAM, 400)
    assert "slotName" in err, err
    refuse(cluster, STREAM + "?slotName=", 400)
    refuse(cluster, STREAM + "?slotName=" + urllib.parse.quote("Bad-Name!"), 400)
    refuse(cluster, STREAM + "?slotName=" + "a" * 64, 400)
    refuse(cluster, STREAM + "?other=1", 400)


def test_404_unknown_slot_path_and_foreign_plugin(cluster):
    assert ws_status(cluster, "h_no_such_slot") == 404
    refuse(cluster, STREAM + "?slotName=h_no_such_slot", 404)
    # a slot of another output plugin counts as unknown
    cluster.sql("SELECT pg_create_logical_replication_slot('h_td', 'test_decoding')")
    try:
        assert ws_status(cluster, "h_td") == 404
        refuse(cluster, STREAM + "?slotName=h_td", 404)
        assert cluster.slot_row("h_td")[0] is False  # and it was not touched
    finally:
        cluster.sql("SELECT pg_drop_replication_slot('h_td')")
    # not an endpoint
    refuse(cluster, "/v1/nothing/here?slotName=x", 404)
    refuse(cluster, "/v1/nothing/here", 404, upgrade=False)


def test_405_other_method(cluster):
    cluster.sql("SELECT * FROM cdc_init('h_405')")
    try:
        refuse(cluster, STREAM + "?slotName=h_405", 405, method="POST", upgrade=False,
               extra_headers=["Content-Length: 0"])
        assert cluster.slot_row("h_405")[0] is False
    finally:
        cluster.drop_slot_quietly("h_405")


def test_409_second_consumer(cluster):
    slot = "h_409"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            first = await StreamClient.open(cluster.ws_port, slot)
            try:
                await apoll(lambda: cluster.slot_row(slot)[0] is True, 5, what="slot active")
                assert await expect_http_refusal(cluster.ws_port, slot) == 409
                check_refusal(http_request(cluster.ws_port, STREAM + "?slotName=" + slot), 409)
                # the first client is unaffected
                cluster.sql("CREATE TABLE IF NOT EXISTS h_409_t (id int PRIMARY KEY)")
                cluster.sql("INSERT INTO h_409_t VALUES (1)")
                txn = await first.recv_txn(10)
                assert txn.ids() == [1]
            finally:
                await first.close()
            # once the first consumer is gone the slot can be streamed again
            second = await StreamClient.open_retry(cluster.ws_port, slot, timeout=10)
            await second.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_409_slot_held_by_pg_recvlogical(cluster):
    slot = "h_recv"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    cmd = [cluster.bin("pg_recvlogical"), "-h", cluster.sockdir, "-p", str(cluster.port), "-U", "postgres",
           "-d", "postgres", "--slot", slot, "--start", "--no-loop", "-f", os.devnull]
    if cluster.as_root:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from conftest import wait_for
        wait_for(lambda: cluster.slot_row(slot)[0] is True, 10, what="pg_recvlogical to hold the slot")
        assert ws_status(cluster, slot) == 409
        check_refusal(http_request(cluster.ws_port, STREAM + "?slotName=" + slot), 409)
    finally:
        proc.terminate()
        proc.wait(10)
        cluster.drop_slot_quietly(slot)


def test_400_h2c_upgrade(cluster):
    """Upgrade: h2c (HTTP/2 over plain TCP, RFC 7540 3.2) is not a WebSocket: a stream URL and
    /ws answer 400 with a JSON error, the slot is not taken, and no client is made for it."""
    slot = "h_h2c"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        h2c = ["Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"]
        for target in (STREAM + "?slotName=" + slot, "/ws?query=insert:pg_class"):
            err = check_refusal(http_request(cluster.ws_port, target, upgrade=False, extra_headers=h2c), 400)
            assert err == "only WebSocket upgrades are served here (Upgrade: websocket)", err
        assert cluster.slot_row(slot)[0] is False
    finally:
        cluster.sql("SELECT cdc_drop(%s)", (slot,))


def test_426_plain_get(cluster):
    slot = "h_426"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        conn = http.client.HTTPConnection("localhost", cluster.ws_port, timeout=10)
        try:
            conn.request("GET", STREAM + "?slotName=" + slot)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 426
            assert resp.version == 11
            assert resp.getheader("content-type").split(";")[0].strip() == "application/json"
            import json
            err = json.loads(body)
            assert list(err) == ["error"] and isinstance(err["error"], str) and err["error"]
        finally:
            conn.close()
        check_refusal(http_request(cluster.ws_port, STREAM + "?slotName=" + slot, upgrade=False), 426)
        assert cluster.slot_row(slot)[0] is False
    finally:
        cluster.drop_slot_quietly(slot)
