#!/usr/bin/python3
"""Summarize bench/out/results.jsonl: print a table and write markdown.

    report.py results.jsonl meta.json results.md

Per workload and consumer: best (minimum) time over the trials, changes/s = rows / best time,
the pgcdcws ratios against wal2json and pgoutput, the clients' CPU time against their wall time
(who sets the pace), and the parse-only cost on the recorded messages.
"""
import json
import sys
from collections import defaultdict

CONSUMERS = [
    ("cdc_node", "pgcdcws, Node ws client (JSON.parse of every message)"),
    ("cdc_node_raw", "pgcdcws, Node ws client (receive only, no JSON parse)"),
    ("cdc_py", "pgcdcws, Python client (websockets + json.loads)"),
    ("wal2json", "pg_recvlogical + wal2json → /dev/null"),
    ("pgoutput", "pg_recvlogical + pgoutput → /dev/null"),
]
WORKLOADS = {
    "A": "A: {rows:,} rows in 1000-row transactions",
    "B": "B: {rows:,} single-row transactions",
}


def main():
    res_path, meta_path, md_path = sys.argv[1:4]
    meta = json.load(open(meta_path))
    rows = [json.loads(line) for line in open(res_path) if line.strip()]
    by = defaultdict(list)
    for r in rows:
        by[(r["workload"], r["consumer"])].append(r)

    def best(wl, c):
        ok = [r for r in by.get((wl, c), []) if "seconds" in r and "error" not in r]
        if not ok:
            return None
        return min(ok, key=lambda r: r["seconds"])

    def trials(wl, c):
        return [r for r in by.get((wl, c), [])]

    md = []
    md.append("# pgcdcws benchmark results\n")
    md.append(f"- date: {meta['date']}; pgcdcws `{meta['pgcdcws']}`; {meta['postgres']}; wal2json {meta['wal2json']}")
    md.append(f"- machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem']} RAM; "
              f"1-min load average before the run: {meta.get('loadavg_start', '?')}")
    md.append(f"- best of {meta['trials']} trial(s); changes/s = rows written / seconds to drain the slot from its "
              "start to the workload's end LSN (connection set-up included)")
    md.append(f"- wal2json options: `{meta['w2j_opts']}`; pgoutput: `-o proto_version=1 -o publication_names=bench_pub`")
    if meta.get("node"):
        md.append(f"- Node client: node {meta['node']}, ws {meta.get('ws', '?')} (no permessage-deflate, "
                  "no bufferutil/utf-8-validate add-ons)")
    if not meta["pgcdcws_installed"]:
        md.append("- **pgcdcws was not installed: only the reference consumers were measured**")
    md.append("")
    header_len = len(md)
    headline = []
    for wl, title in WORKLOADS.items():
        gen = best(wl, "generate")
        nrows = gen["rows"] if gen else None
        if nrows is None:
            continue
        md.append(f"## Workload {title.format(rows=nrows)}\n")
        if gen:
            md.append(f"Written in {gen['seconds']:.2f} s ({nrows / gen['seconds']:,.0f} rows/s, synchronous_commit=off).\n")
        md.append("| consumer | best s | all trials (s) | changes/s | vs wal2json | vs pgoutput | client CPU in best trial |")
        md.append("|---|---:|---|---:|---:|---:|---:|")
        w2j, pgo = best(wl, "wal2json"), best(wl, "pgoutput")
        for key, label in CONSUMERS:
            tr = trials(wl, key)
            if not tr:
                continue
            b = best(wl, key)
            all_s = ", ".join(f"{r['seconds']:.3f}" if "seconds" in r and "error" not in r else "FAILED" for r in tr)
            if b is None:
                err = next((r.get("error") for r in tr if r.get("error")), "failed")
                md.append(f"| {label} | - | {all_s} | - | - | - | - |")
                md.append(f"|  ↳ error: {err} | | | | | | |")
                continue
            rate = nrows / b["seconds"]
            vs_w = f"{w2j['seconds'] / b['seconds']:.2f}×" if w2j else "-"
            vs_p = f"{pgo['seconds'] / b['seconds']:.2f}×" if pgo else "-"
            cpu = "-"
            if "cpu_seconds" in b:
                cpu = f"{b['cpu_seconds']:.3f} s = {b['cpu_seconds'] / b['seconds'] * 100:.0f}% of wall"
                if b.get("main_thread_cpu_seconds") is not None:
                    cpu += (f" (event-loop thread {b['main_thread_cpu_seconds']:.3f} s = "
                            f"{b['main_thread_cpu_seconds'] / b['seconds'] * 100:.0f}%)")
            md.append(f"| {label} | {b['seconds']:.3f} | {all_s} | {rate:,.0f} | {vs_w} | {vs_p} | {cpu} |")
        md.append("")
        # Headline: the receive-only client (what pg_recvlogical -f /dev/null does too: no parsing), and
        # the faster of the clients that parse every message (what a real consumer pays).
        raw = best(wl, "cdc_node_raw")
        cands = [(b, name) for b, name in ((best(wl, "cdc_node"), "Node"), (best(wl, "cdc_py"), "Python")) if b]
        cdc, which = min(cands, key=lambda x: x[0]["seconds"]) if cands else (None, None)
        if w2j and pgo and (raw or cdc):
            parts = []
            if raw:
                parts.append(f"receive only (Node client, no parsing, like pg_recvlogical → /dev/null): "
                             f"**{w2j['seconds'] / raw['seconds']:.2f}×** wal2json, "
                             f"**{pgo['seconds'] / raw['seconds']:.2f}×** pgoutput")
            if cdc:
                parts.append(f"parsing every message ({which} client): "
                             f"**{w2j['seconds'] / cdc['seconds']:.2f}×** wal2json, "
                             f"**{pgo['seconds'] / cdc['seconds']:.2f}×** pgoutput")
            headline.append(f"- workload {wl}: pgcdcws " + "; ".join(parts))
        ppy, pnode = best(wl, "parse_py"), best(wl, "parse_node")
        dpy, dnode = best(wl, "cdc_py"), best(wl, "cdc_node")
        if ppy or pnode:
            md.append("Parse-only cost on the recorded pgcdcws messages (no network, best of 3 passes):\n")
            for p, name in ((ppy, "Python json.loads"), (pnode, "Node Buffer→string + JSON.parse")):
                if p:
                    md.append(f"- {name}: {p['seconds']:.3f} s, {p['changes'] / p['seconds']:,.0f} changes/s, "
                              f"{p['bytes'] / p['seconds'] / 1e6:,.0f} MB/s ({p['messages']:,} messages, "
                              f"{p['bytes'] / 1e6:,.1f} MB)")
            for p, d, name in ((ppy, dpy, "json.loads"), (pnode, dnode, "JSON.parse")):
                if p and d:
                    md.append(f"- {name} alone is {p['seconds'] / d['seconds'] * 100:.0f}% of the wall time of the "
                              f"best {'Python' if name == 'json.loads' else 'Node'} drain")
            md.append("")
        # Who sets the pace: a client whose event-loop thread is busy for nearly the whole drain is the
        # bottleneck (the drain also includes connecting and the decoder's start, when the client waits).
        pace = []
        for key, name in (("cdc_node", "Node, JSON.parse"), ("cdc_node_raw", "Node, receive only"),
                          ("cdc_py", "Python, json.loads")):
            d = best(wl, key)
            if not d or "cpu_seconds" not in d:
                continue
            main = d.get("main_thread_cpu_seconds")
            cpu_s, what = (d["cpu_seconds"], "process") if main is None else (main, "event-loop thread")
            share = cpu_s / d["seconds"]
            if share >= 0.85:
                verdict = ("busy nearly all the time: this client is the bottleneck (the server is at least "
                           "this fast)")
            elif share >= 0.7:
                verdict = "busy most of the time: client and server run at similar speeds"
            else:
                verdict = f"waiting for data {100 - share * 100:.0f}% of the time: the server sets the pace"
            pace.append(f"- {name}: {what} {cpu_s:.3f} s of CPU in {d['seconds']:.3f} s ({share * 100:.0f}%): "
                        f"{verdict}")
        raw = best(wl, "cdc_node_raw")
        if dnode and raw and raw["seconds"] < 0.9 * dnode["seconds"]:
            pace.append(f"- the stream itself arrives in {raw['seconds']:.3f} s (receive-only drain): JSON.parse in "
                        f"the client adds {dnode['seconds'] - raw['seconds']:.3f} s "
                        f"({dnode['seconds'] / raw['seconds']:.2f}× the receive-only time)")
        elif dnode and raw:
            pace.append(f"- parsing changes the drain time little ({dnode['seconds']:.3f} s with JSON.parse, "
                        f"{raw['seconds']:.3f} s receive only)")
        if pace:
            md.append(f"Who sets the pace (client CPU time / drain wall time, best trial; the client shares the "
                      f"machine's {meta['cores']} cores with the server, so its CPU also competes with the "
                      "server's):\n")
            md.extend(pace)
            md.append("")
    if headline:
        md.insert(header_len, "## Summary\n\n" + "\n".join(headline) + "\n")
    text = "\n".join(md) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
