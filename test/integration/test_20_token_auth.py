"""Token authentication and slot authorization in the server (issue 7, "Authentication" and
"Authorization by Postgres itself"), in a cluster of its own with pgcdcws.auth = token.

Tokens are minted with cdc_token() as each role, or forged here with Python's
hmac/hashlib/base64 (HS256, with the generated secret read from $PGDATA/pgcdcws/jwt_secret)
and the openssl CLI (RS256, ES256). Every refused token gets exactly the same 401.
"""

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import pwd
import subprocess
import time
import urllib.parse

import psycopg2
import psycopg2.errors
import pytest
import websockets

from cdcws import STREAM_PATH, StreamClient, apoll, http_request, lsn_int, wait_confirmed
from conftest import Cluster, _require_extension, tcp_accepts, wait_for

SNAP_PATH = "/v1/snapshot/data"
UNAUTH_BODY = {"error": "invalid or missing token"}
SLOT_FORBIDDEN = ("permission denied for this replication slot (only its owner, members of the owner role and "
                  "superusers may use it)")
CANNOT_LOG_IN = "the token's role may no longer log in"
MARK = "tok_mark"


@pytest.fixture(scope="module")
def tc():
    c = Cluster(extension=True)
    _require_extension(c)
    try:
        c.init()
        with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
            f.write("pgcdcws.auth = token\n")
        c.start()
        c.sql("CREATE EXTENSION pgcdcws")
        c.sql("CREATE ROLE tok_owner LOGIN REPLICATION")
        c.sql("CREATE ROLE tok_other LOGIN REPLICATION")
        c.sql("CREATE ROLE tok_member LOGIN IN ROLE tok_owner")
        c.sql("CREATE ROLE tok_nologin NOLOGIN")
        c.sql("CREATE ROLE tok_plain LOGIN")
        c.sql(f"CREATE TABLE {MARK} (id int PRIMARY KEY)")
        c.sql(f"GRANT SELECT ON {MARK} TO PUBLIC")
        c.sql("CREATE TABLE tok_secret (id int PRIMARY KEY)")
        c.sql("CREATE TABLE tok_rls (id int PRIMARY KEY, owner text)")
        c.sql("ALTER TABLE tok_rls REPLICA IDENTITY FULL")
        c.sql("ALTER TABLE tok_rls ENABLE ROW LEVEL SECURITY")
        c.sql("CREATE POLICY mine ON tok_rls FOR SELECT USING (owner = current_user)")
        c.sql("GRANT SELECT ON tok_rls TO tok_owner, tok_other")
        c.sql("INSERT INTO tok_secret VALUES (1)")
        c.sql("SELECT cdc_token()")  # creates the generated secret, read by secret_of()
    except BaseException:
        c.destroy()
        raise
    yield c
    c.destroy()


# ------------------------------------------------------------------ tokens
def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def secret_of(c):
    with open(os.path.join(c.datadir, "pgcdcws", "jwt_secret"), "rb") as f:
        return f.read()


def token_as(c, role, ttl="1 hour"):
    conn = c.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT cdc_token(%s::interval)", (ttl,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def signing_input(header, claims):
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


def hs256(claims, secret, header=None):
    head = signing_input(header or {"alg": "HS256", "typ": "JWT"}, claims)
    return head + "." + b64url(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def claims_for(role, exp_in=3600, **extra):
    now = int(time.time())
    d = {"role": role, "iat": now, "exp": now + exp_in}
    d.update(extra)
    return d


# ------------------------------------------------------------------ HTTP helpers
def snap_post(port, body, token=None, query=""):
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("localhost", port, timeout=30)
    try:
        conn.request("POST", SNAP_PATH + query, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def upgrade(port, slot, token=None, query_token=None):
    target = f"{STREAM_PATH}?slotName={slot}"
    if query_token is not None:
        target += "&access_token=" + query_token
    extra = [f"Authorization: Bearer {token}"] if token is not None else []
    return http_request(port, target, extra_headers=extra)


def assert_unauthorized(status, headers, body):
    assert status == 401, (status, body)
    assert headers.get("www-authenticate") == "Bearer", headers
    assert json.loads(body) == UNAUTH_BODY


def assert_refused_everywhere(c, token, slot="tok_none"):
    """The token gets the same 401 on the stream upgrade and on the snapshot endpoint."""
    r = upgrade(c.ws_port, slot, token=token)
    assert_unauthorized(r.status, r.headers, r.body)
    assert_unauthorized(*snap_post(c.ws_port, {"slotName": slot, "table": MARK}, token=token))


def init_as(c, role, slot, snapshot=False):
    conn = c.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM cdc_init(%s, snapshot => %s)", (slot, snapshot))
            assert cur.fetchone()[0] == slot
    finally:
        conn.close()


def uri(port, slot, token=None):
    u = f"ws://localhost:{port}{STREAM_PATH}?slotName={slot}"
    if token is not None:
        u += "&access_token=" + urllib.parse.quote(token, safe="")
    return u


async def open_stream(port, slot, token, via_query=False):
    if via_query:
        ws = await websockets.connect(uri(port, slot, token), max_size=None, ping_interval=None,
                                      open_timeout=20, close_timeout=2)
    else:
        ws = await websockets.connect(uri(port, slot), max_size=None, ping_interval=None, open_timeout=20,
                                      close_timeout=2, extra_headers={"Authorization": f"Bearer {token}"})
    return StreamClient(ws, slot)


async def expect_mark(c, client, n, timeout=30):
    c.sql(f"INSERT INTO {MARK} VALUES (%s)", (n,))
    txn = await client.recv_txn(timeout)
    assert [(ch["kind"], ch["table"], ch["columnvalues"]) for ch in txn.changes] == [
        ("insert", MARK, [n])], txn.changes
    return txn


def stats(c):
    return c.sql("SELECT auth_failures, connections_refused, request_timeouts FROM cdc_server_stats()")[0]


# ------------------------------------------------------------------ 401
def test_missing_token_is_401_on_http_and_upgrade(tc):
    before = stats(tc)[0]
    assert_refused_everywhere(tc, None)
    r = http_request(tc.ws_port, "/v1/lr/stream?slotName=x", upgrade=False)
    assert_unauthorized(r.status, r.headers, r.body)
    r = http_request(tc.ws_port, "/no/such/endpoint", upgrade=False)
    assert_unauthorized(r.status, r.headers, r.body)
    assert stats(tc)[0] == before + 4


def test_every_bad_token_gets_the_same_401(tc):
    secret = secret_of(tc)
    good = hs256(claims_for("tok_owner"), secret)
    h, p, s = good.split(".")
    tampered_claims = b64url(json.dumps(claims_for("postgres")).encode())
    bad = {
        "forged": hs256(claims_for("tok_owner"), b"x" * 64),
        "tampered": f"{h}.{tampered_claims}.{s}",
        "alg none": signing_input({"alg": "none", "typ": "JWT"}, claims_for("tok_owner")) + ".",
        "expired": hs256(claims_for("tok_owner", exp_in=-120), secret),
        "nbf future": hs256(claims_for("tok_owner", nbf=int(time.time()) + 600), secret),
        "unknown role": hs256(claims_for("tok_nobody"), secret),
        "nologin role": hs256(claims_for("tok_nologin"), secret),
        "no exp": hs256({"role": "tok_owner"}, secret),
        "garbage": "not-a-token",
    }
    before = stats(tc)[0]
    offset = tc.log_size()
    for name, token in bad.items():
        assert_refused_everywhere(tc, token), name
    assert stats(tc)[0] == before + 2 * len(bad)
    # The failures are logged (rate-limited per reason) with the peer address, never a token.
    log = wait_for(lambda: (lambda t: t if "authentication failed" in t else None)(tc.log_since(offset)), 10,
                   what="an authentication failure in the log")
    assert "from 127.0.0.1" in log or "from ::1" in log, log
    for token in bad.values():
        assert token not in log
        signature = token.split(".")[-1]
        if len(signature) > 20:
            assert signature not in log
    # A good token passes authentication: tok_owner may not use a slot that is not its own
    # (or does not exist), 403 and not 401.
    status, _, body = snap_post(tc.ws_port, {"slotName": "tok_none", "table": MARK}, token=good)
    assert status == 403, body


def test_token_in_header_and_query_both_is_refused(tc):
    token = token_as(tc, "tok_owner")
    r = upgrade(tc.ws_port, "tok_none", token=token, query_token=token)
    assert_unauthorized(r.status, r.headers, r.body)


# ------------------------------------------------------------------ 403, roles
def test_stream_and_snapshot_authorization(tc):
    init_as(tc, "tok_owner", "tok_slot_a", snapshot=True)
    try:
        owner, other, member, su = (token_as(tc, r) for r in ("tok_owner", "tok_other", "tok_member", "postgres"))
        req = {"slotName": "tok_slot_a", "table": MARK}
        # Not the owner: 403, on the stream and the snapshot.
        r = upgrade(tc.ws_port, "tok_slot_a", token=other)
        assert r.status == 403 and "permission denied" in json.loads(r.body)["error"], r
        status, _, body = snap_post(tc.ws_port, req, token=other)
        assert status == 403 and "permission denied" in json.loads(body)["error"], body
        # A slot that does not exist looks the same to a non-owner.
        r = upgrade(tc.ws_port, "tok_missing", token=other)
        assert r.status == 403, r
        # Owner, member of the owner role and superuser read the snapshot.
        for token in (owner, member, su):
            status, _, body = snap_post(tc.ws_port, req, token=token)
            assert status == 200 and json.loads(body) == [], body
        # Superusers see a missing slot as missing.
        assert upgrade(tc.ws_port, "tok_missing", token=su).status == 404

        async def main():
            # The member streams with the token in the query string (browsers' way).
            client = await open_stream(tc.ws_port, "tok_slot_a", member, via_query=True)
            try:
                await expect_mark(tc, client, 1)
            finally:
                await client.close()
        asyncio.run(main())
    finally:
        tc.sql("SELECT cdc_drop('tok_slot_a')")


def test_snapshot_reads_as_the_client_role(tc):
    """tok_owner cannot SELECT tok_secret: its snapshot read is refused, while the superuser
    reading the same slot's snapshot sees the row (the read runs as the client's role, not as
    the role that called cdc_init())."""
    init_as(tc, "tok_owner", "tok_slot_b", snapshot=True)
    try:
        req = {"slotName": "tok_slot_b", "table": "tok_secret"}
        status, _, body = snap_post(tc.ws_port, req, token=token_as(tc, "tok_owner"))
        assert status == 403, body
        status, _, body = snap_post(tc.ws_port, req, token=token_as(tc, "postgres"))
        assert status == 200 and json.loads(body) == [{"id": 1}], body
    finally:
        tc.sql("SELECT cdc_drop('tok_slot_b')")


WHOAMI = ("SELECT session_user::text AS session_user_, current_user::text AS current_user_, "
          "current_setting('is_superuser') AS is_superuser, "
          "current_setting('session_authorization') AS session_authorization, current_setting('role') AS role_")


def psql_rows(c, role, query):
    """Rows of `query` in a session of `role`, as dicts (what psql shows that role)."""
    conn = c.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        conn.close()


def test_snapshot_session_user_is_the_client_role(tc):
    """The snapshot read runs with the client's role as session_user too: policies on
    session_user and on current_setting('is_superuser') give exactly the rows psql gives that
    role, for the owner, a member and a superuser reading the same slot in turns, also right
    after a read that failed (a bad "after" value) and one that was refused."""
    tc.sql("CREATE TABLE tok_sess (id int PRIMARY KEY, who name)")
    tc.sql("ALTER TABLE tok_sess ENABLE ROW LEVEL SECURITY")
    tc.sql("CREATE POLICY by_session ON tok_sess FOR SELECT USING (who = session_user)")
    tc.sql("CREATE TABLE tok_su (id int PRIMARY KEY, flag text)")
    tc.sql("ALTER TABLE tok_su ENABLE ROW LEVEL SECURITY")
    tc.sql("CREATE POLICY by_superuser ON tok_su FOR SELECT USING (flag = current_setting('is_superuser'))")
    tc.sql(f"CREATE VIEW tok_whoami AS {WHOAMI}")
    tc.sql("GRANT SELECT ON tok_sess, tok_su, tok_whoami TO PUBLIC")
    tc.sql("INSERT INTO tok_sess VALUES (1, 'postgres'), (2, 'tok_owner'), (3, 'tok_member'), (4, 'tok_other')")
    tc.sql("INSERT INTO tok_su VALUES (1, 'on'), (2, 'off')")
    init_as(tc, "tok_owner", "tok_slot_sess", snapshot=True)
    try:
        tokens = {r: token_as(tc, r) for r in ("tok_owner", "tok_member", "postgres")}
        expected = {
            "tok_owner": ([{"id": 2, "who": "tok_owner"}], [{"id": 2, "flag": "off"}]),
            "tok_member": ([{"id": 3, "who": "tok_member"}], [{"id": 2, "flag": "off"}]),
            # Superusers bypass row security.
            "postgres": ([{"id": 1, "who": "postgres"}, {"id": 2, "who": "tok_owner"},
                          {"id": 3, "who": "tok_member"}, {"id": 4, "who": "tok_other"}],
                         [{"id": 1, "flag": "on"}, {"id": 2, "flag": "off"}]),
        }

        def read(role, table):
            status, _, body = snap_post(tc.ws_port, {"slotName": "tok_slot_sess", "table": table,
                                                     "order_by": {"column": "id"}}, token=tokens[role])
            assert status == 200, (role, table, body)
            return json.loads(body)

        def check(role):
            sess, su = expected[role]
            assert psql_rows(tc, role, "SELECT id, who::text FROM tok_sess ORDER BY id") == sess
            assert psql_rows(tc, role, "SELECT id, flag FROM tok_su ORDER BY id") == su
            assert read(role, "tok_sess") == sess, role
            assert read(role, "tok_su") == su, role
            whoami = psql_rows(tc, role, WHOAMI)
            assert whoami == [{"session_user_": role, "current_user_": role,
                               "is_superuser": "on" if role == "postgres" else "off",
                               "session_authorization": role, "role_": "none"}], whoami
            status, _, body = snap_post(tc.ws_port, {"slotName": "tok_slot_sess", "table": "tok_whoami"},
                                        token=tokens[role])
            assert status == 200 and json.loads(body) == whoami, (role, body)

        for role in ("tok_member", "postgres", "tok_owner", "postgres", "tok_member"):
            check(role)
        # A read that fails inside the request (the "after" value's input), then a refused one:
        # the next reads still run as their own client's role.
        for role in ("tok_member", "postgres"):
            status, _, body = snap_post(tc.ws_port, {"slotName": "tok_slot_sess", "table": "tok_sess",
                                                     "order_by": {"column": "id"}, "after": "not a number"},
                                        token=tokens[role])
            assert status == 400 and json.loads(body)["error"].startswith('invalid "after" value'), body
            for next_role in ("tok_owner", "postgres", "tok_member"):
                check(next_role)
        status, _, body = snap_post(tc.ws_port, {"slotName": "tok_slot_sess", "table": "tok_secret"},
                                    token=tokens["tok_owner"])
        assert status == 403, body
        check("tok_member")
        check("postgres")
    finally:
        tc.sql("SELECT cdc_drop('tok_slot_sess')")
        tc.sql("DROP VIEW tok_whoami")
        tc.sql("DROP TABLE tok_sess, tok_su")


def test_stream_shows_what_the_role_may_select(tc):
    """A role without SELECT on tok_secret and subject to RLS on tok_rls streams its own slot:
    it sees its own tok_rls rows only and nothing of tok_secret."""
    init_as(tc, "tok_other", "tok_slot_c")
    try:
        async def main():
            client = await open_stream(tc.ws_port, "tok_slot_c", token_as(tc, "tok_other"))
            try:
                tc.sql("INSERT INTO tok_secret VALUES (2)")
                tc.sql("INSERT INTO tok_rls VALUES (1, 'tok_owner')")
                tc.sql("INSERT INTO tok_rls VALUES (2, 'tok_other')")
                txn = await client.recv_txn(30)
                assert [(ch["table"], ch["columnvalues"]) for ch in txn.changes] == [
                    ("tok_rls", [2, "tok_other"])], txn.changes
                await expect_mark(tc, client, 2)
            finally:
                await client.close()
        asyncio.run(main())
    finally:
        tc.sql("SELECT cdc_drop('tok_slot_c')")
        tc.sql("DELETE FROM tok_secret WHERE id = 2")
        tc.sql("DELETE FROM tok_rls")


def test_marks_go_with_their_slot(tc):
    """Owner and temporary marks live as long as the slot they were written for: a slot
    dropped with pg_drop_replication_slot() and created again under the same name by a
    superuser (not with cdc_init()) is superuser-only and not temporary. The former owner and
    its member neither list nor stream it, and a stream of it ending does not drop it."""
    slot = "tok_slot_reborn"
    init_conn = tc.connect(user="tok_owner")
    try:
        with init_conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM cdc_init(%s, temporary => true, snapshot => false)", (slot,))
    finally:
        init_conn.close()
    try:
        assert slot in slots_seen_by(tc, "tok_member")
        assert tc.sql("SELECT temporary FROM cdc_slots() WHERE slot_name = %s", (slot,)) == [(True,)]
        dropper = tc.connect(user="tok_owner")
        try:
            with dropper.cursor() as cur:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        finally:
            dropper.close()
        tc.sql("SELECT pg_create_logical_replication_slot(%s, 'pgcdcws')", (slot,))
        assert slot not in slots_seen_by(tc, "tok_member")
        assert slot not in slots_seen_by(tc, "tok_owner")
        for role in ("tok_member", "tok_owner"):
            r = upgrade(tc.ws_port, slot, token=token_as(tc, role))
            assert r.status == 403, (role, r)
        member = tc.connect(user="tok_member")
        try:
            with member.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT cdc_drop(%s)", (slot,))
        finally:
            member.close()
        assert tc.sql("SELECT temporary FROM cdc_slots() WHERE slot_name = %s", (slot,)) == [(False,)]

        async def main():
            client = await open_stream(tc.ws_port, slot, token_as(tc, "postgres"))
            try:
                await expect_mark(tc, client, 50)
            finally:
                await client.close()
        asyncio.run(main())
        wait_for(lambda: tc.sql1("SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)), 30,
                 what="the stream's decoder to release the slot")
        assert tc.slot_exists(slot)
    finally:
        if tc.slot_exists(slot):
            wait_for(lambda: tc.sql1("SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)),
                     30, what="slot released")
            tc.sql("SELECT pg_drop_replication_slot(%s)", (slot,))


# ------------------------------------------------------------------ expiry, refresh
def test_token_expiry_closes_4001_and_refresh_extends(tc):
    init_as(tc, "tok_owner", "tok_slot_d")
    try:
        async def main():
            # Expires in 3 s, no refresh: 4001 "token expired".
            client = await open_stream(tc.ws_port, "tok_slot_d", token_as(tc, "tok_owner", "3 seconds"))
            code, reason, _ = await client.wait_closed_code(30)
            assert (code, reason) == (4001, "token expired")

            # Refreshed with a new token of the same role before expiry: still streaming after.
            start = time.time()
            client = await wait_open(tc, "tok_slot_d", token_as(tc, "tok_owner", "3 seconds"))
            await client.send(json.dumps({"access_token": token_as(tc, "tok_owner", "1 hour")}))
            while time.time() < start + 6:
                await asyncio.sleep(0.2)
            await expect_mark(tc, client, 3)

            # Another role's token: 4001 "token role changed".
            await client.send(json.dumps({"access_token": token_as(tc, "tok_other")}))
            code, reason, _ = await client.wait_closed_code(30)
            assert (code, reason) == (4001, "token role changed")

            # A token that does not verify: 4001 "invalid token".
            client = await wait_open(tc, "tok_slot_d", token_as(tc, "tok_owner"))
            await client.send(json.dumps({"access_token": hs256(claims_for("tok_owner"), b"y" * 64)}))
            code, reason, _ = await client.wait_closed_code(30)
            assert (code, reason) == (4001, "invalid token")
        asyncio.run(main())
    finally:
        tc.sql("SELECT cdc_drop('tok_slot_d')")


async def wait_open(c, slot, token, timeout=30):
    """Open a stream, retrying while the previous consumer's decoder still holds the slot (409)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await open_stream(c.ws_port, slot, token)
        except websockets.exceptions.InvalidStatusCode as e:
            if e.status_code != 409 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ privilege changes on running streams
def released(c, slot):
    """The slot exists and no decoder holds it any more."""
    row = c.slot_row(slot)
    return row is not None and not row[0]


def revoked_while_streaming(c, slot, role, change_sql, expected_close):
    """`role` (a member of tok_owner) streams tok_owner's slot; its acks move the slot. Then
    `change_sql` takes its access away and the client at once acknowledges the transaction it
    has: the stream closes with `expected_close` within the deadline, and that ack does not
    move the slot (acks of a token-mode stream count only once a check begun after they
    arrived found the role still entitled)."""
    init_as(c, "tok_owner", slot)
    c.sql(f"CREATE ROLE {role} LOGIN IN ROLE tok_owner")
    try:
        async def main():
            client = await open_stream(c.ws_port, slot, token_as(c, role))
            try:
                first = await expect_mark(c, client, 10)
                await client.ack(first.nextlsn)
                await wait_confirmed(c, slot, first.nextlsn, timeout=15)
                second = await expect_mark(c, client, 11)
                c.sql(change_sql)
                await client.ack(second.nextlsn)
                code, reason, _ = await client.wait_closed_code(15)
                assert (code, reason) == expected_close
            finally:
                await client.close()
            await apoll(lambda: released(c, slot), 30, what=f"{slot} released by its decoder")
            assert lsn_int(c.confirmed_lsn(slot)) < lsn_int(second.nextlsn), (c.confirmed_lsn(slot), second.nextlsn)
        asyncio.run(main())
    finally:
        c.sql("SELECT cdc_drop(%s)", (slot,))
        c.sql(f"DROP ROLE IF EXISTS {role}")
        c.sql(f"DELETE FROM {MARK} WHERE id IN (10, 11)")


def test_revoked_membership_closes_the_stream_4403(tc):
    revoked_while_streaming(tc, "tok_slot_rev", "tok_rev_member", "REVOKE tok_owner FROM tok_rev_member",
                            (4403, SLOT_FORBIDDEN))


def test_nologin_closes_the_stream_4001(tc):
    revoked_while_streaming(tc, "tok_slot_nologin", "tok_nl_member", "ALTER ROLE tok_nl_member NOLOGIN",
                            (4001, CANNOT_LOG_IN))


def test_dropped_role_closes_the_stream_4001(tc):
    revoked_while_streaming(tc, "tok_slot_dropped", "tok_dr_member", "DROP ROLE tok_dr_member",
                            (4001, CANNOT_LOG_IN))


def test_refresh_after_revoke_is_refused(tc):
    """A fresh token of a role that lost the slot privilege does not extend its stream: the
    refresh itself checks the slot privilege (as does the periodic recheck)."""
    slot, role = "tok_slot_refresh", "tok_rf_member"
    init_as(tc, "tok_owner", slot)
    tc.sql(f"CREATE ROLE {role} LOGIN IN ROLE tok_owner")
    try:
        async def main():
            client = await open_stream(tc.ws_port, slot, token_as(tc, role))
            try:
                await expect_mark(tc, client, 12)
                tc.sql(f"REVOKE tok_owner FROM {role}")
                await client.send(json.dumps({"access_token": token_as(tc, role)}))
                code, reason, _ = await client.wait_closed_code(15)
                assert (code, reason) == (4403, SLOT_FORBIDDEN)
            finally:
                await client.close()
            r = upgrade(tc.ws_port, slot, token=token_as(tc, role))
            assert r.status == 403 and json.loads(r.body) == {"error": SLOT_FORBIDDEN}, r
        asyncio.run(main())
    finally:
        tc.sql("SELECT cdc_drop(%s)", (slot,))
        tc.sql(f"DROP ROLE IF EXISTS {role}")
        tc.sql(f"DELETE FROM {MARK} WHERE id = 12")


def test_token_refresh_is_rate_limited(tc):
    """At most one access_token message per second is verified: one sent sooner gets an error
    reply and is ignored (here a bad token that would otherwise close the stream)."""
    slot = "tok_slot_flood"
    init_as(tc, "tok_owner", slot)
    try:
        async def main():
            client = await open_stream(tc.ws_port, slot, token_as(tc, "tok_owner"))
            try:
                await client.send(json.dumps({"access_token": token_as(tc, "tok_owner")}))
                for _ in range(3):
                    await client.send(json.dumps({"access_token": "not-a-token"}))
                for _ in range(3):
                    reply = json.loads(await client.recv_raw(15))
                    assert reply == {"error": "at most one access_token message per second is accepted; "
                                              "this one was ignored"}, reply
                await expect_mark(tc, client, 13)
                # A second later the next one is verified again.
                await asyncio.sleep(1.2)
                await client.send(json.dumps({"access_token": "not-a-token"}))
                code, reason, _ = await client.wait_closed_code(15)
                assert (code, reason) == (4001, "invalid token")
            finally:
                await client.close()
        asyncio.run(main())
    finally:
        tc.sql("SELECT cdc_drop(%s)", (slot,))
        tc.sql(f"DELETE FROM {MARK} WHERE id = 13")


# ------------------------------------------------------------------ per-role cap
def test_per_role_connection_cap(tc):
    init_as(tc, "tok_owner", "tok_slot_e", snapshot=True)
    tc.alter_system("pgcdcws.max_connections_per_role", "1", expect_show="1")
    try:
        async def main():
            client = await open_stream(tc.ws_port, "tok_slot_e", token_as(tc, "tok_owner"))
            try:
                refused_before = stats(tc)[1]
                owner = token_as(tc, "tok_owner")
                # The server applies the setting once it has processed the reload.
                status, _, body = wait_for(
                    lambda: (lambda r: r if r[0] == 503 else None)(
                        snap_post(tc.ws_port, {"slotName": "tok_slot_e", "table": MARK}, token=owner)),
                    20, what="a 503 beyond pgcdcws.max_connections_per_role")
                assert json.loads(body) == {"error": 'too many connections for role "tok_owner" '
                                                     '(pgcdcws.max_connections_per_role = 1); try again later'}
                assert stats(tc)[1] == refused_before + 1
                # Another role is not affected.
                status, _, body = snap_post(tc.ws_port, {"slotName": "tok_slot_e", "table": MARK},
                                            token=token_as(tc, "postgres"))
                assert status == 200, body
            finally:
                await client.close()
        asyncio.run(main())
    finally:
        tc.alter_system("pgcdcws.max_connections_per_role", None, expect_show="100")
        tc.sql("SELECT cdc_drop('tok_slot_e')")


# ------------------------------------------------------------------ RS256 / ES256, HS/RS confusion
def openssl(*args, input=None):
    return subprocess.run(["openssl", *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          input=input).stdout


def der_to_raw(der):
    """ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) -> r||s, 32 bytes each (JWS ES256)."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def signed(alg, claims, key_path):
    head = signing_input({"alg": alg, "typ": "JWT"}, claims)
    sig = openssl("dgst", "-sha256", "-sign", key_path, input=head.encode())
    if alg == "ES256":
        sig = der_to_raw(sig)
    return head + "." + b64url(sig)


def give_to_postgres(path):
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_public_key_tokens_and_no_hs_rs_confusion(tc, alg):
    d = tc.tmpdir
    key = os.path.join(d, f"{alg}.key")
    pub = os.path.join(d, f"{alg}.pub")
    if alg == "RS256":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("pkey", "-in", key, "-pubout", "-out", pub)
    for p in (key, pub):
        give_to_postgres(p)
    tc.alter_system("pgcdcws.jwt_public_key", pub)
    try:
        good = signed(alg, claims_for("postgres"), key)
        # Accepted: authenticated as postgres (a missing slot is 404 for a superuser).
        wait_for(lambda: upgrade(tc.ws_port, "tok_missing", token=good).status == 404, 20,
                 what=f"{alg} token accepted after reload")
        with open(pub, "rb") as f:
            pem = f.read()
        confused = hs256(claims_for("postgres"), pem)
        assert_refused_everywhere(tc, confused)
        tampered = signed(alg, claims_for("tok_owner"), key).split(".")
        tampered[1] = b64url(json.dumps(claims_for("postgres")).encode())
        assert_refused_everywhere(tc, ".".join(tampered))
    finally:
        tc.alter_system("pgcdcws.jwt_public_key", None, expect_show="")


def test_escaped_query_token_is_decoded_once(tc):
    """access_token with every character %-escaped is the same token; %-escaping it twice is
    not (the server decodes the query exactly once)."""
    token = token_as(tc, "postgres")
    once = "".join(f"%{b:02X}" for b in token.encode())
    r = upgrade(tc.ws_port, "tok_missing", query_token=once)
    assert r.status == 404, r  # authenticated as postgres
    twice = once.replace("%", "%25")
    r = upgrade(tc.ws_port, "tok_missing", query_token=twice)
    assert_unauthorized(r.status, r.headers, r.body)


# ------------------------------------------------------------------ trust mode on a public address
def test_trust_mode_refuses_non_loopback_listener():
    c = Cluster(extension=True)
    _require_extension(c)
    try:
        c.init()
        with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
            f.write("pgcdcws.listen_addresses = '*'\npgcdcws.auth = trust\n")
        c._cmd([c.bin("pg_ctl"), "-D", c.datadir, "-l", c.logfile, "-w", "-t", "120", "start"])
        c.running = True
        wait_for(lambda: "pgcdcws.auth = trust is allowed only on loopback addresses" in c.log(), 60,
                 what="the trust-mode refusal in the log")
        assert "set pgcdcws.auth = token or listen on localhost only" in c.log()
        assert not tcp_accepts(c.ws_port, "127.0.0.1")
    finally:
        c.destroy()


# ------------------------------------------------------------------ /v1/init
def init_http(port, token, method="POST", body=None, timeout=60):
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(data))
    conn = http.client.HTTPConnection("localhost", port, timeout=timeout)
    try:
        conn.request(method, "/v1/init", body=data, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def slots_seen_by(c, role):
    conn = c.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM cdc_slots() ORDER BY 1")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_http_init_get_and_post(tc):
    owner = token_as(tc, "tok_owner")
    created = []
    try:
        status, body = init_http(tc.ws_port, owner, method="GET")
        assert status == 200, body
        assert set(body) == {"slotName", "lsn", "snapshotName"}, body
        created.append(body["slotName"])
        assert body["slotName"].startswith("cdc_")
        assert body["snapshotName"] and body["lsn"] == tc.sql1(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (body["slotName"],))
        # The snapshot is usable by the owner right away.
        status, _, rows = snap_post(tc.ws_port, {"slotName": body["slotName"], "table": MARK}, token=owner)
        assert status == 200, rows

        status, body = init_http(tc.ws_port, owner, body={"slotName": "tok_init_a", "snapshot": False})
        assert status == 200, body
        created.append("tok_init_a")
        assert body["slotName"] == "tok_init_a" and body["snapshotName"] is None, body
        # Owned by the client's role: its cdc_slots() shows it, another role's does not.
        assert set(created) <= set(slots_seen_by(tc, "tok_owner"))
        assert "tok_init_a" not in slots_seen_by(tc, "tok_other")

        status, body = init_http(tc.ws_port, owner, body={"slotName": "tok_init_a"})
        assert status == 409 and body == {"error": 'replication slot "tok_init_a" already exists'}, body
        status, body = init_http(tc.ws_port, token_as(tc, "tok_plain"), body={"slotName": "tok_init_b"})
        assert status == 403 and "REPLICATION" in body["error"], body
        status, body = init_http(tc.ws_port, owner, body={"slotName": "Bad Name"})
        assert status == 400 and body["error"].startswith("invalid slotName"), body
        status, body = init_http(tc.ws_port, owner, body={"temporary": "no"})
        assert status == 400, body
        assert not tc.slot_exists("tok_init_b")
        # Without a token: 401 like every endpoint.
        r = http_request(tc.ws_port, "/v1/init", upgrade=False)
        assert_unauthorized(r.status, r.headers, r.body)
    finally:
        for slot in created:
            tc.sql("SELECT cdc_drop(%s)", (slot,))


def test_http_init_client_leaving_leaves_no_slot(tc):
    """The slot cannot become consistent while a transaction with an xid is open; the client
    leaves meanwhile: the creation is cancelled and no slot remains."""
    blocker = tc.connect(autocommit=False)
    try:
        with blocker.cursor() as cur:
            cur.execute("INSERT INTO tok_secret VALUES (100)")
        import socket
        data = json.dumps({"slotName": "tok_init_c"}).encode()
        sock = socket.create_connection(("localhost", tc.ws_port), timeout=10)
        req = (f"POST /v1/init HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token_as(tc, 'tok_owner')}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data
        sock.sendall(req)
        wait_for(lambda: tc.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot'"), 30,
                 what="the snapshot worker creating tok_init_c")
        sock.close()
        wait_for(lambda: not tc.sql("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgcdcws snapshot'"), 30,
                 what="the snapshot worker to stop after the client left")
    finally:
        blocker.rollback()
        blocker.close()
    assert not tc.slot_exists("tok_init_c")


def test_missing_database_says_what_to_fix():
    """The server connects to pgcdcws.database; when it does not exist the log says which
    setting to fix (the postmaster retries every 5 s)."""
    c = Cluster(extension=True)
    _require_extension(c)
    try:
        c.init()
        with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
            f.write("pgcdcws.database = 'tok_nosuch_db'\n")
        c._cmd([c.bin("pg_ctl"), "-D", c.datadir, "-l", c.logfile, "-w", "-t", "120", "start"])
        c.running = True
        wait_for(lambda: 'pgcdcws server connecting to pgcdcws.database = "tok_nosuch_db"' in c.log(), 60,
                 what="the missing-database context in the log")
        log = c.log()
        assert 'database "tok_nosuch_db" does not exist' in log
        assert "create that database or set pgcdcws.database to an existing one" in log
        assert not tcp_accepts(c.ws_port)
    finally:
        c.destroy()
