#!/usr/bin/python3
"""Stand-in for pgcdcws' GET /ws, to check the benchmark's own machinery (run.sh --mock).

Not a model of pgcdcws' performance: it polls the table (no decoding), evaluates only the two filter
shapes loadgen.mjs uses (k.in.<values> and k.gte.<n>) and sends frames shaped like pgcdcws' (type
change, columns, xid, lsn, subscriptions). Each row is sent once, in id order as rows become
visible (ids written by concurrent transactions may become visible out of order: the poll keeps
the ids above the highest contiguous one it has seen).

    mock_server.py --port WS --pghost DIR --pgport P [--table bench_t]
"""
import argparse
import asyncio
import json
import urllib.parse

import psycopg2
import websockets

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--pghost", required=True)
ap.add_argument("--pgport", type=int, required=True)
ap.add_argument("--table", default="bench_t")
args = ap.parse_args()

subs = {}  # socket -> predicate on k


def parse_filter(query):
    types, table, flt = query.split(":")
    col, op, val = flt.split(".", 2)
    if types != "insert" or table != args.table or col != "k" or op not in ("in", "gte"):
        raise ValueError(f"mock: unsupported query {query!r}")
    if op == "in":
        values = {int(v) for v in val.split(",")}
        return lambda k: k in values
    bound = int(val)
    return lambda k: k >= bound


async def handler(ws, path):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("query", [""])[0]
    try:
        pred = parse_filter(q)
    except ValueError as e:
        await ws.close(1008, str(e)[:100])
        return
    subs[ws] = pred
    await ws.send(json.dumps({"type": "subscribed", "id": "query", "lsn": "0/0"}, separators=(",", ":")))
    try:
        await ws.wait_closed()
    finally:
        subs.pop(ws, None)


async def poller():
    conn = psycopg2.connect(host=args.pghost, port=args.pgport, user="postgres", dbname="postgres")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"SELECT coalesce(max(id), 0) FROM {args.table}")
    contiguous = cur.fetchone()[0]
    seen = set()
    while True:
        cur.execute(f"SELECT id, k, payload, xmin::text, pg_current_wal_lsn()::text FROM {args.table} "
                    "WHERE id > %s ORDER BY id", (contiguous,))
        for rid, k, payload, xid, lsn in cur.fetchall():
            if rid in seen:
                continue
            seen.add(rid)
            frame = ('{"type":"change","kind":"insert","schema":"public","table":"%s","columnnames":["id","k","payload"],'
                     '"columntypes":["bigint","integer","text"],"columnvalues":[%d,%d,"%s"],"xid":%s,"lsn":"%s",'
                     '"subscriptions":["query"]}' % (args.table, rid, k, payload, xid, lsn))
            websockets.broadcast([ws for ws, pred in subs.items() if pred(k)], frame)
        while contiguous + 1 in seen:
            contiguous += 1
            seen.discard(contiguous)
        await asyncio.sleep(0.002)


async def main():
    async with websockets.serve(handler, "127.0.0.1", args.port, max_queue=None, compression=None):
        await poller()


asyncio.run(main())
