"""A decoder of PostgreSQL's own logical replication protocol (pgoutput, protocol version 1),
so that tests can compare what a pgcdcws stream sends with what Postgres itself publishes.

Reference: PostgreSQL 15 documentation, "Logical Replication Message Formats". The messages are
read from a pgoutput slot with pg_logical_slot_peek_binary_changes() (one message per row):

    B  begin      Int64 final LSN, Int64 commit time, Int32 xid
    C  commit     Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit time
    O  origin     Int64 LSN, String name
    R  relation   Int32 id, String namespace, String name, Int8 replica identity, Int16 ncols,
                  per column: Int8 flags (1 = part of the key), String name, Int32 type oid,
                  Int32 typmod
    Y  type       Int32 oid, String namespace, String name
    I  insert     Int32 relation, 'N' tuple
    U  update     Int32 relation, optional 'K' (key) or 'O' (old row) tuple, 'N' tuple
    D  delete     Int32 relation, 'K' or 'O' tuple
    T  truncate   Int32 nrels, Int8 options, Int32 relation ids
    M  message    Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, bytes

A tuple is Int16 ncols then per column 'n' (null), 'u' (unchanged TOAST value) or 't' Int32
length + text. Strings end with a NUL byte. Integers are big-endian.

The decoded transactions are turned into the normal form the tests compare (see `normal_units`):
a list of units in stream order, each a list of changes, a change being a tuple

    (kind, "schema.table", new row, old row)              for insert/update/delete/truncate
    ("message", transactional, prefix, content bytes)     for a logical message

with rows as tuples of (column, text value or None) pairs, in the relation's column order, or
None. An old row is what identifies the row: the key columns (every column under REPLICA
IDENTITY FULL). An update that logged no old key (its key did not change) has the key columns of
its new row as old row, which is what a pgcdcws stream sends as `oldkeys` in that case.
"""

import struct

UNCHANGED_TOAST = "<unchanged toast>"   # the value of a column pgoutput sent as 'u'


class Reader:
    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"pgoutput message truncated at {self.pos} (+{n}): {self.data!r}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int8(self):
        return self.take(1)[0]

    def int16(self):
        return struct.unpack(">h", self.take(2))[0]

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uint32(self):
        return struct.unpack(">I", self.take(4))[0]

    def int64(self):
        return struct.unpack(">q", self.take(8))[0]

    def lsn(self):
        v = struct.unpack(">Q", self.take(8))[0]
        return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"

    def byte(self):
        return chr(self.int8())

    def string(self):
        end = self.data.index(b"\0", self.pos)
        s = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s

    def tuple(self):
        values = []
        for _ in range(self.int16()):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED_TOAST)
            elif kind == "t":
                values.append(self.take(self.int32()).decode("utf-8"))
            else:
                raise ValueError(f"unknown tuple column kind {kind!r} in {self.data!r}")
        return values

    def done(self):
        if self.pos != len(self.data):
            raise ValueError(f"{len(self.data) - self.pos} trailing bytes in pgoutput message {self.data!r}")


def decode(data):
    """One pgoutput message (bytes) as a dict with its "type" letter and fields."""
    r = Reader(data)
    t = r.byte()
    m = {"type": t}
    if t == "B":
        m.update(final_lsn=r.lsn(), commit_time=r.int64(), xid=r.uint32())
    elif t == "C":
        m.update(flags=r.int8(), commit_lsn=r.lsn(), end_lsn=r.lsn(), commit_time=r.int64())
    elif t == "O":
        m.update(lsn=r.lsn(), name=r.string())
    elif t == "R":
        m.update(relid=r.uint32(), namespace=r.string(), name=r.string(), replident=r.byte())
        m["columns"] = [{"flags": r.int8(), "name": r.string(), "typeoid": r.uint32(), "typmod": r.int32()}
                        for _ in range(r.int16())]
    elif t == "Y":
        m.update(oid=r.uint32(), namespace=r.string(), name=r.string())
    elif t == "I":
        m["relid"] = r.uint32()
        if r.byte() != "N":
            raise ValueError(f"insert without N tuple: {data!r}")
        m["new"] = r.tuple()
    elif t == "U":
        m["relid"] = r.uint32()
        sub = r.byte()
        if sub in ("K", "O"):
            m["old_kind"], m["old"] = sub, r.tuple()
            sub = r.byte()
        if sub != "N":
            raise ValueError(f"update without N tuple: {data!r}")
        m["new"] = r.tuple()
    elif t == "D":
        m["relid"] = r.uint32()
        m["old_kind"] = r.byte()
        if m["old_kind"] not in ("K", "O"):
            raise ValueError(f"delete without K/O tuple: {data!r}")
        m["old"] = r.tuple()
    elif t == "T":
        n = r.int32()
        m["options"] = r.int8()
        m["relids"] = [r.uint32() for _ in range(n)]
    elif t == "M":
        m.update(transactional=bool(r.int8() & 1), lsn=r.lsn(), prefix=r.string())
        m["content"] = r.take(r.int32())
    else:
        raise ValueError(f"unknown pgoutput message type {t!r}: {data!r}")
    r.done()
    return m


def peek(cluster, slot, publications, messages=True):
    """Every message the pgoutput slot has for `publications` (a list of names), decoded, in
    order, without consuming them: [(lsn, xid, message dict)]."""
    opts = ["proto_version", "1", "publication_names", ",".join(publications)]
    if messages:
        opts += ["messages", "true"]
    rows = cluster.sql("SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL"
                       + ", %s" * len(opts) + ")", (slot, *opts))
    return [(lsn, xid, decode(data)) for lsn, xid, data in rows]


class Normaliser:
    """Turns decoded messages into the normal form (module docstring), keeping the relations
    announced by R messages."""

    def __init__(self):
        self.relations = {}   # relid -> R message
        self.units = []
        self.txn = None       # changes of the open transaction (between B and C)

    def _rel(self, relid):
        if relid not in self.relations:
            raise ValueError(f"change of relation {relid} before its R message")
        return self.relations[relid]

    @staticmethod
    def _qualified(rel):
        return f"{rel['namespace'] or 'pg_catalog'}.{rel['name']}"

    @staticmethod
    def _row(rel, values, keys_only=False):
        cols = rel["columns"]
        if len(values) != len(cols):
            raise ValueError(f"tuple of {len(values)} columns for relation {rel['name']} of {len(cols)}")
        return tuple((c["name"], v) for c, v in zip(cols, values) if not keys_only or c["flags"] & 1)

    def _emit(self, change):
        if self.txn is None:
            raise ValueError(f"change outside a transaction: {change!r}")
        self.txn.append(change)

    def feed(self, m):
        t = m["type"]
        if t == "B":
            if self.txn is not None:
                raise ValueError("B inside a transaction")
            self.txn = []
        elif t == "C":
            if self.txn is None:
                raise ValueError("C outside a transaction")
            if self.txn:
                self.units.append(self.txn)
            self.txn = None
        elif t == "R":
            self.relations[m["relid"]] = m
        elif t in ("Y", "O"):
            pass
        elif t == "I":
            rel = self._rel(m["relid"])
            self._emit(("insert", self._qualified(rel), self._row(rel, m["new"]), None))
        elif t == "U":
            rel = self._rel(m["relid"])
            new = self._row(rel, m["new"])
            old = self._row(rel, m["old"], keys_only=True) if "old" in m else \
                self._row(rel, m["new"], keys_only=True)
            self._emit(("update", self._qualified(rel), new, old))
        elif t == "D":
            rel = self._rel(m["relid"])
            self._emit(("delete", self._qualified(rel), None, self._row(rel, m["old"], keys_only=True)))
        elif t == "T":
            for relid in m["relids"]:
                self._emit(("truncate", self._qualified(self._rel(relid)), None, None))
        elif t == "M":
            change = ("message", m["transactional"], m["prefix"], m["content"])
            if m["transactional"]:
                self._emit(change)
            else:
                self.units.append([change])
        return self

    def column_types(self):
        """{"schema.table": [(column, type oid, typmod)]} of the relations announced."""
        return {self._qualified(r): [(c["name"], c["typeoid"], c["typmod"]) for c in r["columns"]]
                for r in self.relations.values()}


def normal_units(cluster, slot, publications, messages=True):
    """The normal form of what the pgoutput slot has for `publications`, and the Normaliser
    (for its relations)."""
    n = Normaliser()
    for _, _, m in peek(cluster, slot, publications, messages):
        n.feed(m)
    if n.txn is not None:
        raise ValueError("pgoutput output ends inside a transaction")
    return n.units, n
