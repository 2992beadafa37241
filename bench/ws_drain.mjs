#!/usr/bin/env node
// ws_drain.mjs: drains a pgcdcws stream as fast as possible, for the benchmark.
//
// A Node.js client built on the npm package `ws` (bench/package.json; `npm ci` in bench/). It
// connects to ws://HOST:PORT/v1/lr/stream?slotName=SLOT without permessage-deflate and without a
// message size limit, JSON.parse()s every message (default) and stops at the first message whose
// "nextlsn" is >= --end-lsn. It sends no ack unless --ack is given, so the same slot can be
// drained again.
//
//   node ws_drain.mjs --port 12312 --slot bench_cdc --end-lsn 0/5A3C2B8 [--host localhost]
//                     [--no-parse] [--ack] [--timeout 600] [--record FILE]
//   node ws_drain.mjs --replay FILE [--no-parse] [--repeat 3]   parse-only throughput on recorded messages
//
// --no-parse: no JSON.parse; changes are counted as occurrences of `"kind":` in the raw bytes and
// the trailing "nextlsn" is found by a byte search (receive only: what `ws` itself costs).
// --record keeps the raw messages in memory and writes them after the timed part as
// <uint32 little-endian length><bytes> records (the format of ws_drain.py --record and
// parse_bench.py). --replay times Buffer -> string + JSON.parse (or the --no-parse search) of
// every recorded message, best of --repeat passes (the first pass includes JIT warm-up).
//
// Prints one JSON line: {"client":"node","mode":...,"seconds":...,"changes":...,"messages":...,
// "transactions":...,"bytes":...,"last_lsn":...,"cpu_seconds":...,"main_thread_cpu_seconds":...}.
// seconds is wall time from before the connection is opened to the end LSN (process start-up
// excluded). cpu_seconds is the process's user + system CPU time over the same span, V8's helper
// threads (GC, compiler) included; main_thread_cpu_seconds is the CPU time of the thread that runs
// the event loop (ws framing, JSON.parse), from /proc/self/task/PID/schedstat (null where that is
// missing): that thread is the serial part, so it shows whether the client keeps up.
// Exit 0 on success; 2 usage; 3 handshake refused; 4 stream error/closed early; 5 timeout;
// 6 invalid JSON.

import { readFileSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

function fail(code, msg) {
    process.stderr.write(`ws_drain.mjs: ${msg}\n`);
    process.exit(code);
}

function usage() {
    fail(2, 'usage: ws_drain.mjs --port P --slot S --end-lsn X/Y [--host H] [--no-parse] [--ack] ' +
        '[--timeout SEC] [--record FILE]\n       ws_drain.mjs --replay FILE [--no-parse] [--repeat N]');
}

// "X/Y": two hexadecimal 32-bit halves -> BigInt, or null.
const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;
function parseLsn(s) {
    const m = LSN_RE.exec(s);
    return m ? (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]) : null;
}
function lsnStr(l) {
    return `${(l >> 32n).toString(16).toUpperCase()}/${(l & 0xFFFFFFFFn).toString(16).toUpperCase()}`;
}

const args = { host: 'localhost', port: 12312, slot: '', endLsn: null, parse: true, ack: false, timeout: 600,
    record: '', replay: '', repeat: 3 };
{
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        const val = () => (i + 1 < argv.length ? argv[++i] : usage());
        if (k === '--host') args.host = val();
        else if (k === '--port') args.port = Number(val());
        else if (k === '--slot') args.slot = val();
        else if (k === '--end-lsn') {
            const v = val();
            if ((args.endLsn = parseLsn(v)) === null) fail(2, `invalid --end-lsn ${v}`);
        } else if (k === '--no-parse') args.parse = false;
        else if (k === '--ack') args.ack = true;
        else if (k === '--timeout') args.timeout = Number(val());
        else if (k === '--record') args.record = val();
        else if (k === '--replay') args.replay = val();
        else if (k === '--repeat') args.repeat = Math.max(1, Number(val()) | 0);
        else usage();
    }
    if (!args.replay && (!args.slot || args.endLsn === null)) usage();
    if (!args.replay && !(Number.isInteger(args.port) && args.port > 0 && args.port < 65536)) fail(2, 'invalid --port');
    if (!(args.timeout > 0)) fail(2, 'invalid --timeout');
}

const st = { changes: 0, messages: 0, transactions: 0, bytes: 0, last: 0n, haveLsn: false };
const KIND = Buffer.from('"kind":');
const NEXTLSN = Buffer.from('"nextlsn":"');

// Counts the message's changes and returns its nextlsn (BigInt), or null when it has none.
function changesAndLsn(buf) {
    if (!args.parse) {
        for (let p = buf.indexOf(KIND); p !== -1; p = buf.indexOf(KIND, p + KIND.length)) st.changes++;
        const q = buf.indexOf(NEXTLSN, Math.max(0, buf.length - 64));
        if (q === -1) {
            if (buf.includes('"error"') && !buf.includes('"change"'))
                process.stderr.write(`ws_drain.mjs: server error reply: ${buf.toString()}\n`);
            return null;
        }
        const s = q + NEXTLSN.length, e = buf.indexOf(0x22, s);
        const lsn = e === -1 ? null : parseLsn(buf.toString('latin1', s, e));
        if (lsn === null) fail(6, `invalid nextlsn in message ${st.messages}`);
        return lsn;
    }
    let frame;
    try {
        frame = JSON.parse(buf.toString());
    } catch (e) {
        fail(6, `invalid JSON in message ${st.messages}: ${e.message}`);
    }
    if (frame === null || typeof frame !== 'object' || Array.isArray(frame))
        fail(6, `message ${st.messages} is not a JSON object`);
    const ch = frame.change;
    if (ch === undefined && frame.heartbeat === true) return null;  // idle stream (pgcdcws.heartbeat_interval)
    if (ch === undefined && typeof frame.error === 'string') {
        process.stderr.write(`ws_drain.mjs: server error reply: ${frame.error}\n`);
        return null;
    }
    if (!Array.isArray(ch)) fail(6, `message ${st.messages} has no "change" array`);
    st.changes += ch.length;
    const nl = frame.nextlsn;
    if (nl === undefined) return null;
    const lsn = typeof nl === 'string' ? parseLsn(nl) : null;
    if (lsn === null) fail(6, `invalid nextlsn in message ${st.messages}`);
    return lsn;
}

// Counts one complete message; true when it ends a transaction at or past --end-lsn.
function consume(buf) {
    st.messages++;
    st.bytes += buf.length;
    const lsn = changesAndLsn(buf);
    if (lsn === null) return false;
    if (st.haveLsn && lsn <= st.last) fail(4, `nextlsn went backwards: ${lsnStr(lsn)} after ${lsnStr(st.last)}`);
    st.transactions++;
    st.last = lsn;
    st.haveLsn = true;
    return lsn >= args.endLsn;
}

// CPU time of the main thread in nanoseconds (first field of schedstat), or null.
const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;
function mainThreadNs() {
    try {
        return Number(readFileSync(SCHEDSTAT, 'latin1').split(' ', 1)[0]);
    } catch {
        return null;
    }
}

// cpu: {proc: process.cpuUsage() difference, main: main thread ns or null}.
function report(mode, seconds, cpu, extra = {}) {
    process.stdout.write(JSON.stringify({
        client: 'node', mode, seconds: +seconds.toFixed(6), changes: st.changes, messages: st.messages,
        transactions: st.transactions, bytes: st.bytes, last_lsn: st.haveLsn ? lsnStr(st.last) : '',
        cpu_seconds: +((cpu.proc.user + cpu.proc.system) / 1e6).toFixed(6),
        main_thread_cpu_seconds: cpu.main === null ? null : +(cpu.main / 1e9).toFixed(6), ...extra,
    }) + '\n');
}

// Parse-only throughput on a --record file: best of --repeat passes.
function replay() {
    let data;
    try {
        data = readFileSync(args.replay);
    } catch (e) {
        fail(2, `cannot read ${args.replay}: ${e.message}`);
    }
    const msgs = [];
    let off = 0;
    while (off + 4 <= data.length) {
        const n = data.readUInt32LE(off);
        if (off + 4 + n > data.length) fail(2, 'truncated record file');
        msgs.push(data.subarray(off + 4, off + 4 + n));
        off += 4 + n;
    }
    args.endLsn = (1n << 64n) - 1n;
    let best = null;
    const all = [];
    for (let r = 0; r < args.repeat; r++) {
        Object.assign(st, { changes: 0, messages: 0, transactions: 0, bytes: 0, last: 0n, haveLsn: false });
        const cpu0 = process.cpuUsage(), main0 = mainThreadNs(), t0 = performance.now();
        for (const m of msgs) consume(m);
        const secs = (performance.now() - t0) / 1000, main1 = mainThreadNs();
        const cpu = { proc: process.cpuUsage(cpu0), main: main0 === null ? null : main1 - main0 };
        all.push(+secs.toFixed(6));
        if (best === null || secs < best.secs) best = { secs, cpu };
    }
    report(`replay-${args.parse ? 'parse' : 'raw'}`, best.secs, best.cpu, { seconds_all: all });
    process.exit(0);
}

// Drains the stream with one `ws` connection.
function drain() {
    const host = args.host.includes(':') && !args.host.startsWith('[') ? `[${args.host}]` : args.host;
    const url = `ws://${host}:${args.port}/v1/lr/stream?slotName=${encodeURIComponent(args.slot)}`;
    const kept = args.record ? [] : null;
    let opened = false, done = false, secs = 0, cpu = null;

    setTimeout(() => fail(5, `timed out after ${st.changes} changes`), args.timeout * 1000);
    const cpu0 = process.cpuUsage(), main0 = mainThreadNs(), t0 = performance.now();
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });

    ws.on('unexpected-response', (req, res) => {  // any HTTP status but 101
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { if (body.length < 1000) body += d; });
        res.on('end', () => fail(3, `handshake refused: HTTP ${res.statusCode} ${body.trim()}`));
        res.on('error', () => fail(3, `handshake refused: HTTP ${res.statusCode}`));
    });
    ws.on('open', () => { opened = true; });
    ws.on('message', (data, isBinary) => {
        if (done) return;  // what arrives after the end LSN, before the close completes
        if (isBinary) fail(4, 'unexpected binary message');
        if (kept) kept.push(data);
        if (!consume(data)) return;
        secs = (performance.now() - t0) / 1000;
        const main1 = mainThreadNs();
        cpu = { proc: process.cpuUsage(cpu0), main: main0 === null ? null : main1 - main0 };
        done = true;
        if (args.ack) ws.send(JSON.stringify({ lsn: lsnStr(st.last) }));
        ws.close(1000);  // 'close' fires once the server has answered the close frame
    });
    ws.on('error', (err) => {
        if (done) return;
        fail(4, opened ? `stream error after ${st.changes} changes: ${err.message}`
            : `cannot connect to ${args.host}:${args.port}: ${err.message}`);
    });
    ws.on('close', (code, reason) => {
        if (!done) {
            fail(4, `server closed the stream (${code} ${reason.toString()}) after ${st.changes} changes, ` +
                `before ${lsnStr(args.endLsn)}`);
        }
        if (kept) {
            const parts = [];
            for (const m of kept) {
                const len = Buffer.alloc(4);
                len.writeUInt32LE(m.length);
                parts.push(len, m);
            }
            try {
                writeFileSync(args.record, Buffer.concat(parts));
            } catch (e) {
                fail(2, `cannot write ${args.record}: ${e.message}`);
            }
        }
        report(args.parse ? 'parse' : 'raw', secs, cpu);
        process.exit(0);
    });
}

args.replay ? replay() : drain();
