"""Token keys and cdc_token() beyond what pg_regress can see (sql/auth.sql covers the SQL rules):
the generated HS256 secret on disk, tokens checked with an independent HMAC (Python's
hmac/hashlib/base64), key changes at reload, and refused key files. One throw-away cluster
for the whole file (it is restarted and reconfigured)."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import pwd
import stat
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import Cluster, _require_extension, wait_for

SECRET_FILE = os.path.join("pgcdcws", "jwt_secret")


@pytest.fixture(scope="module")
def auth_cluster():
    c = Cluster(extension=True)
    _require_extension(c)
    try:
        c.init()
        c.start()
        c.sql("CREATE EXTENSION pgcdcws")
        c.sql("CREATE ROLE auth_app LOGIN")
    except BaseException:
        c.destroy()
        raise
    yield c
    c.destroy()


def b64url_decode(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_signature_ok(token, secret):
    header, claims, signature = token.split(".")
    mac = hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(b64url(mac), signature)


def claims_of(token):
    return json.loads(b64url_decode(token.split(".")[1]))


def secret_path(c):
    return os.path.join(c.datadir, SECRET_FILE)


def read_secret(c):
    with open(secret_path(c), "rb") as f:
        return f.read()


def token_as(c, role="auth_app", ttl="1 hour"):
    """cdc_token() in a new session of `role` (a new backend: no key cached)."""
    conn = c.connect(user=role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT cdc_token(%s::interval)", (ttl,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def give_to_server(c, path):
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_generated_secret_concurrent_first_use_file_and_restart(auth_cluster):
    """On a fresh cluster, eight sessions mint at once: the first creates the secret, the others
    read the same file back (every token verifies with it). The file holds 64 hex characters,
    has mode 0600 and the server's owner, and survives a restart unchanged."""
    c = auth_cluster
    assert not os.path.exists(secret_path(c))
    tokens, errors = [], []
    barrier = threading.Barrier(8)

    def mint():
        try:
            conn = c.connect(user="auth_app")
            try:
                with conn.cursor() as cur:
                    barrier.wait(timeout=60)
                    cur.execute("SELECT cdc_token()")
                    tokens.append(cur.fetchone()[0])
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=mint) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(tokens) == 8

    secret = read_secret(c)
    assert len(secret) == 64 and all(ch in b"0123456789abcdef" for ch in secret), secret
    st = os.stat(secret_path(c))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == pwd.getpwnam("postgres").pw_uid
    assert stat.S_IMODE(os.stat(os.path.dirname(secret_path(c))).st_mode) == 0o700
    for token in tokens:
        assert hs256_signature_ok(token, secret), token
        assert json.loads(b64url_decode(token.split(".")[0])) == {"alg": "HS256", "typ": "JWT"}
        claims = claims_of(token)
        assert set(claims) == {"role", "iat", "exp"}
        assert claims["role"] == "auth_app"
        assert claims["exp"] - claims["iat"] == 3600
        assert abs(claims["iat"] - time.time()) < 300
    # No temporary file left behind by the losers of the race.
    assert [n for n in os.listdir(os.path.dirname(secret_path(c))) if n.endswith(".tmp")] == []

    c.restart()
    assert read_secret(c) == secret
    after = token_as(c)
    assert hs256_signature_ok(after, secret)


def test_tampered_token_does_not_verify(auth_cluster):
    """The independent check above is meaningful: a token with changed claims fails it."""
    c = auth_cluster
    token = token_as(c)
    secret = read_secret(c)
    header, _, signature = token.split(".")
    forged = b64url(json.dumps({"role": "postgres", "iat": 1, "exp": 2**40}).encode())
    assert hs256_signature_ok(token, secret)
    assert not hs256_signature_ok(f"{header}.{forged}.{signature}", secret)


def test_jwt_secret_and_audience_change_at_reload(auth_cluster):
    c = auth_cluster
    generated = read_secret(c)
    configured = "configured-secret-0123456789-abcdefghijklmnop"
    c.alter_system("pgcdcws.jwt_secret", configured, expect_show="(hidden)")
    try:
        token = token_as(c)
        assert hs256_signature_ok(token, configured.encode())
        assert not hs256_signature_ok(token, generated)
        # Postgres' "invalid value" message quotes the value; ours must not (it is a secret).
        offset = c.log_size()
        with pytest.raises(psycopg2.Error) as e:
            c.sql("ALTER SYSTEM SET pgcdcws.jwt_secret = 'short-secret-value'")
        assert e.value.pgcode == "22023"
        assert "short-secret-value" not in str(e.value)
        # (The failing statement itself is logged by log_min_error_statement, as Postgres does.)
        assert 'invalid value for parameter "pgcdcws.jwt_secret": "' not in c.log_since(offset)

        c.alter_system("pgcdcws.jwt_audience", "pgcdcws-tests")
        claims = claims_of(token_as(c))
        assert claims["aud"] == "pgcdcws-tests"
        assert set(claims) == {"role", "iat", "exp", "aud"}
    finally:
        c.alter_system("pgcdcws.jwt_audience", None, expect_show="")
        c.alter_system("pgcdcws.jwt_secret", None, expect_show="")
    # Back to the generated secret, which did not change.
    assert read_secret(c) == generated
    assert hs256_signature_ok(token_as(c), generated)


def test_unusable_generated_secret_refuses_tokens_and_logs(auth_cluster):
    """A secret file others could read is not used: cdc_token() fails clearly (55000), the
    server logs why, and nothing crashes. Fixing the mode makes it work again."""
    c = auth_cluster
    path = secret_path(c)
    offset = c.log_size()
    os.chmod(path, 0o644)
    try:
        with pytest.raises(psycopg2.Error) as e:
            token_as(c)
        assert e.value.pgcode == "55000"
        assert e.value.diag.message_primary == "pgcdcws has no HS256 key to sign tokens with"
        assert "mode 0600" in e.value.diag.message_detail
        wait_for(lambda: "pgcdcws: no HS256 secret" in c.log_since(offset), 30, what="LOG line")
        assert "server process" not in c.log_since(offset)  # no backend crashed
    finally:
        os.chmod(path, 0o600)
    assert hs256_signature_ok(token_as(c), read_secret(c))


def test_jwt_public_key_bad_file_refused_at_reload(auth_cluster):
    """A valid EC public key is accepted; a reload that names a file without a usable key logs
    why and keeps the old value; ALTER SYSTEM refuses such a file at once."""
    c = auth_cluster
    good_pub = os.path.join(c.tmpdir, "es256.pub.pem")
    private = os.path.join(c.tmpdir, "es256.key.pem")
    bad = os.path.join(c.tmpdir, "not-a-key.pem")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", private)
    openssl("ec", "-in", private, "-pubout", "-out", good_pub)
    with open(bad, "w") as f:
        f.write("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    for p in (good_pub, private, bad):
        give_to_server(c, p)

    c.alter_system("pgcdcws.jwt_public_key", good_pub)
    conf = os.path.join(c.datadir, "postgresql.conf")
    with open(conf) as f:
        original = f.read()
    try:
        # A private key is refused too: only the public half belongs in the configuration.
        for path in (bad, private, os.path.join(c.tmpdir, "missing.pem")):
            with pytest.raises(psycopg2.Error) as e:
                c.sql("ALTER SYSTEM SET pgcdcws.jwt_public_key = %s", (path,))
            assert e.value.pgcode == "22023"
            assert path in e.value.diag.message_detail

        # postgresql.auto.conf (ALTER SYSTEM) wins over postgresql.conf: drop it there first.
        c.sql("ALTER SYSTEM RESET pgcdcws.jwt_public_key")
        with open(conf, "a") as f:
            f.write(f"pgcdcws.jwt_public_key = '{bad}'\n")
        offset = c.log_size()
        assert c.sql1("SELECT pg_reload_conf()") is True
        wait_for(lambda: f'invalid value for parameter "pgcdcws.jwt_public_key": "{bad}"' in c.log_since(offset),
                 30, what="the postmaster's LOG line about the refused key file")
        log = c.log_since(offset)
        assert "configuration file" in log and "contains errors" in log
        assert c.show_fresh("pgcdcws.jwt_public_key") == good_pub
        # Tokens are still minted (HS256 does not depend on the public key).
        assert hs256_signature_ok(token_as(c), read_secret(c))
    finally:
        with open(conf, "w") as f:
            f.write(original)
        c.alter_system("pgcdcws.jwt_public_key", None, expect_show="")


def test_settings_hidden_and_defaults(auth_cluster):
    """jwt_secret is invisible to other roles; the other auth settings have their documented
    defaults (the test cluster runs auth = trust; the built-in default is token)."""
    c = auth_cluster
    conn = c.connect(user="auth_app")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM pg_settings WHERE name LIKE 'pgcdcws.%' ORDER BY name")
            names = [r[0] for r in cur.fetchall()]
            assert "pgcdcws.jwt_secret" not in names
            assert {"pgcdcws.auth", "pgcdcws.jwt_public_key", "pgcdcws.jwt_audience", "pgcdcws.trust_role",
                    "pgcdcws.allowed_origins", "pgcdcws.max_connections_per_role"} <= set(names)
            with pytest.raises(psycopg2.Error) as e:
                cur.execute("SHOW pgcdcws.jwt_secret")
            assert e.value.pgcode == "42501"
    finally:
        conn.close()
    assert c.sql1("SELECT boot_val FROM pg_settings WHERE name = 'pgcdcws.auth'") == "token"
    assert c.sql1("SHOW pgcdcws.auth") == "trust"
    assert c.sql1("SHOW pgcdcws.max_connections_per_role") == "100"


def snapshot_read_status(c, token):
    """Status of POST /v1/snapshot/data for a slot that does not exist, with this token."""
    body = json.dumps({"slotName": "no_such_slot", "table": "public.t"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", c.ws_port, timeout=60)
    try:
        conn.request("POST", "/v1/snapshot/data", body=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def hs256_token(claims, secret):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def test_jwt_secret_is_shown_to_nobody(auth_cluster):
    """Members of pg_read_all_settings (pg_monitor) may read superuser-only settings, and the
    secret would let them mint a token for any role. SHOW and current_setting() say
    "(hidden)" ("" when unset) to everyone, superusers included; pg_settings and SHOW ALL
    leave it out; pg_file_settings stays superuser-only. The server still signs and
    verifies with the secret itself."""
    c = auth_cluster
    configured = "shown-to-nobody-0123456789-abcdefghijklmnopq"
    c.sql("CREATE ROLE auth_monitor LOGIN IN ROLE pg_monitor")

    def seen_by(user):
        conn = c.connect(user=user)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW pgcdcws.jwt_secret")
                shown = cur.fetchone()[0]
                cur.execute("SELECT current_setting('pgcdcws.jwt_secret')")
                current = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM pg_settings WHERE name = 'pgcdcws.jwt_secret'")
                rows = cur.fetchone()[0]
                cur.execute("SELECT * FROM pg_settings")
                everything = repr(cur.fetchall())
                cur.execute("SHOW ALL")
                everything += repr(cur.fetchall())
            return shown, current, rows, configured in everything
        finally:
            conn.close()

    try:
        assert seen_by("auth_monitor") == ("", "", 0, False)
        c.alter_system("pgcdcws.jwt_secret", configured, expect_show="(hidden)")
        for user in ("auth_monitor", "postgres"):
            assert seen_by(user) == ("(hidden)", "(hidden)", 0, False), user
        mon = c.connect(user="auth_monitor")
        try:
            with pytest.raises(psycopg2.Error) as e:
                mon.cursor().execute("SELECT * FROM pg_file_settings")
            assert e.value.pgcode == "42501"
        finally:
            mon.close()
        # The secret itself is in force: cdc_token() signs with it, and in token mode the
        # server accepts a token signed with it (403: auth_app may use no such slot, after
        # authentication) and refuses others (401).
        assert hs256_signature_ok(token_as(c), configured.encode())
        c.alter_system("pgcdcws.auth", "token")
        now = int(time.time())
        claims = {"role": "auth_app", "iat": now, "exp": now + 600}
        wait_for(lambda: snapshot_read_status(c, hs256_token(claims, b"x" * 40)) == 401, 30,
                 what="the server in token mode")
        assert snapshot_read_status(c, hs256_token(claims, configured.encode())) == 403
        assert snapshot_read_status(c, hs256_token(claims, b"(hidden)")) == 401
    finally:
        c.alter_system("pgcdcws.auth", None, expect_show="trust")
        c.alter_system("pgcdcws.jwt_secret", None, expect_show="")
        c.sql("DROP ROLE auth_monitor")
