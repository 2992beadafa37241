#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "broadcast/engine.hpp"

#include "broadcast/replay_window.hpp"
#include "broadcast/subscription_index.hpp"
#include "broadcast/wire.hpp"
#include "config.hpp"
#include "output/relation_cache.hpp"
#include "output/row_access.hpp"
#include "pg/subtransaction.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::broadcast {

namespace {

using output::Access;
using output::BroadcastChange;
using output::Identity;
using output::RelationInfo;

// Highest subscription slot + 1 the index accepts (the server's table is
// smaller; the index only grows to the highest slot used).
constexpr std::uint32_t kSlotCount = 1u << 20;
// Bytes a window entry costs beyond its body and tuples (entry, deque slot,
// allocator headers), so that many tiny changes are bounded too.
constexpr std::size_t kWindowEntryOverhead = 64;
// The longest installing one subscription may take (its values' input functions).
constexpr int kInstallTimeoutMs = 1000;

// Runs `fn` (pure C++: no Postgres call that can ERROR) and reports whether it
// threw. Used around container growth, so no exception reaches a Postgres frame.
template <typename Fn>
bool cxx(Fn &&fn) noexcept {
    try {
        fn();
        return true;
    } catch (...) {
        return false;
    }
}

[[noreturn]] void out_of_memory(const char *what) {
    ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("pgcdcws broadcast: out of memory (%s)", what)));
    pg_unreachable();
}

// ---------------------------------------------------------------------------
// Value types: a column type's default btree comparison and hash functions
// with a collation, behind the index's ValueType callbacks.

struct ValueTypeEntry {
    Oid type;
    Oid collation;
    bool byval;
    int16 len;
    bool has_hash;  // else every value hashes to 0 (correct, just unbucketed)
    FmgrInfo cmp;
    FmgrInfo hash;
    ValueType vt;
};

// One per (type, collation) met; never freed (few, and the index points at them).
std::vector<ValueTypeEntry *> value_types;

int compare_values(void *context, const void *a, const void *b) {
    auto *e = static_cast<ValueTypeEntry *>(context);
    return DatumGetInt32(
        FunctionCall2Coll(&e->cmp, e->collation, *static_cast<const Datum *>(a), *static_cast<const Datum *>(b)));
}

bool equal_values(void *context, const void *a, const void *b) { return compare_values(context, a, b) == 0; }

std::uint64_t hash_value(ValueTypeEntry *e, Datum value) {
    if (!e->has_hash)
        return 0;
    return DatumGetUInt32(FunctionCall1Coll(&e->hash, e->collation, value));
}

ValueTypeEntry *find_value_type(Oid type, Oid collation) {
    for (ValueTypeEntry *e : value_types)
        if (e->type == type && e->collation == collation)
            return e;
    return nullptr;
}

// The entry for (type, collation), built on first use. ERROR when the type
// cannot be compared here: no default btree operator class, or a comparison
// function that is not built in (those would run user code as the decoder's
// superuser).
ValueTypeEntry *value_type(Oid type, Oid collation) {
    if (ValueTypeEntry *e = find_value_type(type, collation))
        return e;
    TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_CMP_PROC_FINFO | TYPECACHE_HASH_PROC_FINFO);
    if (!OidIsValid(tc->cmp_proc))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
                        errmsg("type %s has no default btree operator class: it cannot be compared",
                               format_type_be(type))));
    if (tc->cmp_proc >= FirstGenbkiObjectId)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("the comparison function of type %s is not built in", format_type_be(type))));
    auto *e = static_cast<ValueTypeEntry *>(MemoryContextAllocZero(TopMemoryContext, sizeof(ValueTypeEntry)));
    e->type = type;
    e->collation = collation;
    get_typlenbyval(type, &e->len, &e->byval);
    fmgr_info_cxt(tc->cmp_proc, &e->cmp, TopMemoryContext);
    if (OidIsValid(tc->hash_proc) && tc->hash_proc < FirstGenbkiObjectId) {
        fmgr_info_cxt(tc->hash_proc, &e->hash, TopMemoryContext);
        e->has_hash = true;
    }
    e->vt.equal = equal_values;
    e->vt.compare = compare_values;
    e->vt.context = e;
    if (!cxx([&] { value_types.push_back(e); }))
        out_of_memory("value types");
    return e;
}

// ---------------------------------------------------------------------------
// Subscriptions.

struct Sub {
    MemoryContext context;  // owns this struct and its values
    SubscriptionHandle handle;
    Oid role;
    Oid relid;
    std::uint8_t kinds;
    XLogRecPtr requested_at;
    XLogRecPtr deliver_after;  // live changes of transactions ending after it
    int nfilters;
    FilterSpec specs[protocol::kMaxSubscriptionFilters];
    Oid types[protocol::kMaxSubscriptionFilters];       // column type when installed
    Oid collations[protocol::kMaxSubscriptionFilters];  // column collation when installed
    FilterValue *values;
    Datum *datums;
    int nvalues;
    const char *table;  // schema.table when installed (for reasons once it is gone)
};

SubscriptionIndex *index = nullptr;
std::vector<Sub *> subs_by_slot;
MemoryContext subs_context = nullptr;

struct RelState {
    int subs = 0;
    bool verified = false;  // the subscriptions' column types were checked against decoding's descriptor
};
std::unordered_map<Oid, RelState> rels;

Sub *sub_of(SubscriptionHandle h) {
    if (h.slot >= subs_by_slot.size())
        return nullptr;
    Sub *s = subs_by_slot[h.slot];
    return s && s->handle == h ? s : nullptr;
}

// ---------------------------------------------------------------------------
// Output ring.

shmem::RingWriter *output_writer = nullptr;
shmem::BroadcastArea *area = nullptr;
std::string out_msg;
wire::Ended ended_msg;

void send_out_msg() { (void)output_writer->write(out_msg.data(), out_msg.size(), true, 0); }

void send_subscribed(SubscriptionHandle h, XLogRecPtr lsn) {
    if (!cxx([&] {
            out_msg.clear();
            wire::Subscribed m;
            m.handle = h;
            m.lsn = lsn;
            wire::encode(m, out_msg);
        }))
        out_of_memory("messages");
    send_out_msg();
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: subscription %u/%u live from %X/%X", h.slot, h.generation,
                                     LSN_FORMAT_ARGS(lsn))));
}

void send_gap(SubscriptionHandle h, XLogRecPtr since, XLogRecPtr oldest) {
    if (!cxx([&] {
            out_msg.clear();
            wire::Gap m;
            m.handle = h;
            m.since = since;
            m.oldest = oldest;
            wire::encode(m, out_msg);
        }))
        out_of_memory("messages");
    send_out_msg();
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: subscription %u/%u: gap since %X/%X, oldest %X/%X", h.slot,
                                     h.generation, LSN_FORMAT_ARGS(since), LSN_FORMAT_ARGS(oldest))));
}

void send_ended(SubscriptionHandle h, const char *reason) {
    if (!cxx([&] {
            out_msg.clear();
            ended_msg.handle = h;
            ended_msg.reason.assign(reason);
            wire::encode(ended_msg, out_msg);
        }))
        out_of_memory("messages");
    send_out_msg();
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: subscription %u/%u ended: %s", h.slot, h.generation, reason)));
}

void send_change(XLogRecPtr lsn, TransactionId xid, const std::vector<wire::Recipient> &recipients, const char *body,
                 int body_len) {
    if (!cxx([&] {
            out_msg.clear();
            wire::ChangeHeader header;
            header.lsn = lsn;
            header.xid = xid;
            header.recipient_count = static_cast<std::uint32_t>(recipients.size());
            wire::encode_change_prefix(header, recipients.data(), out_msg);
        }))
        out_of_memory("messages");
    (void)output_writer->write(out_msg.data(), out_msg.size(), false, 0);
    (void)output_writer->write(body, static_cast<std::size_t>(body_len), true, lsn);
}

void forget_access(Oid relid);

// Unlists the subscription and frees it; with a reason, tells the server.
void end_subscription(Sub *s, const char *reason) {
    const SubscriptionHandle h = s->handle;
    (void)cxx([&] { index->remove(h); });
    subs_by_slot[h.slot] = nullptr;
    auto it = rels.find(s->relid);
    if (it != rels.end() && --it->second.subs <= 0) {
        rels.erase(it);
        forget_access(s->relid);
    }
    MemoryContextDelete(s->context);
    if (reason)
        send_ended(h, reason);
}

// ---------------------------------------------------------------------------
// Access per (role, relation), decided with the catalogs as decoding sees them.

struct AccessEntry {
    bool valid = false;
    Access access = Access::None;
    output::RowFilter *filter = nullptr;
    MemoryContext context = nullptr;
    // With Access::Filtered: whether the change numbered verdict_change passes
    // the role's row security (computed once per change and role).
    std::uint64_t verdict_change = 0;
    bool verdict_visible = false;
};
std::uint64_t change_number = 0;
std::unordered_map<std::uint64_t, AccessEntry> access_cache;

std::uint64_t access_key(Oid role, Oid relid) { return (std::uint64_t{role} << 32) | relid; }

// The relation has no subscription left: its access decisions go (bounded by
// what subscriptions exist, not by what ever existed).
void forget_access(Oid relid) {
    for (auto it = access_cache.begin(); it != access_cache.end();) {
        if (static_cast<Oid>(it->first & 0xFFFFFFFFu) == relid) {
            if (it->second.context)
                MemoryContextDelete(it->second.context);
            it = access_cache.erase(it);
        } else {
            ++it;
        }
    }
}

// Replica identity key columns by attnum - 1 (nullptr without a key identity), in the current context.
bool *key_attrs(const RelationInfo *info, int natts) {
    if (info->identity != Identity::Key)
        return nullptr;
    bool *key = static_cast<bool *>(palloc0(sizeof(bool) * natts));
    for (int k = 0; k < info->nkeys; k++) {
        const int a = info->columns[info->key_columns[k]].attnum;
        if (a >= 1 && a <= natts)
            key[a - 1] = true;
    }
    return key;
}

AccessEntry *access_for(Oid role, Relation relation, const RelationInfo *info) {
    AccessEntry *entry = nullptr;
    if (!cxx([&] { entry = &access_cache[access_key(role, RelationGetRelid(relation))]; }))
        out_of_memory("access cache");
    if (entry->valid)
        return entry;
    if (entry->context)
        MemoryContextDelete(entry->context);
    entry->filter = nullptr;
    entry->access = Access::None;
    entry->context = AllocSetContextCreate(TopMemoryContext, "pgcdcws broadcast access", ALLOCSET_SMALL_SIZES);
    // Valid from here: an invalidation arriving while deciding makes the next change decide again.
    entry->valid = true;
    MemoryContext old = MemoryContextSwitchTo(entry->context);
    const bool *key = key_attrs(info, RelationGetDescr(relation)->natts);
    MemoryContextSwitchTo(old);
    entry->access = output::decide_role_access(role, relation, entry->context, key, &entry->filter);
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: role %u on table %s: access %s", role, info->table,
                                     entry->access == Access::All        ? "all"
                                     : entry->access == Access::Filtered ? "row security"
                                                                         : "none")));
    return entry;
}

// ---------------------------------------------------------------------------
// Rows as the index sees them.

struct RowView {
    const Datum *values;  // nullptr: no row
    const bool *nulls;
    TupleDesc desc;
    const bool *mask;  // nullptr: every column present; else only those marked (an old key)
    std::uint64_t *hashes;
    bool *hashed;
};

ColumnValue row_column(void *row, std::int16_t attnum, bool want_hash) {
    auto *r = static_cast<RowView *>(row);
    ColumnValue out;
    out.state = ColumnState::Missing;
    if (r->values == nullptr || attnum < 1 || attnum > r->desc->natts)
        return out;
    const int i = attnum - 1;
    Form_pg_attribute attr = TupleDescAttr(r->desc, i);
    if (attr->attisdropped || (r->mask && !r->mask[i]))
        return out;
    if (r->nulls[i]) {
        out.state = ColumnState::Null;
        return out;
    }
    const Datum value = r->values[i];
    // An unchanged TOAST value was not logged: nothing to compare.
    if (attr->attlen == -1 && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
        return out;
    out.state = ColumnState::Value;
    out.value = &r->values[i];
    if (want_hash) {
        if (!r->hashed[i]) {
            ValueTypeEntry *e = find_value_type(attr->atttypid, attr->attcollation);
            r->hashes[i] = e ? hash_value(e, value) : 0;
            r->hashed[i] = true;
        }
        out.hash = r->hashes[i];
    }
    return out;
}

// Scratch of one match, in the current (per-change) memory context.
void init_view(RowView &v, const Datum *values, const bool *nulls, TupleDesc desc, const bool *mask,
               std::uint64_t *hashes, bool *hashed) {
    v.values = values;
    v.nulls = nulls;
    v.desc = desc;
    v.mask = mask;
    v.hashes = hashes;
    v.hashed = hashed;
}

std::vector<SubscriptionHandle> matched_handles;
std::vector<UpdateMatch> matched_updates;
// (handle, side) of every subscription a change matched, before access checks.
std::vector<wire::Recipient> candidates;
std::vector<wire::Recipient> recipients;
std::vector<Sub *> to_end;

// What `idx` matches for one change; fills `candidates`. identity/key: the
// relation's replica identity as of the rows (an old row of a Key identity
// carries the key columns only).
void match_rows(SubscriptionIndex &idx, Oid relid, int action, TupleDesc desc, Identity identity, const bool *key,
                const Datum *new_values, const bool *new_nulls, const Datum *old_values, const bool *old_nulls) {
    candidates.clear();
    matched_handles.clear();
    matched_updates.clear();
    const int natts = desc->natts;
    auto *hashes = static_cast<std::uint64_t *>(palloc(sizeof(std::uint64_t) * (2 * natts + 1)));
    auto *hashed = static_cast<bool *>(palloc0(sizeof(bool) * (2 * natts + 1)));
    RowView nv, ov, kv;
    init_view(nv, new_values, new_nulls, desc, nullptr, hashes, hashed);
    init_view(ov, old_values, old_nulls, desc, identity == Identity::Full ? nullptr : key, hashes + natts,
              hashed + natts);
    // The old key taken from the new row (key unchanged): same values, same hashes.
    init_view(kv, new_values, new_nulls, desc, key, hashes, hashed);
    RowAccessor na{row_column, &nv}, oa{row_column, &ov}, ka{row_column, &kv};
    bool ok = true;
    switch (action) {
    case REORDER_BUFFER_CHANGE_INSERT:
        if (new_values)
            ok = cxx([&] { idx.match(relid, protocol::kKindInsert, na, matched_handles); });
        break;
    case REORDER_BUFFER_CHANGE_DELETE:
        ok = cxx([&] { idx.match(relid, protocol::kKindDelete, oa, matched_handles); });
        break;
    case REORDER_BUFFER_CHANGE_UPDATE: {
        const RowAccessor *old_row = old_values ? &oa : (identity == Identity::Key && new_values ? &ka : nullptr);
        ok = cxx([&] { idx.match_update(relid, na, old_row, matched_updates); });
        break;
    }
    default:
        ok = cxx([&] { idx.match_truncate(relid, matched_handles); });
        break;
    }
    if (!ok)
        out_of_memory("matching");
    ok = cxx([&] {
        for (const SubscriptionHandle &h : matched_handles)
            candidates.push_back(wire::Recipient{h, 0});
        for (const UpdateMatch &m : matched_updates)
            candidates.push_back(wire::Recipient{m.handle, static_cast<std::uint32_t>(m.side)});
    });
    if (!ok)
        out_of_memory("matching");
}

// Whether a change passes the role's row security (Access::Filtered), conservatively:
// every row it shows must be judged visible.
bool rows_visible(output::RowFilter *filter, const BroadcastChange &ch, TupleDesc desc) {
    const RelationInfo *info = ch.info;
    const int natts = desc->natts;
    // An old key row can be judged only when the policy reads key columns alone.
    const bool old_judgeable = ch.old_values && (info->identity == Identity::Full || filter->only_key_columns);
    switch (ch.action) {
    case REORDER_BUFFER_CHANGE_INSERT:
        return ch.new_values && output::row_visible(filter, info->table, ch.new_values, ch.new_nulls, natts);
    case REORDER_BUFFER_CHANGE_DELETE:
        return old_judgeable && output::row_visible(filter, info->table, ch.old_values, ch.old_nulls, natts);
    case REORDER_BUFFER_CHANGE_UPDATE:
        if (!ch.new_values || !output::row_visible(filter, info->table, ch.new_values, ch.new_nulls, natts))
            return false;
        // Without an old row the key did not change: the old key is the visible new row's.
        if (!ch.old_values)
            return true;
        return old_judgeable && output::row_visible(filter, info->table, ch.old_values, ch.old_nulls, natts);
    default:
        return true;  // a truncate shows no row
    }
}

char *role_table_reason(const char *format, Oid role, const RelationInfo *info) {
    const char *name = GetUserNameFromId(role, true);
    return psprintf(format, name ? name : "(dropped)", info->schema, info->table);
}

// The subscriptions on `relid` whose filters no longer fit `desc` (a column
// dropped, retyped or given another collation) are ended.
void verify_relation(Oid relid, TupleDesc desc) {
    for (Sub *s : subs_by_slot) {
        if (!s || s->relid != relid)
            continue;
        for (int f = 0; f < s->nfilters; f++) {
            const int a = s->specs[f].attnum;
            const Form_pg_attribute attr = a <= desc->natts ? TupleDescAttr(desc, a - 1) : nullptr;
            if (!attr || attr->attisdropped || attr->atttypid != s->types[f] || attr->attcollation != s->collations[f]) {
                if (!cxx([&] { to_end.push_back(s); }))
                    out_of_memory("matching");
                break;
            }
        }
    }
    for (Sub *s : to_end)
        end_subscription(s, psprintf("a filtered column of table %s was dropped or changed type",
                                     s->table ? s->table : "(unknown)"));
    to_end.clear();
    auto it = rels.find(relid);
    if (it != rels.end())
        it->second.verified = true;
}

// ---------------------------------------------------------------------------
// Replay window.

struct DescRef {
    TupleDesc desc;  // a copy, no reference count
    int refs;        // window entries, plus one while current for its relation
    bool stale;      // the relation changed since: the next change makes a new one
    Identity identity;
    bool *key;  // replica identity key columns, nullptr without
};

struct WindowEntry {
    Oid relid;
    int action;
    TransactionId xid;
    XLogRecPtr lsn;
    DescRef *desc;
    HeapTuple new_tuple;
    HeapTuple old_tuple;
    int body_len;
    char *body;
};

ReplayWindow window;
MemoryContext window_context = nullptr;
std::unordered_map<Oid, DescRef *> current_desc;

std::size_t window_cap() { return static_cast<std::size_t>(config::broadcast_replay_size_kb) * 1024; }
// The cap the window was last trimmed to (engine_apply_settings).
std::size_t applied_window_cap = 0;

void release_desc(DescRef *d) {
    if (--d->refs > 0)
        return;
    FreeTupleDesc(d->desc);
    if (d->key)
        pfree(d->key);
    pfree(d);
}

void release_entry(void *, void *payload) {
    auto *e = static_cast<WindowEntry *>(payload);
    if (e->new_tuple)
        heap_freetuple(e->new_tuple);
    if (e->old_tuple)
        heap_freetuple(e->old_tuple);
    release_desc(e->desc);
    pfree(e);
}

void publish_window() {
    area->window_bytes.store(window.bytes(), std::memory_order_relaxed);
    area->window_oldest.store(window.oldest(), std::memory_order_relaxed);
}

DescRef *desc_ref_for(Relation relation, const RelationInfo *info) {
    const Oid relid = RelationGetRelid(relation);
    DescRef **slot = nullptr;
    if (!cxx([&] { slot = &current_desc[relid]; }))
        out_of_memory("replay window");
    if (*slot && !(*slot)->stale)
        return *slot;
    if (*slot) {
        DescRef *old = *slot;
        *slot = nullptr;
        release_desc(old);
    }
    MemoryContext old = MemoryContextSwitchTo(window_context);
    auto *d = static_cast<DescRef *>(palloc0(sizeof(DescRef)));
    d->desc = CreateTupleDescCopy(RelationGetDescr(relation));
    d->refs = 1;
    d->identity = info->identity;
    d->key = key_attrs(info, d->desc->natts);
    MemoryContextSwitchTo(old);
    *slot = d;
    return d;
}

void remember(const BroadcastChange &ch) {
    const std::size_t cap = window_cap();
    if (cap == 0)
        return;
    DescRef *desc = desc_ref_for(ch.relation, ch.info);
    MemoryContext old = MemoryContextSwitchTo(window_context);
    auto *e = static_cast<WindowEntry *>(palloc(sizeof(WindowEntry) + ch.body_len + 1));
    e->relid = RelationGetRelid(ch.relation);
    e->action = ch.action;
    e->xid = ch.xid;
    e->lsn = ch.end_lsn;
    e->desc = desc;
    desc->refs++;
    e->new_tuple = ch.new_tuple ? heap_copytuple(ch.new_tuple) : nullptr;
    e->old_tuple = ch.old_tuple ? heap_copytuple(ch.old_tuple) : nullptr;
    e->body_len = ch.body_len;
    e->body = reinterpret_cast<char *>(e + 1);
    std::memcpy(e->body, ch.body, ch.body_len);
    e->body[ch.body_len] = '\0';
    MemoryContextSwitchTo(old);
    std::size_t bytes = sizeof(WindowEntry) + ch.body_len + 1 + kWindowEntryOverhead;
    if (e->new_tuple)
        bytes += HEAPTUPLESIZE + e->new_tuple->t_len;
    if (e->old_tuple)
        bytes += HEAPTUPLESIZE + e->old_tuple->t_len;
    if (!cxx([&] { window.push(ch.end_lsn, bytes, e); })) {
        // Never a silent hole: forget everything before this change, so a
        // since= before it gets a gap.
        release_entry(nullptr, e);
        window.reset(ch.end_lsn, release_entry, nullptr);
    }
    (void)window.trim(cap, release_entry, nullptr);
    publish_window();
}

// ---------------------------------------------------------------------------
// The sink: every decoded change.

// Asked once per decoded change (and per truncated relation).
bool wanted(Oid relid) {
    area->changes_decoded.fetch_add(1, std::memory_order_relaxed);
    // A partition's changes may reach subscriptions on its ancestors.
    return window_cap() > 0 || rels.count(relid) > 0 || (!rels.empty() && get_rel_relispartition(relid));
}

// Matches `ch` (rows in the layout of `desc`, the descriptor of `relid`)
// against the subscriptions on `relid` and appends the recipients its roles
// may see.
void collect_recipients(const BroadcastChange &ch, Oid relid, TupleDesc desc) {
    auto rel = rels.find(relid);
    if (rel == rels.end() || rel->second.subs <= 0)
        return;
    if (!rel->second.verified)
        verify_relation(relid, desc);
    const bool *key = key_attrs(ch.info, desc->natts);
    match_rows(*index, relid, ch.action, desc, ch.info->identity, key, ch.new_values, ch.new_nulls, ch.old_values,
               ch.old_nulls);
    change_number++;
    for (const wire::Recipient &c : candidates) {
        Sub *s = sub_of(c.handle);
        if (!s || ch.end_lsn <= s->deliver_after)
            continue;
        AccessEntry *access = access_for(s->role, ch.relation, ch.info);
        if (access->access == Access::None) {
            // Decoding's catalogs as of this transaction: before the
            // request (a since= replay), the server's check stands.
            if (ch.end_lsn > s->requested_at && !cxx([&] { to_end.push_back(s); }))
                out_of_memory("matching");
            continue;
        }
        if (access->access == Access::Filtered) {
            if (access->verdict_change != change_number) {
                access->verdict_visible = rows_visible(access->filter, ch, desc);
                access->verdict_change = change_number;
            }
            if (!access->verdict_visible)
                continue;
        }
        if (!cxx([&] { recipients.push_back(c); }))
            out_of_memory("matching");
    }
    for (Sub *s : to_end) {
        char *reason = role_table_reason("role %s may no longer SELECT table %s.%s", s->role, ch.info);
        end_subscription(s, reason);
    }
    to_end.clear();
}

// One row of a partition in the layout of an ancestor (map from
// build_attrmap_by_name_if_req(partition, ancestor); nullptr: same layout).
void convert_row(const AttrMap *map, int natts, const Datum *in_values, const bool *in_nulls, Datum **out_values,
                 bool **out_nulls) {
    if (in_values == nullptr || map == nullptr) {
        *out_values = const_cast<Datum *>(in_values);
        *out_nulls = const_cast<bool *>(in_nulls);
        return;
    }
    *out_values = static_cast<Datum *>(palloc0(sizeof(Datum) * natts));
    *out_nulls = static_cast<bool *>(palloc(sizeof(bool) * natts));
    for (int i = 0; i < natts; i++) {
        const int from = i < map->maplen ? map->attnums[i] : 0;
        (*out_nulls)[i] = from == 0 || in_nulls[from - 1];
        (*out_values)[i] = from == 0 ? 0 : in_values[from - 1];
    }
}

// The ancestors of the partitions met (get_partition_ancestors scans
// pg_inherits: not once per change). Emptied by any relcache invalidation of
// a partition or ancestor in it (ATTACH/DETACH PARTITION send them, for the
// partition and its parent), as of decoding's catalogs.
std::unordered_map<Oid, std::vector<Oid>> partition_ancestors;

const std::vector<Oid> *ancestors_of(Oid partition) {
    auto it = partition_ancestors.find(partition);
    if (it != partition_ancestors.end())
        return &it->second;
    List *list = get_partition_ancestors(partition);  // may ereport: no C++ object alive yet
    const std::vector<Oid> *out = nullptr;
    if (!cxx([&] {
            std::vector<Oid> oids;
            ListCell *cell;
            foreach (cell, list)
                oids.push_back(lfirst_oid(cell));
            out = &(partition_ancestors[partition] = std::move(oids));
        }))
        out_of_memory("matching");
    list_free(list);
    return out;
}

void forget_partition_ancestors(Oid relid) {
    if (partition_ancestors.empty())
        return;
    bool known = relid == InvalidOid || partition_ancestors.count(relid) != 0;
    for (auto it = partition_ancestors.begin(); !known && it != partition_ancestors.end(); ++it)
        known = std::find(it->second.begin(), it->second.end(), relid) != it->second.end();
    if (known)
        partition_ancestors.clear();
}

// A partition's change also reaches the subscriptions on its ancestors
// (their rows live in their partitions), matched and judged in the
// ancestor's layout, with the ancestor's privileges and row security, as a
// query on the ancestor would see it.
void collect_for_ancestors(const BroadcastChange &ch, TupleDesc desc) {
    if (!ch.relation->rd_rel->relispartition)
        return;
    // A palloc'd copy: an invalidation taken in the loop may empty the cache,
    // and an ereport must not cross a C++ object.
    const std::vector<Oid> *cached = ancestors_of(RelationGetRelid(ch.relation));
    const int count = static_cast<int>(cached->size());
    Oid *ancestors = static_cast<Oid *>(palloc(sizeof(Oid) * (count + 1)));
    std::copy(cached->begin(), cached->end(), ancestors);
    for (int a = 0; a < count; a++) {
        const Oid ancestor = ancestors[a];
        if (rels.count(ancestor) == 0)
            continue;
        Relation parent = RelationIdGetRelation(ancestor);
        if (!RelationIsValid(parent))
            continue;
        TupleDesc parent_desc = RelationGetDescr(parent);
        AttrMap *map = build_attrmap_by_name_if_req(desc, parent_desc);
        BroadcastChange pc = ch;
        pc.relation = parent;
        pc.info = output::relation_info(parent);
        Datum *values;
        bool *nulls;
        convert_row(map, parent_desc->natts, ch.new_values, ch.new_nulls, &values, &nulls);
        pc.new_values = values;
        pc.new_nulls = nulls;
        convert_row(map, parent_desc->natts, ch.old_values, ch.old_nulls, &values, &nulls);
        pc.old_values = values;
        pc.old_nulls = nulls;
        collect_recipients(pc, ancestor, parent_desc);
        RelationClose(parent);
    }
    pfree(ancestors);
}

void on_change(const BroadcastChange &ch) {
    const Oid relid = RelationGetRelid(ch.relation);
    TupleDesc desc = RelationGetDescr(ch.relation);
    recipients.clear();
    collect_recipients(ch, relid, desc);
    if (!rels.empty())
        collect_for_ancestors(ch, desc);
    if (!recipients.empty()) {
        send_change(ch.end_lsn, ch.xid, recipients, ch.body, ch.body_len);
        area->changes_matched.fetch_add(1, std::memory_order_relaxed);
    }
    remember(ch);
}

const output::BroadcastSink sink{wanted, on_change};

// ---------------------------------------------------------------------------
// Invalidations.

void on_relcache(Datum, Oid relid) {
    forget_partition_ancestors(relid);
    for (auto &entry : access_cache)
        if (relid == InvalidOid || static_cast<Oid>(entry.first & 0xFFFFFFFFu) == relid)
            entry.second.valid = false;
    if (relid == InvalidOid) {
        for (auto &entry : rels)
            entry.second.verified = false;
        for (auto &entry : current_desc)
            if (entry.second)
                entry.second->stale = true;
        return;
    }
    auto rel = rels.find(relid);
    if (rel != rels.end())
        rel->second.verified = false;
    auto d = current_desc.find(relid);
    if (d != current_desc.end() && d->second)
        d->second->stale = true;
}

// Set while the engine flushes catalog cache entries itself (no catalog changed).
bool flushing_caches = false;

// Role attributes and memberships decide access too.
void on_roles(Datum, int, uint32) {
    if (flushing_caches)
        return;
    for (auto &entry : access_cache)
        entry.second.valid = false;
}

// The catalog caches may hold entries read with decoding's historic
// snapshots, older than the catalogs: checks with the current catalogs
// forget the entries they read (roles, memberships, tables' ACLs) before and
// after, as the stream's rechecks do (output/row_access.cpp).
// The access decisions stay: they follow decoding's catalogs, whose changes
// arrive as invalidations at their commit.
void forget_privilege_cache_entries() {
    flushing_caches = true;
    CatalogCacheFlushCatalog(AuthIdRelationId);
    CatalogCacheFlushCatalog(AuthMemRelationId);
    CatalogCacheFlushCatalog(RelationRelationId);
    flushing_caches = false;
}

// ---------------------------------------------------------------------------
// Installing a subscription (between WAL records, in a short transaction).

const wire::Subscribe *installing = nullptr;
Sub *prepared = nullptr;
bool prepared_row_security = false;
bool prepared_partitioned = false;

// Checks the subscription against the current catalogs and parses its values
// (input functions as the role, in a security-restricted operation). ERRORs
// say why it cannot be installed.
void prepare_body(void *) {
    const wire::Subscribe &m = *installing;
    Sub *s = prepared;
    const Oid relid = m.relid;
    if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
        ereport(ERROR, (errmsg("the subscription's table no longer exists")));
    const char *schema = get_namespace_name(get_rel_namespace(relid));
    const char *table = get_rel_name(relid);
    s->table = MemoryContextStrdup(s->context, psprintf("%s.%s", schema, table));
    if (pg_class_aclcheck(relid, m.role, ACL_SELECT) != ACLCHECK_OK) {
        const char *name = GetUserNameFromId(m.role, true);
        ereport(ERROR, (errmsg("role %s may no longer SELECT table %s.%s", name ? name : "(dropped)", schema, table)));
    }
    prepared_row_security = check_enable_rls(relid, m.role, true) == RLS_ENABLED;
    prepared_partitioned = get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE;
    if (m.filters.size() > protocol::kMaxSubscriptionFilters)
        ereport(ERROR, (errmsg("too many filters")));
    int nvalues = 0;
    for (const wire::ResolvedFilter &f : m.filters)
        nvalues += static_cast<int>(f.values.size());
    s->values = static_cast<FilterValue *>(MemoryContextAllocZero(s->context, sizeof(FilterValue) * (nvalues + 1)));
    s->datums = static_cast<Datum *>(MemoryContextAllocZero(s->context, sizeof(Datum) * (nvalues + 1)));
    Oid saved_user;
    int saved_sec;
    GetUserIdAndSecContext(&saved_user, &saved_sec);
    int next = 0;
    for (std::size_t i = 0; i < m.filters.size(); i++) {
        const wire::ResolvedFilter &f = m.filters[i];
        if (f.attnum < 1)
            ereport(ERROR, (errmsg("filter on a system column")));
        HeapTuple tuple = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(f.attnum));
        if (!HeapTupleIsValid(tuple))
            ereport(ERROR, (errmsg("column %d of table %s.%s no longer exists", f.attnum, schema, table)));
        const auto *attr = reinterpret_cast<Form_pg_attribute>(GETSTRUCT(tuple));
        const bool dropped = attr->attisdropped;
        const Oid type = attr->atttypid;
        const Oid collation = attr->attcollation;
        char column[NAMEDATALEN];
        strlcpy(column, NameStr(attr->attname), sizeof column);
        ReleaseSysCache(tuple);
        if (dropped)
            ereport(ERROR, (errmsg("column %d of table %s.%s no longer exists", f.attnum, schema, table)));
        if (type != f.type_oid)
            ereport(ERROR, (errmsg("column \"%s\" of table %s.%s changed type", column, schema, table)));
        ValueTypeEntry *vt = value_type(type, collation);
        Oid input;
        Oid ioparam;
        getTypeInputInfo(type, &input, &ioparam);
        const int first = next;
        for (const std::string &text : f.values) {
            // Input functions may run user code (a domain's CHECK, a user type):
            // as the subscriber, unable to change the session.
            SetUserIdAndSecContext(m.role, saved_sec | SECURITY_RESTRICTED_OPERATION);
            // typmod -1, as the server checked it: a filter compares the value
            // given, not one rounded to the column (numeric(5,2) and 1.005).
            const Datum parsed = OidInputFunctionCall(input, const_cast<char *>(text.c_str()), ioparam, -1);
            SetUserIdAndSecContext(saved_user, saved_sec);
            MemoryContext old = MemoryContextSwitchTo(s->context);
            s->datums[next] = datumCopy(parsed, vt->byval, vt->len);
            MemoryContextSwitchTo(old);
            s->values[next].value = &s->datums[next];
            s->values[next].hash = (f.op == protocol::FilterOp::Eq || f.op == protocol::FilterOp::In)
                                       ? hash_value(vt, s->datums[next])
                                       : 0;
            next++;
        }
        FilterSpec &spec = s->specs[i];
        spec.attnum = f.attnum;
        spec.op = f.op;
        spec.type = &vt->vt;
        spec.values = &s->values[first];
        spec.value_count = static_cast<std::size_t>(next - first);
        s->types[i] = type;
        s->collations[i] = collation;
    }
    s->nfilters = static_cast<int>(m.filters.size());
    s->nvalues = next;
}

// Runs body in a subtransaction (pg/subtransaction.hpp); an ERROR is caught,
// its message copied to `error`.
// At most kInstallTimeoutMs: the values' input functions may run a domain's
// CHECK, the client's code, while every subscriber waits.
bool run_in_subtransaction(void (*body)(void *), void *arg, char *error, std::size_t error_size) {
    enable_timeout_after(STATEMENT_TIMEOUT, kInstallTimeoutMs);
    ErrorData *edata = pg::run_in_subtransaction(body, arg, pg::OnSuccess::Commit);
    disable_timeout(STATEMENT_TIMEOUT, false);
    QueryCancelPending = false;
    if (!edata)
        return true;
    strlcpy(error, edata->message ? edata->message : "unknown error", error_size);
    FreeErrorData(edata);
    return false;
}

// Whether the filters' columns have, in `desc`, the type and collation the
// subscription was installed with (a window entry from before an ALTER is
// skipped rather than compared with the wrong functions).
bool filters_fit(const Sub *s, TupleDesc desc) {
    for (int f = 0; f < s->nfilters; f++) {
        const int a = s->specs[f].attnum;
        if (a > desc->natts)
            return false;
        const Form_pg_attribute attr = TupleDescAttr(desc, a - 1);
        if (attr->attisdropped || attr->atttypid != s->types[f] || attr->attcollation != s->collations[f])
            return false;
    }
    return true;
}

SubscriptionIndex *replay_index = nullptr;

// Replays the window entries after `since` that match `s` (its role reads
// the table without row security), in commit order, to `s` alone.
void replay(Sub *s, XLogRecPtr since) {
    std::size_t first = window.first_after(since > window.oldest() ? since : window.oldest());
    if (first >= window.size())
        return;
    const char *error = nullptr;
    if (!cxx([&] {
            replay_index = new SubscriptionIndex(s->handle.slot + 1);
            error = replay_index->add(s->handle, s->relid, s->kinds, s->specs, s->nfilters);
        })) {
        delete replay_index;
        replay_index = nullptr;
        out_of_memory("replay");
    }
    if (error) {
        delete replay_index;
        replay_index = nullptr;
        return;
    }
    MemoryContext scratch = AllocSetContextCreate(CurrentMemoryContext, "pgcdcws broadcast replay", ALLOCSET_DEFAULT_SIZES);
    MemoryContext old = MemoryContextSwitchTo(scratch);
    std::size_t replayed = 0;
    for (std::size_t i = first; i < window.size(); i++) {
        const auto *e = static_cast<const WindowEntry *>(window.at(i).payload);
        if (e->relid != s->relid || !filters_fit(s, e->desc->desc))
            continue;
        TupleDesc desc = e->desc->desc;
        const int natts = desc->natts;
        Datum *nv = nullptr, *ov = nullptr;
        bool *nn = nullptr, *on = nullptr;
        if (e->new_tuple) {
            nv = static_cast<Datum *>(palloc(sizeof(Datum) * natts));
            nn = static_cast<bool *>(palloc(sizeof(bool) * natts));
            heap_deform_tuple(e->new_tuple, desc, nv, nn);
        }
        if (e->old_tuple) {
            ov = static_cast<Datum *>(palloc(sizeof(Datum) * natts));
            on = static_cast<bool *>(palloc(sizeof(bool) * natts));
            heap_deform_tuple(e->old_tuple, desc, ov, on);
        }
        match_rows(*replay_index, e->relid, e->action, desc, e->desc->identity, e->desc->key, nv, nn, ov, on);
        if (!candidates.empty()) {
            recipients.clear();
            if (!cxx([&] { recipients.push_back(candidates.front()); }))
                out_of_memory("replay");
            send_change(e->lsn, e->xid, recipients, e->body, e->body_len);
            replayed++;
        }
        MemoryContextReset(scratch);
    }
    MemoryContextSwitchTo(old);
    MemoryContextDelete(scratch);
    delete replay_index;
    replay_index = nullptr;
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: subscription %u/%u: replayed %zu changes after %X/%X",
                                     s->handle.slot, s->handle.generation, replayed, LSN_FORMAT_ARGS(since))));
}

wire::Subscribe subscribe_msg;
char install_error[512];

void install(XLogRecPtr position) {
    const wire::Subscribe &m = subscribe_msg;
    const SubscriptionHandle h = m.handle;
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: subscribe %u/%u: role %u, table %u, kinds %u, %zu filters%s",
                                     h.slot, h.generation, m.role, m.relid, m.kinds, m.filters.size(),
                                     m.has_since ? ", since" : "")));
    if (h.slot >= kSlotCount) {
        send_ended(h, "subscription slot out of range");
        return;
    }
    // A reused slot: the server forgot the old subscription.
    if (h.slot < subs_by_slot.size() && subs_by_slot[h.slot])
        end_subscription(subs_by_slot[h.slot], nullptr);

    MemoryContext context =
        AllocSetContextCreate(subs_context, "pgcdcws broadcast subscription", ALLOCSET_SMALL_SIZES);
    auto *s = static_cast<Sub *>(MemoryContextAllocZero(context, sizeof(Sub)));
    s->context = context;
    s->handle = h;
    s->role = m.role;
    s->relid = m.relid;
    s->kinds = m.kinds;
    s->requested_at = m.requested_at;
    // A since beyond the request's position (ahead of the WAL) asks for no
    // less than a plain subscription: deliver what commits after the request.
    s->deliver_after = m.has_since && m.since < m.requested_at ? m.since : m.requested_at;
    installing = &m;
    prepared = s;
    prepared_row_security = false;
    prepared_partitioned = false;

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    forget_privilege_cache_entries();
    const bool ok = run_in_subtransaction(prepare_body, nullptr, install_error, sizeof install_error);
    forget_privilege_cache_entries();
    PopActiveSnapshot();
    CommitTransactionCommand();
    installing = nullptr;
    prepared = nullptr;
    if (!ok) {
        MemoryContextDelete(s->context);
        send_ended(h, install_error);
        return;
    }
    const char *error = nullptr;
    if (!cxx([&] {
            if (subs_by_slot.size() <= h.slot)
                subs_by_slot.resize(std::size_t{h.slot} + 1, nullptr);
            error = index->add(h, s->relid, s->kinds, s->specs, static_cast<std::size_t>(s->nfilters));
            if (!error) {
                RelState &rel = rels[s->relid];
                rel.subs++;
                // Checked against the current catalogs; decoding may be behind them.
                rel.verified = false;
            }
        })) {
        MemoryContextDelete(s->context);
        out_of_memory("subscriptions");
    }
    if (error) {
        MemoryContextDelete(s->context);
        send_ended(h, error);
        return;
    }
    subs_by_slot[h.slot] = s;

    send_subscribed(h, m.requested_at > position ? m.requested_at : position);
    if (!m.has_since)
        return;
    if (prepared_row_security || prepared_partitioned) {
        // The window is not judged against row security, nor mapped from
        // partitions to their ancestors: say what may be missing.
        if (m.since < position)
            send_gap(h, m.since, position);
        return;
    }
    // Without a window (size 0) nothing before the current position is held.
    const XLogRecPtr oldest = window_cap() > 0 ? window.oldest() : position;
    if (m.since < oldest)
        send_gap(h, m.since, oldest);
    replay(s, m.since);
}

std::string control_message;

void handle_control(XLogRecPtr position) {
    wire::MessageType type;
    if (!wire::peek_type(control_message, type)) {
        ereport(LOG, (errmsg("pgcdcws broadcast: ignored a malformed control message")));
        return;
    }
    if (type == wire::MessageType::Subscribe) {
        bool ok = false;
        if (!cxx([&] { ok = wire::decode(control_message, subscribe_msg); }))
            out_of_memory("control messages");
        if (!ok) {
            ereport(LOG, (errmsg("pgcdcws broadcast: ignored a malformed subscribe message")));
            return;
        }
        install(position);
    } else if (type == wire::MessageType::Unsubscribe) {
        SubscriptionHandle h;
        if (!wire::decode_unsubscribe(control_message, h)) {
            ereport(LOG, (errmsg("pgcdcws broadcast: ignored a malformed unsubscribe message")));
            return;
        }
        ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: unsubscribe %u/%u", h.slot, h.generation)));
        if (Sub *s = sub_of(h))
            end_subscription(s, nullptr);
    } else {
        ereport(LOG, (errmsg("pgcdcws broadcast: ignored a control message of type %u", static_cast<unsigned>(type))));
    }
}

}  // namespace

void engine_start(shmem::RingWriter *output, XLogRecPtr start) {
    output_writer = output;
    area = shmem::broadcast_area();
    subs_context = AllocSetContextCreate(TopMemoryContext, "pgcdcws broadcast subscriptions", ALLOCSET_DEFAULT_SIZES);
    window_context = AllocSetContextCreate(TopMemoryContext, "pgcdcws broadcast window", ALLOCSET_DEFAULT_SIZES);
    if (!cxx([&] {
            index = new SubscriptionIndex(kSlotCount);
            out_msg.reserve(4096);
            control_message.reserve(4096);
        }))
        out_of_memory("start");
    window.reset(start, nullptr, nullptr);
    applied_window_cap = window_cap();
    publish_window();
    CacheRegisterRelcacheCallback(on_relcache, 0);
    CacheRegisterSyscacheCallback(AUTHOID, on_roles, 0);
    CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, on_roles, 0);
}

const output::BroadcastSink *engine_sink() { return &sink; }

void engine_poll_control(XLogRecPtr position) {
    shmem::Ring *ring = shmem::broadcast_control_ring();
    shmem::RecordHeader header;
    bool popped = false;
    while (ring->peek(header)) {
        std::size_t at = 0;
        if (!cxx([&] {
                at = control_message.size();
                control_message.resize(at + header.length);
            }))
            out_of_memory("control messages");
        ring->copy_payload(header, &control_message[at]);
        ring->pop(header);
        popped = true;
        if (header.flags & shmem::kRecordMessageEnd) {
            handle_control(position);
            control_message.clear();
        }
    }
    // The server may wait for room on the control ring.
    if (popped)
        shmem::wake_server();
}

void engine_recheck() {
    if (rels.empty())
        return;
    StartTransactionCommand();
    forget_privilege_cache_entries();
    long checked = 0;
    for (Sub *s : subs_by_slot) {
        if (!s)
            continue;
        checked++;
        bool missing = false;
        const bool may_select = pg_class_aclcheck_ext(s->relid, s->role, ACL_SELECT, &missing) == ACLCHECK_OK;
        if (missing) {
            if (!cxx([&] { to_end.push_back(s); }))
                out_of_memory("recheck");
            continue;
        }
        if (!may_select && !cxx([&] { to_end.push_back(s); }))
            out_of_memory("recheck");
    }
    forget_privilege_cache_entries();
    for (Sub *s : to_end) {
        if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(s->relid))) {
            end_subscription(s, psprintf("table %s was dropped", s->table ? s->table : "(unknown)"));
            continue;
        }
        const char *name = GetUserNameFromId(s->role, true);
        char *reason = psprintf("role %s may no longer SELECT table %s.%s", name ? name : "(dropped)",
                                get_namespace_name(get_rel_namespace(s->relid)), get_rel_name(s->relid));
        end_subscription(s, reason);
    }
    to_end.clear();
    CommitTransactionCommand();
    ereport(DEBUG1, (errmsg_internal("pgcdcws broadcast: rechecked %ld subscriptions with the current catalogs", checked)));
}

void engine_apply_settings(XLogRecPtr position) {
    if (!area)
        return;
    const std::size_t cap = window_cap();
    // A window switched on (or off) holds nothing decoded before now.
    if ((cap == 0) != (applied_window_cap == 0))
        window.reset(position, release_entry, nullptr);
    applied_window_cap = cap;
    (void)window.trim(cap, release_entry, nullptr);
    publish_window();
}

}  // namespace pgcdcws::broadcast
