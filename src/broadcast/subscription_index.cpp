#include "broadcast/subscription_index.hpp"

#include <algorithm>

namespace pgcdcws::broadcast {

using protocol::ChangeKindBit;
using protocol::FilterOp;

namespace {

// Row kinds in KindIndex order; truncate is listed apart.
constexpr ChangeKindBit kRowKindBits[] = {protocol::kKindInsert, protocol::kKindUpdate, protocol::kKindDelete};

int row_kind_index(ChangeKindBit kind) {
    switch (kind) {
    case protocol::kKindInsert: return 0;
    case protocol::kKindUpdate: return 1;
    case protocol::kKindDelete: return 2;
    default: return -1;
    }
}

bool is_hashed(FilterOp op) { return op == FilterOp::Eq || op == FilterOp::In; }
bool needs_equal(FilterOp op) { return op == FilterOp::Eq || op == FilterOp::Neq || op == FilterOp::In; }

std::uint64_t mix64(std::uint64_t x) {  // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

const char *check_filter(const FilterSpec &f) {
    if (f.attnum < 1)
        return "filter column number must be at least 1";
    if (f.type == nullptr)
        return "filter has no value type";
    if (needs_equal(f.op) ? f.type->equal == nullptr : f.type->compare == nullptr)
        return "filter's value type lacks the callback its operator needs";
    if (f.values == nullptr || f.value_count == 0)
        return "filter has no value";
    if (f.op == FilterOp::In ? f.value_count > protocol::kMaxInValues : f.value_count != 1)
        return f.op == FilterOp::In ? "in filter has too many values" : "filter takes exactly one value";
    return nullptr;
}

}  // namespace

std::size_t SubscriptionIndex::BucketKeyHash::operator()(const BucketKey &k) const {
    // The caller's hash may be weak (the tests force a constant one): mix the rest in.
    return static_cast<std::size_t>(
        mix64(k.hash ^ mix64((std::uint64_t{k.relid} << 24) ^ (std::uint64_t{k.kind} << 16) ^
                             static_cast<std::uint16_t>(k.attnum))));
}

SubscriptionIndex::SubscriptionIndex(std::uint32_t slot_count) : slot_count_(slot_count) {}

std::uint32_t SubscriptionIndex::new_list() {
    if (!free_lists_.empty()) {
        const std::uint32_t list = free_lists_.back();
        free_lists_.pop_back();
        return list;
    }
    lists_.emplace_back();
    return static_cast<std::uint32_t>(lists_.size() - 1);
}

void SubscriptionIndex::free_list(std::uint32_t list) {
    List &l = lists_[list];
    l.entries.clear();
    l.entries.shrink_to_fit();  // a bucket of 10,000 subscribers must not stay that large when reused
    l.is_bucket = false;
    free_lists_.push_back(list);
}

void SubscriptionIndex::list_in(std::uint32_t slot, std::uint32_t list) {
    Subscription &sub = subs_[slot];
    std::vector<ListEntry> &entries = lists_[list].entries;
    sub.listings.push_back({list, static_cast<std::uint32_t>(entries.size())});
    entries.push_back({slot, static_cast<std::uint32_t>(sub.listings.size() - 1)});
}

// Swap-remove: the last entry takes the place, and its listing learns it.
void SubscriptionIndex::unlist(const Listing &listing) {
    List &list = lists_[listing.list];
    const ListEntry moved = list.entries.back();
    list.entries[listing.position] = moved;
    subs_[moved.slot].listings[moved.listing].position = listing.position;
    list.entries.pop_back();
    if (!list.is_bucket || !list.entries.empty())
        return;
    const BucketKey key = list.key;
    buckets_.erase(key);
    free_list(listing.list);
    std::vector<IndexedColumn> &columns = relations_.find(key.relid)->second.kinds[key.kind].columns;
    for (auto c = columns.begin(); c != columns.end(); ++c) {
        if (c->attnum == key.attnum) {
            if (--c->buckets == 0)
                columns.erase(c);
            break;
        }
    }
}

const char *SubscriptionIndex::add(SubscriptionHandle handle, std::uint32_t relid, std::uint8_t kinds,
                                   const FilterSpec *filters, std::size_t filter_count) {
    if (handle.slot >= slot_count_)
        return "subscription slot out of range";
    if (handle.slot < subs_.size() && subs_[handle.slot].in_use)
        return "subscription slot already in use";
    if (kinds == 0 || (kinds & ~protocol::kAllKinds) != 0)
        return "subscription kinds must be a non-empty set of insert, update, delete, truncate";
    if (filter_count > protocol::kMaxSubscriptionFilters)
        return "too many filters";
    if (filter_count > 0 && filters == nullptr)
        return "filters missing";
    std::size_t indexed = filter_count;  // the first eq/in filter
    for (std::size_t i = 0; i < filter_count; ++i) {
        if (const char *error = check_filter(filters[i]))
            return error;
        if (indexed == filter_count && is_hashed(filters[i].op))
            indexed = i;
    }

    if (handle.slot >= subs_.size())
        subs_.resize(std::size_t{handle.slot} + 1);
    Subscription &sub = subs_[handle.slot];
    sub.generation = handle.generation;
    sub.relid = relid;
    sub.kinds = kinds;
    sub.filters.clear();
    sub.values.clear();
    sub.listings.clear();
    // The indexed filter first: a bucket candidate is then rejected by its
    // hash collision check before the other filters are evaluated.
    auto copy_filter = [&sub](const FilterSpec &f) {
        sub.filters.push_back({f.attnum, f.op, static_cast<std::uint32_t>(sub.values.size()),
                               static_cast<std::uint32_t>(f.value_count), f.type});
        sub.values.insert(sub.values.end(), f.values, f.values + f.value_count);
    };
    if (indexed < filter_count)
        copy_filter(filters[indexed]);
    for (std::size_t i = 0; i < filter_count; ++i)
        if (i != indexed)
            copy_filter(filters[i]);

    RelationIndex &rel = relations_[relid];
    if (rel.subscriptions++ == 0) {
        for (KindIndex &k : rel.kinds)
            k.scan_list = new_list();
        rel.truncate_list = new_list();
    }
    if (kinds & protocol::kKindTruncate)
        list_in(handle.slot, rel.truncate_list);

    // One bucket per distinct hash: equal values hash alike, so a row reaches
    // at most one bucket of this filter and the subscription is found once.
    std::vector<std::uint64_t> hashes;
    if (indexed < filter_count) {
        const Filter &f = sub.filters.front();
        for (std::uint32_t v = 0; v < f.value_count; ++v)
            hashes.push_back(sub.values[f.first_value + v].hash);
        std::sort(hashes.begin(), hashes.end());
        hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());
    }
    for (int k = 0; k < kRowKinds; ++k) {
        if (!(kinds & kRowKindBits[k]))
            continue;
        if (hashes.empty()) {
            list_in(handle.slot, rel.kinds[k].scan_list);
            continue;
        }
        const std::int16_t attnum = sub.filters.front().attnum;
        for (std::uint64_t hash : hashes) {
            const BucketKey key{relid, static_cast<std::uint8_t>(k), attnum, hash};
            auto [bucket, created] = buckets_.try_emplace(key, kNone);
            if (created) {
                bucket->second = new_list();
                lists_[bucket->second].is_bucket = true;
                lists_[bucket->second].key = key;
                std::vector<IndexedColumn> &columns = rel.kinds[k].columns;
                auto c = std::find_if(columns.begin(), columns.end(),
                                      [attnum](const IndexedColumn &ic) { return ic.attnum == attnum; });
                if (c == columns.end())
                    columns.push_back({attnum, 1});
                else
                    ++c->buckets;
            }
            list_in(handle.slot, bucket->second);
        }
    }
    sub.in_use = true;
    ++live_;
    return nullptr;
}

bool SubscriptionIndex::remove(SubscriptionHandle handle) {
    if (!contains(handle))
        return false;
    Subscription &sub = subs_[handle.slot];
    for (const Listing &listing : sub.listings)
        unlist(listing);
    auto rel = relations_.find(sub.relid);
    if (--rel->second.subscriptions == 0) {
        for (const KindIndex &k : rel->second.kinds)
            free_list(k.scan_list);
        free_list(rel->second.truncate_list);
        relations_.erase(rel);
    }
    sub = Subscription();  // gives the filters' memory back
    --live_;
    return true;
}

void SubscriptionIndex::clear() {
    subs_.clear();
    lists_.clear();
    free_lists_.clear();
    relations_.clear();
    buckets_.clear();
    live_ = 0;
}

bool SubscriptionIndex::contains(SubscriptionHandle handle) const {
    return handle.slot < subs_.size() && subs_[handle.slot].in_use && subs_[handle.slot].generation == handle.generation;
}

bool SubscriptionIndex::row_matches(const Subscription &sub, const RowAccessor &row, MatchCost *cost) const {
    if (cost)
        ++cost->candidates;
    for (const Filter &f : sub.filters) {
        if (cost)
            ++cost->filter_checks;
        const ColumnValue column = row.column(row.row, f.attnum, is_hashed(f.op));
        if (column.state != ColumnState::Value)
            return false;  // NULL compares unknown; a column the row lacks cannot match
        const FilterValue *values = sub.values.data() + f.first_value;
        const ValueType &type = *f.type;
        bool ok;
        switch (f.op) {
        case FilterOp::Eq:
        case FilterOp::In:
            ok = false;
            for (std::uint32_t v = 0; v < f.value_count && !ok; ++v)
                ok = values[v].hash == column.hash && type.equal(type.context, column.value, values[v].value);
            break;
        case FilterOp::Neq: ok = !type.equal(type.context, column.value, values[0].value); break;
        case FilterOp::Lt: ok = type.compare(type.context, column.value, values[0].value) < 0; break;
        case FilterOp::Lte: ok = type.compare(type.context, column.value, values[0].value) <= 0; break;
        case FilterOp::Gt: ok = type.compare(type.context, column.value, values[0].value) > 0; break;
        case FilterOp::Gte: ok = type.compare(type.context, column.value, values[0].value) >= 0; break;
        default: ok = false; break;
        }
        if (!ok)
            return false;
    }
    return true;
}

template <typename Emit>
void SubscriptionIndex::match_kind(std::uint32_t relid, int kind_index, const RowAccessor &row, MatchCost *cost,
                                   Emit &&emit) const {
    const auto rel = relations_.find(relid);
    if (rel == relations_.end())
        return;
    const KindIndex &kind = rel->second.kinds[kind_index];
    for (const IndexedColumn &c : kind.columns) {
        const ColumnValue column = row.column(row.row, c.attnum, true);
        if (column.state != ColumnState::Value)
            continue;
        const auto bucket = buckets_.find({relid, static_cast<std::uint8_t>(kind_index), c.attnum, column.hash});
        if (bucket == buckets_.end())
            continue;
        for (const ListEntry &e : lists_[bucket->second].entries)
            if (row_matches(subs_[e.slot], row, cost))
                emit(e.slot);
    }
    for (const ListEntry &e : lists_[kind.scan_list].entries)
        if (row_matches(subs_[e.slot], row, cost))
            emit(e.slot);
}

void SubscriptionIndex::match(std::uint32_t relid, ChangeKindBit kind, const RowAccessor &row,
                              std::vector<SubscriptionHandle> &out, MatchCost *cost) const {
    const int kind_index = row_kind_index(kind);
    if (kind_index < 0)
        return;
    match_kind(relid, kind_index, row, cost,
               [this, &out](std::uint32_t slot) { out.push_back({slot, subs_[slot].generation}); });
}

void SubscriptionIndex::match_update(std::uint32_t relid, const RowAccessor &new_row, const RowAccessor *old_row,
                                     std::vector<UpdateMatch> &out, MatchCost *cost) {
    if (++update_epoch_ == 0) {  // wrapped: no stale mark may equal the new epoch
        for (Subscription &sub : subs_)
            sub.update_epoch = 0;
        update_epoch_ = 1;
    }
    const std::uint32_t epoch = update_epoch_;
    const int kind_index = row_kind_index(protocol::kKindUpdate);
    match_kind(relid, kind_index, new_row, cost, [this, &out, epoch](std::uint32_t slot) {
        Subscription &sub = subs_[slot];
        sub.update_epoch = epoch;
        sub.update_position = static_cast<std::uint32_t>(out.size());
        out.push_back({{slot, sub.generation}, RowSide::New});
    });
    if (old_row == nullptr)
        return;
    match_kind(relid, kind_index, *old_row, cost, [this, &out, epoch](std::uint32_t slot) {
        const Subscription &sub = subs_[slot];
        if (sub.update_epoch == epoch)
            out[sub.update_position].side = RowSide::Both;
        else
            out.push_back({{slot, sub.generation}, RowSide::Old});
    });
}

void SubscriptionIndex::match_truncate(std::uint32_t relid, std::vector<SubscriptionHandle> &out) const {
    const auto rel = relations_.find(relid);
    if (rel == relations_.end())
        return;
    for (const ListEntry &e : lists_[rel->second.truncate_list].entries)
        out.push_back({e.slot, subs_[e.slot].generation});
}

}  // namespace pgcdcws::broadcast
