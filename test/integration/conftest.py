"""Shared fixtures for the pgcdcws integration tests.

One PostgreSQL 15 cluster is created per test session (initdb into a fresh temporary
directory) with pgcdcws in shared_preload_libraries.  Tests talk to it through the
session-scoped ``cluster`` fixture (a :class:`Cluster`).

Run (from the top of the source tree, as a non-root user; as root use runuser):

    runuser -u postgres -- /usr/bin/python3 -m pytest -v test/integration

Environment:
    PG_BINDIR            PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
    PGCDCWS_KEEP_TMPDIR  if set, the cluster directory is kept after the session
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psycopg2
import psycopg2.extensions
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")

# The currently running cluster, for the failure report hook below.
_CLUSTER = None


def free_port():
    """A TCP port that is free right now on the loopback interface(s)."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        # pgcdcws listens on 'localhost', which may include ::1: check that too.
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                s6.bind(("::1", port))
            finally:
                s6.close()
        except OSError as e:
            if e.errno == 98:  # EADDRINUSE: try another
                continue
        return port


def tcp_accepts(port, host="localhost", timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(cond, timeout, interval=0.05, what="condition"):
    """Poll cond() until it returns a truthy value; return that value.

    Raises AssertionError naming `what` when the deadline passes.  Exceptions raised by
    cond() count as "not yet" (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried, reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise AssertionError(msg)
        time.sleep(interval)


class Cluster:
    """A throw-away PostgreSQL cluster with pgcdcws loaded."""

    def __init__(self, extension=True):
        self.extension = extension
        self.bindir = PG_BINDIR
        self.as_root = os.geteuid() == 0
        self.tmpdir = tempfile.mkdtemp(prefix="pgcdcws-it-")
        os.chmod(self.tmpdir, 0o700)
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        self.datadir = os.path.join(self.tmpdir, "data")
        self.sockdir = self.tmpdir
        self.logfile = os.path.join(self.tmpdir, "postgres.log")
        self.port = free_port()
        self.ws_port = free_port()
        while self.ws_port == self.port:
            self.ws_port = free_port()
        self._conn = None
        self.running = False

    # ---------------------------------------------------------------- processes
    def _cmd(self, args, check=True, timeout=120):
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"command failed ({p.returncode}): {' '.join(args)}\n{p.stdout}\n"
                               f"--- server log tail ---\n{self.log_tail()}")
        return p

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def pkglibdir(self):
        p = subprocess.run([self.bin("pg_config"), "--pkglibdir"], stdout=subprocess.PIPE, text=True,
                           check=True)
        return p.stdout.strip()

    def init(self):
        self._cmd([self.bin("initdb"), "-D", self.datadir, "-U", "postgres", "-A", "trust",
                   "--no-locale", "-E", "UTF8", "--no-sync"])
        lines = [
            "",
            "# pgcdcws integration tests",
            f"port = {self.port}",
            "listen_addresses = 'localhost'",
            f"unix_socket_directories = '{self.sockdir}'",
            "logging_collector = off",
            "log_line_prefix = '%m [%p] %b: '",
            "timezone = 'UTC'",
            "datestyle = 'iso, mdy'",
            "lc_messages = 'C'",
            "wal_level = logical",
            "max_replication_slots = 40",
            "max_wal_senders = 20",
            "max_worker_processes = 40",
            "max_connections = 100",
        ]
        if self.extension:
            lines += [
                "shared_preload_libraries = 'pgcdcws'",
                "output_plugin_libraries = 'pgoutput, test_decoding, pgcdcws'",
                f"pgcdcws.port = {self.ws_port}",
                "pgcdcws.listen_addresses = 'localhost'",
                "pgcdcws.database = 'postgres'",
                "pgcdcws.ping_interval = 2",
                # Tests of token auth switch to it in their own cluster or with ALTER SYSTEM.
                "pgcdcws.auth = trust",
            ]
        conf = os.path.join(self.datadir, "postgresql.conf")
        text = "\n".join(lines) + "\n"
        with open(conf, "a") as f:  # appending keeps the file's owner (postgres when run as root)
            f.write(text)

    def start(self):
        self._cmd([self.bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "120",
                   "start"])
        self.running = True
        self.wait_ready(timeout=60)

    def stop(self, mode="immediate"):
        self.reset_connection()
        if self.running:
            self._cmd([self.bin("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "-t", "120", "stop"],
                      check=False)
            self.running = False

    def destroy(self):
        self.stop("immediate")
        if os.environ.get("PGCDCWS_KEEP_TMPDIR"):
            sys.stderr.write(f"\npgcdcws test cluster kept in {self.tmpdir}\n")
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def restart(self, mode="fast"):
        """pg_ctl restart -m <mode>; returns when Postgres and a new pgcdcws server accept."""
        old = self._server_pids_quiet()
        self.reset_connection()
        self._cmd([self.bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-m", mode, "-w",
                   "-t", "120", "restart"])
        self.wait_ready(old_server_pids=old, timeout=60)

    def kill9(self, pid, timeout=90):
        """kill -9 a server process, then wait for the postmaster's crash restart to finish:
        Postgres accepts connections again (with a new checkpointer, proving the restart
        happened) and a new pgcdcws server accepts TCP on its port."""
        old_ckpt = set(self.pids_by_backend_type("checkpointer"))
        old_servers = self._server_pids_quiet()
        self.reset_connection()
        os.kill(pid, signal.SIGKILL)

        def restarted():
            ck = set(self.pids_by_backend_type("checkpointer", fresh=True))
            return bool(ck) and not (ck & old_ckpt)

        wait_for(restarted, timeout, interval=0.1, what="crash restart (new checkpointer)")
        self.wait_ready(old_server_pids=old_servers, timeout=timeout)

    def wait_ready(self, old_server_pids=(), timeout=60):
        """Wait until Postgres accepts connections and a pgcdcws server (not one of
        old_server_pids) runs and accepts TCP connections on pgcdcws.port."""
        self.reset_connection()
        wait_for(lambda: self.connect().close() or True, timeout, interval=0.1,
                 what="postgres to accept connections")
        if not self.extension:
            return
        old = set(old_server_pids)

        def server_up():
            pids = set(self.pids_by_backend_type("pgcdcws server", fresh=True))
            return bool(pids - old) and tcp_accepts(self.ws_port)

        try:
            wait_for(server_up, timeout, interval=0.1,
                     what=f"a new 'pgcdcws server' accepting on port {self.ws_port}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- server log tail ---\n{self.log_tail()}") from None

    def _server_pids_quiet(self):
        try:
            return set(self.pids_by_backend_type("pgcdcws server", fresh=True))
        except psycopg2.Error:
            return set()

    # ---------------------------------------------------------------------- SQL
    def dsn(self, user="postgres", dbname="postgres"):
        # statement_timeout turns a statement that hangs (e.g. waiting for a process that
        # never answers) into a test failure instead of a stuck test run
        return dict(host=self.sockdir, port=self.port, user=user, dbname=dbname,
                    connect_timeout=10, options="-c statement_timeout=120s")

    def connect(self, user="postgres", dbname="postgres", autocommit=True):
        conn = psycopg2.connect(**self.dsn(user=user, dbname=dbname))
        conn.autocommit = autocommit
        return conn

    def reset_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None

    def sql(self, query, params=None):
        """Run one statement in autocommit mode on a cached connection; return all rows
        (a list of tuples, empty for statements without a result)."""
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        try:
            with self._conn.cursor() as cur:
                cur.execute(query, params)
                if cur.description is None:
                    return []
                return cur.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # The connection may be dead (cluster restart); the next call reconnects.
            self.reset_connection()
            raise

    def sql1(self, query, params=None):
        """The single value of a one-row, one-column result."""
        rows = self.sql(query, params)
        assert len(rows) == 1 and len(rows[0]) == 1, f"expected one value from {query!r}, got {rows!r}"
        return rows[0][0]

    def exec_txn(self, *stmts):
        """Run statements in one explicit transaction on a new connection and commit.
        Each statement is a string or a (query, params) tuple.  Returns the xid."""
        conn = self.connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                for st in stmts:
                    if isinstance(st, tuple):
                        cur.execute(*st)
                    else:
                        cur.execute(st)
                cur.execute("SELECT pg_current_xact_id()::text::bigint")
                xid = cur.fetchone()[0]
            conn.commit()
        finally:
            conn.close()
        return xid

    def show_fresh(self, name):
        """SHOW name in a new session (sees the postmaster's current configuration)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {name}")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def alter_system(self, name, value, expect_show=None, timeout=10):
        """ALTER SYSTEM SET name = value (RESET when value is None), reload, and wait until a
        new session sees the setting (expect_show, default str(value))."""
        if value is None:
            self.sql(f"ALTER SYSTEM RESET {name}")
        else:
            self.sql(f"ALTER SYSTEM SET {name} = %s", (str(value),))
        assert self.sql1("SELECT pg_reload_conf()") is True
        want = expect_show if expect_show is not None else str(value)
        wait_for(lambda: self.show_fresh(name) == want, timeout,
                 what=f"SHOW {name} = {want!r} after reload")

    def pids_by_backend_type(self, backend_type, fresh=False):
        q = "SELECT pid FROM pg_stat_activity WHERE backend_type = %s ORDER BY pid"
        if fresh:
            conn = self.connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(q, (backend_type,))
                    return [r[0] for r in cur.fetchall()]
            finally:
                conn.close()
        return [r[0] for r in self.sql(q, (backend_type,))]

    def pgcdcws_pids(self):
        """{pid: backend_type} of every process whose backend_type starts with 'pgcdcws'."""
        return dict(self.sql("SELECT pid, backend_type FROM pg_stat_activity "
                             "WHERE backend_type LIKE 'pgcdcws%%'"))

    # -------------------------------------------------------------- slot helpers
    def slot_row(self, slot):
        """(active, confirmed_flush_lsn, restart_lsn, plugin, temporary) from
        pg_replication_slots, or None when the slot does not exist."""
        rows = self.sql("SELECT active, confirmed_flush_lsn::text, restart_lsn::text, plugin, temporary "
                        "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        return rows[0] if rows else None

    def slot_exists(self, slot):
        return self.slot_row(slot) is not None

    def confirmed_lsn(self, slot):
        row = self.slot_row(slot)
        assert row is not None, f"slot {slot} does not exist"
        return row[1]

    def drop_slot_quietly(self, slot):
        """cdc_drop() the slot if it still exists (test cleanup)."""
        try:
            if self.slot_exists(slot):
                self.sql("SELECT cdc_drop(%s)", (slot,))
        except psycopg2.Error:
            pass

    # --------------------------------------------------------------------- logs
    def log(self):
        try:
            with open(self.logfile, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.logfile)
        except FileNotFoundError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.logfile, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])


def _require_extension(cluster):
    so = os.path.join(cluster.pkglibdir(), "pgcdcws.so")
    if not os.path.exists(so):
        pytest.fail(f"pgcdcws is not installed: {so} does not exist. Build and install the extension "
                    f"(make && make install) before running the integration tests.", pytrace=False)


@pytest.fixture(scope="session")
def cluster():
    global _CLUSTER
    c = Cluster(extension=True)
    try:
        _require_extension(c)
        c.init()
        c.start()
        c.sql("CREATE EXTENSION pgcdcws")
    except BaseException:
        sys.stderr.write(f"\n--- server log ---\n{c.log_tail(200)}\n")
        c.destroy()
        raise
    _CLUSTER = c
    yield c
    _CLUSTER = None
    c.destroy()


@pytest.fixture(autouse=True)
def _log_offset(request):
    """Remember where the server log stood when the test began (for failure reports)."""
    request.node._pg_log_offset = _CLUSTER.log_size() if _CLUSTER is not None else 0
    yield


@pytest.fixture(autouse=True)
def _no_leftovers(request):
    """After each test that used the cluster: no pgcdcws slot is left (tests drop theirs),
    and once no slot exists, no decoder or snapshot worker outlives it (a held snapshot
    would pin resources that later tests need: cdc_init() limits them to max_streams)."""
    yield
    c = _CLUSTER
    if c is None or "cluster" not in request.fixturenames:
        return
    slots = c.sql("SELECT slot_name FROM pg_replication_slots WHERE plugin = 'pgcdcws'")
    assert slots == [], f"test left pgcdcws slots behind: {slots}"
    q = ("SELECT pid, backend_type, query FROM pg_stat_activity "
         "WHERE backend_type IN ('pgcdcws decoder', 'pgcdcws snapshot')")
    deadline = time.monotonic() + 5
    while True:
        rows = c.sql(q)
        if not rows:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pgcdcws workers still running 5 s after all slots were dropped: {rows}")
        time.sleep(0.05)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _CLUSTER is not None:
        off = getattr(item, "_pg_log_offset", 0)
        text = _CLUSTER.log_since(off)
        if len(text) > 30000:
            text = "...\n" + text[-30000:]
        rep.sections.append(("postgres log during this test", text))


def started_cluster(conf_lines=()):
    """A new cluster of a test module's own (pgcdcws created), with `conf_lines` appended to
    postgresql.conf after the defaults (a later line wins). The caller destroys it."""
    c = Cluster(extension=True)
    try:
        _require_extension(c)
        c.init()
        with open(os.path.join(c.datadir, "postgresql.conf"), "a") as f:
            f.write("\n".join(conf_lines) + "\n")
        c.start()
        c.sql("CREATE EXTENSION pgcdcws")
    except BaseException:
        sys.stderr.write(f"\n--- server log ---\n{c.log_tail(200)}\n")
        c.destroy()
        raise
    return c


@contextlib.contextmanager
def logs_reported(c):
    """While active, a failing test's report carries c's server log (not the session
    cluster's). The session cluster is reported again afterwards."""
    global _CLUSTER
    saved = _CLUSTER
    _CLUSTER = c
    try:
        yield c
    finally:
        _CLUSTER = saved
