#!/usr/bin/env node
// The broadcast benchmark's markdown table from bench/broadcast/out/results.jsonl (run.sh writes both).
//   node report.mjs results.jsonl [meta.json]
import fs from 'node:fs';

const [resultsFile, metaFile] = process.argv.slice(2);
if (!resultsFile) {
    process.stderr.write('usage: node report.mjs results.jsonl [meta.json]\n');
    process.exit(2);
}
const cells = fs.readFileSync(resultsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    .sort((a, b) => a.subscribers - b.subscribers || a.match_percent - b.match_percent);
const meta = metaFile && fs.existsSync(metaFile) ? JSON.parse(fs.readFileSync(metaFile, 'utf8')) : null;

const int = (x) => (x == null ? '–' : Math.round(x).toLocaleString('en-US'));
const ms = (x) => (x == null ? '–' : x < 10 ? x.toFixed(1) : Math.round(x).toString());
const pct = (cpu, wall) => (cpu == null || !wall ? '–' : `${Math.round((100 * cpu) / wall)}%`);

const opt_phase_timeout = (c) => (c.phase_timeout_s ? `${c.phase_timeout_s} s` : 'waiting');
const out = [];
if (meta) {
    out.push(`${meta.date}, pgcdcws \`${meta.pgcdcws}\`, ${meta.postgres}, ${meta.cpu}, ${meta.cores} cores, ` +
        `load average ${meta.loadavg_start} before the run; Node.js ${meta.node}, ws ${meta.ws}; ` +
        (meta.client ? `sockets: ${meta.client}; ` : '') + (meta.auth ? `auth: ${meta.auth}; ` : '') +
        `pgcdcws.client_queue_size ${meta.client_queue_kb} kB, pgcdcws.ping_interval ${meta.ping_interval}.`);
    out.push('');
}
out.push('| subscribers | match (recipients/change) | phase | changes written/s | changes/s end to end | messages/s delivered | latency p50 / p99 (ms) | frames received / expected | load gen CPU | server CPU | decoder CPU | machine busy |');
out.push('|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
const setup = [];
for (const c of cells) {
    const who = `${int(c.subscribers)}`;
    const match = `${c.match_percent}%` + (c.recipients_per_change != null ? ` (${int(c.recipients_per_change)})` : '');
    if (c.skipped || c.error || !c.connect || !c.connect.ok) {
        const firstHandshakeError = Object.keys(c.connect?.handshake_errors ?? {})[0];
        const why = c.skipped ? `skipped: ${c.skipped}` : `failed: ${c.error ?? c.connect?.error ?? '?'}` +
            (firstHandshakeError ? ` (${firstHandshakeError})` : '') +
            (c.connect?.closes && Object.keys(c.connect.closes).length ? ` (closed: ${Object.keys(c.connect.closes)[0]})` : '');
        out.push(`| ${who} | ${match} | ${why.replace(/\|/g, '\\|').slice(0, 200)} | | | | | | | | | |`);
        continue;
    }
    setup.push(`${int(c.subscribers)} subscribers at ${c.match_percent}%: all subscribed in ${c.connect.subscribed_seconds.toFixed(1)} s`);
    for (const p of c.phases) {
        const phase = p.phase === 'fixed' ? `fixed ${int(p.target_rate)}/s`
            : p.phase === 'max' ? `max rate, ${int(p.rows)} rows in ${int(p.transactions)} txns` : `1 txn of ${int(p.rows)} rows`;
        const d = p.server_stats_delta || {};
        const frames = `${int(p.frames)} / ${int(p.expected_frames)}` +
            (d.broadcast_messages_delivered != null ? ` (server: ${int(d.broadcast_messages_delivered)})` : '') +
            (p.sockets_closed ? `, ${p.sockets_closed} closed` : '') +
            (d.broadcast_slow_clients_closed ? `, ${d.broadcast_slow_clients_closed} closed 1013` : '') +
            (p.sockets_with_wrong_count ? `, ${p.sockets_with_wrong_count} sockets with a wrong count` : '') +
            (p.timed_out ? `, **incomplete** (gave up ${opt_phase_timeout(c)} after the writer; latency of the frames received only)` : '');
        out.push(`| ${who} | ${match} | ${phase} | ${int(p.write_rate)} | ${int(p.changes_per_s)} | ${int(p.messages_per_s)} | ` +
            `${ms(p.latency_ms.p50)} / ${ms(p.latency_ms.p99)} | ${frames} | ${pct(p.cpu.loadgen_s, p.wall_seconds)} | ` +
            `${pct(p.cpu.server_s, p.wall_seconds)} | ${pct(p.cpu.decoder_s, p.wall_seconds)} | ` +
            `${p.cpu.machine_busy_fraction == null ? '–' : Math.round(p.cpu.machine_busy_fraction * 100) + '%'} |`);
    }
}
out.push('');
out.push('- changes written/s: rows the writer inserted per second of its run (pgbench wall time).');
out.push('- changes/s end to end, messages/s delivered: rows and frames over the time from the first commit to the last frame received.');
out.push('- frames: change frames the load generator received / rows × matching subscribers (server: the change of cdc_server_stats().broadcast_messages_delivered); every socket\'s count is checked against the rows its filter selects.');
out.push('- latency: frame receive time minus its transaction\'s commit timestamp; CPU as % of one core over the phase (writer start to last frame); machine busy: both cores.');
if (setup.length) {
    out.push('');
    out.push('Set-up: ' + setup.join('; ') + '.');
}
process.stdout.write(out.join('\n') + '\n');
