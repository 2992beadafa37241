#!/usr/bin/env node
// Broadcast benchmark, one cell of the matrix (issue 8): N subscriber sockets on GET /ws?query=...,
// each with its own filter, a writer (pgbench) that inserts rows, and per received change frame
// the receive time. Latency = receive time - the transaction's commit timestamp
// (pg_xact_commit_timestamp, track_commit_timestamp = on), looked up after each phase by the xid
// every frame carries. Prints one JSON line on stdout; progress goes to stderr.
//
// node loadgen.mjs --port WS --subscribers N --match PCT --pghost DIR --pgport P [options]
//   --host H                 WebSocket host (127.0.0.1)
//   --match 1|10|100         percentage of the subscribers every row reaches (exact, see below)
//   --rate R --duration S    fixed-rate phase: R changes/s for S s (--rate 0: no such phase)
//   --fixed-batch B          rows per transaction in the fixed-rate phase (1)
//   --fixed-clients C        pgbench clients in the fixed-rate phase (1)
//   --burst-rows ROWS        max-rate phase: up to ROWS rows as fast as the writer can (0: no such phase)
//   --burst-seconds S        ... and no more rows than the fixed phase's delivery rate empties in S s (15)
//   --burst-batch B          rows per INSERT (one transaction each) in the max-rate phase (up to 500)
//   --burst-clients C        pgbench clients in the max-rate phase (2)
//   --txn 1|0                then the same rows in ONE transaction (1); decoding starts at its commit,
//                            so commit -> last frame is the pipeline's pace without the writer's
//   --postmaster-pid PID     to find the "pgcdcws server" and "pgcdcws broadcast" processes
//   --server-pid PID         take this process as the server (the harness self-test's mock)
//   --connect-concurrency K  handshakes in flight at once (200)
//   --subscribe-timeout S    for all N "subscribed" frames (240)
//   --drain-timeout S        for the last expected frame once the writer is done, without progress (60)
//   --phase-timeout S        for the last expected frame once the writer is done, in all (90); the
//                            phase then reports the frames missing
//   --workdir DIR            where the pgbench scripts go (a new temporary directory)
//   --tokens FILE            access tokens, one per line: socket i connects with line i % count
//   --client node|c          the sockets' client: Debian's ws in this process (node), or
//                            receiver.c, a lean epoll client in a child process (c; --receiver PATH,
//                            the compiled binary), whose few microseconds per frame leave the
//                            latency to the server; its CPU counts as the load generator's
//   --pgbin DIR              PostgreSQL binaries (/usr/lib/postgresql/15/bin)
//
// Filters. Rows get k = a random integer 0..99. Subscriber i (0-based) of N with m = 100 / PCT:
//   PCT < 100: insert:bench_t:k.in.<every v in 0..99 with v % m == i % m>,-<i+1>
//              (the extra negative value never occurs and makes every filter distinct; the index
//               lists the subscription under each in-value's hash, so a row probes one bucket)
//   PCT = 100: insert:bench_t:k.gte.-<i+1> (every row passes; a scan-list filter, no index)
// A row with k reaches exactly the subscribers with i % m == k % m: N / m of them (m divides N).
//
// Exit codes: 0 done (the JSON says whether every expected frame arrived), 2 usage, 3 a handshake
// refused or sockets that never got "subscribed", 4 writer or psql failure.
import { createRequire } from 'node:module';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const require = createRequire(import.meta.url);

function die(code, msg) {
    process.stderr.write(`loadgen: ${msg}\n`);
    process.exit(code);
}
function note(msg) {
    process.stderr.write(`[loadgen] ${msg}\n`);
}

// Debian's node-ws lives in /usr/share/nodejs, which a Node.js not built by Debian does not search.
function loadWs() {
    for (const p of ['/usr/share/nodejs/ws', 'ws']) {
        try {
            const ws = require(p);
            let version = '?';
            try { version = require(p === 'ws' ? 'ws/package.json' : `${p}/package.json`).version; } catch { /* no version */ }
            return { WebSocket: ws.WebSocket ?? ws, version, from: p };
        } catch { /* next */ }
    }
    die(2, 'the ws package is missing: apt-get install node-ws');
}

// ------------------------------------------------------------------ options
const opt = {
    host: '127.0.0.1', port: 0, subscribers: 100, match: 100, table: 'bench_t',
    pghost: '', pgport: 5432, pguser: 'postgres', pgdb: 'postgres', pgbin: '/usr/lib/postgresql/15/bin',
    rate: 0, duration: 5, 'fixed-batch': 1, 'fixed-clients': 1,
    'burst-rows': 0, 'burst-batch': 500, 'burst-clients': 2, 'burst-seconds': 15, txn: 1,
    'postmaster-pid': 0, 'server-pid': 0, 'connect-concurrency': 200,
    'subscribe-timeout': 240, 'drain-timeout': 60, 'phase-timeout': 90, workdir: '', client: 'node', receiver: '', tokens: '',
};
{
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (!a.startsWith('--')) die(2, `unexpected argument ${a}`);
        const key = a.slice(2);
        if (!(key in opt)) die(2, `unknown option ${a}`);
        if (i + 1 >= argv.length) die(2, `${a} needs a value`);
        const v = argv[++i];
        opt[key] = typeof opt[key] === 'number' ? Number(v) : v;
        if (typeof opt[key] === 'number' && !Number.isFinite(opt[key])) die(2, `${a}: not a number: ${v}`);
    }
}
const N = opt.subscribers;
if (!opt.port || !opt.pghost) die(2, '--port and --pghost are required');
if (![1, 10, 100].includes(opt.match)) die(2, '--match must be 1, 10 or 100');
const M = 100 / opt.match;
if (!Number.isInteger(N) || N < 1 || N % M !== 0) die(2, `--subscribers must be a positive multiple of ${M}`);
if (!/^[a-z_][a-z0-9_]*$/.test(opt.table)) die(2, '--table must be a plain lower-case name');
if (!['node', 'c'].includes(opt.client)) die(2, '--client must be node or c');
if (opt.client === 'c' && !opt.receiver) die(2, '--client c needs --receiver PATH');
const workdir = opt.workdir || fs.mkdtempSync(path.join(os.tmpdir(), 'bbench-'));

const tokens = opt.tokens ? fs.readFileSync(opt.tokens, 'utf8').split('\n').filter((t) => t) : [];
if (opt.tokens && !tokens.length) die(2, `--tokens ${opt.tokens}: no token`);
function targetOf(i) {
    return `/ws?query=${encodeURIComponent(filterOf(i))}` +
        (tokens.length ? `&access_token=${encodeURIComponent(tokens[i % tokens.length])}` : '');
}

function filterOf(i) {
    if (opt.match === 100) return `insert:${opt.table}:k.gte.-${i + 1}`;
    const vals = [];
    for (let v = i % M; v < 100; v += M) vals.push(v);
    vals.push(-(i + 1));
    return `insert:${opt.table}:k.in.${vals.join(',')}`;
}

// ------------------------------------------------------------------ PostgreSQL helpers
const pgArgs = ['-h', opt.pghost, '-p', String(opt.pgport), '-U', opt.pguser];
function psql(sql) {
    try {
        return execFileSync(path.join(opt.pgbin, 'psql'), [...pgArgs, '-d', opt.pgdb, '-X', '-q', '-At', '-F', ' ',
            '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', maxBuffer: 1 << 30 }).trim();
    } catch (e) {
        die(4, `psql failed: ${sql.slice(0, 200)}: ${e.stderr || e.message}`);
    }
}
function serverStats() {
    try {
        return JSON.parse(execFileSync(path.join(opt.pgbin, 'psql'), [...pgArgs, '-d', opt.pgdb, '-X', '-q', '-At', '-c',
            'SELECT row_to_json(s) FROM cdc_server_stats() s'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    } catch {
        return null;
    }
}

function runPgbench(args) {
    return new Promise((resolve, reject) => {
        const child = spawn(path.join(opt.pgbin, 'pgbench'), [...pgArgs, '-n', '-M', 'prepared', ...args, opt.pgdb],
            { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d) => { out += d; });
        child.stderr.on('data', (d) => { out += d; });
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pgbench exited ${code}: ${out.slice(-2000)}`))));
    });
}

// ------------------------------------------------------------------ CPU accounting
const CLK_TCK = (() => {
    try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100; } catch { return 100; }
})();
function procStat(pid) {
    try {
        const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        return { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK };
    } catch {
        return null;
    }
}
function rssAnonKb(pid) {
    try {
        const m = /RssAnon:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
        return m ? Number(m[1]) : null;
    } catch {
        return null;
    }
}
// The postmaster's children whose title contains `title` (e.g. "postgres: pgcdcws server").
function findChildren(title) {
    if (!opt['postmaster-pid']) return [];
    const found = [];
    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        const st = procStat(d);
        if (!st || st.ppid !== opt['postmaster-pid']) continue;
        let cmd = '';
        try { cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { continue; }
        if (cmd.includes(title)) found.push(Number(d));
    }
    return found;
}
function machineCpu() {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { total, idle: f[3] + (f[4] || 0) };
}
function cpuOf(pids) {
    let sum = 0;
    for (const p of pids) {
        const st = procStat(p);
        if (st) sum += st.cpu;
    }
    return sum;
}

// ------------------------------------------------------------------ frame recording
// One entry per received change frame: receive time (performance.now(), ms) and xid.
let count = 0;
let recvAt = new Float64Array(1 << 20);
let xidOf = new Uint32Array(1 << 20);
function grow() {
    const r = new Float64Array(recvAt.length * 2); r.set(recvAt); recvAt = r;
    const x = new Uint32Array(xidOf.length * 2); x.set(xidOf); xidOf = x;
}
const CHANGE_PREFIX = Buffer.from('{"type":"change"');
const XID_KEY = Buffer.from('"xid":');
let subscribedCount = 0;
let otherFrames = {};  // type -> count (gap, error, unsubscribed, unparsable...)
const errorSamples = [];
let parsedSlowly = 0;

// Change frames per socket, to check that each socket got exactly the rows its filter selects.
const perSocket = new Uint32Array(N);

function recordChange(xid, socketIndex) {
    perSocket[socketIndex]++;
    if (count === recvAt.length) grow();
    recvAt[count] = performance.now();
    xidOf[count] = xid;
    count++;
}

function onMessage(data, isBinary, socketIndex) {
    // ws 8 hands text frames over as a Buffer (one, the fragments joined).
    if (!isBinary && data.length > CHANGE_PREFIX.length &&
        data.compare(CHANGE_PREFIX, 0, CHANGE_PREFIX.length, 0, CHANGE_PREFIX.length) === 0) {
        // Compact change frame: the xid is near the end (before lsn and subscriptions).
        let p = data.lastIndexOf(XID_KEY);
        if (p > 0) {
            p += XID_KEY.length;
            let x = 0;
            let c = data[p];
            if (c >= 48 && c <= 57) {
                while (c >= 48 && c <= 57) { x = x * 10 + (c - 48); c = data[++p]; }
                recordChange(x >>> 0, socketIndex);
                return;
            }
        }
    }
    // Anything else: parse it (subscribed, gap, error, ... or a change in another spelling).
    let msg;
    try {
        msg = JSON.parse(data.toString('utf8'));
    } catch {
        otherFrames.unparsable = (otherFrames.unparsable || 0) + 1;
        return;
    }
    const t = msg && msg.type;
    if (t === 'change' && Number.isInteger(msg.xid)) {
        parsedSlowly++;
        recordChange(msg.xid >>> 0, socketIndex);
    } else if (t === 'subscribed') {
        subscribedCount++;
    } else {
        otherFrames[t] = (otherFrames[t] || 0) + 1;
        if (errorSamples.length < 5) errorSamples.push(data.toString('utf8').slice(0, 300));
    }
}

// ------------------------------------------------------------------ sockets
const { WebSocket, version: wsVersion, from: wsFrom } = loadWs();
const sockets = new Array(N);
const closes = {};      // "code reason" -> count
const handshakeErrors = {};
let openCount = 0;
let closedCount = 0;

function connectOne(i) {
    return new Promise((resolve) => {
        const url = `ws://${opt.host}:${opt.port}${targetOf(i)}`;
        const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true, maxPayload: 16 << 20 });
        sockets[i] = ws;
        let settled = false;
        const settle = (ok) => { if (!settled) { settled = true; resolve(ok); } };
        ws.on('open', () => { ws._opened = true; openCount++; settle(true); });
        ws.on('message', (data, isBinary) => onMessage(data, isBinary, i));
        ws.on('unexpected-response', (req, res) => {
            let body = '';
            res.on('data', (d) => { body += d; });
            const done = () => {
                const k = `${res.statusCode} ${body.slice(0, 200)}`;
                handshakeErrors[k] = (handshakeErrors[k] || 0) + 1;
                settle(false);
                req.destroy();
            };
            res.on('end', done);
            res.on('error', done);
        });
        ws.on('error', (e) => {
            const k = e.message;
            if (!settled) handshakeErrors[k] = (handshakeErrors[k] || 0) + 1;
            settle(false);
        });
        ws.on('close', (code, reason) => {
            if (ws._opened) {
                closedCount++;
                const k = `${code} ${reason.toString().slice(0, 120)}`;
                closes[k] = (closes[k] || 0) + 1;
            }
            settle(false);
        });
    });
}

// ------------------------------------------------------------------ the C receiver (--client c)
// receiver.c holds the sockets; this process reads its counts ("s CHANGES SUBSCRIBED CLOSED
// OTHER" lines) and, after each phase, its change records (dump).
let receiver = null;
const remote = { changes: 0, open: null, dumped: null };
function startReceiver() {
    receiver = spawn(opt.receiver, [opt.host, String(opt.port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    receiver.on('exit', (code) => { if (code) note(`receiver exited with ${code}`); });
    let pending = '';
    receiver.stdout.on('data', (d) => {
        pending += d.toString('utf8');
        let nl;
        while ((nl = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, nl).split(' ');
            pending = pending.slice(nl + 1);
            if (line[0] === 's') {
                remote.changes = Number(line[1]);
                subscribedCount = Number(line[2]);
                closedCount = Number(line[3]);
                otherFrames.receiver_other = Number(line[4]) || undefined;
            } else if (line[0] === 'open') {
                remote.open = { ok: Number(line[1]), failed: Number(line[2]) };
            } else if (line[0] === 'dumped') {
                remote.dumped = Number(line[1]);
            } else {
                note(`receiver: ${line.join(' ')}`);
            }
        }
    });
    const targets = [];
    for (let i = 0; i < N; i++) targets.push(targetOf(i));
    receiver.stdin.write(`${N}\n${targets.join('\n')}\n`);
}
// Appends the change records received since the last dump (f64 ms since the epoch, u32 xid,
// u32 socket each) to this process's arrays.
async function loadReceiverRecords() {
    const file = path.join(workdir, 'records.bin');
    remote.dumped = null;
    receiver.stdin.write(`dump ${file}\n`);
    while (remote.dumped === null) await sleep(5);
    const buf = fs.readFileSync(file);
    const origin = performance.timeOrigin;
    for (let off = 0; off + 16 <= buf.length; off += 16) {
        const socketIndex = buf.readUInt32LE(off + 12);
        perSocket[socketIndex]++;
        if (count === recvAt.length) grow();
        recvAt[count] = buf.readDoubleLE(off) - origin;
        xidOf[count] = buf.readUInt32LE(off + 8);
        count++;
    }
    fs.unlinkSync(file);
}
const receivedCount = () => (receiver ? remote.changes : count);

async function connectAll() {
    const t0 = performance.now();
    if (opt.client === 'c') {
        startReceiver();
        while (remote.open === null && receiver.exitCode === null) await sleep(20);
        const tOpen = performance.now();
        if (!remote.open || remote.open.failed) {
            return { ok: false, error: `${remote.open ? remote.open.failed : N} of ${N} handshakes failed (receiver)` };
        }
        openCount = remote.open.ok;
        const deadline = tOpen + opt['subscribe-timeout'] * 1000;
        while (subscribedCount < N && performance.now() < deadline && closedCount === 0) await sleep(20);
        const tSub = performance.now();
        if (subscribedCount < N) {
            return { ok: false, error: `${subscribedCount} of ${N} subscriptions confirmed (receiver)` };
        }
        return { ok: true, open_seconds: (tOpen - t0) / 1000, subscribed_seconds: (tSub - t0) / 1000 };
    }
    let next = 0;
    let failed = 0;
    const worker = async () => {
        while (next < N) {
            const i = next++;
            if (!(await connectOne(i))) failed++;
        }
    };
    await Promise.all(Array.from({ length: Math.min(opt['connect-concurrency'], N) }, worker));
    const tOpen = performance.now();
    if (failed) {
        return { ok: false, error: `${failed} of ${N} handshakes failed`, handshake_errors: handshakeErrors };
    }
    const deadline = tOpen + opt['subscribe-timeout'] * 1000;
    while (subscribedCount < N && performance.now() < deadline && closedCount === 0) await sleep(20);
    const tSub = performance.now();
    if (subscribedCount < N) {
        return { ok: false, error: `${subscribedCount} of ${N} subscriptions confirmed` +
            (closedCount ? ` (${closedCount} sockets closed)` : ` after ${opt['subscribe-timeout']} s`),
            closes, other_frames: otherFrames, error_samples: errorSamples };
    }
    return { ok: true, open_seconds: (tOpen - t0) / 1000, subscribed_seconds: (tSub - t0) / 1000 };
}

function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

// ------------------------------------------------------------------ phases
function percentile(sorted, p) {
    if (!sorted.length) return null;
    const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[idx];
}
const r3 = (x) => (x == null ? null : Math.round(x * 1000) / 1000);

async function phase(name, writerArgs) {
    const maxId0 = Number(psql(`SELECT coalesce(max(id), 0) FROM ${opt.table}`));
    const first = count;
    const received0 = receivedCount();
    const closed0 = closedCount;
    const perSocket0 = perSocket.slice();
    const serverPids = opt['server-pid'] ? [opt['server-pid']] : findChildren('pgcdcws server');
    const decoderPids = findChildren('pgcdcws broadcast');
    const stats0 = serverStats();
    const receiverPids = receiver ? [receiver.pid] : [];
    const cpu0 = { gen: process.cpuUsage(), receiver: cpuOf(receiverPids), server: cpuOf(serverPids), decoder: cpuOf(decoderPids), machine: machineCpu() };
    const t0 = performance.now();

    note(`${name}: pgbench ${writerArgs.join(' ')}`);
    let pgbenchOut;
    try {
        pgbenchOut = await runPgbench(writerArgs);
    } catch (e) {
        die(4, `${name}: ${e.message}`);
    }
    const tWriterDone = performance.now();
    const rows = Number(psql(`SELECT count(*) FROM ${opt.table} WHERE id > ${maxId0}`));
    const expected = (rows * N) / M;

    // Wait for every expected frame; give up after drain-timeout seconds without progress.
    let last = receivedCount();
    let lastProgress = performance.now();
    let timedOut = false;
    while (receivedCount() - received0 < expected && closedCount === closed0) {
        await sleep(10);
        const now = performance.now();
        if (receivedCount() !== last) { last = receivedCount(); lastProgress = now; }
        else if (now - lastProgress > opt['drain-timeout'] * 1000) { timedOut = true; break; }
        if (now - tWriterDone > opt['phase-timeout'] * 1000) { timedOut = true; break; }
    }
    if (timedOut) note(`${name}: gave up waiting with ${receivedCount() - received0} of ${expected} frames`);
    const tDone = performance.now();
    const cpu1 = { gen: process.cpuUsage(cpu0.gen), receiver: cpuOf(receiverPids), server: cpuOf(serverPids), decoder: cpuOf(decoderPids), machine: machineCpu() };
    if (receiver) await loadReceiverRecords();
    const stats1 = serverStats();
    const frames = count - first;
    // Socket i must have got every row with k % M == i % M, and nothing else.
    const perClass = new Array(M).fill(0);
    for (const line of psql(`SELECT k % ${M}, count(*) FROM ${opt.table} WHERE id > ${maxId0} GROUP BY 1`).split('\n')) {
        const [cls, n] = line.split(' ');
        if (n) perClass[Number(cls)] = Number(n);
    }
    let wrongSockets = 0;
    let wrongExample = null;
    for (let i = 0; i < N; i++) {
        const got = perSocket[i] - perSocket0[i];
        if (got !== perClass[i % M]) {
            wrongSockets++;
            if (!wrongExample) wrongExample = { socket: i, filter: filterOf(i), got, expected: perClass[i % M] };
        }
    }

    // Commit timestamps of the phase's transactions (every row written in it).
    const commitMs = new Map();
    let firstCommit = Infinity;
    let lastCommit = -Infinity;
    const out = psql(`SELECT xmin::text, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint
                      FROM ${opt.table} WHERE id > ${maxId0} GROUP BY xmin`);
    let missingTs = 0;
    for (const line of out ? out.split('\n') : []) {
        const [x, us] = line.split(' ');
        if (!us) { missingTs++; continue; }
        const ms = Number(us) / 1000;
        commitMs.set(Number(x), ms);
        if (ms < firstCommit) firstCommit = ms;
        if (ms > lastCommit) lastCommit = ms;
    }
    if (missingTs) die(4, `${missingTs} transactions without a commit timestamp: is track_commit_timestamp on?`);

    const origin = performance.timeOrigin;
    const lat = new Float64Array(frames);
    let unknownXid = 0;
    let firstRecv = Infinity;
    let lastRecv = -Infinity;
    for (let j = 0; j < frames; j++) {
        const at = origin + recvAt[first + j];
        if (at < firstRecv) firstRecv = at;
        if (at > lastRecv) lastRecv = at;
        const c = commitMs.get(xidOf[first + j]);
        if (c === undefined) { unknownXid++; lat[j] = NaN; continue; }
        lat[j] = at - c;
    }
    lat.sort();  // NaN sort last
    const known = lat.subarray(0, frames - unknownXid);
    // End to end: from the first commit to the last frame received, every change decoded,
    // matched, framed, queued and read by the client.
    const window = frames ? (lastRecv - firstCommit) / 1000 : null;
    const m = pgbenchOut.match(/tps = ([\d.]+)/);
    const diffStats = {};
    if (stats0 && stats1) {
        for (const [k, v] of Object.entries(stats1)) {
            if (typeof v === 'number' && typeof stats0[k] === 'number') diffStats[k] = v - stats0[k];
        }
    }
    const wall = (tDone - t0) / 1000;
    const machineBusy = 1 - (cpu1.machine.idle - cpu0.machine.idle) / (cpu1.machine.total - cpu0.machine.total);
    return {
        phase: name,
        target_rate: name === 'fixed' ? opt.rate : null,
        rows,
        transactions: commitMs.size,
        writer_seconds: r3((tWriterDone - t0) / 1000),
        write_rate: r3(rows / ((tWriterDone - t0) / 1000)),
        commit_span_seconds: r3((lastCommit - firstCommit) / 1000),
        pgbench_tps: m ? Number(m[1]) : null,
        expected_frames: expected,
        frames,
        missing_frames: expected - frames,
        timed_out: timedOut,
        unknown_xid_frames: unknownXid,
        sockets_with_wrong_count: wrongSockets,
        wrong_count_example: wrongExample,
        sockets_closed: closedCount - closed0,
        window_seconds: r3(window),
        changes_per_s: window ? r3(rows / window) : null,
        messages_per_s: window ? r3(frames / window) : null,
        latency_ms: {
            p50: r3(percentile(known, 50)), p90: r3(percentile(known, 90)), p99: r3(percentile(known, 99)),
            max: r3(known.length ? known[known.length - 1] : null), min: r3(known.length ? known[0] : null),
        },
        drain_after_writer_seconds: r3((tDone - tWriterDone) / 1000),
        wall_seconds: r3(wall),
        cpu: {
            // seconds of CPU over the phase's wall time (writer start to the last frame)
            loadgen_s: r3((cpu1.gen.user + cpu1.gen.system) / 1e6 + (cpu1.receiver - cpu0.receiver)),
            receiver_s: receiver ? r3(cpu1.receiver - cpu0.receiver) : null,
            server_s: serverPids.length ? r3(cpu1.server - cpu0.server) : null,
            decoder_s: decoderPids.length ? r3(cpu1.decoder - cpu0.decoder) : null,
            machine_busy_fraction: r3(machineBusy),
        },
        rss_anon_kb: {
            server: serverPids.length ? rssAnonKb(serverPids[0]) : null,
            decoder: decoderPids.length ? rssAnonKb(decoderPids[0]) : null,
            loadgen: Math.round(process.memoryUsage().rss / 1024) + (receiver ? rssAnonKb(receiver.pid) || 0 : 0),
        },
        server_pids: serverPids,
        decoder_pids: decoderPids,
        server_stats_delta: diffStats,
    };
}

// ------------------------------------------------------------------ main
const result = {
    subscribers: N, match_percent: opt.match, recipients_per_change: N / M,
    filter_example: filterOf(N - 1), roles: tokens.length || null, client: opt.client === 'c' ? 'receiver.c' : `ws ${wsVersion}`,
    ws: `${wsFrom} ${wsVersion}`, node: process.version,
    phase_timeout_s: opt['phase-timeout'], phases: [],
};
note(`${N} subscribers, ${opt.match}% match (${N / M} per change), e.g. ${filterOf(N - 1)}`);
const conn = await connectAll();
result.connect = conn;
if (!conn.ok) {
    process.stdout.write(JSON.stringify(result) + '\n');
    for (const ws of sockets) if (ws) ws.terminate();
    if (receiver) receiver.kill();
    process.exit(3);
}
note(`all ${N} subscribed in ${conn.subscribed_seconds.toFixed(2)} s`);

if (opt.rate > 0) {
    const batch = opt['fixed-batch'];
    const script = path.join(workdir, 'fixed.sql');
    fs.writeFileSync(script, `INSERT INTO ${opt.table} (k, payload) SELECT floor(random() * 100)::int, md5(random()::text) FROM generate_series(1, ${batch});\n`);
    const c = opt['fixed-clients'];
    result.phases.push(await phase('fixed', ['-c', String(c), '-j', String(c), '-R', String(opt.rate / batch),
        '-T', String(opt.duration), '-f', script]));
}
// Rows of the max-rate and one-transaction phases: at most --burst-rows, and no more than the
// messages the fixed phase saw delivered per second x --burst-seconds, so that a slow engine does
// not turn a phase into minutes (the phase still measures a burst: the writer outruns delivery).
// After a phase that gave up waiting, its late frames would be counted in the next phase: stop.
const gaveUp = () => result.phases.some((p) => p.timed_out);
let burstRows = gaveUp() ? 0 : opt['burst-rows'];
const fixedPhase = result.phases.find((p) => p.phase === 'fixed');
if (burstRows > 0 && fixedPhase && fixedPhase.messages_per_s) {
    const affordable = Math.floor((Math.max(fixedPhase.messages_per_s, 5000) * opt['burst-seconds']) / (N / M));
    if (affordable < burstRows) {
        note(`burst sized to ${affordable} rows (fixed phase delivered ${Math.round(fixedPhase.messages_per_s)} messages/s)`);
        burstRows = Math.max(affordable, 2);
    }
}
result.burst_rows = burstRows;
if (burstRows > 0) {
    const c = opt['burst-clients'];
    const batch = Math.max(1, Math.min(opt['burst-batch'], Math.floor(burstRows / (20 * c))));
    const txns = Math.max(1, Math.round(burstRows / (batch * c)));
    const script = path.join(workdir, 'burst.sql');
    fs.writeFileSync(script, `INSERT INTO ${opt.table} (k, payload) SELECT floor(random() * 100)::int, md5(random()::text) FROM generate_series(1, ${batch});\n`);
    result.phases.push(await phase('max', ['-c', String(c), '-j', String(c), '-t', String(txns), '-f', script]));
    if (opt.txn && !gaveUp()) {
        const tscript = path.join(workdir, 'txn.sql');
        fs.writeFileSync(tscript, `INSERT INTO ${opt.table} (k, payload) SELECT floor(random() * 100)::int, md5(random()::text) FROM generate_series(1, ${batch * c * txns});\n`);
        result.phases.push(await phase('txn', ['-c', '1', '-j', '1', '-t', '1', '-f', tscript]));
    }
}
result.other_frames = otherFrames;
result.error_samples = errorSamples;
result.frames_parsed_slowly = parsedSlowly;
result.closes = closes;

if (receiver) {
    receiver.stdin.write('close\n');
    const tEnd = performance.now();
    while (receiver.exitCode === null && performance.now() - tEnd < 8000) await sleep(20);
    if (receiver.exitCode === null) receiver.kill();
}
for (const ws of sockets) if (ws) ws.close(1000);
const tClose = performance.now();
while (closedCount < openCount && performance.now() - tClose < 5000) await sleep(20);
for (const ws of sockets) if (ws) ws.terminate();
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
