// Broadcast engine: which subscriptions one decoded change reaches (issue 8;
// docs/ARCHITECTURE.md "Broadcast engine (being built)"). Pure: no Postgres
// headers, unit-tested in test/unit/test_subscription_index.cpp. The broadcast
// decoder feeds it; values stay opaque here (the decoder passes Datums, the tests
// ints and strings) and are compared only through callbacks the caller supplies.
//
// Index: relation → kind (insert, update, delete) →
//   - buckets keyed by (column, 64-bit hash of a value): a subscription with an
//     `eq`/`in` filter is listed under its FIRST such filter, once per distinct
//     hash of that filter's values; its other filters (and the equality of the
//     indexed one, so hash collisions are harmless) are checked on the candidates;
//   - a scan list of the subscriptions without any `eq`/`in` filter (unfiltered,
//     or only neq/lt/lte/gt/gte), each checked on every change of that
//     (relation, kind): that list is the only cost that does not follow the
//     number of matching subscriptions.
// A change probes one bucket per column that some bucket of its (relation, kind)
// is keyed on, so its cost is O(indexed columns + subscriptions sharing the
// probed values + scan list), never O(all subscriptions). Truncate has a plain
// list per relation (filters do not apply to a truncate, see SubscriptionQuery).
//
// Semantics (SQL's): a NULL column matches no operator (not even neq), and a
// filter on a column the row does not carry matches nothing: a DELETE's old row
// holds only the replica identity key unless REPLICA IDENTITY FULL, which is why
// the server refuses delete filters on other columns at subscribe time.
//
// Memory (x86-64, allocator overhead and vector slack aside): the slot array
// holds 96 B per slot up to the highest slot used; a subscription adds 24 B per
// filter, 16 B per value and 16 B per listing: one listing per kind it asks for
// (truncate included) and, in a kind indexed by value, one per distinct hash of
// its indexed filter's values (at most 100). A new bucket costs about 120 B, a
// relation with subscriptions about 350 B. Worst case (16 filters of 100 values,
// all kinds, every value its own bucket) about 70 kB per subscription; slots are
// bounded by the constructor's `slot_count` (the shared subscription table's
// size). Removal is O(filters + listings): every listing knows its position.
//
// Errors: add() and the match functions allocate (std::bad_alloc may escape:
// the decoder catches it; after one from add() or remove() the index is only
// fit for clear() and a rebuild, one from a match leaves it intact). The
// callbacks must not throw; they may longjmp (a Postgres ERROR from the
// comparison function): match functions keep no object with a destructor on
// their frames and leave the index consistent. Not thread-safe; one decoder
// process owns its index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "protocol/subscription_query.hpp"

namespace pgcdcws::broadcast {

// A subscription: its slot in the shared subscription table and the slot's
// generation when the subscription was written (a reused slot has a new one).
struct SubscriptionHandle {
    std::uint32_t slot = 0;
    std::uint32_t generation = 0;
    bool operator==(const SubscriptionHandle &o) const { return slot == o.slot && generation == o.generation; }
    bool operator!=(const SubscriptionHandle &o) const { return !(*this == o); }
    bool operator<(const SubscriptionHandle &o) const {
        return slot != o.slot ? slot < o.slot : generation < o.generation;
    }
};

// How values of one column type compare. The caller owns it; it must outlive
// every subscription whose filters point at it. The decoder builds one per
// (relation, column) around the type's default btree comparison and hash
// functions and the column's collation (in `context`).
struct ValueType {
    // Equality, for eq, neq and in. Must agree with the caller's hashes:
    // equal(a, b) implies hash(a) == hash(b).
    bool (*equal)(void *context, const void *a, const void *b) = nullptr;
    // Three-way comparison, for lt, lte, gt and gte: < 0, 0, > 0 as a sorts
    // before, with, after b.
    int (*compare)(void *context, const void *a, const void *b) = nullptr;
    void *context = nullptr;
};

// One filter value: opaque to the index, owned by the caller until the
// subscription is removed. `hash` is used for eq and in (ignored otherwise).
struct FilterValue {
    std::uint64_t hash = 0;
    const void *value = nullptr;
};

// One filter of a subscription; a subscription's filters are ANDed.
struct FilterSpec {
    std::int16_t attnum = 0;           // the column's attribute number, >= 1
    protocol::FilterOp op = protocol::FilterOp::Eq;
    const ValueType *type = nullptr;   // needs `equal` for eq/neq/in, `compare` for the others
    const FilterValue *values = nullptr;
    std::size_t value_count = 0;       // 1, or 1..kMaxInValues for in; copied by add()
};

// A column of the row being matched, as the caller's accessor reports it.
enum class ColumnState : std::uint8_t {
    Value,
    Null,
    Missing,  // the row does not carry the column (an old key row, an unchanged TOAST value)
};

struct ColumnValue {
    ColumnState state = ColumnState::Missing;
    std::uint64_t hash = 0;  // needed only when the accessor was asked `want_hash`
    const void *value = nullptr;
};

// The row of one change: `column(row, attnum, want_hash)`. It may be asked for
// the same column several times per change; the decoder caches per column
// (hashing lazily, only the columns asked with want_hash).
struct RowAccessor {
    ColumnValue (*column)(void *row, std::int16_t attnum, bool want_hash) = nullptr;
    void *row = nullptr;
};

// Which side of an UPDATE matched a subscription: the row moved into the
// filter (New), out of it (Old), or stayed inside (Both). The frame carries it
// as "matched": "new" | "old" | "both".
enum class RowSide : std::uint8_t { New = 1, Old = 2, Both = 3 };

struct UpdateMatch {
    SubscriptionHandle handle;
    RowSide side = RowSide::New;
};

// Work done by match calls, added to (for tests and statistics): subscriptions
// looked at, and filters evaluated on them.
struct MatchCost {
    std::size_t candidates = 0;
    std::size_t filter_checks = 0;
};

class SubscriptionIndex {
public:
    // Slots are 0 .. slot_count - 1.
    explicit SubscriptionIndex(std::uint32_t slot_count);

    // Lists a subscription on `relid` for `kinds` (protocol::ChangeKindBit set)
    // with ANDed `filters`. The filter values are copied (the pointers they
    // hold are not followed until matching). Returns nullptr once added, else
    // a static text saying why not (the slot is taken or out of range, kinds
    // are empty, a filter is malformed or lacks the callback its operator
    // needs, more than kMaxSubscriptionFilters filters).
    [[nodiscard]] const char *add(SubscriptionHandle handle, std::uint32_t relid, std::uint8_t kinds,
                                  const FilterSpec *filters, std::size_t filter_count);
    // Unlists it; false (and nothing changes) when the slot holds no
    // subscription or one of another generation.
    bool remove(SubscriptionHandle handle);
    void clear();

    bool contains(SubscriptionHandle handle) const;
    std::size_t size() const { return live_; }

    // The subscriptions an INSERT (`kind` kKindInsert, the new row) or a DELETE
    // (kKindDelete, the old row) reaches, appended to `out` in no set order.
    // kKindUpdate matches one row only; see match_update for both sides.
    void match(std::uint32_t relid, protocol::ChangeKindBit kind, const RowAccessor &row,
               std::vector<SubscriptionHandle> &out, MatchCost *cost = nullptr) const;

    // The subscriptions an UPDATE reaches through its new row or its old row,
    // each once, appended to `out`. `old_row` null: Postgres logged no old row
    // (key unchanged, not REPLICA IDENTITY FULL); pass instead an accessor that
    // serves the key columns from the new row and reports the others Missing to
    // have filters on key columns tell Both rather than New.
    void match_update(std::uint32_t relid, const RowAccessor &new_row, const RowAccessor *old_row,
                      std::vector<UpdateMatch> &out, MatchCost *cost = nullptr);

    // The subscriptions a TRUNCATE of `relid` reaches: all that asked for
    // truncate, filtered or not.
    void match_truncate(std::uint32_t relid, std::vector<SubscriptionHandle> &out) const;

private:
    static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
    static constexpr int kRowKinds = 3;  // insert, update, delete; truncate has its own list

    struct Filter {
        std::int16_t attnum;
        protocol::FilterOp op;
        std::uint32_t first_value;  // into Subscription::values
        std::uint32_t value_count;
        const ValueType *type;
    };
    // Where one listing of a subscription stands: list and position in it.
    struct Listing {
        std::uint32_t list;
        std::uint32_t position;
    };
    struct Subscription {
        bool in_use = false;
        std::uint8_t kinds = 0;
        std::uint32_t generation = 0;
        std::uint32_t relid = 0;
        std::uint32_t update_epoch = 0;     // match_update: matched the new row in that call...
        std::uint32_t update_position = 0;  // ...at this index of its `out`
        std::vector<Filter> filters;        // the indexed eq/in filter first, if any
        std::vector<FilterValue> values;
        std::vector<Listing> listings;
    };
    struct ListEntry {
        std::uint32_t slot;
        std::uint32_t listing;  // into Subscription::listings
    };
    struct BucketKey {
        std::uint32_t relid;
        std::uint8_t kind;  // 0..kRowKinds-1
        std::int16_t attnum;
        std::uint64_t hash;
        bool operator==(const BucketKey &o) const {
            return relid == o.relid && kind == o.kind && attnum == o.attnum && hash == o.hash;
        }
    };
    struct BucketKeyHash {
        std::size_t operator()(const BucketKey &k) const;
    };
    struct List {
        std::vector<ListEntry> entries;
        bool is_bucket = false;
        BucketKey key{};  // when is_bucket: to erase the bucket once empty
    };
    struct IndexedColumn {
        std::int16_t attnum;
        std::uint32_t buckets;
    };
    struct KindIndex {
        std::uint32_t scan_list = kNone;
        std::vector<IndexedColumn> columns;  // the columns its buckets are keyed on
    };
    struct RelationIndex {
        KindIndex kinds[kRowKinds];
        std::uint32_t truncate_list = kNone;
        std::uint32_t subscriptions = 0;
    };

    std::uint32_t new_list();
    void free_list(std::uint32_t list);
    void list_in(std::uint32_t slot, std::uint32_t list);
    void unlist(const Listing &listing);
    bool row_matches(const Subscription &sub, const RowAccessor &row, MatchCost *cost) const;
    template <typename Emit>
    void match_kind(std::uint32_t relid, int kind_index, const RowAccessor &row, MatchCost *cost, Emit &&emit) const;

    std::uint32_t slot_count_;
    std::vector<Subscription> subs_;  // by slot, grown up to the highest slot used
    std::size_t live_ = 0;
    std::vector<List> lists_;
    std::vector<std::uint32_t> free_lists_;
    std::unordered_map<std::uint32_t, RelationIndex> relations_;
    std::unordered_map<BucketKey, std::uint32_t, BucketKeyHash> buckets_;  // → list
    std::uint32_t update_epoch_ = 0;
};

}  // namespace pgcdcws::broadcast
