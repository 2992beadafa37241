"""Crash soak (issue 10, "Survive everything"): writers, durable consumers and broadcast
subscribers keep running while the cluster is hit, at random moments, by

- kill -9 of a pgcdcws process (the server, a durable decoder, the broadcast decoder),
- kill -9 of an ordinary backend (one of the writers'),
- pg_ctl restart -m immediate,
- a client that vanishes without a close (its TCP socket reset under it).

Load, in a cluster of this module's own:

- 4 writers, each in its own key range of three tables (one plain, one with TOASTed values
  under the default replica identity, one with TOASTed values under REPLICA IDENTITY FULL),
  run transactions of 1-4 random inserts/updates/deletes plus one row (writer, seq) in
  soak_commits, seq increasing per writer. A transaction whose COMMIT outcome is unknown (the
  connection died) is resolved by looking for its soak_commits row once the writer's old
  backend is gone. The committed transactions give the exact changes every consumer must see
  (each writer owns its rows, so the writer's own history gives the old rows).
- 2 durable consumers (GET /v1/lr/stream) ack as they go (every 1-5 transactions) and
  reconnect whenever they are cut off.
- 20 broadcast subscribers (GET /ws?query=...; some filtered by writer) reconnect with
  since=<the lsn before the last one seen>.

Checked at the end:

- each durable consumer saw every committed transaction, change by change (kind, table, new
  row, unchanged TOAST columns, old key / old row), in commit order (nextlsn increasing, each
  writer's seq increasing), and nothing else; both consumers saw the same sequence;
- a reconnected stream replays a suffix of what the previous connection received, identical,
  and only transactions above the confirmed_flush in the slot's state file as last sampled
  before the reconnect (a confirmed ack survives every crash), and nothing at or below an ack
  written to a socket before the test reset that socket (the ack reached the server);
- each broadcast subscriber, per connection: exactly the matching committed changes after its
  start (the subscribed lsn; after a reconnect its since, or the gap frame's oldest), in order;
- every pgcdcws process stayed below RSS_CEILING_MB of VmRSS (sampled every 0.2 s);
- after every fault, both consumers made progress again within a deadline (no crash loop).

Size: PGCDCWS_SOAK_SECONDS (default 90) of faults, and at least MIN_FAULTS faults (each crash
takes a few seconds to recover: about 2 minutes in all at the default). The long size is
PGCDCWS_SOAK_SECONDS=1800 (docs/TESTING.md). PGCDCWS_SOAK_SEED replays a run's random choices
(the seed is printed and in every failure message; timing still differs between runs).
"""

import asyncio
import hashlib
import os
import random
import re
import socket
import struct
import sys
import threading
import time

import psycopg2
import pytest
import websockets.exceptions

from cdcws import BroadcastClient, ProtocolError, StreamClient, lsn_int, lsn_str
from conftest import logs_reported, started_cluster, wait_for

SOAK_SECONDS = float(os.environ.get("PGCDCWS_SOAK_SECONDS", "90"))
SEED = int(os.environ.get("PGCDCWS_SOAK_SEED", str(random.SystemRandom().randrange(1 << 32))))
MIN_FAULTS = 20
WRITERS = 4
CONSUMERS = 2
SUBSCRIBERS = 20
KEYS = 6                      # keys per writer per table
RSS_CEILING_MB = 200          # VmRSS of every pgcdcws process
PROGRESS_DEADLINE = 120       # s for both consumers to move on after a fault
FAULT_KINDS = ("kill9_pgcdcws", "kill9_backend", "restart_immediate", "client_vanish")

SOAK_CONF = [
    # Python reads 22 sockets on one thread while writers run: keep server pings rare.
    "pgcdcws.ping_interval = 10",
    "pgcdcws.max_connections = 1000",
    "pgcdcws.max_connections_per_role = 0",
]

# table -> (columns, replica identity full, has a TOASTable column "big")
TABLES = {
    "soak_plain": (("w", "k", "seq", "v"), False, False),
    "soak_toast": (("w", "k", "seq", "v", "big"), False, True),
    "soak_full": (("w", "k", "seq", "v", "big"), True, True),
}
COMMITS = "soak_commits"
BULK = "soak_bulk"            # 1% of the transactions also insert BULK_ROWS rows here (split frames)
BULK_ROWS = 1200


# Short runs keep every change in its normal form (readable failure messages); long runs keep
# digests (memory: a 30-minute run sees about a million changes per client).
FULL_DETAIL = SOAK_SECONDS <= 600


def _digest(obj):
    return hashlib.sha1(repr(obj).encode()).hexdigest()[:16]


def pack(changes):
    """A transaction's changes as kept for the comparison: as they are, or (for a bulk
    transaction, or in a long run) ("digest", count, digest)."""
    changes = tuple(changes)
    if FULL_DETAIL and len(changes) <= 64:
        return changes
    return ("digest", len(changes), _digest(changes))


def ckey(change):
    """One change as kept by a broadcast subscriber and in its expectations."""
    return change if FULL_DETAIL else _digest(change)


def txn_size(packed):
    return packed[1] if packed[:1] == ("digest",) else len(packed)


KEY = ("w", "k")


def say(msg):
    sys.stderr.write(f"[soak seed={SEED}] {msg}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ normal form
def _short(v):
    """Long strings (TOASTed values) compared by length and digest, to keep memory small."""
    if isinstance(v, str) and len(v) > 100:
        return f"<{len(v)}:{hashlib.md5(v.encode()).hexdigest()}>"
    return v


def _row(d):
    return None if d is None else tuple(sorted((k, _short(v)) for k, v in d.items()))


def norm_change(c):
    """(kind, table, new row, unchanged TOAST columns, old key/row) of a change object (stream
    or /ws frame)."""
    assert c.get("schema") == "public", c
    new = dict(zip(c["columnnames"], c["columnvalues"])) if "columnnames" in c else None
    if "columnnames" in c:
        assert len(c["columnnames"]) == len(c["columnvalues"]) == len(c["columntypes"]), c
    old = dict(zip(c["oldkeys"]["keynames"], c["oldkeys"]["keyvalues"])) if "oldkeys" in c else None
    return (c["kind"], c["table"], _row(new), tuple(c.get("unchangedtoast", ())), _row(old))


def big_value(rng, w, seq, k):
    """A value of 2.1-6 kB: stored out of line (the column's storage is EXTERNAL)."""
    n = rng.randint(2100, 6000)
    base = hashlib.sha256(f"{w}:{seq}:{k}:{rng.random()}".encode()).hexdigest()
    return (base * (n // len(base) + 1))[:n]


def is_toasted(v):
    return isinstance(v, str) and len(v) > 2000


# ----------------------------------------------------------------------- writer
class SoakWriter(threading.Thread):
    """Runs random transactions on its own keys; `committed` is [(seq, [expected change])] of
    the transactions that committed, in commit (= seq) order."""

    def __init__(self, cluster, w, seed):
        super().__init__(daemon=True, name=f"soak-writer-{w}")
        self.cluster = cluster
        self.w = w
        self.rng = random.Random(seed)
        self.app = f"soak_w{w}"
        self.state = {t: {} for t in TABLES}   # table -> k -> row dict (committed)
        self.committed = []
        self.seq = 0
        self.unknown_outcomes = 0               # commits resolved by looking at the table
        self.unknown_committed = 0
        self.failed_txns = 0
        self.error = None
        self.halt = threading.Event()

    def connect(self):
        deadline = time.monotonic() + PROGRESS_DEADLINE
        while True:
            try:
                conn = psycopg2.connect(application_name=self.app, **self.cluster.dsn())
                conn.autocommit = False
                return conn
            except psycopg2.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def plan(self, seq):
        """[(sql, params)] and the expected changes of one transaction; the new state."""
        rng = self.rng
        w = self.w
        state = {t: dict(rows) for t, rows in self.state.items()}
        stmts, expected = [], []
        for _ in range(rng.randint(1, 4)):
            table = rng.choice(sorted(TABLES))
            cols, full, has_big = TABLES[table]
            k = rng.randrange(KEYS)
            old = state[table].get(k)
            v = f"w{w}s{seq}k{k}"
            if old is None:
                row = {"w": w, "k": k, "seq": seq, "v": v}
                if has_big:
                    row["big"] = big_value(rng, w, seq, k) if rng.random() < 0.6 else None
                stmts.append((f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                              tuple(row[c] for c in cols)))
                expected.append(("insert", table, _row(row), (), None))
                state[table][k] = row
            elif rng.random() < 0.65:
                row = dict(old, seq=seq, v=v)
                sets = ["seq = %s", "v = %s"]
                params = [seq, v]
                big_set = False
                if has_big:
                    r = rng.random()
                    if r < 0.3:
                        row["big"], big_set = big_value(rng, w, seq, k), True
                    elif r < 0.45:
                        row["big"], big_set = None, True
                    if big_set:
                        sets.append("big = %s")
                        params.append(row["big"])
                stmts.append((f"UPDATE {table} SET {', '.join(sets)} WHERE w = %s AND k = %s", tuple(params + [w, k])))
                new = dict(row)
                unchanged = ()
                if has_big and not big_set and is_toasted(old["big"]):
                    # not logged: left out of the new row, named in unchangedtoast
                    del new["big"]
                    unchanged = ("big",)
                oldkeys = dict(old) if full else {c: row[c] for c in KEY}
                expected.append(("update", table, _row(new), unchanged, _row(oldkeys)))
                state[table][k] = row
            else:
                stmts.append((f"DELETE FROM {table} WHERE w = %s AND k = %s", (w, k)))
                oldkeys = dict(old) if full else {c: old[c] for c in KEY}
                expected.append(("delete", table, None, (), _row(oldkeys)))
                del state[table][k]
        if rng.random() < 0.01:
            stmts.append((f"INSERT INTO {BULK} (w, seq, i) SELECT %s, %s, i FROM generate_series(1, %s) i",
                          (w, seq, BULK_ROWS)))
            expected += [("insert", BULK, _row({"w": w, "seq": seq, "i": i}), (), None)
                         for i in range(1, BULK_ROWS + 1)]
        stmts.append((f"INSERT INTO {COMMITS} (w, seq) VALUES (%s, %s)", (w, seq)))
        expected.append(("insert", COMMITS, _row({"w": w, "seq": seq}), (), None))
        return stmts, expected, state

    def resolve(self, seq):
        """Did transaction `seq` commit? Asked once no backend of this writer is left."""
        deadline = time.monotonic() + PROGRESS_DEADLINE
        while True:
            conn = None
            try:
                conn = self.connect()
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                "AND pid <> pg_backend_pid()", (self.app,))
                    if cur.fetchone()[0] == 0:
                        cur.execute(f"SELECT count(*) FROM {COMMITS} WHERE w = %s AND seq = %s", (self.w, seq))
                        return cur.fetchone()[0] == 1
            except psycopg2.Error:
                pass   # the cluster is restarting (again)
            finally:
                if conn is not None:
                    conn.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"writer {self.w}: could not resolve the outcome of seq {seq}")
            time.sleep(0.1)

    def run(self):
        conn = None
        try:
            while not self.halt.is_set():
                self.seq += 1
                seq = self.seq
                stmts, expected, state = self.plan(seq)
                committed = None
                try:
                    if conn is None:
                        conn = self.connect()
                    with conn.cursor() as cur:
                        for q, p in stmts:
                            cur.execute(q, p)
                    conn.commit()
                    committed = True
                except psycopg2.Error as e:
                    # Lost connections have no SQLSTATE (or 57xxx: terminated by the
                    # postmaster, 08xxx: connection exception); anything else is a bug.
                    if e.pgcode is not None and not e.pgcode.startswith(("57", "08")):
                        raise
                    # the connection died (kill -9, restart): the outcome is unknown
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
                    self.unknown_outcomes += 1
                    committed = self.resolve(seq)
                    self.unknown_committed += committed
                if committed:
                    self.committed.append((seq, pack(expected), [(ch[1], ckey(ch)) for ch in expected
                                                                 if ch[1] != BULK]))
                    self.state = state
                else:
                    self.failed_txns += 1
                self.halt.wait(self.rng.uniform(0.005, 0.04))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            if conn is not None:
                conn.close()


# ---------------------------------------------------------------------- monitor
def _status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class Monitor(threading.Thread):
    """Every 0.2 s: confirmed_flush_lsn of the consumers' slots (with the time it was read),
    and VmRSS/RssAnon of every pgcdcws process (pids from pg_stat_activity, refreshed every
    second). Survives the cluster's restarts."""

    def __init__(self, cluster, slots):
        super().__init__(daemon=True, name="soak-monitor")
        self.cluster = cluster
        self.slots = slots
        self.confirmed = {s: [] for s in slots}   # slot -> [(monotonic time after the read, lsn int)]
        self.on_disk = {s: [] for s in slots}     # slot -> [(monotonic time before the read, lsn int)]
        self.types = {}                          # pid -> backend_type
        self.peak_rss = {}                       # pid -> max VmRSS kB
        self.peak_anon = {}                      # pid -> max RssAnon kB
        self.rss_samples = 0
        self.error = None
        self.halt = threading.Event()

    def run(self):
        conn = None
        last_refresh = 0.0
        try:
            while not self.halt.is_set():
                try:
                    if conn is None:
                        conn = self.cluster.connect()
                    with conn.cursor() as cur:
                        cur.execute("SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots "
                                    "WHERE slot_name = ANY(%s)", (list(self.slots),))
                        rows = cur.fetchall()
                        t = time.monotonic()
                        for slot, lsn in rows:
                            if lsn is not None:
                                self.confirmed[slot].append((t, lsn_int(lsn)))
                        if t - last_refresh >= 1.0:
                            cur.execute("SELECT pid, backend_type FROM pg_stat_activity "
                                        "WHERE backend_type LIKE 'pgcdcws%%'")
                            for pid, bt in cur.fetchall():
                                self.types[pid] = bt
                            last_refresh = t
                except psycopg2.Error:
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001
                            pass
                    conn = None
                for slot in self.slots:
                    t = time.monotonic()
                    lsn = slot_file_confirmed(self.cluster.datadir, slot)
                    if lsn is not None:
                        self.on_disk[slot].append((t, lsn))
                for pid in list(self.types):
                    rss = _status_kb(pid, "VmRSS")
                    if rss is None:
                        continue
                    self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
                    self.peak_anon[pid] = max(self.peak_anon.get(pid, 0), _status_kb(pid, "RssAnon") or 0)
                self.rss_samples += 1
                self.halt.wait(0.2)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            if conn is not None:
                conn.close()

    def confirmed_before(self, slot, t, on_disk=True):
        """The highest confirmed_flush_lsn of `slot` read before monotonic time t (0 if none):
        from the slot's state file (what survives a crash), or from pg_replication_slots."""
        best = 0
        for ts, lsn in (self.on_disk if on_disk else self.confirmed)[slot]:
            if ts >= t:
                break
            best = max(best, lsn)
        return best


def reset(ws):
    """The client vanishes: its TCP connection is reset (SO_LINGER 0), no close frame."""
    sock = ws.transport.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        return False   # already closed
    ws.transport.abort()
    return True


def slot_file_confirmed(datadir, slot):
    """confirmed_flush of the slot's state file, pg_replslot/<slot>/state (PostgreSQL 15's
    ReplicationSlotOnDisk: 16 bytes of header, then ReplicationSlotPersistentData, whose
    confirmed_flush is at offset 96), or None when it cannot be read (being replaced)."""
    try:
        with open(os.path.join(datadir, "pg_replslot", slot, "state"), "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 120 or struct.unpack_from("<I", data, 0)[0] != 0x1051CA1:
        return None
    name = data[16:16 + 64].split(b"\0")[0].decode()
    assert name == slot, (name, slot)
    return struct.unpack_from("<Q", data, 16 + 96)[0]


# ------------------------------------------------------------ durable consumer
class Consumer:
    """Streams `slot`, acks every 1-5 transactions, reconnects whenever cut off. Each
    received transaction is kept as (connection no, xid, nextlsn, (w, seq), changes)."""

    def __init__(self, port, slot, seed):
        self.port = port
        self.slot = slot
        self.rng = random.Random(seed)
        self.client = None
        self.connections = []   # [(monotonic time the connect began, connection no)]
        self.received = []      # [(conn no, xid, nextlsn int, (w, seq), changes)]
        self.closes = []        # close codes / reasons seen
        self.refusals = 0
        self.acked = {}         # conn no -> highest lsn acknowledged on it
        self.vanished = []      # [(conn no, its last ack)] of connections reset by the test
        self.ack_log = {}       # conn no -> [(monotonic time sent, lsn)]
        self.ended = {}         # conn no -> monotonic time its end was seen
        self.max_nextlsn = 0
        self.error = None

    def progress(self):
        return self.max_nextlsn

    async def run(self):
        try:
            while True:
                started = time.monotonic()
                try:
                    client = await StreamClient.open(self.port, self.slot, timeout=10)
                except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                        websockets.exceptions.ConnectionClosed):
                    self.refusals += 1
                    await asyncio.sleep(0.1)
                    continue
                self.client = client
                no = len(self.connections) + 1
                self.connections.append((started, no))
                unacked = 0
                ack_every = self.rng.randint(1, 5)
                try:
                    while True:
                        txn = await client.recv_txn(timeout=3600)
                        ids = [c for c in txn.changes if c["kind"] == "insert" and c["table"] == COMMITS]
                        assert len(ids) == 1, f"{self.slot}: transaction without exactly one {COMMITS} row: {txn}"
                        ws = dict(zip(ids[0]["columnnames"], ids[0]["columnvalues"]))
                        nl = lsn_int(txn.nextlsn)
                        self.received.append((no, txn.xid, nl, (ws["w"], ws["seq"]),
                                              pack(norm_change(c) for c in txn.changes)))
                        self.max_nextlsn = max(self.max_nextlsn, nl)
                        unacked += 1
                        if unacked >= ack_every:
                            await client.ack(txn.nextlsn)
                            self.acked[no] = nl
                            self.ack_log.setdefault(no, []).append((time.monotonic(), nl))
                            unacked = 0
                            ack_every = self.rng.randint(1, 5)
                except websockets.exceptions.ConnectionClosed as e:
                    self.closes.append((e.code, e.reason))
                    self.ended[no] = time.monotonic()
                finally:
                    self.client = None
                    client.ws.transport.abort()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def vanish(self):
        """Resets the connection. When every byte of the last ack had been written to the
        socket (loopback: it is in the server's receive queue), that ack reached the server
        and must be confirmed: remembered as (connection no, lsn) for the check."""
        c = self.client
        if c is None:
            return False
        flushed = c.ws.transport.get_write_buffer_size() == 0
        no = len(self.connections)
        if not reset(c.ws):
            return False
        if flushed and no in self.acked:
            self.vanished.append((no, self.acked[no]))
        return True


# ---------------------------------------------------------- broadcast subscriber
class Subscriber:
    """A /ws subscriber that reconnects with since. Each connection is a segment:
    {"since", "subscribed", "oldest", "changes": [(lsn int, change)]}; before reconnecting,
    the changes of the last lsn seen are dropped (the transaction may have been cut) and
    since is the lsn before it."""

    def __init__(self, port, table, w):
        self.port = port
        self.table = table
        self.w = w
        self.query = f"insert,update,delete:{table}" + (f":w.eq.{w}" if w is not None else "")
        self.segments = []
        self.client = None
        self.closes = []
        self.error = None

    def start_lsn(self, seg):
        s = seg["subscribed"] if seg["since"] is None else seg["since"]
        return max(s, seg["oldest"] or 0)

    def next_since(self):
        seg = self.segments[-1]
        ch = seg["changes"]
        if ch:
            last = ch[-1][0]
            while ch and ch[-1][0] == last:
                ch.pop()
        return ch[-1][0] if ch else self.start_lsn(seg)

    async def run(self):
        try:
            since = None
            while True:
                try:
                    c = await BroadcastClient.open(self.port, query=self.query,
                                                   since=None if since is None else lsn_str(since), timeout=10)
                except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                        websockets.exceptions.ConnectionClosed):
                    await asyncio.sleep(0.2)
                    continue
                c.keep = False
                self.client = c
                seg = None
                try:
                    while True:
                        f = await c.recv(timeout=3600)
                        t = f["type"]
                        if seg is None:
                            assert t == "subscribed", f"{self.query}: first frame {f}"
                            seg = {"since": since, "subscribed": lsn_int(f["lsn"]), "oldest": None, "changes": []}
                            self.segments.append(seg)
                        elif t == "gap":
                            assert not seg["changes"] and seg["oldest"] is None, f"{self.query}: late gap {f}"
                            assert since is not None and lsn_int(f["since"]) == since, f"{self.query}: {f}"
                            seg["oldest"] = lsn_int(f["oldest"])
                        elif t == "change":
                            seg["changes"].append((lsn_int(f["lsn"]), ckey(norm_change(f))))
                        else:
                            raise ProtocolError(f"{self.query}: unexpected frame {f}")
                except websockets.exceptions.ConnectionClosed as e:
                    self.closes.append((e.code, e.reason))
                finally:
                    self.client = None
                    c.ws.transport.abort()
                if seg is not None:
                    since = self.next_since()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def vanish(self):
        c = self.client
        return c is not None and reset(c.ws)

    def matches(self, table, w):
        return table == self.table and (self.w is None or w == self.w)


# ------------------------------------------------------------------------ test
@pytest.fixture(scope="module")
def sc():
    c = started_cluster(SOAK_CONF)
    try:
        with logs_reported(c):
            yield c
    finally:
        c.destroy()


def setup_schema(c):
    for table, (cols, full, has_big) in TABLES.items():
        defs = ["w int", "k int", "seq int NOT NULL", "v text NOT NULL"] + (["big text"] if has_big else [])
        c.sql(f"CREATE TABLE {table} ({', '.join(defs)}, PRIMARY KEY (w, k))")
        if has_big:
            # out of line and uncompressed: every value above ~2 kB is TOASTed
            c.sql(f"ALTER TABLE {table} ALTER COLUMN big SET STORAGE EXTERNAL")
        if full:
            c.sql(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    c.sql(f"CREATE TABLE {COMMITS} (w int, seq int, PRIMARY KEY (w, seq))")
    c.sql(f"CREATE TABLE {BULK} (w int, seq int, i int, PRIMARY KEY (w, seq, i))")


def fresh_pids(c, query, params=None):
    conn = c.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def inject(c, kind, rng):
    """Carries out one fault on the cluster; returns a description. Blocking (runs in a thread)."""
    if kind == "kill9_pgcdcws":
        rows = fresh_pids(c, "SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'pgcdcws%%' "
                             "ORDER BY pid")
        # server, durable decoder or broadcast decoder alike, whatever their numbers
        bt = rng.choice(sorted({bt for _, bt in rows}))
        pid = rng.choice([p for p, t in rows if t == bt])
        c.kill9(pid)
        return f"kill -9 {bt} {pid}"
    if kind == "kill9_backend":
        rows = wait_for(lambda: fresh_pids(c, "SELECT pid, application_name FROM pg_stat_activity "
                                              "WHERE application_name LIKE 'soak_w%%' ORDER BY pid"),
                        PROGRESS_DEADLINE, interval=0.05, what="a writer backend")
        pid, app = rng.choice(rows)
        c.kill9(pid)
        return f"kill -9 backend {pid} ({app})"
    assert kind == "restart_immediate", kind
    c.restart("immediate")
    return "pg_ctl restart -m immediate"


def vanish(rng, consumers, subscribers):
    # a durable consumer half of the time, else one of the broadcast subscribers
    victims = list(consumers if rng.random() < 0.5 else subscribers)
    rng.shuffle(victims)
    for v in victims:
        if v.vanish():
            return f"client vanished: {getattr(v, 'slot', None) or v.query}"
    return "client vanish: no client connected"


def test_crash_soak(sc):
    c = sc
    say(f"PGCDCWS_SOAK_SEED={SEED} PGCDCWS_SOAK_SECONDS={SOAK_SECONDS:g}")
    rng = random.Random(SEED)
    setup_schema(c)
    slots = [f"soak_{i}" for i in range(CONSUMERS)]
    for s in slots:
        c.sql("SELECT * FROM cdc_init(%s, snapshot => false)", (s,))
    writers = [SoakWriter(c, w, rng.randrange(1 << 32)) for w in range(1, WRITERS + 1)]
    monitor = Monitor(c, slots)
    consumers = [Consumer(c.ws_port, s, rng.randrange(1 << 32)) for s in slots]
    subscribers = []
    tables = sorted(TABLES) + [COMMITS]
    for i in range(SUBSCRIBERS):
        filtered = i >= SUBSCRIBERS // 2 and tables[i % len(tables)] != COMMITS
        subscribers.append(Subscriber(c.ws_port, tables[i % len(tables)], 1 + i % WRITERS if filtered else None))
    faults = []
    t0 = time.monotonic()

    def fail(msg):
        raise AssertionError(f"[seed {SEED}] {msg}")

    async def main():
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(x.run()) for x in consumers + subscribers]
        monitor.start()
        try:
            # every subscriber live before the writers start
            await apoll_async(lambda: all(s.segments for s in subscribers), 90, "all subscribers subscribed")
            for w in writers:
                w.start()
            await apoll_async(lambda: all(x.progress() for x in consumers), 60, "first transactions")
            plan = list(FAULT_KINDS) * (MIN_FAULTS // len(FAULT_KINDS))
            rng.shuffle(plan)
            while len(faults) < MIN_FAULTS or time.monotonic() - t0 < SOAK_SECONDS:
                check_running()
                await asyncio.sleep(rng.uniform(0.3, 3.0))    # a random moment
                kind = plan[len(faults)] if len(faults) < len(plan) else rng.choice(FAULT_KINDS)
                before = [x.progress() for x in consumers]
                frng = random.Random(rng.randrange(1 << 32))
                if kind == "client_vanish":   # in the event loop: the sockets belong to it
                    what = vanish(frng, consumers, subscribers)
                else:
                    what = await loop.run_in_executor(None, inject, c, kind, frng)
                faults.append((round(time.monotonic() - t0, 1), what))
                say(f"fault {len(faults)} at {faults[-1][0]} s: {what}")
                # no crash loop: both consumers move on. After a quarter of the crashes the
                # next fault comes without waiting for that (it hits the reconnects and the
                # decoders' start); a vanished consumer's reconnect is always waited for
                # (its old decoder confirms the last ack on the way out).
                if kind == "client_vanish" or frng.random() < 0.75:
                    await apoll_async(lambda: all(x.progress() > b for x, b in zip(consumers, before)),
                                      PROGRESS_DEADLINE, f"the consumers to progress after {what}")
            for w in writers:
                w.halt.set()
            for w in writers:
                await loop.run_in_executor(None, w.join, 60)
                if w.is_alive():
                    fail(f"writer {w.w} did not stop")
            check_running()
            want = {(w.w, seq) for w in writers for seq, _, _ in w.committed}
            await apoll_async(lambda: all(want <= {r[3] for r in x.received} for x in consumers), 120,
                              "the consumers to receive every committed transaction")
            expected_bc = broadcast_expectations(consumers[0], writers)
            await apoll_async(lambda: all(last_segment_want(s, expected_bc) <= len(s.segments[-1]["changes"])
                                          for s in subscribers), 120,
                              "the broadcast subscribers to receive every change", interval=0.5)
            check_running()
            # the state file reader agrees with pg_replication_slots once the acks are in
            await apoll_async(lambda: all(slot_file_confirmed(c.datadir, sl) == lsn_int(c.confirmed_lsn(sl))
                                          for sl in slots), 30, "the slots' state files to match pg_replication_slots",
                              interval=0.2)
            return expected_bc
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def check_running():
        for x in consumers + subscribers:
            if x.error is not None:
                fail(f"{getattr(x, 'slot', None) or x.query} failed: {x.error!r}")
        for w in writers:
            if w.error is not None:
                fail(f"writer {w.w} failed: {w.error!r}")
        if monitor.error is not None:
            fail(f"monitor failed: {monitor.error!r}")

    async def apoll_async(cond, timeout, what, interval=0.05):
        deadline = time.monotonic() + timeout
        while not cond():
            check_running()
            if time.monotonic() > deadline:
                fail(f"timed out after {timeout} s waiting for {what}; faults so far: {faults[-5:]}")
            await asyncio.sleep(interval)

    try:
        expected_bc = asyncio.run(main())
    finally:
        for w in writers:
            w.halt.set()
        monitor.halt.set()
        monitor.join(10)
        for w in writers:
            w.join(30)
    elapsed = time.monotonic() - t0

    # ---------------------------------------------------------------- verdicts
    expected = {}
    for w in writers:
        for seq, changes, _ in w.committed:
            expected[(w.w, seq)] = tuple(changes)
    kinds = {k: sum(1 for _, what in faults if what.startswith(p)) for k, p in
             (("kill9_pgcdcws", "kill -9 pgcdcws"), ("kill9_backend", "kill -9 backend"),
              ("restart_immediate", "pg_ctl"), ("client_vanish", "client vanish"))}
    say(f"{len(faults)} faults in {elapsed:.0f} s: {kinds}; {len(expected)} committed transactions, "
        f"{sum(w.failed_txns for w in writers)} rolled back, "
        f"{sum(w.unknown_outcomes for w in writers)} commit outcomes resolved from the table "
        f"({sum(w.unknown_committed for w in writers)} had committed)")
    assert len(faults) >= MIN_FAULTS
    assert all(n >= 1 for n in kinds.values()), kinds

    sequences = []
    for x in consumers:
        sequences.append(check_consumer(x, expected, monitor, fail))
    if sequences[0] != sequences[1]:
        i = next(i for i, (a, b) in enumerate(zip(*sequences)) if a != b)
        fail(f"the consumers saw different sequences from index {i}: {sequences[0][i:i + 3]} vs {sequences[1][i:i + 3]}")

    for s in subscribers:
        check_subscriber(s, expected_bc, fail)
    say(f"broadcast: {sum(len(s.segments) for s in subscribers)} connections, "
        f"{sum(1 for s in subscribers for g in s.segments if g['oldest'] is not None)} gap frames, "
        f"{sum(len(g['changes']) for s in subscribers for g in s.segments)} changes checked")

    check_log(c.log(), fail)

    peak = max(monitor.peak_rss.values())
    top = sorted(((kb, monitor.types[p], p) for p, kb in monitor.peak_rss.items()), reverse=True)[:4]
    say(f"memory: {len(monitor.peak_rss)} pgcdcws processes over {monitor.rss_samples} samples; "
        f"peak VmRSS {peak / 1024:.1f} MB (RssAnon {max(monitor.peak_anon.values()) / 1024:.1f} MB); top {top}")
    over = {p: (monitor.types[p], kb) for p, kb in monitor.peak_rss.items() if kb > RSS_CEILING_MB * 1024}
    if over:
        fail(f"pgcdcws processes above {RSS_CEILING_MB} MB VmRSS: {over}")


def check_consumer(x, expected, monitor, fail):
    """Rebuilds the consumer's deduplicated sequence, checking each reconnect's replay;
    returns [(nextlsn, (w, seq))]."""
    seq_list = []           # deduplicated: (nextlsn, xid, (w, seq), changes)
    index = {}              # nextlsn -> position in seq_list
    duplicates = 0
    in_flight = 0           # re-deliveries the client had sent an ack for (lost with the connection)
    shown_not_durable = 0   # re-deliveries at or below a confirmed_flush_lsn pg_replication_slots had shown
    ages = []               # for those: seconds from the (first) ack that covered it to the cut
    acked_before = 0
    conn_start = dict((no, t) for t, no in x.connections)
    vanished_ack = 0        # an ack that reached the server before the client vanished
    by_conn = {}
    for r in x.received:
        by_conn.setdefault(r[0], []).append(r)
    for no in sorted(by_conn):
        txns = by_conn[no]
        confirmed = monitor.confirmed_before(x.slot, conn_start[no])
        shown = monitor.confirmed_before(x.slot, conn_start[no], on_disk=False)
        acked_before = max([acked_before] + [v for n, v in x.acked.items() if n < no])
        vanished_ack = max([vanished_ack] + [v for n, v in x.vanished if n < no])
        pos = None
        for (_, xid, nl, ws, changes) in txns:
            if nl <= confirmed:
                fail(f"{x.slot}: connection {no} delivered xid {xid} (nextlsn {lsn_str(nl)}) again although "
                     f"the slot's state file had confirmed_flush {lsn_str(confirmed)} before it connected")
            shown_not_durable += nl <= shown
            if nl <= vanished_ack:
                fail(f"{x.slot}: connection {no} delivered xid {xid} (nextlsn {lsn_str(nl)}) again although the "
                     f"client had acked {lsn_str(vanished_ack)} before its connection was reset (the ack was in "
                     f"the server's receive queue; docs/PROTOCOL.md: an ack that reached the server is confirmed "
                     f"whatever the client does next)")
            if pos is None and seq_list and nl <= seq_list[-1][0]:
                if nl not in index:
                    fail(f"{x.slot}: connection {no} started with xid {xid} at {lsn_str(nl)}, "
                         f"which no earlier connection had (reordered or invented)")
                pos = index[nl]
            elif pos is None:
                pos = len(seq_list)
            if pos < len(seq_list):
                if seq_list[pos] != (nl, xid, ws, changes):
                    fail(f"{x.slot}: connection {no} replayed {(lsn_str(nl), xid, ws)} where "
                         f"{(lsn_str(seq_list[pos][0]), seq_list[pos][1], seq_list[pos][2])} was (not a replay of the "
                         f"unacknowledged suffix)")
                duplicates += 1
                if nl <= acked_before:
                    in_flight += 1
                    ages.append(ack_age(x, no, nl))
            else:
                if seq_list and nl <= seq_list[-1][0]:
                    fail(f"{x.slot}: nextlsn {lsn_str(nl)} after {lsn_str(seq_list[-1][0])}")
                index[nl] = len(seq_list)
                seq_list.append((nl, xid, ws, changes))
            pos += 1
    got = [r[2] for r in seq_list]
    if len(set(got)) != len(got):
        fail(f"{x.slot}: a transaction (writer, seq) came twice at different positions")
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        fail(f"{x.slot}: {len(missing)} committed transactions never received {missing[:10]}, "
             f"{len(extra)} received that did not commit {extra[:10]}")
    last_seq = {}
    for nl, xid, ws, changes in seq_list:
        w, s = ws
        if last_seq.get(w, 0) >= s:
            fail(f"{x.slot}: writer {w} seq {s} after seq {last_seq[w]} (commit order)")
        last_seq[w] = s
        if changes != expected[ws]:
            diff = [(i, a, b) for i, (a, b) in enumerate(zip(changes, expected[ws])) if a != b][:2]
            fail(f"{x.slot}: transaction {ws} (xid {xid}) differs from what committed: "
                 f"{len(changes)} vs {len(expected[ws])} changes; first differences (got, want): {diff}")
    n_changes = sum(txn_size(t[3]) for t in seq_list)
    n_bulk = sum(1 for t in seq_list if txn_size(t[3]) > BULK_ROWS)
    say(f"{x.slot}: {len(seq_list)} transactions ({n_bulk} bulk), {n_changes} changes in order; "
        f"{len(by_conn)} connections ({x.refusals} refused attempts, {len(x.vanished)} reset right after an ack), {duplicates} re-deliveries of transactions not "
        f"confirmed ({in_flight} of them acked by the client, the ack lost in the cut, at most "
        f"{max(ages, default=0):.2f} s before the cut; {shown_not_durable} at or below a confirmed_flush_lsn "
        f"pg_replication_slots had shown, not yet on disk at the crash); closes {summarize(x.closes)}")
    return [(t[0], t[2]) for t in seq_list]


def ack_age(x, no, nl):
    """Seconds between the first ack covering nextlsn nl sent on a connection before `no` and
    the end of that connection."""
    for n in sorted(x.ack_log):
        if n >= no:
            break
        for t, lsn in x.ack_log[n]:
            if lsn >= nl:
                return x.ended.get(n, t) - t
    return 0.0


def check_log(text, fail):
    """No process died of anything but the test's kill -9 (no crash of its own, no SIGKILL
    sent by the postmaster to a process that ignored its shutdown signal), no PANIC. The
    pgcdcws log lines that are not about a client coming or going are summarized."""
    died = re.findall(r"\(PID \d+\) was terminated by signal (\d+)[^\n]*", text)
    if any(sig != "9" for sig in died):
        fail("a process was terminated by a signal the test did not send: "
             + "; ".join(sorted({m.group(0) for m in re.finditer(r"[^\n]*terminated by signal (?!9\b)\d+[^\n]*", text)})))
    for bad in ("PANIC:", "recalcitrant"):
        if bad in text:
            fail(f"server log has {bad!r}: " + "; ".join(l for l in text.splitlines() if bad in l)[:2000])
    counts = {}
    for line in text.splitlines():
        m = re.search(r"\] (pgcdcws [a-z]+): (ERROR|WARNING|FATAL):\s+(.*)", line)
        if m:
            key = re.sub(r"[0-9A-F]+/[0-9A-F]+|\d+", "N", f"{m.group(1)} {m.group(2)} {m.group(3)}")[:160]
            counts[key] = counts.get(key, 0) + 1
    say(f"{len(died)} processes killed by kill -9; pgcdcws ERROR/WARNING/FATAL lines: {counts}")


def summarize(closes):
    out = {}
    for code, _ in closes:
        out[code] = out.get(code, 0) + 1
    return out


def broadcast_expectations(consumer, writers):
    """[(lsn, table, writer, change key)] of every committed change but the bulk rows, in commit order: the
    writers' records in the order of a consumer's stream (checked afterwards)."""
    small = {(w.w, seq): changes for w in writers for seq, _, changes in w.committed}   # [(table, key)]
    seen = set()
    out = []
    for _, _, nl, ws, _ in sorted(consumer.received, key=lambda r: r[2]):
        if nl in seen or ws not in small:
            continue
        seen.add(nl)
        out += [(nl, table, ws[0], key) for table, key in small[ws]]
    return out


def seg_expected(s, expected_bc):
    """Per segment of subscriber s: the changes it must have received."""
    out = []
    for i, seg in enumerate(s.segments):
        start = s.start_lsn(seg)
        end = s.segments[i + 1]["since"] if i + 1 < len(s.segments) else None
        out.append([(nl, key) for nl, table, w, key in expected_bc if nl > start and (end is None or nl <= end)
                    and s.matches(table, w)])
    return out


def last_segment_want(s, expected_bc):
    """How many changes the last connection of s must receive."""
    start = s.start_lsn(s.segments[-1])
    return sum(1 for nl, table, w, _ in expected_bc if nl > start and s.matches(table, w))


def check_subscriber(s, expected_bc, fail):
    for i, (seg, want) in enumerate(zip(s.segments, seg_expected(s, expected_bc))):
        got = seg["changes"]
        if got != want:
            j = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            fail(f"/ws {s.query}: connection {i + 1} of {len(s.segments)} (since {seg['since']}, subscribed "
                 f"{lsn_str(seg['subscribed'])}, gap oldest {seg['oldest']}): {len(got)} changes, expected "
                 f"{len(want)}; first difference at {j}: got {got[j:j + 1]}, want {want[j:j + 1]}")
