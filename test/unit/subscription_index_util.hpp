// Plain value types and rows for the SubscriptionIndex tests and benchmark
// (src/broadcast/subscription_index.hpp): int64 and std::string values behind
// the index's opaque pointers, with call counters to prove what matching cost.
#pragma once

#include "broadcast/subscription_index.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

namespace pgcdcws::test {

struct CallCounts {
    std::size_t equal = 0;
    std::size_t compare = 0;
};

// T is std::int64_t or std::string. `constant_hash` makes every value collide.
template <typename T>
class PlainType {
public:
    explicit PlainType(bool constant_hash = false) : constant_hash_(constant_hash) {
        type_.equal = &equal;
        type_.compare = &compare;
        type_.context = &calls;
    }
    PlainType(const PlainType &) = delete;
    PlainType &operator=(const PlainType &) = delete;

    const broadcast::ValueType *type() const { return &type_; }
    std::uint64_t hash(const T &v) const { return constant_hash_ ? 7 : std::hash<T>{}(v) * 0x9E3779B97F4A7C15ULL; }
    // A filter value whose bytes live in this type's store (stable addresses).
    broadcast::FilterValue value(const T &v) {
        store_.push_back(v);
        return {hash(v), &store_.back()};
    }

    CallCounts calls;

private:
    static bool equal(void *context, const void *a, const void *b) {
        ++static_cast<CallCounts *>(context)->equal;
        return *static_cast<const T *>(a) == *static_cast<const T *>(b);
    }
    static int compare(void *context, const void *a, const void *b) {
        ++static_cast<CallCounts *>(context)->compare;
        const T &x = *static_cast<const T *>(a), &y = *static_cast<const T *>(b);
        return x < y ? -1 : (y < x ? 1 : 0);
    }

    bool constant_hash_;
    broadcast::ValueType type_{};
    std::deque<T> store_;
};

using IntType = PlainType<std::int64_t>;
using TextType = PlainType<std::string>;

// A change's row: columns set by attnum; others are Missing.
class Row {
public:
    Row &set(std::int16_t attnum, IntType &type, std::int64_t v) {
        ints_.push_back(v);
        columns_[attnum] = {broadcast::ColumnState::Value, type.hash(v), &ints_.back()};
        return *this;
    }
    Row &set(std::int16_t attnum, TextType &type, const std::string &v) {
        texts_.push_back(v);
        columns_[attnum] = {broadcast::ColumnState::Value, type.hash(v), &texts_.back()};
        return *this;
    }
    Row &set_null(std::int16_t attnum) {
        columns_[attnum] = {broadcast::ColumnState::Null, 0, nullptr};
        return *this;
    }
    broadcast::RowAccessor accessor() { return {&column, this}; }

    std::size_t column_requests = 0;

private:
    static broadcast::ColumnValue column(void *row, std::int16_t attnum, bool) {
        Row &self = *static_cast<Row *>(row);
        ++self.column_requests;
        const auto c = self.columns_.find(attnum);
        return c == self.columns_.end() ? broadcast::ColumnValue{} : c->second;
    }

    std::map<std::int16_t, broadcast::ColumnValue> columns_;
    std::deque<std::int64_t> ints_;
    std::deque<std::string> texts_;
};

}  // namespace pgcdcws::test
