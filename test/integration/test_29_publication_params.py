"""Publications on durable streams, from the client to the plugin option (issue 9,
"Publications"): the publication= stream parameter (400 for a bad list, 404 for an unknown
publication, in band 4400/4404 for pages), cdc_init(publication => ...) as the slot's
default shown by cdc_slots() and applied to streams that name none, and POST /v1/init
{"publication": ...}. What a publication then streams is the output plugin's part; the last
test checks one FOR TABLE case end to end."""

import asyncio
import http.client
import json
import urllib.parse

import psycopg2
import psycopg2.errors
import pytest
import websockets
import websockets.exceptions

from cdcws import STREAM_PATH, StreamClient, http_request
from conftest import wait_for
from test_03_http import check_refusal
from test_20_token_auth import init_as, tc, token_as  # noqa: F401 (tc: the token-mode cluster fixture)
from test_21_browsers import preflight

ORIGIN = "http://127.0.0.1:9"


def target(slot, publication=None):
    """The stream URL; `publication` raw (already URL-encoded) when given."""
    t = f"{STREAM_PATH}?slotName={slot}"
    if publication is not None:
        t += "&publication=" + publication
    return t


def refusal(cluster, slot, publication, status):
    return check_refusal(http_request(cluster.ws_port, target(slot, publication)), status)


async def open_stream(cluster, slot, publication=None, origin=None):
    uri = f"ws://localhost:{cluster.ws_port}{target(slot, publication)}"
    ws = await websockets.connect(uri, origin=origin, max_size=None, ping_interval=None, open_timeout=10,
                                  close_timeout=2)
    return StreamClient(ws, slot)


async def in_band_close(cluster, slot, publication):
    """An upgrade from an allowed Origin: accepted, then closed at once: (code, reason)."""
    client = await open_stream(cluster, slot, publication, origin=ORIGIN)
    try:
        code, reason, got = await client.wait_closed_code(timeout=20)
    finally:
        await client.close()
    assert got == [], got
    return code, reason


def init_http(cluster, body):
    """POST /v1/init (trust mode: no token) -> (status, JSON body)."""
    data = json.dumps(body).encode()
    conn = http.client.HTTPConnection("localhost", cluster.ws_port, timeout=60)
    try:
        conn.request("POST", "/v1/init", body=data,
                     headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def publication_of(cluster, slot):
    return cluster.sql1("SELECT publication FROM cdc_slots() WHERE slot_name = %s", (slot,))


@pytest.fixture
def slot(cluster, request):
    name = "pp_" + request.node.name.removeprefix("test_")[:40]
    cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false)", (name,))
    yield name
    cluster.drop_slot_quietly(name)


@pytest.fixture
def pubs(cluster):
    """Tables pp_one, pp_two and publications pp_pub (FOR TABLE pp_one) and "PP Mixed"
    (FOR TABLE pp_two); dropped at the end."""
    cluster.sql("DROP PUBLICATION IF EXISTS pp_pub, \"PP Mixed\"")
    cluster.sql("DROP TABLE IF EXISTS pp_one, pp_two")
    cluster.sql("CREATE TABLE pp_one (id int PRIMARY KEY, v text)")
    cluster.sql("CREATE TABLE pp_two (id int PRIMARY KEY, v text)")
    cluster.sql("CREATE PUBLICATION pp_pub FOR TABLE pp_one")
    cluster.sql("CREATE PUBLICATION \"PP Mixed\" FOR TABLE pp_two")
    yield
    cluster.sql("DROP PUBLICATION IF EXISTS pp_pub, \"PP Mixed\"")
    cluster.sql("DROP TABLE IF EXISTS pp_one, pp_two")


@pytest.fixture
def origins(cluster):
    cluster.alter_system("pgcdcws.allowed_origins", ORIGIN, expect_show=ORIGIN)
    wait_for(lambda: preflight(cluster.ws_port, ORIGIN).status == 204, 30, what="allowed_origins reloaded")
    yield
    cluster.alter_system("pgcdcws.allowed_origins", None, expect_show="")


# ----------------------------------------------------------------------- publication=
def test_publication_parameter_refused_before_upgrade(cluster, slot):
    # (libwebsockets itself drops a request whose target holds %00 or a malformed escape;
    # the unit tests cover those.)
    empty_name = "invalid publication parameter: a publication name is empty (two commas in a row, a comma " \
                 "at an end, or \"\")"
    cases = [
        ("", "publication parameter without a value (omit it for the slot's default, set by cdc_init())"),
        ("a,,b", empty_name),
        ("a,", empty_name),
        ("%22%22", empty_name),
        ("%20", "invalid publication parameter: the publication list is empty"),
        ("%22pp_pub", "invalid publication parameter: a quoted publication name has no closing double quote"),
        ("my%20pub", "invalid publication parameter: publication names must be separated by commas (quote a "
                     "name that holds spaces: \"my pub\")"),
        ("p" * 64, "invalid publication parameter: a publication name is longer than 63 bytes (Postgres would "
                   "truncate it)"),
        (",".join(f"p{i}" for i in range(65)), "invalid publication parameter: more than 64 publications"),
        (",".join("p" * 63 for _ in range(17)),
         "invalid publication parameter: the publication names are longer than 1024 bytes together"),
        ("%FF", "invalid publication parameter: the publication list is not valid UTF-8"),
    ]
    for value, error in cases:
        assert refusal(cluster, slot, value, 400) == error, value
    assert refusal(cluster, slot, "a&publication=b", 400) == "publication given more than once in the query string"

    # the websockets client sees the status too; the slot was never taken
    async def refused():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await open_stream(cluster, slot, "a,,b")
        return e.value.status_code

    assert asyncio.run(refused()) == 400
    assert cluster.slot_row(slot)[0] is False  # not active


def test_unknown_publication_is_404(cluster, slot, pubs):
    assert refusal(cluster, slot, "pp_pub,nope", 404) == 'publication "nope" does not exist'
    # Unquoted names fold to lower case; quoted ones keep their case.
    assert refusal(cluster, slot, "%22PP_PUB%22", 404) == 'publication "PP_PUB" does not exist'
    assert refusal(cluster, slot, "PP%20Mixed", 400).startswith("invalid publication parameter: publication names "
                                                                 "must be separated by commas")
    assert refusal(cluster, slot, "pp_mixed", 404) == 'publication "pp_mixed" does not exist'
    # An unknown slot is reported before its publications.
    assert refusal(cluster, "pp_no_such_slot", "nope", 404) == \
        'replication slot "pp_no_such_slot" does not exist (create it with cdc_init())'
    assert cluster.slot_row(slot)[0] is False

    # Publications that exist pass the check (what the stream then holds is the plugin's part).
    for value in ("pp_pub", "PP_PUB,%22PP%20Mixed%22", "%22PP%20Mixed%22"):
        r = http_request(cluster.ws_port, target(slot, value))
        assert r.status == 101, (value, r)
        wait_for(lambda: cluster.slot_row(slot)[0] is False and not cluster.sql(
            "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws decoder'"), 20,
            what="the stream's decoder gone")


def test_in_band_refusals_with_origin(cluster, slot, pubs, origins):
    async def main():
        assert await in_band_close(cluster, slot, "pp_pub,nope") == (4404, 'publication "nope" does not exist')
        code, reason = await in_band_close(cluster, slot, "a,,b")
        assert code == 4400, (code, reason)
        assert reason.startswith("invalid publication parameter: a publication name is empty"), reason

    asyncio.run(main())
    # Without Origin: plain HTTP refusals.
    assert refusal(cluster, slot, "nope", 404) == 'publication "nope" does not exist'


def test_forbidden_before_unknown_publication(tc):  # noqa: F811
    """Token mode: a role that may not use the slot gets the 403 whatever the publication,
    so it cannot probe which publications (or slots) exist; the owner gets the 404."""
    init_as(tc, "tok_owner", "pp_tok")
    try:
        def status(role, slot, publication):
            r = http_request(tc.ws_port, target(slot, publication),
                             extra_headers=[f"Authorization: Bearer {token_as(tc, role)}"])
            return r.status, json.loads(r.body)["error"]

        forbidden = status("tok_other", "pp_tok", "nope")
        assert forbidden[0] == 403, forbidden
        assert status("tok_other", "pp_tok", "a,,b")[0] == 400  # the parameter itself is checked first
        assert status("tok_other", "pp_no_such_slot", "nope") == forbidden
        assert status("tok_owner", "pp_tok", "nope") == (404, 'publication "nope" does not exist')
        tc.sql("CREATE PUBLICATION pp_tok_pub FOR ALL TABLES")
        try:
            assert status("tok_other", "pp_tok", "pp_tok_pub") == forbidden
        finally:
            tc.sql("DROP PUBLICATION pp_tok_pub")
    finally:
        tc.drop_slot_quietly("pp_tok")


# --------------------------------------------------------------------- slot default
def test_cdc_init_default_in_cdc_slots_and_streams(cluster, pubs):
    slot = "pp_default"
    try:
        cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false, publication => %s)",
                    (slot, ' PP_PUB , "PP Mixed"'))
        assert publication_of(cluster, slot) == 'pp_pub,"PP Mixed"'
        # Without publication= the default is checked as a given list would be: a dropped
        # publication is 404 before the upgrade ...
        cluster.sql('DROP PUBLICATION "PP Mixed"')
        assert refusal(cluster, slot, None, 404) == 'publication "PP Mixed" does not exist'
        assert publication_of(cluster, slot) == 'pp_pub,"PP Mixed"'  # the default stays as it was set
        # ... and publication= overrides the default.
        r = http_request(cluster.ws_port, target(slot, "pp_pub"))
        assert r.status == 101, r
    finally:
        cluster.drop_slot_quietly(slot)

    # Refused lists: SQLSTATE 22023 (syntax) and 42704 (unknown); no slot is made.
    with pytest.raises(psycopg2.errors.InvalidParameterValue) as e:
        cluster.sql("SELECT * FROM cdc_init('pp_bad', publication => 'a,,b')")
    assert e.value.pgcode == "22023"
    assert "a publication name is empty" in e.value.pgerror
    with pytest.raises(psycopg2.errors.UndefinedObject) as e:
        cluster.sql("SELECT * FROM cdc_init('pp_bad', publication => 'pp_pub, nope')")
    assert e.value.pgcode == "42704"
    assert e.value.diag.message_primary == 'publication "nope" does not exist'
    assert not cluster.slot_exists("pp_bad")
    # NULL: no default, every table.
    try:
        cluster.sql("SELECT * FROM cdc_init('pp_none', snapshot => false, publication => NULL)")
        assert publication_of(cluster, "pp_none") is None
    finally:
        cluster.drop_slot_quietly("pp_none")


def test_http_init_with_publication(cluster, pubs):
    created = []
    try:
        status, body = init_http(cluster, {"slotName": "pp_http", "snapshot": False,
                                           "publication": "PP_PUB, \"PP Mixed\""})
        assert status == 200, body
        created.append("pp_http")
        assert body["slotName"] == "pp_http", body
        assert publication_of(cluster, "pp_http") == 'pp_pub,"PP Mixed"'

        status, body = init_http(cluster, {"slotName": "pp_http_null", "snapshot": False, "publication": None})
        assert status == 200, body
        created.append("pp_http_null")
        assert publication_of(cluster, "pp_http_null") is None

        status, body = init_http(cluster, {"slotName": "pp_http_bad", "publication": "pp_pub,nope"})
        assert (status, body) == (404, {"error": 'publication "nope" does not exist'})
        status, body = init_http(cluster, {"slotName": "pp_http_bad", "publication": "a,,b"})
        assert (status, body) == (400, {"error": "invalid publication: a publication name is empty (two commas in "
                                                 "a row, a comma at an end, or \"\")"})
        status, body = init_http(cluster, {"slotName": "pp_http_bad", "publication": 5})
        assert (status, body) == (400, {"error": "\"publication\" must be a string (publication names separated "
                                                 "by commas) or null"})
        assert not cluster.slot_exists("pp_http_bad")
    finally:
        for s in created:
            cluster.drop_slot_quietly(s)


# ------------------------------------------------------------------- end to end
def test_stream_follows_for_table_publication(cluster, pubs):
    """The server's list reaches the output plugin (option publication-names): a stream with
    publication=pp_pub (FOR TABLE pp_one) gets pp_one's changes and nothing of pp_two; a
    slot whose default is pp_pub streams the same without the parameter."""
    slot = "pp_e2e"
    cluster.sql("SELECT * FROM cdc_init(%s, snapshot => false, publication => 'pp_pub')", (slot,))

    async def first_txn(publication):
        client = await open_stream(cluster, slot, publication)
        try:
            cluster.exec_txn("INSERT INTO pp_two VALUES (1, 'not published')")
            cluster.exec_txn("INSERT INTO pp_one VALUES (1, 'published')", "INSERT INTO pp_two VALUES (2, 'no')")
            txn = await client.recv_txn(timeout=20)
            await client.ack(txn.nextlsn)
            return [(c["kind"], c["table"], c["columnvalues"]) for c in txn.changes]
        finally:
            await client.close()

    try:
        assert asyncio.run(first_txn("pp_pub")) == [("insert", "pp_one", [1, "published"])]
        cluster.sql("DELETE FROM pp_one")
        cluster.sql("DELETE FROM pp_two")
        wait_for(lambda: cluster.slot_row(slot)[0] is False, 20, what="slot released")

        async def default_applies():
            # The DELETEs above: only pp_one's reaches the stream, then the new inserts.
            client = await open_stream(cluster, slot)
            try:
                txn = await client.recv_txn(timeout=20)
                return [(c["kind"], c["table"]) for c in txn.changes]
            finally:
                await client.close()

        assert asyncio.run(default_applies()) == [("delete", "pp_one")]
    finally:
        cluster.drop_slot_quietly(slot)
