#!/usr/bin/python3
"""Demo client for pgcdcws: prints each transaction as it arrives and acknowledges it.

    demo_client.py --url ws://localhost:12312/v1/lr/stream?slotName=demo --expect 5 \
                   [--dsn "host=... port=... dbname=postgres user=postgres" --slot demo]

Connects (retrying while the server is not up yet), pretty-prints every transaction frame,
sends {"lsn": nextlsn} after each transaction, and ends once --expect transactions arrived.
With --dsn it then polls cdc_slots() until confirmed_flush_lsn reached the last ack.
Exit status: 0 on success, 1 when fewer transactions than expected arrived before --timeout,
2 when the server refused the connection or the stream broke.
"""
import argparse
import asyncio
import re
import decimal
import json
import sys
import time

import websockets

TTY = sys.stdout.isatty()


def c(code, s):
    return f"\x1b[{code}m{s}\x1b[0m" if TTY else s


def lsn_int(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def scalar(v):
    # Numbers are parsed as Decimal so that they print digit for digit (1.00 stays 1.00).
    if isinstance(v, decimal.Decimal):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def pretty(v, indent=0):
    """JSON with objects expanded and arrays of scalars kept on one line."""
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {pretty(x, indent + 1)}' for k, x in v.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        items = [f"{pad}  {pretty(x, indent + 1)}" for x in v]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return scalar(v)


def summarize(ch):
    kind = ch.get("kind", "?")
    color = {"insert": "32", "update": "33", "delete": "31", "truncate": "35"}.get(kind, "0")
    rel = f'{ch.get("schema")}.{ch.get("table")}'
    if "columnvalues" in ch:
        row = ", ".join(f"{n}={scalar(v)}"
                        for n, v in zip(ch["columnnames"], ch["columnvalues"]))
        detail = f"({row})"
    elif "oldkeys" in ch:
        ok = ch["oldkeys"]
        detail = "key (" + ", ".join(f"{n}={scalar(v)}" for n, v in zip(ok["keynames"], ok["keyvalues"])) + ")"
    else:
        detail = ""
    return f"{c(color, kind.upper()):<8} {rel} {detail}"


def redacted(url):
    """The URL without the token's value (a token is a password)."""
    return re.sub(r"(access_token=)[^&#]*", r"\1REDACTED", url)


async def connect(url, deadline):
    """Connect, retrying while the port is closed or the server answers 503."""
    last = None
    while time.monotonic() < deadline:
        try:
            return await websockets.connect(url, max_size=None, compression=None,
                                            open_timeout=max(1.0, deadline - time.monotonic()))
        except websockets.exceptions.InvalidStatusCode as e:
            if e.status_code != 503:
                print(c("31", f"server refused the stream: HTTP {e.status_code}"), flush=True)
                sys.exit(2)
            last = f"HTTP {e.status_code}"
        except (OSError, asyncio.TimeoutError) as e:
            last = str(e) or type(e).__name__
        await asyncio.sleep(0.2)
    print(c("31", f"could not connect to {redacted(url)}: {last}"), flush=True)
    sys.exit(2)


def wait_confirmed(dsn, slot, lsn, secs):
    import psycopg2
    end = time.monotonic() + secs
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT confirmed_flush_lsn::text FROM cdc_slots() WHERE slot_name = %s", (slot,))
                row = cur.fetchone()
                cur_lsn = row[0] if row else None
                if cur_lsn and lsn_int(cur_lsn) >= lsn_int(lsn):
                    return cur_lsn
                if time.monotonic() > end:
                    return None
                time.sleep(0.1)
    finally:
        conn.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--expect", type=int, required=True, help="transactions to wait for")
    ap.add_argument("--timeout", type=float, default=60, help="seconds for connecting + receiving")
    ap.add_argument("--ready-file", help="created once the WebSocket is open")
    ap.add_argument("--dsn", help="libpq DSN to check cdc_slots() after the last ack")
    ap.add_argument("--slot")
    args = ap.parse_args()

    deadline = time.monotonic() + args.timeout
    ws = await connect(args.url, deadline)
    print(c("1", f"connected to {redacted(args.url)}"), flush=True)
    if args.ready_file:
        open(args.ready_file, "w").close()

    txns = changes = 0
    last_lsn = None
    try:
        while txns < args.expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=remaining)
            except asyncio.TimeoutError:
                break
            frame = json.loads(msg, parse_float=decimal.Decimal)
            if "error" in frame and "xid" not in frame:
                print(c("31", f"server error reply: {frame['error']}"), flush=True)
                continue
            if "heartbeat" in frame:  # the stream is idle; its lsn could be acked
                continue
            chs = frame.get("change", [])
            changes += len(chs)
            head = f"transaction xid={frame.get('xid')} committed {frame.get('timestamp')}, {len(chs)} change(s)"
            print("\n" + c("1;36", "── " + head + " ──"), flush=True)
            for ch in chs:
                print("  " + summarize(ch))
            print(pretty(frame), flush=True)
            if "nextlsn" in frame:
                txns += 1
                last_lsn = frame["nextlsn"]
                await ws.send(json.dumps({"lsn": last_lsn}))
                print(c("2", f'  → ack sent: {{"lsn": "{last_lsn}"}}'), flush=True)
    except websockets.exceptions.ConnectionClosed as e:
        print(c("31", f"stream closed by the server: code {e.code} {e.reason!r}"), flush=True)
        sys.exit(2)

    if txns < args.expect:
        print(c("31", f"only {txns} of {args.expect} transactions ({changes} changes) arrived within {args.timeout:.0f}s"),
              flush=True)
        await ws.close()
        sys.exit(1)
    print(c("1;32", f"\nreceived {txns} transactions with {changes} changes; last nextlsn {last_lsn}"), flush=True)

    if args.dsn and args.slot:
        # Stay connected while checking: the ack is applied by the server within a second.
        got = await asyncio.get_running_loop().run_in_executor(None, wait_confirmed, args.dsn, args.slot, last_lsn, 15)
        if got is None:
            print(c("31", f"cdc_slots() did not reach confirmed_flush_lsn {last_lsn} within 15s"), flush=True)
            await ws.close()
            sys.exit(1)
        print(c("1;32", f"slot {args.slot}: confirmed_flush_lsn is now {got} (>= last ack {last_lsn})"), flush=True)
    await ws.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
