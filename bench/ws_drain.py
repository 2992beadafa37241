#!/usr/bin/python3
"""Drain a pgcdcws stream end to end with Python websockets + json.loads (benchmark client).

    ws_drain.py --url ws://localhost:12312/v1/lr/stream?slotName=bench_cdc --end-lsn 0/5A3C2B8
                [--no-parse] [--ack] [--timeout 600] [--record FILE]

Reads every message, parses it with json.loads (unless --no-parse: then only the trailing
"nextlsn" is located by string search and changes are counted by '"kind":' occurrences) and stops
at the first message whose nextlsn >= --end-lsn. No ack is sent unless --ack (so the same slot can be
drained again). --record keeps the raw messages in memory and writes them after the timed part
as <uint32 LE length><utf-8 bytes> records, for parse_bench.py and ws_drain.mjs --replay.

Prints one JSON line: {"client":"python","mode":...,"seconds":...,"changes":...,"messages":...,
"transactions":...,"bytes":...,"last_lsn":...,"cpu_seconds":...} (cpu_seconds: the process's CPU
time over the timed span). Exit 0 on success, 3 refused, 4 stream error, 5 timeout, 6 invalid JSON.
"""
import argparse
import asyncio
import json
import struct
import sys
import time

import websockets


def lsn_int(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def fail(code, msg):
    print(f"ws_drain.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


class Drain:
    def __init__(self, args):
        self.args = args
        self.end_lsn = lsn_int(args.end_lsn)
        self.parse = not args.no_parse
        self.changes = self.messages = self.txns = self.nbytes = 0
        self.last = -1
        self.last_s = ""
        self.kept = [] if args.record else None

    async def consume(self, ws):
        loads = json.loads
        parse, end_lsn, kept = self.parse, self.end_lsn, self.kept
        changes = messages = txns = nbytes = 0
        last, last_s = -1, ""
        try:
            while True:
                msg = await ws.recv()
                messages += 1
                nbytes += len(msg)
                if kept is not None:
                    kept.append(msg)
                if parse:
                    try:
                        frame = loads(msg)
                    except ValueError as e:
                        fail(6, f"invalid JSON in message {messages}: {e}")
                    ch = frame.get("change")
                    if ch is None:
                        if "heartbeat" in frame:  # idle stream (pgcdcws.heartbeat_interval)
                            continue
                        if "error" in frame:
                            print(f"ws_drain.py: server error reply: {frame['error']}", file=sys.stderr)
                            continue
                        fail(6, f"message {messages} has no change array")
                    changes += len(ch)
                    nl = frame.get("nextlsn")
                else:
                    changes += msg.count('"kind":')
                    i = msg.rfind('"nextlsn":"', max(0, len(msg) - 64))
                    nl = msg[i + 11:msg.index('"', i + 11)] if i >= 0 else None
                if nl is not None:
                    cur = lsn_int(nl)
                    if cur <= last:
                        fail(4, f"nextlsn went backwards: {nl} after {last_s}")
                    last, last_s = cur, nl
                    txns += 1
                    if cur >= end_lsn:
                        return
        finally:
            self.changes, self.messages, self.txns, self.nbytes = changes, messages, txns, nbytes
            self.last, self.last_s = last, last_s


async def drain(args):
    d = Drain(args)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        ws = await websockets.connect(args.url, max_size=None, compression=None, max_queue=256,
                                      ping_interval=None, open_timeout=min(30, args.timeout))
    except websockets.exceptions.InvalidStatusCode as e:
        fail(3, f"handshake refused: HTTP {e.status_code}")
    except OSError as e:
        fail(4, f"cannot connect: {e}")
    try:
        # One timeout around the whole drain: a per-recv wait_for would cost a task per message.
        await asyncio.wait_for(d.consume(ws), args.timeout - (time.perf_counter() - t0))
    except asyncio.TimeoutError:
        fail(5, f"timed out after {d.changes} changes")
    except websockets.exceptions.ConnectionClosed as e:
        fail(4, f"stream closed ({e.code} {e.reason}) after {d.changes} changes, before {args.end_lsn}")
    secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if args.ack:
        await ws.send(json.dumps({"lsn": d.last_s}))
    await ws.close()
    if d.kept is not None:
        with open(args.record, "wb") as f:
            for m in d.kept:
                b = m.encode()
                f.write(struct.pack("<I", len(b)))
                f.write(b)
    print(json.dumps({"client": "python", "mode": "parse" if d.parse else "raw", "seconds": round(secs, 6),
                      "changes": d.changes, "messages": d.messages, "transactions": d.txns, "bytes": d.nbytes,
                      "last_lsn": d.last_s, "cpu_seconds": round(cpu, 6)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--end-lsn", required=True)
    ap.add_argument("--no-parse", action="store_true")
    ap.add_argument("--ack", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--record")
    asyncio.run(drain(ap.parse_args()))


if __name__ == "__main__":
    main()
