"""Configurations other than the session cluster's: without shared_preload_libraries, without
pgcdcws in output_plugin_libraries (PostgreSQL 15.19+), and a prompt fast stop with a stream
and a held snapshot open. Each test starts its own throw-away cluster."""

import asyncio
import os
import signal

import psycopg2
import pytest

from conftest import Cluster, _require_extension, wait_for
from cdcws import StreamClient, http_request


@pytest.fixture
def own_cluster():
    made = []

    def make(extension=True, extra_conf=()):
        c = Cluster(extension=extension)
        made.append(c)
        _require_extension(c)
        c.init()
        if extra_conf:
            conf = os.path.join(c.datadir, "postgresql.conf")
            with open(conf, "a") as f:  # later lines win
                f.write("\n".join(extra_conf) + "\n")
        if extension:
            c.start()
        else:
            c._cmd([c.bin("pg_ctl"), "-D", c.datadir, "-l", c.logfile, "-w", "-t", "120", "start"])
            c.running = True
        c.sql("CREATE EXTENSION pgcdcws")
        return c

    yield make
    for c in made:
        c.destroy()


def set_plugin_libraries(c, items):
    """ALTER SYSTEM for a list setting: the items unquoted (a quoted string would be one item)."""
    c.sql(f"ALTER SYSTEM SET output_plugin_libraries = {', '.join(items)}")
    assert c.sql1("SELECT pg_reload_conf()") is True
    wait_for(lambda: c.show_fresh("output_plugin_libraries") == ", ".join(items), 10,
             what="the new output_plugin_libraries after reload")


def sql_error(c, query):
    with pytest.raises(psycopg2.Error) as exc:
        c.sql(query)
    return exc.value


def test_without_preload_every_function_explains(own_cluster):
    c = own_cluster(extension=False)
    assert c.sql1("SELECT extname FROM pg_extension WHERE extname = 'pgcdcws'") == "pgcdcws"
    for query in ("SELECT * FROM cdc_init('x')", "SELECT cdc_ack('x', '0/1')", "SELECT * FROM cdc_slots()",
                  "SELECT cdc_drop('x')"):
        err = sql_error(c, query)
        assert err.diag.message_primary == "pgcdcws is not loaded through shared_preload_libraries", query
        assert "shared_preload_libraries" in err.diag.message_hint, query
    assert c.pids_by_backend_type("pgcdcws server") == []


def test_output_plugin_libraries_without_pgcdcws(own_cluster):
    c = own_cluster(extension=True)
    # Allowed at first: make a slot to stream from later.
    assert c.sql1("SELECT slot_name FROM cdc_init('opl_slot')") == "opl_slot"

    set_plugin_libraries(c, ["pgoutput", "wal2json", "test_decoding"])
    err = sql_error(c, "SELECT * FROM cdc_init('opl_other')")
    assert err.diag.message_primary == "pgcdcws is not listed in output_plugin_libraries"
    # The hint is a command that works as given and keeps the other plugins.
    command = ("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'wal2json', 'test_decoding', 'pgcdcws'; "
               "SELECT pg_reload_conf();")
    assert err.diag.message_hint.endswith("Run: " + command), err.diag.message_hint
    assert c.sql1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'opl_other'") == 0

    def refused():
        r = http_request(c.ws_port, "/v1/lr/stream?slotName=opl_slot")
        return r if r.status == 503 else None

    r = wait_for(refused, 10, what="the stream to be refused with 503 after the reload")
    assert r.headers["content-type"] == "application/json"
    assert "output_plugin_libraries" in r.json()["error"]

    for statement in command.split(";")[:2]:
        c.sql(statement)
    wait_for(lambda: c.show_fresh("output_plugin_libraries") == "pgoutput, wal2json, test_decoding, pgcdcws", 10,
             what="the hint's setting after reload")

    async def main():
        client = await StreamClient.open_retry(c.ws_port, "opl_slot")
        try:
            c.sql("CREATE TABLE opl_t (id int PRIMARY KEY)")
            c.sql("INSERT INTO opl_t VALUES (7)")
            txn = await client.recv_txn(10)
            assert txn.ids() == [7]
        finally:
            await client.close()

    asyncio.run(main())
    c.sql("SELECT cdc_drop('opl_slot')")


def test_fast_stop_with_stream_and_snapshot_open(own_cluster):
    c = own_cluster(extension=True)
    c.sql("SELECT * FROM cdc_init('stop_slot')")  # its snapshot worker holds the snapshot

    async def main():
        client = await StreamClient.open(c.ws_port, "stop_slot")
        wait_for(lambda: c.pids_by_backend_type("pgcdcws decoder", fresh=True), 10, what="the decoder")
        assert len(c.pids_by_backend_type("pgcdcws snapshot", fresh=True)) == 1
        c.reset_connection()
        # pg_ctl waits for every process to exit; -t bounds how long it may take.
        p = c._cmd([c.bin("pg_ctl"), "-D", c.datadir, "-m", "fast", "-w", "-t", "30", "stop"], check=False)
        c.running = False
        assert p.returncode == 0, p.stdout
        assert "server stopped" in p.stdout
        code, reason, _ = await client.wait_closed_code(10)
        # 1001 either way: the server's own SIGTERM or its decoder's may be seen first
        # (docs/PROTOCOL.md, close codes).
        assert code == 1001
        assert reason in ("server shutting down", "decoder terminated by an administrator")

    asyncio.run(main())


def test_workers_exit_when_the_postmaster_dies(own_cluster):
    """kill -9 of the postmaster: the server, decoder and snapshot workers notice and exit
    (they wait with WL_EXIT_ON_PM_DEATH) instead of lingering as orphans."""
    c = own_cluster(extension=True)
    c.sql("SELECT * FROM cdc_init('pmdeath')")

    async def main():
        client = await StreamClient.open(c.ws_port, "pmdeath")
        wait_for(lambda: c.pids_by_backend_type("pgcdcws decoder", fresh=True), 10, what="the decoder")
        pids = {kind: c.pids_by_backend_type(kind, fresh=True)
                for kind in ("pgcdcws server", "pgcdcws decoder", "pgcdcws snapshot")}
        assert all(len(v) == 1 for v in pids.values()), pids
        with open(os.path.join(c.datadir, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        c.reset_connection()
        os.kill(postmaster, signal.SIGKILL)
        c.running = False

        def alive(pid):
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True

        wait_for(lambda: not any(alive(p) for v in pids.values() for p in v), 15,
                 what=f"pgcdcws processes {pids} to exit after the postmaster died")
        client.abort()

    asyncio.run(main())
