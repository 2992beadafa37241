"""A 1,000,000-row transaction streams in bounded memory (issue item 9)."""

import asyncio
import math
import time

from cdcws import RssSampler, StreamClient, apoll, wait_confirmed

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
