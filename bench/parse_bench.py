#!/usr/bin/python3
"""Parse-only throughput of Python's json.loads on recorded stream messages.

    parse_bench.py FILE [--repeat 3]

FILE holds <uint32 LE length><utf-8 JSON> records (ws_drain.py --record / ws_drain.mjs --record).
Decodes the records to str first (the websockets client hands out str), then times json.loads of
every message plus counting its changes, best of --repeat. Prints one JSON line with seconds,
changes, messages, bytes and changes_per_s. This is the ceiling for any Python consumer that
parses every message: if a Python drain runs near it, Python is the bottleneck, not the server.
"""
import argparse
import json
import struct
import time


def load(path):
    msgs = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, off)
        off += 4
        msgs.append(data[off:off + n].decode())
        off += n
    return msgs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    msgs = load(args.file)
    nbytes = sum(len(m.encode()) for m in msgs)
    best = None
    changes = 0
    loads = json.loads
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        changes = 0
        for m in msgs:
            changes += len(loads(m).get("change", ()))
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print(json.dumps({"client": "python", "mode": "parse-only", "seconds": round(best, 6), "changes": changes,
                      "messages": len(msgs), "bytes": nbytes,
                      "changes_per_s": round(changes / best) if best else None,
                      "mb_per_s": round(nbytes / best / 1e6, 1) if best else None}))


if __name__ == "__main__":
    main()
