"""Background workers and configuration (issue item 1)."""

import asyncio
import time

from cdcws import StreamClient, apoll
from conftest import tcp_accepts, wait_for


def test_server_worker_runs_and_listens(cluster):
    servers = cluster.pids_by_backend_type("pgcdcws server")
    assert len(servers) == 1, f"expected one 'pgcdcws server', got {servers}"
    assert tcp_accepts(cluster.ws_port), f"nothing accepts on pgcdcws.port {cluster.ws_port}"
    # it is a background worker connected to pgcdcws.database, not a client backend
    row = cluster.sql("SELECT backend_type, client_addr FROM pg_stat_activity WHERE pid = %s", (servers[0],))
    assert row == [("pgcdcws server", None)]


def test_settings_show(cluster):
    assert cluster.sql1("SHOW pgcdcws.port") == str(cluster.ws_port)
    assert cluster.sql1("SHOW pgcdcws.listen_addresses") == "localhost"
    assert cluster.sql1("SHOW pgcdcws.database") == "postgres"
    assert cluster.sql1("SHOW pgcdcws.auth") == "trust"
    assert cluster.sql1("SHOW pgcdcws.max_changes_per_message") == "1000"
    assert cluster.sql1("SHOW pgcdcws.ping_interval") == "2s"
    assert cluster.sql1("SHOW pgcdcws.heartbeat_interval") == "10s"
    contexts = dict(cluster.sql("SELECT name, context FROM pg_settings WHERE name LIKE 'pgcdcws.%%'"))
    assert contexts["pgcdcws.port"] == "postmaster"
    assert contexts["pgcdcws.max_changes_per_message"] == "sighup"
    assert contexts["pgcdcws.heartbeat_interval"] == "sighup"
    assert cluster.sql1("SELECT boot_val FROM pg_settings WHERE name = 'pgcdcws.max_changes_per_message'") == "1000"


def test_max_changes_per_message_reloads(cluster):
    try:
        cluster.alter_system("pgcdcws.max_changes_per_message", 7)
        assert cluster.show_fresh("pgcdcws.max_changes_per_message") == "7"
    finally:
        cluster.alter_system("pgcdcws.max_changes_per_message", None, expect_show="1000")
    assert cluster.show_fresh("pgcdcws.max_changes_per_message") == "1000"


def test_snapshot_and_decoder_workers(cluster):
    slot = "w_workers"
    cluster.sql("CREATE TABLE w_workers_t (id int PRIMARY KEY)")
    snap_before = len(cluster.pids_by_backend_type("pgcdcws snapshot"))
    assert cluster.pids_by_backend_type("pgcdcws decoder") == []
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        # cdc_init leaves a worker that holds the exported snapshot
        assert len(cluster.pids_by_backend_type("pgcdcws snapshot")) == snap_before + 1

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                decoders = await apoll(lambda: cluster.pids_by_backend_type("pgcdcws decoder"), 5,
                                       what="a 'pgcdcws decoder' while a stream is open")
                assert len(decoders) == 1
                cluster.sql("INSERT INTO w_workers_t VALUES (1)")
                txn = await client.recv_txn(10)
                assert txn.ids() == [1]
            finally:
                await client.close()
            # the decoder exits when its client goes
            await apoll(lambda: cluster.pids_by_backend_type("pgcdcws decoder") == [], 10,
                        what="the decoder to exit after the client closed")
            await apoll(lambda: cluster.slot_row(slot)[0] is False, 5, what="slot inactive")

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)
    # cdc_drop ends the snapshot it held
    from conftest import wait_for
    wait_for(lambda: len(cluster.pids_by_backend_type("pgcdcws snapshot")) == snap_before, 10,
             what="the snapshot worker to exit after cdc_drop")


def test_kill9_server_restarts_cluster(cluster):
    [old] = cluster.pids_by_backend_type("pgcdcws server")
    off = cluster.log_size()
    cluster.kill9(old)
    new = cluster.pids_by_backend_type("pgcdcws server")
    assert len(new) == 1 and new[0] != old, f"server pids before {old}, after {new}"
    assert tcp_accepts(cluster.ws_port)
    log = cluster.log_since(off)
    assert f"(PID {old}) was terminated by signal 9" in log, log
    assert "all server processes terminated; reinitializing" in log, log

    # and the restarted server streams
    slot = "w_after_kill"
    cluster.sql("CREATE TABLE w_after_kill_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                cluster.sql("INSERT INTO w_after_kill_t VALUES (7)")
                txn = await client.recv_txn(10)
                assert txn.ids() == [7]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_drop_database_not_blocked_by_pgcdcws_processes(cluster):
    """DROP DATABASE waits until every process has absorbed a ProcSignalBarrier; the
    pgcdcws server, decoder and snapshot workers must process it like any backend."""
    slot = "w_dropdb"
    cluster.sql("CREATE DATABASE w_dropme")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                await apoll(lambda: cluster.pids_by_backend_type("pgcdcws decoder"), 5, what="decoder")
                conn = cluster.connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute("SET statement_timeout = '20s'")
                        t0 = time.monotonic()
                        cur.execute("DROP DATABASE w_dropme")
                        elapsed = time.monotonic() - t0
                finally:
                    conn.close()
                assert elapsed < 10, elapsed
                assert cluster.sql("SELECT count(*) FROM pg_database WHERE datname = 'w_dropme'") == [(0,)]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)


def test_pg_terminate_backend_on_decoder_is_going_away(cluster):
    """An administrator ending a stream's decoder: the client gets 1001, and reconnecting
    resumes the stream."""
    slot = "w_term"
    cluster.sql("CREATE TABLE w_term_t (id int PRIMARY KEY)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            pids = wait_for(lambda: cluster.pids_by_backend_type("pgcdcws decoder", fresh=True), 10,
                            what="the decoder")
            assert cluster.sql1("SELECT pg_terminate_backend(%s)", (pids[0],)) is True
            code, reason, _ = await client.wait_closed_code(10)
            assert (code, reason) == (1001, "decoder terminated by an administrator")

            client = await StreamClient.open_retry(cluster.ws_port, slot)
            try:
                cluster.sql("INSERT INTO w_term_t VALUES (1)")
                txn = await client.recv_txn(10)
                assert txn.ids() == [1]
            finally:
                await client.close()

        asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)
