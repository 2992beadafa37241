"""A 1,000,000-row transaction streams in bounded memory (issue item 9)."""

import asyncio
import math
import time

from cdcws import RssSampler, StreamClient, apoll, loads, wait_confirmed

ROWS = 1_000_000
PER_MESSAGE = 1000
MEMORY_LIMIT_KB = 200 * 1024


def test_million_row_transaction(cluster):
    assert cluster.show_fresh("pgcdcws.max_changes_per_message") == str(PER_MESSAGE)
    slot = "b_big"
    cluster.sql("CREATE TABLE big (id int, t text)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    sampler = RssSampler(cluster, interval=0.1)
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                # the decoder is up (idle) before the transaction: take the baselines now
                await apoll(lambda: len(cluster.pids_by_backend_type("pgcdcws decoder")) == 1, 10,
                            what="the decoder to start")
                sampler.prime()
                assert any(bt == "pgcdcws decoder" for bt in sampler.types.values())
                assert any(bt == "pgcdcws server" for bt in sampler.types.values())
                sampler.start()

                loop = asyncio.get_running_loop()
                insert = loop.run_in_executor(None, lambda: cluster.exec_txn(
                    "INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 1000000) g"))

                seen = bytearray(ROWS + 1)
                frames = 0
                changes = 0
                xid = None
                nextlsn = None
                deadline = time.monotonic() + 300
                while nextlsn is None:
                    left = deadline - time.monotonic()
                    assert left > 0, f"only {changes} changes in {frames} frames after 300 s"
                    obj, _ = await client.recv_frame(left)
                    assert "error" not in obj, obj
                    frames += 1
                    if xid is None:
                        xid = obj["xid"]
                    assert obj["xid"] == xid, f"frame {frames} has xid {obj['xid']}, expected {xid}"
                    batch = obj["change"]
                    assert 1 <= len(batch) <= PER_MESSAGE
                    for c in batch:
                        assert c["kind"] == "insert" and c["table"] == "big"
                        i = c["columnvalues"][0]
                        assert c["columnvalues"][1] == f"row {i}"
                        assert seen[i] == 0, f"id {i} received twice"
                        seen[i] = 1
                    changes += len(batch)
                    if "nextlsn" in obj:
                        nextlsn = obj["nextlsn"]
                    else:
                        assert len(batch) == PER_MESSAGE, f"non-final frame {frames} has {len(batch)} changes"
                committed_xid = await insert
                await client.ack(nextlsn)
                await wait_confirmed(cluster, slot, nextlsn)
                return committed_xid, xid, frames, changes, seen
            finally:
                await client.close()

        committed_xid, xid, frames, changes, seen = asyncio.run(main())
    finally:
        sampler.stop()
        cluster.drop_slot_quietly(slot)
        cluster.sql("DROP TABLE IF EXISTS big")

    assert sampler.error is None, repr(sampler.error)
    assert xid == committed_xid
    assert changes == ROWS
    assert frames == math.ceil(ROWS / PER_MESSAGE)
    assert seen.count(1) == ROWS and seen[0] == 0
    assert sampler.samples > 10
    growth = sampler.growth_kb()
    report = {f"{sampler.types[p]} {p}": f"{sampler.first[p] // 1024} MB -> {sampler.peak[p] // 1024} MB"
              for p in growth}
    print(f"RssAnon of pgcdcws processes (first -> peak): {report}")
    assert any(sampler.types[p] == "pgcdcws decoder" for p in growth), report
    for pid, kb in growth.items():
        assert kb < MEMORY_LIMIT_KB, f"{sampler.types[pid]} (pid {pid}) grew by {kb // 1024} MB: {report}"


def test_a_50_mb_value_and_a_long_message_prefix_on_a_stream(cluster):
    """Long JSON strings are escaped a piece at a time (value_writer.cpp): a 50 MB text value
    and a 200 kB logical message prefix (which any role may emit) reach the stream whole,
    escaped."""
    slot = "b_long_strings"
    size = 50 * 1024 * 1024
    cluster.sql("CREATE TABLE long_value (id int PRIMARY KEY, t text)")
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                # a quote and a control character at both ends, so the escaping is checked too
                cluster.sql("INSERT INTO long_value VALUES (1, '\"' || chr(1) || repeat('x', %s) || chr(10) || '\\')",
                            (size,))
                cluster.sql("SELECT pg_logical_emit_message(true, repeat('p', 200000) || '\"', 'content')")
                got = []
                deadline = time.monotonic() + 300
                while len(got) < 2:
                    obj, _ = await client.recv_frame(max(1, deadline - time.monotonic()))
                    assert "error" not in obj, obj
                    got += obj.get("change", [])
                return got
            finally:
                await client.close()

        value_change, message = asyncio.run(main())
        value = value_change["columnvalues"][1]
        assert len(value) == size + 4, len(value)
        assert value[:2] == '"\x01' and value[-2:] == '\n\\' and value.count("x") == size
        assert message["kind"] == "message" and message["prefix"] == "p" * 200000 + '"'
        assert message["content"] == "content"
    finally:
        cluster.drop_slot_quietly(slot)


def test_a_190_mb_value_through_the_sql_interface(cluster):
    """A 190 MB text value: RapidJSON alone reserves 6 bytes per byte of a string at once, more
    than a StringInfo's 1 GB here (an ERROR that stopped the slot for good), and from 716 MB its
    32-bit count wraps around (a heap overflow). Written a piece at a time, the change comes out
    whole (pg_logical_slot_get_changes with the pgcdcws plugin builds it in one buffer)."""
    slot = "b_sql_long_value"
    size = 190 * 1024 * 1024
    cluster.sql("CREATE TABLE sql_long_value (id int PRIMARY KEY, t text)")
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'pgcdcws')", (slot,))
    try:
        cluster.sql("INSERT INTO sql_long_value VALUES (1, chr(1) || repeat('y', %s) || '\"')", (size,))
        rows = cluster.sql("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)", (slot,))
        changes = [c for (data,) in rows for c in loads(data).get("change", [])]
        assert [c["table"] for c in changes] == ["sql_long_value"], [c.get("table") for c in changes]
        value = changes[0]["columnvalues"][1]
        assert len(value) == size + 2 and value[0] == "\x01" and value[-1] == '"' and value.count("y") == size
    finally:
        cluster.sql("SELECT pg_drop_replication_slot(%s)", (slot,))
